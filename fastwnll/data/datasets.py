"""``load_dataset``: one entry point for every dataset the training pipeline knows."""
from __future__ import annotations

import os

import torch

DATASETS = ("digits", "mnist", "mnist10k", "cifar10", "npz")
SPLITS = ("train", "test")
DOWNLOADABLE = ("mnist", "cifar10")


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, split: str = "train", seed: int = 0,
                 download: bool = False, path: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of a dataset as tensors.

    Datasets (every train/test split is fixed, independent of ``seed``, so that runs with different
    training seeds are evaluated on the same test images; see :mod:`fastwnll.data.splits`):

    - ``"digits"``: scikit-learn's bundled 8x8 digits, stratified 80/20 split (1,438 / 359); no file.
    - ``"mnist"``: full MNIST from torchvision's raw IDX files (60,000 / 10,000), ``data_dir`` = the
      torchvision root (holding ``MNIST/raw``) or the raw folder; ``download=True`` fetches it.
    - ``"mnist10k"``: the real 10k MNIST test set split 8,000 / 2,000 by a fixed permutation;
      ``data_dir``, else ``$FASTWNLL_MNIST10K_DIR``, else ``<repo>/../shared/data/mnist``.
    - ``"cifar10"``: CIFAR-10 from torchvision's python pickles (50,000 / 10,000), ``data_dir`` = the
      torchvision root (holding ``cifar-10-batches-py``) or that folder; ``download=True`` fetches it.
    - ``"npz"``: the user's ``.npz`` file (``data_dir`` or ``path``) with ``x``, ``y`` and optionally
      ``x_test``, ``y_test``; without the latter a fixed 80/20 split.

    ``mnist`` and ``cifar10`` look in ``$FASTWNLL_DATA_DIR`` or ``./data`` when ``data_dir`` is None.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the files are (see above).
        split: "train" or "test".
        seed: the training seed; accepted so that callers can pass it, it changes no split.
        download: for "mnist" and "cifar10": download the files with torchvision when missing.
        path: for "npz": the file (alternative to ``data_dir``).
    Returns:
        ``(x, y)``: ``x`` ``[N, C, H, W]`` float32 in ``[0, 1]``, ``y`` ``[N]`` int64 class labels
        ``0..C-1``, both on the CPU.
    Raises:
        ValueError: unknown name or split, or options that do not apply to the dataset.
        FileNotFoundError: the data are missing; the message says where it looked and how to obtain them.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if download and name not in DOWNLOADABLE:
        raise ValueError(f"download=True applies to {DOWNLOADABLE} only; {name!r} "
                         f"{'is bundled with scikit-learn' if name == 'digits' else 'cannot be downloaded'}")
    if path is not None and name != "npz":
        raise ValueError(f"path= is for the 'npz' dataset only; use data_dir= for {name!r}")
    if name == "digits":
        if data_dir is not None:
            raise ValueError("the 'digits' dataset is bundled with scikit-learn and takes no data_dir")
        from .digits import load_digits

        return load_digits(split)
    if name == "mnist":
        from .mnist import load_mnist

        return load_mnist(data_dir, split, download)
    if name == "mnist10k":
        from .mnist import load_mnist10k

        return load_mnist10k(data_dir, split)
    if name == "cifar10":
        from .cifar import load_cifar10

        return load_cifar10(data_dir, split, download)
    if path is not None and data_dir is not None and os.fspath(path) != os.fspath(data_dir):
        raise ValueError(f"the 'npz' dataset got two files: data_dir={data_dir!r} and path={path!r}")
    file = path if path is not None else data_dir
    if file is None:
        raise ValueError("the 'npz' dataset needs the file: pass data_dir=<file.npz> (CLI: --data-dir) or path=")
    from .npz import load_npz

    return load_npz(file, split)
