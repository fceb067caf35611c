"""Attacks by name, each entry self-describing: ``get_attack("pgd", eps=0.3, alpha=0.01, steps=40)(model, x, y)``.

An entry (:class:`AttackSpec`) says everything the evaluation, the command line, the reports and the
tests need to know about an attack: its function, its label, the norm of its budget, whether it is
a minimum-norm attack (its radius applied after crafting) or bounded while crafting, whether it
needs the model's input gradient, whether it targets a WNLL head with a stand-in of its own, the
evaluation protocols it runs under, its own settings with their defaults, whether its steps and
step size default to the dataset's paper budget, and the optional library it calls. Adding an
attack is one entry in :data:`ATTACKS`; the tests enumerate the registry.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

import torch

from fastwnll.data import dataset_spec

from .autoattack import AUTOATTACK_STANDARD, LIBRARY, autoattack, square
from .checks import check_eps, require_library
from .cw import cw_l2
from .linf import fgsm, ifgsm, pgd
from .wnll import wnll_margin, wnll_margin_l2, wnll_smooth

Attack = Callable[..., torch.Tensor]

# The norms an attack budget is measured in, with their names in messages and tables.
NORMS = {"linf": "L_inf", "l2": "L2"}
# The evaluation protocols (docs/design.md, section 5): "paper" (WNLL surrogate gradient, TVM ignored by
# the attacker) and "adaptive" (exact WNLL gradient, BPDA + EOT through TVM).
PROTOCOLS = ("paper", "adaptive")


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the registry. Calling the entry calls the attack: ``spec(model, x, y, **kwargs)``.

    Attributes:
        name: the name ``get_attack``, the CLI and the reports use.
        function: ``function(model, x, y, **kwargs) -> x_adv`` (x [B, C, H, W] in [0, 1], y [B] int64).
        label: the name in tables, plots and budget descriptions ("IFGSM").
        norm: "linf" or "l2": the norm its radius ``eps`` is measured in.
        minimum_norm: True for an attack that looks for the smallest perturbation (crafted without a
            radius; an example counts as robust when it needs more than ``eps``); False when ``eps``
            bounds the attack while crafting.
        gradient: uses the model's input gradient (and then, unless ``wnll``, takes ``gradient=`` for
            WNLL heads' surrogate or exact backward); False for a gradient-free attack, which queries
            a defended model as deployed (no BPDA, no EOT).
        wnll: designed against a WNLL head (``fastwnll.attacks.wnll``): it needs a model whose output
            is a WNLL head and crafts on a stand-in for the head built from its template bank, so
            the heads' gradient mode does not apply (it takes no ``gradient=``). Grids skip it for
            models without a WNLL head.
        protocols: the evaluation protocols (:data:`PROTOCOLS`) it runs under.
        single_step: one gradient step (FGSM): weaker than the iterative attacks by design, so the
            evaluation's masking check does not flag it as a sign of gradient masking.
        iterative: takes ``steps`` and ``alpha``, which default to the dataset's paper budget
            (``fastwnll.data.PaperBudget``: its step count and step/radius ratio).
        settings: its other keyword arguments with their defaults, which a caller may override.
        describe_budget: ``describe_budget(eps, kwargs) -> str`` after the label, e.g. "L_inf eps 0.3, ...".
        requires: the optional library it calls (installed with the ``eval`` extra), or None.
    """

    name: str
    function: Attack
    label: str
    norm: str
    describe_budget: Callable[[float | None, dict], str]
    minimum_norm: bool = False
    gradient: bool = True
    wnll: bool = False
    protocols: tuple[str, ...] = PROTOCOLS
    single_step: bool = False
    iterative: bool = False
    settings: Mapping[str, object] = field(default_factory=dict)
    requires: str | None = None

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.function(model, x, y, **kwargs)

    @property
    def takes_gradient_mode(self) -> bool:
        """True when the attack takes ``gradient=`` (the WNLL heads' backward while it crafts)."""
        return self.gradient and not self.wnll

    def check_available(self) -> None:
        """ImportError naming the library and the extra to install when the attack's library is missing."""
        if self.requires is not None:
            require_library(self.requires, self.label)

    @property
    def takes_generator(self) -> bool:
        """True when the attack draws random numbers from a ``generator`` argument (reproducible starts)."""
        return "generator" in inspect.signature(self.function).parameters

    def kwargs(
        self,
        eps: float | None,
        *,
        dataset: str,
        steps: int | None = None,
        alpha: float | None = None,
        settings: Mapping | None = None,
    ) -> dict:
        """Keyword arguments of one run of the attack: its budget and settings.

        ``eps`` is the radius (None or a number >= 0); a bounded attack needs it, a minimum-norm attack
        does not take it (the radius is applied afterwards). For an iterative attack ``steps`` and
        ``alpha`` default to ``dataset``'s paper budget: its step count, and a step of
        ``max(ratio, 1 / steps) * eps`` (at least ``eps / steps``, so that the iterations can reach
        the edge of the ball); a dataset without a budget (``npz``) needs both. For a minimum-norm
        attack ``steps`` overrides its own ``steps`` setting. ``settings`` overrides :attr:`settings`
        (unknown names are an error). Raises ValueError naming the problem.
        """
        eps = check_eps(eps)
        values = dict(self.settings)
        unknown = sorted(set(settings or {}) - set(values))
        if unknown:
            raise ValueError(f"unknown {self.label} settings {unknown}; allowed: {sorted(values)}")
        values.update(settings or {})
        if self.minimum_norm:
            if steps is not None:
                values["steps"] = steps
            return values
        if eps is None:
            raise ValueError(f"attack {self.name!r} needs an {NORMS[self.norm]} radius eps")
        if not self.iterative:
            return {"eps": eps, **values}
        if steps is None or alpha is None:
            budget = dataset_spec(dataset).budget
            if budget is None:
                raise ValueError(
                    f"dataset {dataset!r} has no default attack budget: pass steps and alpha for {self.name}"
                )
            steps = budget.steps if steps is None else steps
            alpha = max(budget.ratio, 1 / steps) * eps if alpha is None else alpha
        return {"eps": eps, "alpha": alpha, "steps": steps, **values}

    def describe(self, eps: float | None, kwargs: dict) -> str:
        """A short human-readable description of one budget (``kwargs`` from :meth:`kwargs`)."""
        return f"{self.label}{self.describe_budget(eps, kwargs)}"


