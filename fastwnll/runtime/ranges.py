"""Allowed ranges of numeric options, defined once: the same :class:`Range` checks a value given in
Python (ValueError naming the option) and parses a command-line flag (an argparse type, so a value
out of range is a usage error, exit status 2, before any work)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Integers (``integer=True``) or finite real numbers ``>= low`` (``> low`` with ``low_open``) and,
    when ``high`` is set, ``<= high`` (``< high`` with ``high_open``)."""

    low: float
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """The range in words, e.g. ``an integer >= 1``, ``a finite number > 0``, ``a number in [0, 1]``."""
        kind = "an integer" if self.integer else "a finite number"
        if self.high is None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return (
            f"{'an integer' if self.integer else 'a number'} in {'(' if self.low_open else '['}{self.low:g}, "
            f"{self.high:g}{')' if self.high_open else ']'}"
        )

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value) or value < self.low or (self.low_open and value == self.low):
            return False
        return self.high is None or value < self.high or (value == self.high and not self.high_open)

    def check(self, name: str, value):
        """``value`` if it lies in the range; ValueError ``"<name> must be <range>, got <value>"`` otherwise."""
        if not self.contains(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return value

    def parse(self, text: str):
        """An argparse ``type``: the number written in ``text``, or ArgumentTypeError saying the range."""
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value


COUNT = Range(1, integer=True)  # sizes and counts: batch sizes, steps, templates, images
NON_NEGATIVE_INT = Range(0, integer=True)  # epochs, seeds
POSITIVE = Range(0, low_open=True)  # learning rates, step sizes, constants
NON_NEGATIVE = Range(0)  # radii, momentum, weight decay
FRACTION = Range(0, 1)  # a share of a batch, 0 and 1 included
