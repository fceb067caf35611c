"""What the benchmarks share: timing (median of repeats), real-MNIST features, where the data are read
and the results written (``--data-dir``, ``--out``), CSV/Markdown output. Timing, device names and
the CSV/Markdown writers are those of the package's microbenchmarks (:mod:`fastwnll.bench`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from fastwnll.bench.results import markdown_table, write_csv  # noqa: F401  (shared with the scripts)
from fastwnll.bench.timing import device_name, measure_in_turn  # noqa: F401
from fastwnll.data.mnist import FILES, find_file, mnist_dirs, read_pair
from fastwnll.data.paths import DATA_DIR_ENV

HERE = Path(__file__).resolve().parent
# The benchmarks' data: the real MNIST test files (t10k-*-ubyte[.gz]) in --data-dir, else
# $FASTWNLL_DATA_DIR, else ../shared/data/mnist beside the repository (where the development machines
# keep them). The package itself never looks there; the benchmarks pass the folder explicitly.
DEFAULT_DATA_DIR = Path(os.environ.get(DATA_DIR_ENV) or HERE.parents[1] / "shared" / "data" / "mnist")
# Results go to benchmarks/out/ (git-ignored) unless --out says otherwise; the committed tables in
# benchmarks/results/ are rewritten only with --out benchmarks/results.
OUT_DIR = HERE / "out"
RESULTS_DIR = HERE / "results"


def add_io_options(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` (the MNIST test files) and ``--out`` (the folder the result files go to)."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder holding the real MNIST test files (default: ${DATA_DIR_ENV}, else "
        f"../shared/data/mnist beside the repository: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT_DIR,
        help=f"folder for the result files (default: {OUT_DIR}, git-ignored; the committed "
        f"tables are in {RESULTS_DIR})",
    )


def timings(fn, repeats: int, device: str = "cpu", warmup: int = 1) -> tuple[float, float]:
    """Medians of the wall time and of the process CPU time of ``fn()`` in seconds over ``repeats``
    runs (see :func:`fastwnll.bench.timing.measure_in_turn`). On a shared machine the CPU time of a
    one-thread run is the steadier of the two (it does not count the time the process waits for a core)."""
    return measure_in_turn([fn], repeats, device, warmup)[0]


def mnist_images(data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The real MNIST test split in file order: images uint8 [10000, 28, 28], labels int64 [10000],
    from ``data_dir`` (default :data:`DEFAULT_DATA_DIR`; a torchvision root works too)."""
    root = Path(data_dir or DEFAULT_DATA_DIR)
    images_stem, labels_stem = FILES["test"]
    folder = next((d for d in mnist_dirs(root) if find_file(d, images_stem)), None)
    if folder is None:
        raise FileNotFoundError(
            f"no {images_stem}[.gz] under {root}: pass --data-dir or set ${DATA_DIR_ENV} to the "
            "folder holding the MNIST test files"
        )
    images, labels = read_pair(folder, images_stem, labels_stem)
    return images, labels.astype(np.int64)


def mnist_pca(
    dim: int, n: int, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 PCA-``dim`` features of real MNIST digits (from ``data_dir``, see :func:`mnist_images`)
    and their labels.

    Above 10,000 points the 10k real digits are repeated with small Gaussian jitter (2% of the
    feature scale), which keeps the class structure of the data.
    """
    images, labels = mnist_images(data_dir)
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    x -= x.mean(0)
    _, vectors = np.linalg.eigh(x.T @ x)
    feats = (x @ vectors[:, -dim:][:, ::-1]).astype(np.float32)
    rng = np.random.default_rng(seed)
    reps = -(-n // len(feats))
    tiled = np.concatenate([feats] * reps)
    labs = np.concatenate([labels] * reps)
    if reps > 1:
        tiled = tiled + rng.normal(scale=0.02 * feats.std(), size=tiled.shape).astype(np.float32)
    order = rng.permutation(len(tiled))[:n]
    return tiled[order], labs[order]
