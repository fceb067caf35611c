"""Attack budgets: the paper's defaults per dataset and the keyword arguments of each attack.

L_inf attacks (``fgsm``, ``ifgsm``, ``pgd``) take ``eps`` as the L_inf radius (pixels in [0, 1]).
IFGSM/PGD default to the paper's iteration count for the dataset (MNIST: 40; CIFAR-10: 10) with a
step that keeps the paper's step/radius ratio (MNIST 0.01/0.3, CIFAR-10 0.007/0.031), so at the
paper's radius they are exactly the paper's budgets (DESIGN 4.5-4.6); with fewer iterations the step
is at least ``eps / steps``, so that the iterations can reach the edge of the ball. ``cw_l2`` is unbounded (it
looks for the smallest L2 perturbation); its ``eps``, when given, is an L2 radius: an example
counts as robust when the attack fails or needs a larger L2 distance than ``eps``.
"""
from __future__ import annotations

import math
import numbers

from fastwnll.attacks import ATTACKS

LINF_ATTACKS = ("fgsm", "ifgsm", "pgd")
L2_ATTACKS = ("cw_l2",)
# The seed code's CW-L2: constant 10, kappa 0, 100 Adam iterations, one constant (no binary search).
CW_DEFAULTS = {"c": 10.0, "kappa": 0.0, "steps": 100, "lr": 0.01, "binary_search_steps": 1}
# Paper iteration counts and step/radius ratios for the L_inf attacks, by dataset.
ITERATIVE_DEFAULTS = {
    "digits": {"steps": 40, "ratio": 0.01 / 0.3},
    "mnist": {"steps": 40, "ratio": 0.01 / 0.3},
    "mnist10k": {"steps": 40, "ratio": 0.01 / 0.3},
    "cifar10": {"steps": 10, "ratio": 0.007 / 0.031},
}


def check_attack(name: str) -> str:
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return name


def check_eps(eps, name: str = "eps"):
    """``eps`` as a float >= 0 (None passes through)."""
    if eps is None:
        return None
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")
    if eps < 0:
        raise ValueError(f"{name} must be >= 0, got {eps}")
    return float(eps)


def norm_of(attack: str) -> str:
    """``"linf"`` or ``"l2"``: the norm in which the attack's ``eps`` is measured."""
    return "l2" if check_attack(attack) in L2_ATTACKS else "linf"


def attack_kwargs(attack: str, eps: float | None, *, dataset: str, steps: int | None = None,
                  alpha: float | None = None, restarts: int = 1, cw: dict | None = None) -> dict:
    """Keyword arguments for ``fastwnll.attacks.get_attack(attack, **kwargs)``.

    ``eps`` is required for the L_inf attacks; ``steps``/``alpha`` override the dataset's defaults
    (a dataset without defaults, such as ``npz``, needs both for ifgsm/pgd). ``cw`` overrides any of
    :data:`CW_DEFAULTS` for ``cw_l2``, whose ``eps`` (an L2 radius) is applied after the attack.
    """
    check_attack(attack)
    eps = check_eps(eps)
    if attack in L2_ATTACKS:
        settings = dict(CW_DEFAULTS)
        unknown = sorted(set(cw or {}) - set(CW_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown CW-L2 settings {unknown}; allowed: {sorted(CW_DEFAULTS)}")
        settings.update(cw or {})
        if steps is not None:
            settings["steps"] = steps
        return settings
    if eps is None:
        raise ValueError(f"attack {attack!r} needs an L_inf radius eps")
    if attack == "fgsm":
        return {"eps": eps}
    defaults = ITERATIVE_DEFAULTS.get(dataset)
    if (steps is None or alpha is None) and defaults is None:
        raise ValueError(f"dataset {dataset!r} has no default attack budget: pass steps and alpha for {attack}")
    steps = defaults["steps"] if steps is None else steps
    alpha = max(defaults["ratio"], 1 / steps) * eps if alpha is None else alpha
    kwargs = {"eps": eps, "alpha": alpha, "steps": steps}
    if attack == "pgd":
        kwargs["restarts"] = restarts
    return kwargs


def describe(attack: str, eps: float | None, kwargs: dict) -> str:
    """A short human-readable description of one attack budget."""
    if attack == "fgsm":
        return f"FGSM, L_inf eps {eps:g}"
    if attack in ("ifgsm", "pgd"):
        label = "IFGSM" if attack == "ifgsm" else f"PGD ({kwargs['restarts']} restart(s), random start)"
        return f"{label}, L_inf eps {eps:g}, {kwargs['steps']} steps of {kwargs['alpha']:.4g}"
    radius = "unbounded" if eps is None else f"L2 radius {eps:g}"
    return (f"CW-L2 ({radius}), c {kwargs['c']:g}, kappa {kwargs['kappa']:g}, {kwargs['steps']} Adam steps of "
            f"lr {kwargs['lr']:g}, {kwargs['binary_search_steps']} binary-search round(s)")
