"""Wrappers that adapt a defended model to gradient-based attacks: BPDA and EOT."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .checks import positive_int
from .losses import LossFn


class _StraightThrough(torch.autograd.Function):
    """``cleaned`` in the forward (bit for bit), the identity in the backward: ``d out / d x = I``."""

    @staticmethod
    def forward(ctx, x, cleaned):
        return cleaned.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class BPDA(nn.Module):
    """Backward Pass Differentiable Approximation with the identity (Athalye et al., 2018).

    ``forward(x) = model(preprocess(x))`` exactly, but the backward treats ``preprocess`` as the
    identity, so ``dz/dx = I`` for ``z = preprocess(x)`` (not ``x + (z - x).detach()``, whose value
    differs from ``z`` by a rounding). Use it for non-differentiable input
    transformations such as TV minimization. ``preprocess`` maps [B, ...] to the same shape; it is
    run without gradient tracking. When it is an ``nn.Module`` it is registered as a submodule
    (so ``.eval()``, ``.to()`` and :func:`gradient_mode` reach it).
    """

    def __init__(self, preprocess: Callable[[torch.Tensor], torch.Tensor], model: nn.Module):
        super().__init__()
        if not callable(preprocess):
            raise TypeError(f"preprocess must be callable, got {type(preprocess).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.preprocess = preprocess
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            cleaned = self.preprocess(x.detach())
        if cleaned.shape != x.shape:
            raise ValueError(f"preprocess changed the shape from {tuple(x.shape)} to {tuple(cleaned.shape)}")
        return self.model(_StraightThrough.apply(x, cleaned))


class EOT(nn.Module):
    """Expectation over Transformation (Athalye et al., 2018) for a stochastic model.

    Choice: EOT averages the attack loss and its input gradient over ``samples`` independent
    forward passes. Attacks never call the model for gradients directly; they call
    :func:`fastwnll.attacks.loss_grad`, which defers to ``attack_loss_grad`` below when the model
    has one, so every attack is EOT-aware without a special case. (Averaging log-probabilities in
    the forward instead would not give the mean gradient: cross-entropy re-normalizes them.)

    ``forward(x)`` ([B, ...] -> [B, C]) returns the log of the mean predicted probability over
    ``samples`` passes, ``log(mean_n softmax(model(x)))``; attacks use it (and ``attack_loss_grad``'s
    output, computed the same way) to decide whether an example is misclassified. Put EOT outermost,
    e.g. ``EOT(BPDA(random_tvm, net), samples=10)``: each pass then draws fresh randomness.
    """

    def __init__(self, model: nn.Module, samples: int = 10):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.samples = positive_int("samples", samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(self.model(x), dim=1) for _ in range(self.samples)])
        return torch.logsumexp(log_probs, dim=0) - math.log(self.samples)

    def attack_loss_grad(self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn):
        """Mean over ``samples`` passes of the per-example loss [B] and of its gradient wrt ``x``.

        Also returns the log of the mean predicted probability [B, C] over the same passes.
        One pass is held in memory at a time. All results are detached.
        """
        loss_sum = grad_sum = None
        log_probs = []
        with torch.enable_grad():
            for _ in range(self.samples):
                xr = x.detach().requires_grad_(True)
                out = self.model(xr)
                loss = loss_fn(out, y)
                (grad,) = torch.autograd.grad(loss.sum(), xr)
                loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
                grad_sum = grad if grad_sum is None else grad_sum + grad
                log_probs.append(torch.log_softmax(out.detach(), dim=1))
        mean_log_prob = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(self.samples)
        return loss_sum / self.samples, grad_sum / self.samples, mean_log_prob
