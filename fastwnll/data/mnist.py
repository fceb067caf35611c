"""MNIST in torchvision's raw layout (``<root>/MNIST/raw/*-ubyte[.gz]``) and the fixed 8,000/2,000
split of the real 10k MNIST test set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .arrays import as_images, as_labels
from .idx import read_idx
from .paths import DATA_DIR_ENV, data_root
from .splits import fixed_split

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists first; None if neither does."""
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def read_pair(directory: Path, images_stem: str, labels_stem: str) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[N, H, W]`` uint8 and labels ``[N]`` of one IDX file pair in ``directory``."""
    images_path, labels_path = find_file(directory, images_stem), find_file(directory, labels_stem)
    if labels_path is None:
        raise FileNotFoundError(f"found {images_path} but not its labels {labels_stem}[.gz] in {directory}")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path} must hold [N, H, W] uint8 images, got {list(images.shape)} {images.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path} must hold {images.shape[0]} labels (one per image of {images_path.name}), "
            f"got shape {list(labels.shape)}"
        )
    return images, labels


def _search(dirs: list[Path], stem: str) -> Path | None:
    return next((d for d in dirs if find_file(d, stem) is not None), None)


def mnist_dirs(root: Path) -> list[Path]:
    """Directories searched for the MNIST files under ``root``: torchvision's ``root/MNIST/raw``,
    then ``root/raw`` and ``root`` itself (``root`` may point straight at the raw folder)."""
    return [root / "MNIST" / "raw", root / "raw", root]


def load_mnist(data_dir: str | os.PathLike | None, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Full MNIST (60,000 train / 10,000 test).

    Args:
        data_dir: the torchvision root holding ``MNIST/raw`` or the raw folder itself (default:
            ``$FASTWNLL_DATA_DIR`` or ``./data``).
        split: "train" or "test".
        download: fetch the files with ``torchvision.datasets.MNIST(root, download=True)`` when they
            are not found (needs a network).
    Returns:
        ``(x [N, 1, 28, 28] float32 in [0, 1], y [N] int64)`` on the CPU.
    Raises:
        FileNotFoundError: the files are missing (the message says where it looked and how to get them).
    """
    root = data_root(data_dir)
    images_stem, labels_stem = FILES[split]
    directory = _search(mnist_dirs(root), images_stem)
    if directory is None and download:
        import torchvision

        torchvision.datasets.MNIST(str(root), train=split == "train", download=True)
        directory = _search(mnist_dirs(root), images_stem)
    if directory is None:
        searched = ", ".join(str(d.resolve()) for d in mnist_dirs(root))
        raise FileNotFoundError(
            f"MNIST {split} split not found: no {images_stem}[.gz] in {searched}. Pass data_dir=<root> "
            f"(torchvision's layout <root>/MNIST/raw, or the raw folder itself), or download=True "
            f"(CLI: --download) to fetch it with torchvision.datasets.MNIST, or get the four "
            f"*-ubyte.gz files from {MNIST_URL}"
        )
    images, labels = read_pair(directory, images_stem, labels_stem)
    return as_images(images, f"MNIST images in {directory}"), as_labels(
        labels, len(images), f"MNIST labels in {directory}"
    )


def load_mnist10k(data_dir: str | os.PathLike | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The real 10,000-image MNIST test set as a fixed 8,000 train / 2,000 test split.

    The split is :func:`fastwnll.data.splits.fixed_split` (the permutation
    ``numpy.random.RandomState(0).permutation(10000)``: its first 8,000 entries are the training
    rows, its last 2,000 the test rows), the same for every run and training seed.

    Args:
        data_dir: folder holding ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``,
            or a torchvision root holding them in ``MNIST/raw`` (default: ``$FASTWNLL_DATA_DIR``, else
            ``./data``; searched as by :func:`load_mnist`).
        split: "train" or "test".
    Returns:
        ``(x [8000 or 2000, 1, 28, 28] float32 in [0, 1], y int64)`` on the CPU.
    """
    images_stem, labels_stem = FILES["test"]
    dirs = mnist_dirs(data_root(data_dir))
    directory = _search(dirs, images_stem)
    if directory is None:
        searched = ", ".join(str(d.resolve()) for d in dirs)
        raise FileNotFoundError(
            f"mnist10k (the 10k MNIST test set) not found: no {images_stem}[.gz] in {searched}. Pass "
            f"data_dir=<folder> (CLI: --data-dir) or set ${DATA_DIR_ENV} to a folder holding "
            f"{images_stem}.gz and {labels_stem}.gz, from {MNIST_URL}"
        )
    images, labels = read_pair(directory, images_stem, labels_stem)
    train_rows, test_rows = fixed_split(len(images))
    rows = train_rows if split == "train" else test_rows
    what = f"mnist10k in {directory}"
    return as_images(images[rows], f"images of {what}"), as_labels(labels[rows], len(rows), f"labels of {what}")
