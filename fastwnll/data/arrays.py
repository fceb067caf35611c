"""Checks and conversions shared by the dataset loaders: numpy images and labels -> torch tensors."""

from __future__ import annotations

import numpy as np
import torch


def as_images(x: np.ndarray, what: str) -> torch.Tensor:
    """Validate images and convert them to the loaders' output format.

    Args:
        x: ``[N, H, W]`` (one channel) or ``[N, C, H, W]`` numpy array, ``uint8`` (0..255, divided
            by 255) or floating point with every value in ``[0, 1]``; ``N >= 1``.
        what: the array's name in error messages (e.g. "x of digits.npz").
    Returns:
        ``[N, C, H, W]`` float32 contiguous CPU tensor with values in ``[0, 1]``.
    Raises:
        TypeError: another dtype. ValueError: another shape, no rows, or float values outside
        ``[0, 1]`` (NaN included).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{what} must have shape [N, H, W] or [N, C, H, W], got {list(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} holds no images")
    if x.dtype == np.uint8:
        images = x.astype(np.float32) / np.float32(255)
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise ValueError(
                f"{what} has values in [{lo:g}, {hi:g}]: float images must lie in [0, 1] "
                "(divide by 255, or store them as uint8)"
            )
        images = x.astype(np.float32)
    else:
        raise TypeError(f"{what} must be uint8 or floating point, got {x.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    return torch.from_numpy(np.ascontiguousarray(images))


def as_labels(y: np.ndarray, n: int, what: str) -> torch.Tensor:
    """Validate class labels and convert them to the loaders' output format.

    Args:
        y: ``[n]`` numpy array of integer class labels, all ``>= 0`` (classes ``0..C-1``).
        n: the number of images they label.
        what: the array's name in error messages.
    Returns:
        ``[n]`` int64 CPU tensor.
    Raises:
        TypeError: not an integer dtype. ValueError: wrong shape or length, negative labels.
    """
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{what} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{what} must have shape [N], got {list(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{what} has {y.shape[0]} labels but there are {n} images")
    if y.min() < 0:
        raise ValueError(f"{what} has negative labels (min {int(y.min())}); classes must be 0..C-1")
    if int(y.max()) > np.iinfo(np.int64).max:  # uint64 labels that int64 would wrap to negative numbers
        raise ValueError(f"{what} has labels up to {int(y.max())}, beyond int64; classes must be 0..C-1")
    return torch.from_numpy(y.astype(np.int64))


def check_classes(labels: list[torch.Tensor], what: str) -> int:
    """The number of classes ``C`` of int64 label tensors (as :func:`as_labels` returns them) that
    together hold every class ``0..C-1``; ValueError naming ``what`` when a class below the largest
    label never occurs: sparse labels such as {0, 100000} would make a 100,001-class model. The
    message says how to renumber them."""
    present = torch.unique(torch.cat([y.reshape(-1) for y in labels]))
    classes = int(present[-1]) + 1
    if present.shape[0] != classes:
        raise ValueError(
            f"{what} must be the classes 0..C-1, each present; they are {present.shape[0]} distinct values in "
            f"[{int(present[0])}, {classes - 1}], so {classes - present.shape[0]} class(es) below the largest "
            "never occur. Renumber them, e.g. classes, y = numpy.unique(y, return_inverse=True) (the same mapping "
            "for y_test)"
        )
    return classes
