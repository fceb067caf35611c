"""Attacks by name: ``get_attack("pgd", eps=0.3, alpha=0.01, steps=40)(model, x, y)``."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

from .cw import cw_l2
from .linf import fgsm, ifgsm, pgd

Attack = Callable[..., torch.Tensor]

ATTACKS: dict[str, Attack] = {"fgsm": fgsm, "ifgsm": ifgsm, "pgd": pgd, "cw_l2": cw_l2}


def get_attack(name: str, **kwargs) -> Attack:
    """The attack ``name`` (one of fgsm, ifgsm, pgd, cw_l2) with ``kwargs`` bound, called as ``attack(model, x, y)``.

    Raises ValueError for an unknown name (listing the choices) and TypeError for keyword arguments
    the attack does not take; values are checked when the attack runs.
    """
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    attack = ATTACKS[name]
    try:
        inspect.signature(attack).bind_partial(None, None, None, **kwargs)
    except TypeError as error:
        raise TypeError(f"bad arguments for attack {name!r}: {error}") from None
    return functools.partial(attack, **kwargs)
