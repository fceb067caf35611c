"""scikit-learn's bundled ``digits`` (1,797 8x8 grey images, 10 classes): no download needed."""

from __future__ import annotations

import numpy as np
import torch

from .arrays import as_images, as_labels
from .splits import stratified_split


def load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits images with a fixed stratified 80/20 train/test split.

    Pixel values 0..16 are divided by 16. The split is
    :func:`fastwnll.data.splits.stratified_split` (per class, ``RandomState(0)``; 1,438 train /
    359 test rows), the same for every run and training seed.

    Args:
        split: "train" or "test".
    Returns:
        ``(x [1438 or 359, 1, 8, 8] float32 in [0, 1], y int64 in 0..9)`` on the CPU.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32) / np.float32(16)
    labels = bunch.target.astype(np.int64)
    train_rows, test_rows = stratified_split(labels)
    rows = train_rows if split == "train" else test_rows
    return as_images(images[rows], "digits images"), as_labels(labels[rows], len(rows), "digits labels")
