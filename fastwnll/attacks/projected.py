"""Projected gradient ascent in an L_inf or L2 ball intersected with the [0, 1] box: the step loop
shared by IFGSM, PGD and the WNLL-specific attacks.

All functions take images ``x`` [B, C, H, W] (float, in [0, 1]) on the model's device and return
tensors of x's shape, dtype and device.
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import LossFn, loss_grad

STEP_NORMS = ("linf", "l2")
# Per-example gradient norms below this are treated as zero by the L2 step (no division by zero).
_TINY = 1e-12


def check_step_norm(norm: str) -> str:
    if norm not in STEP_NORMS:
        raise ValueError(f"norm must be one of {', '.join(STEP_NORMS)}, got {norm!r}")
    return norm


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` [B] reshaped to broadcast against ``like`` [B, ...]."""
    return values.view(-1, *[1] * (like.dim() - 1))


def project(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``adv`` projected onto the ``norm`` ball of radius ``eps`` around ``x``, then clamped to [0, 1].

    Clamping after the projection keeps the point in the ball: every coordinate moves towards x's,
    which lies in [0, 1]."""
    if norm == "linf":
        return torch.min(torch.max(adv, (x - eps).clamp(min=0)), (x + eps).clamp(max=1))
    delta = adv - x
    length = delta.flatten(1).norm(dim=1)
    factor = torch.where(length > eps, eps / length.clamp_min(_TINY), torch.ones_like(length))
    return (x + delta * _per_example(factor, x)).clamp(0, 1)


def random_point(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random point of the ``norm`` ball of radius ``eps`` around ``x``, in [0, 1]: uniform per
    coordinate for L_inf; for L2 a uniformly random direction at a radius drawn uniformly in [0, eps]."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (x + (2 * noise - 1) * eps).clamp(0, 1)
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    radius = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device) * eps
    direction = direction / _per_example(direction.flatten(1).norm(dim=1).clamp_min(_TINY), x)
    return project(x + direction * _per_example(radius, x), x, eps, norm)


def ascent_steps(
    model: nn.Module,
    x: torch.Tensor,
    start: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    loss_fn: LossFn,
    norm: str = "linf",
) -> torch.Tensor:
    """``steps`` ascent steps on ``loss_fn(model(adv), y)`` from ``start``, each projected (:func:`project`).

    L_inf: ``adv + alpha * sign(grad)``; L2: ``adv + alpha * grad / ||grad||_2`` per example (an
    example with a zero gradient does not move). Gradients come from
    :func:`fastwnll.attacks.loss_grad`, so EOT-wrapped models average them."""
    check_step_norm(norm)
    adv = start
    for _ in range(steps):
        _, grad, _ = loss_grad(model, adv, y, loss_fn)
        if norm == "linf":
            step = grad.sign()
        else:
            length = grad.flatten(1).norm(dim=1)
            step = grad / _per_example(torch.where(length > _TINY, length, torch.ones_like(length)), grad)
        adv = project(adv + alpha * step, x, eps, norm)
    return adv
