"""kNN graph microbenchmark: ``fastwnll.knn_graph`` per backend, exact and approximate, with the
recall of each graph against the first exact one."""

from __future__ import annotations

import torch

from .data import DIM, clustered_features
from .results import make_row
from .timing import failure, median_time, warmup_rounds

QUICK_SIZES = (10000,)
FULL_SIZES = (10000, 50000)
K = 15
# Backends tried by default on each device type; one that cannot run there (faiss not installed,
# faiss without GPUs for CUDA tensors) gives a row saying why. "hnsw" is a CPU index only.
DEFAULT_BACKENDS = {"cpu": ("native", "torch", "faiss", "hnsw", "ivf"), "cuda": ("torch", "faiss", "ivf", "native")}
EXACT = ("native", "torch", "faiss")


def recall(idx: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean fraction of each row's neighbours in ``reference`` ``[n, k]`` found in the same row of ``idx``."""
    found = sum(
        int((a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum()) for a, b in zip(idx.split(8192), reference.split(8192))
    )
    return found / reference.numel()


def run(device: str | torch.device, sizes, repeats: int, env: dict, backends=None) -> list[dict]:
    """One row per backend and ``n`` of ``sizes``: ``knn_graph(x, 15, backend=...)`` on
    :func:`~fastwnll.bench.data.clustered_features` ``[n, 64]`` float32 on ``device`` (medians of
    ``repeats`` calls), with ``recall`` against the graph of the first exact backend of ``backends``
    (default :data:`DEFAULT_BACKENDS` of the device type; no recall when none of them is exact or ran).
    The native backend on CUDA tensors copies them to the host (it is a CPU search)."""
    from fastwnll import knn_graph

    device = torch.device(device)
    backends = backends or DEFAULT_BACKENDS[device.type]
    rows = []
    for n in sizes:
        x, _ = clustered_features(n, device=device)
        graphs, size_rows = {}, []
        for backend in backends:
            error = failure(lambda: graphs.__setitem__(backend, knn_graph(x, K, backend=backend)[0]))
            seconds = (
                None
                if error
                else median_time(lambda: knn_graph(x, K, backend=backend), repeats, device, warmup_rounds(device) - 1)
            )
            note = f"did not run: {error}" if error else "exact" if backend in EXACT else "approximate"
            size_rows.append(
                make_row(
                    env,
                    "knn",
                    "knn_graph",
                    backend,
                    n,
                    (n, DIM),
                    x.dtype,
                    seconds,
                    0 if error else repeats,
                    note=note,
                    recall=None,
                )
            )
        reference = next((graphs[b] for b in backends if b in EXACT and b in graphs), None)
        for row in size_rows:
            if reference is not None and row["backend"] in graphs:
                row["recall"] = recall(graphs[row["backend"]], reference)
        rows += size_rows
    return rows
