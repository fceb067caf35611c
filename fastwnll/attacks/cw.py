"""Carlini-Wagner L2 attack (untargeted) with a per-example binary search over the constant c."""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_inputs, positive_float, positive_int
from .losses import cw_margin, logit_margin, loss_grad
from .modes import attack_mode

# x = (tanh(w) + 1) / 2; the start w0 = atanh((2x - 1) * _SHRINK) stays finite at x = 0 or 1.
_SHRINK = 1 - 1e-6


def cw_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    binary_search_steps: int = 5,
    abort_early: bool = True,
    *,
    gradient: str | None = None,
) -> torch.Tensor:
    """Carlini-Wagner L2 (untargeted): the smallest L2 perturbation found that fools the model.

    Minimizes ``||x' - x||_2^2 + c * max(Z_y(x') - max_{j != y} Z_j(x'), -kappa)`` over
    ``x' = (tanh(w) + 1) / 2`` with Adam (learning rate ``lr``, ``steps`` iterations) on ``w``,
    using the model output [B, C] as the logits Z. Each of ``binary_search_steps`` rounds restarts
    from x with a per-example constant: starting at ``c``, halved towards the last failure after a
    success, multiplied by 10 after a failure until a success brackets it. ``abort_early`` ends a
    round when the total objective has not decreased by 0.01 % over ``steps // 10`` iterations.

    An example counts as fooled when ``Z_y - max_{j != y} Z_j < -kappa``. Returns, per example,
    the fooled image with the smallest L2 distance over all rounds, and x itself for examples never
    fooled: [B, C, H, W], x's dtype and device, in [0, 1], detached. The model runs in eval mode;
    ``gradient`` sets the WNLL heads' gradient mode ("surrogate", "exact" or None).
    """
    check_inputs(model, x, y)
    c = positive_float("c", c)
    kappa = positive_float("kappa", kappa, allow_zero=True)
    steps = positive_int("steps", steps)
    lr = positive_float("lr", lr)
    binary_search_steps = positive_int("binary_search_steps", binary_search_steps)
    batch = x.shape[0]
    per_example = (batch,) + (1,) * (x.dim() - 1)
    x = x.detach()
    w0 = torch.atanh((2 * x - 1) * _SHRINK)
    const = torch.full((batch,), c, dtype=x.dtype, device=x.device)
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, math.inf)
    best_l2 = torch.full_like(const, math.inf)
    best = x.clone()
    with attack_mode(model, gradient):
        for _ in range(binary_search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=lr)
            succeeded = torch.zeros(batch, dtype=torch.bool, device=x.device)
            previous = math.inf
            weighted_margin = _weighted_margin(const, kappa)
            for step in range(steps):
                adv = (torch.tanh(w) + 1) / 2
                margin_term, grad_x, out = loss_grad(model, adv.detach(), y, weighted_margin)
                l2 = (adv.detach() - x).pow(2).flatten(1).sum(1)
                # d/dw of ||adv - x||^2 + sum_i c_i f_i, with the model's part linearized at adv:
                # the gradient of the margin term wrt adv is grad_x (EOT-averaged when the model asks for it).
                surrogate = (adv - x).pow(2).sum() + (grad_x * adv).sum()
                w.grad = torch.autograd.grad(surrogate, w)[0]
                optimizer.step()

                fooled = logit_margin(out, y) < -kappa
                improved = fooled & (l2 < best_l2)
                best_l2 = torch.where(improved, l2, best_l2)
                best = torch.where(improved.view(per_example), adv.detach(), best)
                succeeded |= fooled
                if abort_early and step % max(steps // 10, 1) == 0:
                    total = (l2.sum() + margin_term.sum()).item()
                    if total > previous * 0.9999:
                        break
                    previous = total
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
    return best.detach()


def _weighted_margin(const: torch.Tensor, kappa: float):
    """The loss ``const_i * cw_margin_i`` [B] for :func:`loss_grad`, with per-example constants [B]."""

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return const * cw_margin(out, y, kappa)

    return loss
