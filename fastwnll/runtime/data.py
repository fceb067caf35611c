"""The data of a run: its dataset's splits, and fixed random subsets that leave the run's random streams alone."""

from __future__ import annotations

import torch

from .config import TrainConfig


def load_split(config: TrainConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [N, C, H, W] float32 in [0, 1], y [N] int64)`` of ``split`` ("train" or "test") of the
    run's dataset (``config.dataset``, ``data_dir``, ``download``), on the CPU; an empty split is an error."""
    from fastwnll.data import load_dataset

    x, y = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        split=split,
        seed=config.seed,
        **({"download": True} if config.download else {}),
    )
    if x.shape[0] == 0:
        raise ValueError(f"the {split} split of {config.dataset!r} is empty")
    return x, y


def fixed_subset(n: int, size: int, seed: int) -> torch.Tensor:
    """A fixed random subset (``[min(n, size)]`` int64 indices) of ``range(n)``: the first ``size``
    entries of a permutation drawn from its own generator seeded with ``seed``, so that the run's
    random streams are untouched and a smaller ``size`` gives a prefix of a larger one."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]


def template_rows(
    y: torch.Tensor, size: int | None, default: int, seed: int, num_classes: int, name: str = "templates"
) -> torch.Tensor:
    """The rows of a WNLL template bank drawn from the ``[N]`` int64 training labels ``y``: the fixed
    random subset (:func:`fixed_subset`) of ``size`` rows, or of ``min(default, N)`` when ``size`` is None.

    Raises ValueError, naming the option ``name``, when ``size`` exceeds ``N`` or when the bank
    lacks one of the classes ``0..num_classes-1`` (the WNLL head could never predict it).
    """
    n = y.shape[0]
    if size is None:
        size = min(default, n)
    elif size > n:
        raise ValueError(
            f"{name}={size} (--{name.replace('_', '-')}) exceeds the {n} training images: pass at most {n}"
        )
    rows = fixed_subset(n, size, seed)
    missing = sorted(set(range(num_classes)) - set(torch.unique(y[rows]).tolist()))
    if missing:
        raise ValueError(
            f"a bank of {size} templates ({name}) lacks the class(es) {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}: the WNLL head could never predict them; "
            f"raise {name} (--{name.replace('_', '-')})"
        )
    return rows
