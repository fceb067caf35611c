"""The datasets the package knows, one registry entry each, and ``load_dataset``, the one entry point.

An entry (:class:`DatasetSpec`) carries everything the rest of the package needs to know about a
dataset: its loader, where its files are and whether they can be downloaded, the training defaults
(network, learning rate, stage-2 batch size) and the paper's L_inf attack budget. Adding a dataset
is one entry in :data:`DATASET_SPECS`; the tests enumerate the registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

import torch

SPLITS = ("train", "test")

Loader = Callable[[str | os.PathLike | None, str, bool], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class PaperBudget:
    """The paper's L_inf budget of PGD training and of the IFGSM/PGD attacks on a dataset (pixels in
    [0, 1]): radius ``eps``, ``steps`` steps of ``alpha`` (docs/design.md, section 4.5)."""

    eps: float
    alpha: float
    steps: int

    @property
    def ratio(self) -> float:
        """``alpha / eps``: the step as a fraction of the radius, kept when the radius changes."""
        return self.alpha / self.eps


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the registry.

    Attributes:
        name: the name ``load_dataset`` and the CLI take.
        description: one line for users (where the data come from, the split).
        load: ``load(data_dir, split, download) -> (x [N, C, H, W] float32 in [0, 1], y [N] int64)``
            on the CPU; ``data_dir`` may be None (then the loader says where it looks).
        downloadable: ``download=True`` fetches missing files (with torchvision).
        bundled_with: the package that ships the data (no files: ``data_dir`` is refused), or None.
        single_file: ``data_dir`` names one file rather than a folder (``path=`` is accepted too).
        defaults: training defaults for this dataset (fields of ``fastwnll.train.TrainConfig``).
        budget: the paper's L_inf attack budget, or None (then attacks need explicit steps and step sizes).
    """

    name: str
    description: str
    load: Loader
    downloadable: bool = False
    bundled_with: str | None = None
    single_file: bool = False
    defaults: Mapping[str, object] = field(default_factory=dict)
    budget: PaperBudget | None = None


def _digits(data_dir, split, download):
    from .digits import load_digits

    return load_digits(split)


def _mnist(data_dir, split, download):
    from .mnist import load_mnist

    return load_mnist(data_dir, split, download)


def _mnist10k(data_dir, split, download):
    from .mnist import load_mnist10k

    return load_mnist10k(data_dir, split)


def _cifar10(data_dir, split, download):
    from .cifar import load_cifar10

    return load_cifar10(data_dir, split, download)


def _npz(data_dir, split, download):
    from .npz import load_npz

    if data_dir is None:
        raise ValueError("the 'npz' dataset needs the file: pass data_dir=<file.npz> (CLI: --data-dir) or path=")
    return load_npz(data_dir, split)


# The paper's budgets (docs/design.md, section 4.5): MNIST eps 0.3, 40 steps of 0.01; CIFAR-10 eps 0.031,
# 10 steps of 0.007. The 8x8 digits take MNIST's. Stage 2 builds one WNLL graph per batch: the paper
# used ~6,000 points; 1,024 (the generic default) or 256 for the 1,438 digits keep several steps per epoch.
MNIST_BUDGET = PaperBudget(eps=0.3, alpha=0.01, steps=40)
CIFAR_BUDGET = PaperBudget(eps=0.031, alpha=0.007, steps=10)

DATASET_SPECS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            DatasetSpec(
                "digits",
                "scikit-learn's bundled 8x8 digits, stratified 80/20 split (1,438 / 359)",
                _digits,
                bundled_with="scikit-learn",
                defaults={"model": "digits_cnn", "stage2_batch_size": 256},
                budget=MNIST_BUDGET,
            ),
            DatasetSpec(
                "mnist",
                "full MNIST from torchvision's raw IDX files (60,000 / 10,000)",
                _mnist,
                downloadable=True,
                defaults={"model": "mnist_cnn"},
                budget=MNIST_BUDGET,
            ),
            DatasetSpec(
                "mnist10k",
                "the real 10k MNIST test set split 8,000 / 2,000 by a fixed permutation",
                _mnist10k,
                defaults={"model": "mnist_cnn"},
                budget=MNIST_BUDGET,
            ),
            DatasetSpec(
                "cifar10",
                "CIFAR-10 from torchvision's python pickles (50,000 / 10,000)",
                _cifar10,
                downloadable=True,
                defaults={"model": "resnet20", "lr": 0.1},
                budget=CIFAR_BUDGET,
            ),
            DatasetSpec(
                "npz",
                "the user's .npz file with x, y and optionally x_test, y_test (else a fixed 80/20 split)",
                _npz,
                single_file=True,
            ),
        )
    }
)
DATASETS = tuple(DATASET_SPECS)
DOWNLOADABLE = tuple(name for name, spec in DATASET_SPECS.items() if spec.downloadable)
SINGLE_FILE = tuple(name for name, spec in DATASET_SPECS.items() if spec.single_file)


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of dataset ``name``; ValueError naming the choices for an unknown one."""
    if name not in DATASET_SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    return DATASET_SPECS[name]


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    seed: int = 0,
    download: bool = False,
    path: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of a dataset as tensors.

    Datasets: the entries of :data:`DATASET_SPECS` (their ``description`` says what each is). Every
    train/test split is fixed, independent of ``seed``, so that runs with different training seeds
    are evaluated on the same test images (see :mod:`fastwnll.data.splits`):

    - ``"digits"``: bundled with scikit-learn; no file.
    - ``"mnist"``: ``data_dir`` = the torchvision root (holding ``MNIST/raw``) or the raw folder;
      ``download=True`` fetches it.
    - ``"mnist10k"``: the two 10k test files (``t10k-*-ubyte[.gz]``), found like ``"mnist"``'s.
    - ``"cifar10"``: ``data_dir`` = the torchvision root (holding ``cifar-10-batches-py``) or that
      folder; ``download=True`` fetches it.
    - ``"npz"``: the file (``data_dir`` or ``path``).

    Without ``data_dir`` the folder datasets look in ``$FASTWNLL_DATA_DIR``, else ``./data``, and
    nowhere else.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: where the files are (see above).
        split: "train" or "test".
        seed: the training seed; accepted so that callers can pass it, it changes no split.
        download: for the downloadable datasets: download the files with torchvision when missing.
        path: for "npz": the file (alternative to ``data_dir``).
    Returns:
        ``(x, y)``: ``x`` ``[N, C, H, W]`` float32 in ``[0, 1]``, ``y`` ``[N]`` int64 class labels
        ``0..C-1``, both on the CPU.
    Raises:
        ValueError: unknown name or split, or options that do not apply to the dataset.
        FileNotFoundError: the data are missing; the message says where it looked and how to obtain them.
    """
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if download and not spec.downloadable:
        why = f"is bundled with {spec.bundled_with}" if spec.bundled_with else "cannot be downloaded"
        raise ValueError(f"download=True applies to {DOWNLOADABLE} only; {name!r} {why}")
    if path is not None and not spec.single_file:
        raise ValueError(
            f"path= is for the {', '.join(map(repr, SINGLE_FILE))} dataset only; use data_dir= for {name!r}"
        )
    if spec.bundled_with and data_dir is not None:
        raise ValueError(f"the {name!r} dataset is bundled with {spec.bundled_with} and takes no data_dir")
    if path is not None and data_dir is not None and os.fspath(path) != os.fspath(data_dir):
        raise ValueError(f"the {name!r} dataset got two files: data_dir={data_dir!r} and path={path!r}")
    return spec.load(path if path is not None else data_dir, split, download)
