"""Datasets as tensors: :func:`load_dataset` (digits, MNIST, the fixed MNIST-10k split, CIFAR-10, a
user's ``.npz``) and the IDX reader of the MNIST files (:func:`read_idx`)."""
from __future__ import annotations

from .datasets import DATASETS, load_dataset
from .idx import read_idx

__all__ = ["DATASETS", "load_dataset", "read_idx"]
