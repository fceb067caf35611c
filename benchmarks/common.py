"""Shared benchmark helpers: timing (median of repeats), real-MNIST features, CSV/Markdown output."""
from __future__ import annotations

import csv
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fastwnll.data.idx import read_idx

MNIST_DIR = Path(os.environ.get("FASTWNLL_MNIST10K_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))


def device_name(device: str) -> str:
    """Human-readable name of the device the timings come from."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def timeit(fn, repeats: int, device: str = "cpu", warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs (CUDA-synchronised)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """The real MNIST test split: images uint8 [10000, 28, 28], labels int64 [10000]."""
    images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def mnist_pca(dim: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 PCA-``dim`` features of real MNIST digits and their labels.

    Above 10,000 points the 10k real digits are repeated with small Gaussian jitter (2% of the
    feature scale), which keeps the class structure of the data.
    """
    images, labels = mnist_images()
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


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows (dicts with identical keys) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of the given columns of ``rows``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)
