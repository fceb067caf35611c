"""Black-box evaluation: transfer attacks crafted on a source model, and robust accuracy."""
from __future__ import annotations

import functools

import torch
from torch import nn

from .checks import check_inputs, check_output, positive_int
from .modes import attack_mode
from .registry import Attack, get_attack


def transfer_attack(
    source: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str | Attack = "ifgsm", **kwargs,
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


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Fraction in [0, 1] of ``x_adv`` [B, C, H, W] (in [0, 1]) that ``model`` classifies as ``y`` [B].

    The model runs in eval mode without gradients (its train/eval flags are restored afterwards);
    ``batch_size`` splits the forward passes (None: one pass). For a model whose outputs couple the
    batch (a WNLL head), the batch split changes the graph, so keep it as in the attack.
    """
    check_inputs(model, x_adv, y)
    batch_size = x_adv.shape[0] if batch_size is None else positive_int("batch_size", batch_size)
    correct = 0
    with attack_mode(model), torch.no_grad():
        for start in range(0, x_adv.shape[0], batch_size):
            out = model(x_adv[start:start + batch_size])
            labels = y[start:start + batch_size]
            check_output(out, labels)
            correct += int((out.argmax(1) == labels).sum())
    return correct / x_adv.shape[0]
