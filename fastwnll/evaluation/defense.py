"""Defended models: TV minimization (TVM) in front of a classifier, and what an attacker differentiates.

The defended model the defender runs is ``BPDA(TVMDefense(...), model)``: its forward pass is
``model(tvm(x))`` exactly; its backward treats TVM as the identity (BPDA, Athalye et al. 2018), which
only matters to an attacker. For the adaptive attack the same composition is wrapped in
:class:`fastwnll.attacks.EOT` so every attack gradient is averaged over fresh TVM masks. The attacker
and the defender use separate TVM instances with separate random streams: the attacker never sees
the masks the defender draws.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from fastwnll.attacks import BPDA, EOT
from fastwnll.nn.tvm import TVM
from fastwnll.tv.denoise import DEFAULT_ITERS, DEFAULT_TOL

DEFENSES = ("none", "tvm")
# Guo et al.'s TVM settings (docs/design.md, section 3): drop rate 0.5, TV weight 0.03; the library's
# iteration budget and stopping tolerance.
TVM_DEFAULTS = {"drop_rate": 0.5, "lam": 0.03, "iters": DEFAULT_ITERS, "tol": DEFAULT_TOL}


class TVMDefense(TVM):
    """Random masked TV minimization of a batch, used as a preprocessing step: :class:`fastwnll.nn.TVM`
    with a seeded generator, no gradient and the output clamped to [0, 1].

    ``forward(x)``: ``x`` [B, C, H, W] float in [0, 1] (CPU or CUDA) -> ``fastwnll.tvm(x)`` with a fresh
    keep-mask per call (each entry kept with probability ``1 - drop_rate``), clamped to [0, 1]; same
    shape, dtype and device, no gradient (wrap it in ``BPDA`` to attack through it). The masks come
    from the module's generator seeded with ``seed`` (one per device), so a run is reproducible and two
    instances with different seeds draw independent masks.
    """

    def __init__(
        self,
        drop_rate: float = TVM_DEFAULTS["drop_rate"],
        lam: float = TVM_DEFAULTS["lam"],
        iters: int = TVM_DEFAULTS["iters"],
        seed: int = 0,
        tol: float | None = TVM_DEFAULTS["tol"],
    ):
        if seed is None:
            raise ValueError("TVM seed must be an integer >= 0, got None")
        super().__init__(drop_rate, lam, iters, tol=tol, seed=seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x.detach()).clamp(0, 1)


def make_tvm(settings: dict | None = None, *, seed: int = 0) -> TVMDefense:
    """A :class:`TVMDefense` from a dict with any of ``drop_rate``, ``lam``, ``iters``, ``tol`` (others are
    an error)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(TVM_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown TVM settings {unknown}; allowed: {sorted(TVM_DEFAULTS)}")
    return TVMDefense(**{**TVM_DEFAULTS, **settings}, seed=seed)


def check_defense(defense: str) -> str:
    if defense not in DEFENSES:
        raise ValueError(f"unknown defence {defense!r}; choose one of {', '.join(DEFENSES)}")
    return defense


def defended(model: nn.Module, defense: str, tvm: TVMDefense | None = None) -> nn.Module:
    """The model the defender evaluates: ``model`` itself (``"none"``) or ``BPDA(tvm, model)`` (``"tvm"``),
    whose forward is ``model(tvm(x))``. ``tvm`` is required for ``"tvm"``."""
    if check_defense(defense) == "none":
        return model
    if not isinstance(tvm, TVMDefense):
        raise TypeError("defence 'tvm' needs a TVMDefense instance")
    return BPDA(tvm, model)


def attack_target(
    model: nn.Module, defense: str, tvm_attack: str, eot: int = 1, tvm: TVMDefense | None = None
) -> nn.Module:
    """The model whose gradients an attacker uses against ``defended(model, defense)``.

    ``tvm_attack``: ``"ignored"`` (the attacker differentiates the undefended model; the defender
    applies TVM afterwards: the paper's grey-box setting), ``"bpda"`` (BPDA through the attacker's
    own TVM instance ``tvm``, averaged over ``eot`` fresh masks per gradient with EOT when
    ``eot > 1``) or ``"deployed"`` (for a gradient-free attack: the defended model with the
    attacker's own TVM instance, one fresh mask per query, ``eot`` must be 1). With
    ``defense="none"`` the target is ``model`` and ``tvm_attack`` must be None.
    """
    if check_defense(defense) == "none":
        if tvm_attack is not None:
            raise ValueError(f"tvm_attack={tvm_attack!r} needs defence 'tvm'")
        if eot != 1:
            raise ValueError(
                f"EOT ({eot} samples) needs a randomized defence (defence 'tvm'); with no defence every "
                "sample would give the same gradient"
            )
        return model
    if tvm_attack == "ignored":
        if eot != 1:
            raise ValueError(
                "EOT has nothing to average when the attack ignores TVM (paper protocol); use the "
                "adaptive protocol (BPDA) for EOT"
            )
        return model
    if tvm_attack == "deployed":
        if eot != 1:
            raise ValueError("EOT averages gradients; a gradient-free attack queries the deployed model (eot 1)")
        return defended(model, "tvm", tvm)
    if tvm_attack != "bpda":
        raise ValueError(f"tvm_attack must be 'ignored', 'bpda' or 'deployed' for defence 'tvm', got {tvm_attack!r}")
    if isinstance(eot, bool) or not isinstance(eot, numbers.Integral) or eot < 1:
        raise ValueError(f"eot must be an integer >= 1, got {eot!r}")
    target = defended(model, "tvm", tvm)
    return EOT(target, samples=int(eot)) if eot > 1 else target
