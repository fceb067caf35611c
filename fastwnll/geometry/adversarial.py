"""Adversarial versions of the test images under an evaluation protocol, the worst case included.

Protocols (:mod:`fastwnll.evaluation.protocol`): ``paper`` attacks a WNLL head through its linear
surrogate gradient, ``adaptive`` through the exact gradient of the interpolation, and
``worst-case`` (the default) crafts both and keeps, per image, the example that fools the model;
when both or neither do, the one with the larger loss (cross-entropy of the true class). An attack
runs under the protocols it declares (the attacks designed against a WNLL head only under the
adaptive one, and only on WNLL heads). A network read through a linear head has one attack whatever
the protocol (``protocol`` "single").
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .upstream import PROTOCOLS, Evaluator, Target, attack_mode, attack_spec, resolve, uses_wnll

PROTOCOL_CHOICES = ("worst-case", *PROTOCOLS)


@torch.no_grad()
def outcomes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct [N] bool, loss [N] float64)`` of ``model`` on images ``x`` ``[N, C, H, W]`` with labels
    ``y`` ``[N]`` (on the model's device): whether the prediction is right, and the cross-entropy of
    the true class (of the logits, or of a WNLL head's log-probabilities). Eval mode, ``batch_size``
    rows per forward (a WNLL head interpolates the rows of a forward together, as the attacks did)."""
    correct, loss = [], []
    with attack_mode(model):
        for start in range(0, x.shape[0], batch_size):
            out = model(x[start : start + batch_size]).to(torch.float64)
            labels = y[start : start + batch_size]
            correct.append(out.argmax(1) == labels)
            loss.append(F.cross_entropy(out, labels, reduction="none"))
    return torch.cat(correct), torch.cat(loss)


def prefer_second(
    correct_first: torch.Tensor, loss_first: torch.Tensor, correct_second: torch.Tensor, loss_second: torch.Tensor
) -> torch.Tensor:
    """Bool ``[N]``: where the worst case takes the second attack's example rather than the first's.

    An example that fools the model (``correct`` False) beats one that does not; between two that
    both fool it or both fail, the larger loss wins; an exact tie keeps the first.
    """
    fools_first, fools_second = ~correct_first, ~correct_second
    return (fools_second & ~fools_first) | ((fools_second == fools_first) & (loss_second > loss_first))


def adversarial_examples(
    evaluator: Evaluator,
    target: Target,
    attack: str,
    eps: float | None,
    protocol: str,
    *,
    steps: int | None = None,
    alpha: float | None = None,
    restarts: int = 1,
) -> tuple[torch.Tensor, dict]:
    """Adversarial versions of ``evaluator.x`` against ``target`` under ``protocol`` (see the module
    docstring), crafted by :meth:`fastwnll.evaluation.Evaluator.craft` in its batches.

    Returns ``(x_adv [N, C, H, W] on the evaluator's device, info)``; ``info`` has ``protocol``
    ("paper", "adaptive", "worst-case" or "single"), ``attacks`` (one description per attack run),
    ``budget`` (the attack budget in words), ``craft_time_s`` and, for the worst case, ``chosen``
    (how many images took each protocol's example).
    """
    if protocol not in PROTOCOL_CHOICES:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOL_CHOICES)}")
    spec = attack_spec(attack)
    if spec.wnll and not uses_wnll(target.model):
        raise ValueError(
            f"{target.name}: attack {attack!r} is designed against a WNLL head, and this network is "
            "read through a linear head"
        )
    if not uses_wnll(target.model):
        names = ["paper"]
    elif protocol == "worst-case":
        names = [p for p in PROTOCOLS if p in spec.protocols]
    else:
        names = [protocol]
    # random restarts are a setting of the attacks that have them (pgd); asking another is an error there
    settings = None if restarts == 1 else {"restarts": restarts}
    started = time.perf_counter()
    crafted, budget = [], None
    for name in names:
        setting = resolve(name, target.model, "none")
        x_adv, info = evaluator.craft(target, attack, eps, setting, steps=steps, alpha=alpha, settings=settings)
        crafted.append((evaluator.restrict(x_adv, attack, eps), f"{info['budget']}; {setting.describe()}"))
        budget = info["budget"]
    result = {
        "protocol": protocol if uses_wnll(target.model) else "single",
        "budget": budget,
        "attacks": [description for _, description in crafted],
    }
    x_adv = crafted[0][0]
    if len(crafted) == 2:
        first = outcomes(target.model, x_adv, evaluator.y, evaluator.batch_size)
        second = outcomes(target.model, crafted[1][0], evaluator.y, evaluator.batch_size)
        take = prefer_second(*first, *second)
        x_adv = torch.where(take.view(-1, *[1] * (x_adv.dim() - 1)), crafted[1][0], x_adv)
        result["chosen"] = {names[0]: int((~take).sum()), names[1]: int(take.sum())}
    result["craft_time_s"] = time.perf_counter() - started
    return x_adv, result
