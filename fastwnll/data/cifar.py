"""CIFAR-10 in torchvision's "python version" layout: ``<root>/cifar-10-batches-py/{data_batch_1..5,
test_batch}``, each a pickled dict with ``data`` ``[N, 3072]`` uint8 (channel-major 3x32x32 rows) and
``labels`` (N ints). Pickles can run code when loaded: only point this at files you trust."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .arrays import as_images, as_labels
from .paths import data_root

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` int64."""
    with open(path, "rb") as f:
        try:
            entry = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"{path} is not a CIFAR-10 batch pickle: {error}") from None
    if not isinstance(entry, dict):
        raise ValueError(f"{path} must hold a dict with 'data' and 'labels', got {type(entry).__name__}")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path} must hold a dict with 'data' and 'labels', got keys {sorted(map(str, entry))}")
    data, labels = np.asarray(entry["data"]), np.asarray(entry["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be [N, 3072] uint8, got {list(data.shape)} {data.dtype}")
    return data.reshape(-1, 3, 32, 32), labels


def cifar_dirs(root: Path) -> list[Path]:
    """Directories searched under ``root``: ``root/cifar-10-batches-py``, then ``root`` itself."""
    return [root / FOLDER, root]


def _search(root: Path, split: str) -> Path | None:
    return next((d for d in cifar_dirs(root) if (d / BATCHES[split][0]).is_file()), None)


def load_cifar10(data_dir: str | os.PathLike | None, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 (50,000 train / 10,000 test).

    Args:
        data_dir: the torchvision root holding ``cifar-10-batches-py`` or that folder itself
            (default: ``$FASTWNLL_DATA_DIR`` or ``./data``).
        split: "train" (data_batch_1..5, concatenated in order) or "test" (test_batch).
        download: fetch the archive with ``torchvision.datasets.CIFAR10(root, download=True)`` when the
            files are not found (needs a network).
    Returns:
        ``(x [N, 3, 32, 32] float32 in [0, 1], y [N] int64)`` on the CPU.
    Raises:
        FileNotFoundError: missing files (the message says where it looked and how to get them).
    """
    root = data_root(data_dir)
    directory = _search(root, split)
    if directory is None and download:
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
        directory = _search(root, split)
    if directory is None:
        searched = ", ".join(str(d.resolve()) for d in cifar_dirs(root))
        raise FileNotFoundError(
            f"CIFAR-10 {split} split not found: no {BATCHES[split][0]} in {searched}. Pass data_dir=<root> "
            f"(torchvision's layout <root>/{FOLDER}, or that folder itself), or download=True (CLI: "
            f"--download) to fetch it with torchvision.datasets.CIFAR10, or extract {CIFAR_URL} there"
        )
    missing = [name for name in BATCHES[split] if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 {split} split in {directory} is incomplete: missing {', '.join(missing)}")
    parts = [read_batch(directory / name) for name in BATCHES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    what = f"CIFAR-10 {split} split in {directory}"
    return as_images(images, f"images of {what}"), as_labels(labels, len(images), f"labels of {what}")
