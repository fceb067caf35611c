"""A user's own images in a ``.npz`` file (``numpy.savez``): arrays ``x`` and ``y``, optionally
``x_test`` and ``y_test``."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .arrays import as_images, as_labels, check_classes
from .splits import fixed_split


def load_npz(path: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from a ``.npz`` file.

    The file holds ``x`` (``[N, H, W]`` or ``[N, C, H, W]``, uint8 or float in [0, 1]) and ``y``
    (``[N]`` integer labels ``0..C-1``, every class present in ``y`` and ``y_test`` together). With
    ``x_test`` and ``y_test`` (same format and image shape)
    those are the test split and ``x``/``y`` the training split; without them ``x``/``y`` are split
    80/20 by :func:`fastwnll.data.splits.fixed_split` (the permutation ``RandomState(0)``), the same
    for every run and training seed.

    Args:
        path: the ``.npz`` file.
        split: "train" or "test".
    Returns:
        ``(x [N, C, H, W] float32 in [0, 1], y [N] int64)`` on the CPU.
    Raises:
        FileNotFoundError: no such file. ValueError / TypeError: missing arrays or bad contents, naming them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no .npz file at {path.resolve()}: create one with numpy.savez({str(path)!r}, x=images, y=labels"
            f"[, x_test=..., y_test=...]) and pass its path as data_dir (CLI: --data-dir)"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz archive: {error}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path} is a .npy file (one array of shape {list(loaded.shape)}), not a .npz archive: "
            f"save the images and labels together with numpy.savez(path, x=images, y=labels)"
        )
    try:
        with loaded as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz archive: {error}") from None
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise ValueError(
            f"{path} lacks the array(s) {', '.join(missing)} (it has: {', '.join(sorted(arrays)) or 'none'})"
        )
    has_test = [name in arrays for name in ("x_test", "y_test")]
    if any(has_test) and not all(has_test):
        raise ValueError(f"{path} has only one of x_test / y_test: give both or neither")
    x = as_images(arrays["x"], f"x of {path}")
    y = as_labels(arrays["y"], x.shape[0], f"y of {path}")
    if all(has_test):
        x_test = as_images(arrays["x_test"], f"x_test of {path}")
        y_test = as_labels(arrays["y_test"], x_test.shape[0], f"y_test of {path}")
        if x.shape[1:] != x_test.shape[1:]:
            raise ValueError(
                f"{path}: x images are {list(x.shape[1:])} but x_test images are "
                f"{list(x_test.shape[1:])} (as [C, H, W]); train and test images must have one shape"
            )
        check_classes([y, y_test], f"the labels of {path}")
        return (x, y) if split == "train" else (x_test, y_test)
    check_classes([y], f"the labels of {path}")
    train_rows, test_rows = fixed_split(x.shape[0])
    rows = torch.from_numpy(train_rows if split == "train" else test_rows)
    return x[rows], y[rows]
