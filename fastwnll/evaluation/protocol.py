"""Evaluation protocols: how the attacker treats WNLL heads and TVM.

``paper`` reproduces the published evaluation (docs/design.md, sections 4.3, 4.6 and 5): the gradient
of a WNLL head is the linear-layer surrogate (a straight-through estimator) and TVM is ignored by the
attacker (adversarial images are crafted on the undefended network; the defender applies TVM to them).

``adaptive`` is what the defence is worth against an attacker who knows it: the exact gradient
through the WNLL interpolation (solver and graph weights) and BPDA through TVM with EOT over its
random masks (Athalye et al., 2018).

For a linear-head model without TVM both protocols are the same attack. Some attacks adjust the
setting to what they are (:meth:`AttackSetting.for_attack`): a gradient-free attack queries the
defended model as deployed (no BPDA, no EOT), and an attack designed against the WNLL head crafts
on its own stand-in for the head (no WNLL gradient mode).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

from torch import nn

from fastwnll.attacks.registry import PROTOCOLS, AttackSpec
from fastwnll.nn.head import GRADIENTS
from fastwnll.nn.network import uses_wnll

__all__ = ["DEFAULT_EOT", "PROTOCOLS", "AttackSetting", "resolve", "uses_wnll"]

# EOT samples per gradient in the adaptive protocol when not given.
DEFAULT_EOT = 8


@dataclass(frozen=True)
class AttackSetting:
    """How one attack is run: ``gradient`` for WNLL heads (None for linear heads and for attacks that
    take no WNLL gradient mode), ``tvm_attack`` ("ignored", "bpda", "deployed" for a gradient-free
    attack querying the defended model, or None without TVM) and ``eot`` samples per gradient."""

    protocol: str
    gradient: str | None
    tvm_attack: str | None
    eot: int

    def describe(self) -> str:
        parts = [f"protocol {self.protocol}"]
        if self.gradient is not None:
            parts.append(f"{self.gradient} WNLL gradient")
        if self.tvm_attack == "ignored":
            parts.append("TVM ignored by the attacker")
        elif self.tvm_attack == "bpda":
            parts.append("BPDA through TVM" + (f" + EOT over {self.eot} masks" if self.eot > 1 else ""))
        elif self.tvm_attack == "deployed":
            parts.append("queries the TVM-defended model as deployed")
        return ", ".join(parts)

    def for_attack(self, spec: AttackSpec) -> "AttackSetting":
        """This setting as ``spec``'s attack runs it: a gradient-free attack has no WNLL gradient mode
        and queries a TVM-defended model as deployed (``tvm_attack="deployed"``, no EOT: EOT averages
        gradients); an attack on a stand-in for the WNLL head (``spec.wnll``) has no gradient mode."""
        if not spec.gradient:
            return dataclasses.replace(
                self, gradient=None, eot=1, tvm_attack="deployed" if self.tvm_attack == "bpda" else self.tvm_attack
            )
        if spec.wnll:
            return dataclasses.replace(self, gradient=None)
        return self


def resolve(
    protocol: str, model: nn.Module, defense: str, *, gradient: str | None = None, eot: int | None = None
) -> AttackSetting:
    """The attack setting of ``protocol`` for ``model`` behind ``defense`` ("none" or "tvm").

    ``gradient`` overrides the protocol's choice for WNLL heads (an error for a model without WNLL
    heads in wnll mode); ``eot`` overrides the adaptive protocol's :data:`DEFAULT_EOT` (an error
    where there is nothing random to average: no TVM, or TVM ignored by the paper protocol).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if defense not in ("none", "tvm"):
        raise ValueError(f"unknown defence {defense!r}; choose one of none, tvm")
    wnll = uses_wnll(model)
    if gradient is not None:
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
        if not wnll:
            raise ValueError(f"gradient={gradient!r} applies to WNLL heads, but this model's output is a linear head")
    elif wnll:
        gradient = "surrogate" if protocol == "paper" else "exact"
    if eot is not None and (isinstance(eot, bool) or not isinstance(eot, numbers.Integral) or eot < 1):
        raise ValueError(f"eot must be an integer >= 1, got {eot!r}")
    if defense == "none":
        if eot is not None and eot > 1:
            raise ValueError(f"EOT ({eot} samples) needs a randomized defence (--defense tvm)")
        return AttackSetting(protocol, gradient, None, 1)
    if protocol == "paper":
        if eot is not None and eot > 1:
            raise ValueError(
                "the paper protocol ignores TVM in the attack, so EOT has nothing to average; use the adaptive protocol"
            )
        return AttackSetting(protocol, gradient, "ignored", 1)
    return AttackSetting(protocol, gradient, "bpda", DEFAULT_EOT if eot is None else int(eot))
