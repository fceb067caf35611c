"""The data of a run: its dataset's splits, and fixed random subsets that leave the run's random streams alone."""
from __future__ import annotations

import torch

from .config import TrainConfig


def load_split(config: TrainConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [N, C, H, W] float32 in [0, 1], y [N] int64)`` of ``split`` ("train" or "test") of the
    run's dataset (``config.dataset``, ``data_dir``, ``download``), on the CPU; an empty split is an error."""
    from fastwnll.data import load_dataset

    x, y = load_dataset(config.dataset, data_dir=config.data_dir, split=split, seed=config.seed,
                        **({"download": True} if config.download else {}))
    if x.shape[0] == 0:
        raise ValueError(f"the {split} split of {config.dataset!r} is empty")
    return x, y


def fixed_subset(n: int, size: int, seed: int) -> torch.Tensor:
    """A fixed random subset (``[min(n, size)]`` int64 indices) of ``range(n)``: the first ``size``
    entries of a permutation drawn from its own generator seeded with ``seed``, so that the run's
    random streams are untouched and a smaller ``size`` gives a prefix of a larger one."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]
