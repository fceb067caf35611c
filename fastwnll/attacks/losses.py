"""Attack losses and the single loss-and-gradient entry point every attack goes through."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_output

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy [B] of model output ``out`` [B, C] (logits or log-probabilities)."""
    check_output(out, y)
    return F.cross_entropy(out, y, reduction="none")


def logit_margin(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``Z_y - max_{j != y} Z_j`` per example [B] for model output ``out`` [B, C] used as logits Z;
    negative once the example is misclassified."""
    check_output(out, y)
    true = out.gather(1, y[:, None]).squeeze(1)
    other = out.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def margin_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} Z_j - Z_y`` per example [B]: an attack loss to maximize that, unlike the
    cross-entropy, does not saturate when the true class's probability is close to 1."""
    return -logit_margin(out, y)


def cw_margin(out: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """Carlini-Wagner's untargeted loss ``max(Z_y - max_{j != y} Z_j, -kappa)`` per example [B]."""
    return logit_margin(out, y).clamp(min=-kappa)


def loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn):
    """Per-example loss [B], its gradient with respect to ``x`` (shape of x) and the model output [B, C].

    The gradient is that of ``loss_fn(model(x), y).sum()`` with respect to ``x`` only, computed with
    ``torch.autograd.grad``, so the model's parameters accumulate no ``.grad``. A model that defines
    ``attack_loss_grad(x, y, loss_fn)`` (such as :class:`EOT`) computes the three itself; this is how
    every attack becomes EOT-aware without special cases. All three results are detached.
    """
    custom = getattr(model, "attack_loss_grad", None)
    if custom is not None:
        return custom(x, y, loss_fn)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = model(x)
        loss = loss_fn(out, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad, out.detach()
