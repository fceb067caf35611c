"""Attack budgets in the evaluation: the registry's per-dataset defaults (``fastwnll.attacks.ATTACKS``),
with the two attack settings that the ``attack`` and ``report`` commands and grids expose: PGD's
random restarts and CW-L2's settings (see docs/design.md, sections 4.5-4.6 and 5)."""
from __future__ import annotations

from fastwnll.attacks.registry import CW_DEFAULTS, attack_spec

__all__ = ["CW_DEFAULTS", "attack_kwargs"]


def attack_kwargs(attack: str, eps: float | None, *, dataset: str, steps: int | None = None,
                  alpha: float | None = None, restarts: int = 1, cw: dict | None = None) -> dict:
    """Keyword arguments for ``fastwnll.attacks.get_attack(attack, **kwargs)``: the registry entry's
    :meth:`~fastwnll.attacks.AttackSpec.kwargs` with ``restarts`` for ``pgd`` and ``cw`` (overrides
    of :data:`CW_DEFAULTS`) for ``cw_l2``; other attacks ignore both.

    ``eps`` is required for the bounded attacks; ``steps``/``alpha`` override the dataset's defaults
    (a dataset without defaults, such as ``npz``, needs both for ifgsm/pgd). ``cw_l2``'s ``eps``
    (an L2 radius) is applied after the attack.
    """
    settings = {"pgd": {"restarts": restarts}, "cw_l2": cw or {}}.get(attack, {})
    return attack_spec(attack).kwargs(eps, dataset=dataset, steps=steps, alpha=alpha, settings=settings)
