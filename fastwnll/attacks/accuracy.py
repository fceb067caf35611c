"""Which examples a model classifies correctly: the one evaluation loop of the package, and robust accuracy."""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_inputs, check_output, positive_int
from .modes import attack_mode


def correct_mask(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which rows of ``x`` [N, ...] ``model`` classifies as ``y`` [N] (int64): a bool tensor [N].

    The model runs in eval mode without gradients (its train/eval flags are restored afterwards),
    ``batch_size`` rows per forward pass (None: one pass); for a model whose outputs couple the rows
    of a pass (a WNLL head) the split changes the graph, so keep it as in the attack. With
    ``device`` each batch is moved there first (``x`` and ``y`` may then stay on the CPU; the mask is
    on ``device``); without it they must already be on the model's device. The output of every pass
    is checked to be ``[rows, num_classes]`` with every label a valid class. Callers check the inputs.
    """
    batch_size = x.shape[0] if batch_size is None else batch_size
    masks = []
    with attack_mode(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            if device is not None:
                xb, yb = xb.to(device), yb.to(device)
            out = model(xb)
            check_output(out, yb)
            masks.append(out.argmax(1) == yb)
    return torch.cat(masks)


def robust_accuracy(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Fraction in [0, 1] of ``x_adv`` [B, C, H, W] (in [0, 1]) that ``model`` classifies as ``y`` [B].

    As :func:`correct_mask` (eval mode, no gradients, flags restored, ``batch_size`` rows per pass,
    None: one pass), with the inputs checked: same device as the model, images in [0, 1].
    """
    check_inputs(model, x_adv, y)
    batch_size = x_adv.shape[0] if batch_size is None else positive_int("batch_size", batch_size)
    return int(correct_mask(model, x_adv, y, batch_size).sum()) / x_adv.shape[0]