def _radius(norm: str):
    def describe(eps, kwargs):
        return f", {NORMS[norm]} eps {eps:g}"

    return describe


def _sign_steps(eps, kwargs):
    return f", L_inf eps {eps:g}, {kwargs['steps']} steps of {kwargs['alpha']:.4g}"


def _pgd_budget(eps, kwargs):
    return f" ({kwargs['restarts']} restart(s), random start)" + _sign_steps(eps, kwargs)


def _cw_budget(eps, kwargs):
    radius = "unbounded" if eps is None else f"L2 radius {eps:g}"
    return (
        f" ({radius}), c {kwargs['c']:g}, kappa {kwargs['kappa']:g}, {kwargs['steps']} Adam steps of "
        f"lr {kwargs['lr']:g}, {kwargs['binary_search_steps']} binary-search round(s)"
    )


def _random_start(kwargs):
    return ", random start" if kwargs["random_start"] else ""


def _templates(kwargs):
    neighbours = "the head's k" if kwargs["neighbours"] is None else kwargs["neighbours"]
    return f", margin over {neighbours} nearest templates per class"


def _margin_budget(eps, kwargs):
    return _sign_steps(eps, kwargs) + _random_start(kwargs) + _templates(kwargs)


def _margin_l2_budget(eps, kwargs):
    return (
        f", L2 eps {eps:g}, {kwargs['steps']} steps of L2 length {kwargs['alpha']:.4g}"
        + _random_start(kwargs)
        + _templates(kwargs)
    )


def _smooth_budget(eps, kwargs):
    k = "4 x the head's" if kwargs["k"] is None else kwargs["k"]
    k_sigma = "k + 1" if kwargs["k_sigma"] is None else kwargs["k_sigma"]
    return _sign_steps(eps, kwargs) + _random_start(kwargs) + f", softened graph k {k}, k_sigma {k_sigma}"


def _square_budget(eps, kwargs):
    return f" ({LIBRARY}), L_inf eps {eps:g}, {kwargs['n_queries']} queries, p_init {kwargs['p_init']:g}"


def _autoattack_budget(eps, kwargs):
    return f" standard ({LIBRARY}: {AUTOATTACK_STANDARD}), L_inf eps {eps:g}"


# The seed code's CW-L2: constant 10, kappa 0, 100 Adam iterations, one constant (no binary search).
CW_DEFAULTS = MappingProxyType({"c": 10.0, "kappa": 0.0, "steps": 100, "lr": 0.01, "binary_search_steps": 1})

ATTACKS: Mapping[str, AttackSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            AttackSpec("fgsm", fgsm, "FGSM", "linf", _radius("linf"), single_step=True),
            AttackSpec("ifgsm", ifgsm, "IFGSM", "linf", _sign_steps, iterative=True),
            AttackSpec("pgd", pgd, "PGD", "linf", _pgd_budget, iterative=True, settings={"restarts": 1}),
            AttackSpec("cw_l2", cw_l2, "CW-L2", "l2", _cw_budget, minimum_norm=True, settings=CW_DEFAULTS),
            AttackSpec(
                "wnll_margin",
                wnll_margin,
                "WNLL-margin",
                "linf",
                _margin_budget,
                wnll=True,
                protocols=("adaptive",),
                iterative=True,
                settings={"neighbours": None, "random_start": False},
            ),
            AttackSpec(
                "wnll_margin_l2",
                wnll_margin_l2,
                "WNLL-margin-L2",
                "l2",
                _margin_l2_budget,
                wnll=True,
                protocols=("adaptive",),
                iterative=True,
                settings={"neighbours": None, "random_start": False},
            ),
            AttackSpec(
                "wnll_smooth",
                wnll_smooth,
                "WNLL-smooth",
                "linf",
                _smooth_budget,
                wnll=True,
                protocols=("adaptive",),
                iterative=True,
                settings={"k": None, "k_sigma": None, "random_start": False},
            ),
            AttackSpec(
                "square",
                square,
                "Square",
                "linf",
                _square_budget,
                gradient=False,
                settings={"n_queries": 5000, "p_init": 0.8},
                requires=LIBRARY,
            ),
            AttackSpec("autoattack", autoattack, "AutoAttack", "linf", _autoattack_budget, requires=LIBRARY),
        )
    }
)


def attack_spec(name: str) -> AttackSpec:
    """The registry entry of attack ``name``; ValueError listing the choices for an unknown one."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return ATTACKS[name]


def get_attack(name: str, **kwargs) -> Attack:
    """The attack ``name`` (one of :data:`ATTACKS`) with ``kwargs`` bound, called as ``attack(model, x, y)``.

    Raises ValueError for an unknown name (listing the choices) and TypeError for keyword arguments
    the attack does not take; values are checked when the attack runs.
    """
    attack = attack_spec(name).function
    try:
        inspect.signature(attack).bind_partial(None, None, None, **kwargs)
    except TypeError as error:
        raise TypeError(f"bad arguments for attack {name!r}: {error}") from None
    return functools.partial(attack, **kwargs)
