"""Square and AutoAttack (Croce and Hein, 2020) through torchattacks: independent cross-checks.

fastwnll does not re-implement them: both call the torchattacks library, an optional dependency
(``pip install 'fastwnll[eval]'``); a clear ImportError names the extra when it is missing.

- :func:`square`: the Square attack, a score-based random search that never uses a gradient.
  It queries the model exactly as given: for a WNLL model, the interpolation against the template
  bank; behind TVM (the evaluation passes the defended model), a fresh random TVM per query, as
  deployed. EOT does not apply (it averages gradients, and Square uses none); a randomized model
  makes Square's accept/reject decisions noisy, which can only weaken it.
- :func:`autoattack`: AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square with 5,000
  queries, one restart each) as torchattacks implements it. Its gradient attacks differentiate
  the model as given, so ``gradient`` sets the WNLL heads' backward, and behind TVM the
  evaluation's BPDA + EOT target applies (an EOT model's forward is the mean probability over its
  samples, so APGD follows the gradient of that mean). torchattacks' AutoAttack has no randomness
  check of its own; fastwnll's evaluation diagnostics report a randomized model attacked without EOT.

Both take images ``x`` [B, C, H, W] (float, in [0, 1]) and labels ``y`` [B] (int64) on the model's
device, run the model in eval mode and return detached images within ``eps`` of x in L_inf and in
[0, 1]. torchattacks evaluates subsets of the batch (the examples not fooled yet); for a WNLL head
the rows of one forward pass are interpolated together, so its decisions are those of the model
on those subsets, and the evaluation re-judges the returned images in its own batches.
torchattacks seeds torch's global random generator; its state is restored afterwards, and the
attacks' own seed is drawn from ``generator`` (0 without one), so runs are reproducible.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_generator, check_inputs, positive_float, positive_int, require_library
from .modes import attack_mode

# The library both attacks call.
LIBRARY = "torchattacks"
# AutoAttack's standard version as torchattacks implements it (for the budget descriptions).
AUTOATTACK_STANDARD = "APGD-CE, APGD-T, FAB-T, Square 5000 queries"


def _seed(generator: torch.Generator | None) -> int:
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))


def _run(attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Call a torchattacks attack on ``x`` with the global random state restored afterwards and the
    model's parameters frozen meanwhile (some of its attacks call ``loss.backward()``, which would
    otherwise leave gradients in the parameters)."""
    attack.set_device(x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    parameters = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in parameters:
            p.requires_grad_(False)
        with torch.random.fork_rng(devices=devices):
            adv = attack(x, y)
    finally:
        for p in parameters:
            p.requires_grad_(True)
    return adv.detach().to(x.dtype)


def square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    n_queries: int = 5000,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchattacks' Square attack (L_inf, margin loss, one restart): at most ``n_queries`` queries per
    example of random square-shaped updates of the L_inf ball of radius ``eps``, the first covering
    a share ``p_init`` of the image (shrinking on Square's schedule). Gradient-free."""
    check_inputs(model, x, y)
    eps = positive_float("eps", eps, allow_zero=True)
    n_queries = positive_int("n_queries", n_queries)
    p_init = positive_float("p_init", p_init)
    if p_init > 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    check_generator(generator, x)
    torchattacks = require_library(LIBRARY, "Square")
    x = x.detach()
    with attack_mode(model), torch.no_grad():
        attack = torchattacks.Square(
            model,
            norm="Linf",
            eps=eps,
            n_queries=n_queries,
            p_init=p_init,
            n_restarts=1,
            loss="margin",
            seed=_seed(generator),
        )
        return _run(attack, model, x, y)


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    generator: torch.Generator | None = None,
    *,
    gradient: str | None = None,
) -> torch.Tensor:
    """torchattacks' AutoAttack, standard version, L_inf radius ``eps``: APGD-CE, then APGD-T, FAB-T
    and Square (5,000 queries) on the examples still classified correctly. ``gradient`` sets the WNLL
    heads' gradient mode for its gradient attacks ("surrogate", "exact" or None to leave it)."""
    check_inputs(model, x, y)
    eps = positive_float("eps", eps, allow_zero=True)
    check_generator(generator, x)
    torchattacks = require_library(LIBRARY, "AutoAttack")
    x = x.detach()
    with attack_mode(model, gradient):
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        attack = torchattacks.AutoAttack(
            model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=_seed(generator)
        )
        return _run(attack, model, x, y)
