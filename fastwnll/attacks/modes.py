"""Context managers that set a model up for an attack and restore it afterwards."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

from fastwnll.nn.head import GRADIENTS
from fastwnll.nn.modes import eval_mode


@contextmanager
def gradient_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Set ``gradient = mode`` on every submodule whose ``gradient`` attribute is "surrogate" or "exact".

    ``WNLLHead`` has such an attribute: "surrogate" sends the backward through the linear layer (the
    published protocol, a straight-through estimator), "exact" through the interpolation itself.
    The previous values are restored on exit, also after an exception. Raises ValueError for an
    unknown mode or when no submodule has the attribute (a mode would then silently do nothing).
    """
    if mode not in GRADIENTS:
        raise ValueError(f"gradient mode must be one of {GRADIENTS}, got {mode!r}")
    saved = [(m, m.gradient) for m in model.modules() if getattr(m, "gradient", None) in GRADIENTS]
    if not saved:
        raise ValueError(
            f"gradient={mode!r} was requested but no submodule of {type(model).__name__} has a 'gradient' "
            "attribute (such as WNLLHead); pass gradient=None for models without one"
        )
    try:
        for m, _ in saved:
            m.gradient = mode
        yield model
    finally:
        for m, previous in reversed(saved):
            m.gradient = previous


@contextmanager
def attack_mode(model: nn.Module, gradient: str | None = None) -> Iterator[nn.Module]:
    """Eval mode (:func:`fastwnll.nn.eval_mode`: every train/eval flag restored on exit exactly as it
    was) and, unless ``gradient`` is None, :func:`gradient_mode` for the duration of an attack."""
    with eval_mode(model):
        if gradient is None:
            yield model
        else:
            with gradient_mode(model, gradient):
                yield model
