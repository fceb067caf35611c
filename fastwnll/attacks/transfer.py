"""Black-box evaluation: transfer attacks crafted on a source model."""

from __future__ import annotations

import functools

import torch
from torch import nn

from .checks import check_inputs
from .registry import Attack, get_attack


def transfer_attack(
    source: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str | Attack = "ifgsm",
    **kwargs,
) -> torch.Tensor:
    """Adversarial images crafted with white-box access to ``source`` only (the transfer/black-box setting).

    ``attack`` is a registry name (see :func:`get_attack`) or a callable ``attack(model, x, y, **kwargs)``
    returning adversarial x. Evaluate the result on the defended target with
    ``robust_accuracy(target, x_adv, y)``. Shapes as in the attacks: x [B, C, H, W] in [0, 1], y [B] int64.
    """
    check_inputs(source, x, y)
    if isinstance(attack, str):
        craft = get_attack(attack, **kwargs)
    elif callable(attack):
        craft = functools.partial(attack, **kwargs)
    else:
        raise TypeError(f"attack must be an attack name or a callable, got {type(attack).__name__}")
    x_adv = craft(source, x, y)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        raise ValueError(f"the attack must return a tensor of x's shape {tuple(x.shape)}")
    return x_adv.detach()
