"""Attack budgets in the evaluation: the registry's per-dataset defaults (``fastwnll.attacks.ATTACKS``)
with the overrides the ``attack`` and ``report`` commands and grids expose (see docs/design.md,
sections 4.5-4.6 and 5)."""

from __future__ import annotations

from fastwnll.attacks.registry import CW_DEFAULTS, attack_spec

__all__ = ["CW_DEFAULTS", "attack_kwargs"]


def attack_kwargs(
    attack: str,
    eps: float | None,
    *,
    dataset: str,
    steps: int | None = None,
    alpha: float | None = None,
    settings: dict | None = None,
) -> dict:
    """Keyword arguments for ``fastwnll.attacks.get_attack(attack, **kwargs)``: the registry entry's
    :meth:`~fastwnll.attacks.AttackSpec.kwargs` with ``settings`` overriding its own settings (such as
    PGD's ``restarts``, CW-L2's ``c``, Square's ``n_queries``; an unknown name is a ValueError).

    ``eps`` is required for the bounded attacks; ``steps``/``alpha`` override the dataset's defaults
    of the iterative attacks (a dataset without defaults, such as ``npz``, needs both). A minimum-norm
    attack's ``eps`` is applied after the attack.
    """
    return attack_spec(attack).kwargs(eps, dataset=dataset, steps=steps, alpha=alpha, settings=settings)
