"""Datasets as tensors: the registry of datasets (:data:`DATASET_SPECS`: loader, files, training
defaults, the paper's attack budget), :func:`load_dataset` (digits, MNIST, the fixed MNIST-10k
split, CIFAR-10, a user's ``.npz``) and the IDX reader of the MNIST files (:func:`read_idx`)."""

from __future__ import annotations

from .datasets import DATASET_SPECS, DATASETS, DatasetSpec, PaperBudget, dataset_spec, load_dataset
from .idx import read_idx

__all__ = ["DATASETS", "DATASET_SPECS", "DatasetSpec", "PaperBudget", "dataset_spec", "load_dataset", "read_idx"]
