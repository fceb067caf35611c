"""Argument checks shared by the modules of ``fastwnll.nn``: each value is checked once, where it
enters a public function or a head's constructor."""

from __future__ import annotations

import torch


def positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_labels(name: str, labels, n: int | None = None) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 class labels, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(f"{name} must hold int64 class labels, got {labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must have shape [rows], got {tuple(labels.shape)}")
    if n is not None and labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} labels but there are {n} feature rows")
    return labels
