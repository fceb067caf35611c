"""L_inf sign-gradient attacks: FGSM, IFGSM (the paper's) and PGD with random restarts.

All take a model returning logits or log-probabilities [B, C], images ``x`` [B, C, H, W] (float,
in [0, 1]) and labels ``y`` [B] (int64) on the model's device, maximize the cross-entropy, and
return adversarial images of x's shape, dtype and device, detached, within ``eps`` of x in L_inf
and inside [0, 1]. The model runs in eval mode (its train/eval flags are restored afterwards) and
``gradient`` ("surrogate", "exact" or None to leave it) sets the WNLL heads' gradient mode.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_generator, check_inputs, positive_float, positive_int, step_budget
from .losses import cross_entropy, loss_grad
from .modes import attack_mode
from .projected import ascent_steps, random_point


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    gradient: str | None = None,
) -> torch.Tensor:
    """Fast gradient sign method: ``clip_[0,1](x + eps * sign(grad_x loss))``."""
    check_inputs(model, x, y)
    eps = positive_float("eps", eps, allow_zero=True)
    x = x.detach()
    with attack_mode(model, gradient):
        _, grad, _ = loss_grad(model, x, y, cross_entropy)
    return (x + eps * grad.sign()).clamp(0, 1)


def _sign_steps(model, x, start, y, eps, alpha, steps):
    """``steps`` sign-gradient ascent steps of the cross-entropy of size ``alpha`` from ``start``, each
    projected onto the L_inf ball of radius ``eps`` around ``x`` intersected with the [0, 1] box."""
    return ascent_steps(model, x, start, y, eps=eps, alpha=alpha, steps=steps, loss_fn=cross_entropy, norm="linf")


def ifgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    *,
    gradient: str | None = None,
) -> torch.Tensor:
    """Iterative FGSM as in the paper: ``steps`` sign steps of size ``alpha`` from x itself (no random
    start), each followed by projection onto the L_inf ball of radius ``eps`` and the [0, 1] box."""
    check_inputs(model, x, y)
    eps, alpha, steps = step_budget(eps, alpha, steps)
    x = x.detach()
    with attack_mode(model, gradient):
        return _sign_steps(model, x, x, y, eps, alpha, steps)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    *,
    gradient: str | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.): IFGSM from a uniform random start in the eps-ball.

    With ``restarts > 1`` it runs that many times and keeps, per example, the worst case: a
    misclassified result over a correctly classified one, then the higher cross-entropy. (For a
    model whose outputs couple the examples of a batch, such as a WNLL head, the combined batch is
    judged example by example from each restart's own batch.) ``generator`` (on x's device) makes
    the random starts reproducible.
    """
    check_inputs(model, x, y)
    eps, alpha, steps = step_budget(eps, alpha, steps)
    restarts = positive_int("restarts", restarts)
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs random_start=True (without it every restart is identical)")
    check_generator(generator, x)
    x = x.detach()
    with attack_mode(model, gradient):
        best = best_fooled = best_loss = None
        for _ in range(restarts):
            start = random_point(x, eps, "linf", generator) if random_start else x
            adv = _sign_steps(model, x, start, y, eps, alpha, steps)
            if restarts == 1:
                return adv
            with torch.no_grad():
                out = model(adv)
                loss = cross_entropy(out, y)
                fooled = out.argmax(1) != y
            if best is None:
                best, best_fooled, best_loss = adv, fooled, loss
                continue
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), adv, best)
            best_fooled = best_fooled | fooled
            best_loss = torch.where(better, loss, best_loss)
        return best
