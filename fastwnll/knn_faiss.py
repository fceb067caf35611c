"""kNN candidates from faiss: its flat (exact, float32) index and its approximate indexes (HNSW and
IVF-Flat), on the CPU, or on the GPU for CUDA tensors when faiss was built with GPUs.

GPU indexes live on the tensors' device, use one cached ``StandardGpuResources`` per device and the
current torch stream (through ``faiss.contrib.torch_utils``); CUDA tensors never go through the host.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

# faiss's GPU k-selection handles at most this many neighbours per query.
GPU_MAX_K = 2048


def load_faiss():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def has_gpu(faiss) -> bool:
    """True when ``faiss`` was built with GPU support and sees at least one GPU."""
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=None)
def gpu_resources(device_index: int):
    """The ``faiss.StandardGpuResources`` of one CUDA device, created once (they own cuBLAS handles,
    streams and a temporary-memory pool, which are costly to set up)."""
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401  (lets faiss indexes take torch CUDA tensors)

    return faiss.StandardGpuResources()


def _gpu_config(cls, device: torch.device):
    """A faiss GPU index config placing the index on ``device``."""
    config = cls()
    config.device = device.index
    return config


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32).contiguous()


def _search(index, query: torch.Tensor, kc: int) -> torch.Tensor:
    """ids [nq, kc] int64 of ``index.search`` on ``query``'s device (-1 where the index found fewer)."""
    if query.is_cuda:
        with torch.cuda.device(query.device):  # torch_utils runs faiss on the current device's torch stream
            _, ids = index.search(query, kc)
        return ids.to(torch.int64)
    _, ids = index.search(query.numpy(), kc)
    return torch.from_numpy(ids).to(torch.int64)


def _add(index, base: torch.Tensor, train: bool = False) -> None:
    if base.is_cuda:
        with torch.cuda.device(base.device):
            if train:
                index.train(base)
            index.add(base)
        return
    if train:
        index.train(base.numpy())
    index.add(base.numpy())


def flat_candidates(query: torch.Tensor, base: torch.Tensor, kc: int) -> torch.Tensor:
    """Indices ``[nq, kc]`` int64 (on the input device) of the ``kc`` smallest float32 squared
    distances from faiss's exact flat L2 index (``GpuIndexFlatL2`` on the tensors' device for CUDA
    tensors when faiss has GPUs, else ``IndexFlatL2`` on the CPU, CUDA tensors copied)."""
    faiss = load_faiss()
    q = _as_float32(query)
    b = q if base is query else _as_float32(base)
    d = q.shape[1]
    if q.is_cuda and has_gpu(faiss):
        if kc > GPU_MAX_K:
            raise ValueError(
                f"faiss on the GPU finds at most {GPU_MAX_K} neighbours per query, {kc} were "
                "needed; use backend='torch'"
            )
        index = faiss.GpuIndexFlatL2(gpu_resources(q.device.index), d, _gpu_config(faiss.GpuIndexFlatConfig, q.device))
        _add(index, b)
        return _search(index, q, kc)
    index = faiss.IndexFlatL2(d)
    _add(index, b.cpu())
    return _search(index, q.cpu(), kc).to(query.device)


APPROXIMATE_METHODS = ("hnsw", "ivf")


@dataclasses.dataclass(frozen=True)
class ApproximateKNN:
    """Options of an approximate (faiss) kNN search; pass it, or just its method name ``"hnsw"`` or
    ``"ivf"``, as ``backend`` of :func:`fastwnll.knn_search`, :func:`fastwnll.knn_graph` or
    ``knn_backend`` of :func:`fastwnll.wnll_interpolate`.

    The result is **not exact**: some true neighbours may be missed (recall@k below 1) and replaced by
    farther points. The returned distances are still exact for the returned points, and rows sorted.

    Attributes:
        method: ``"hnsw"`` (``faiss.IndexHNSWFlat``, CPU only: a graph index, usually the best recall
            per second on the CPU) or ``"ivf"`` (``faiss.IndexIVFFlat``: k-means lists, the GPU
            index ``GpuIndexIVFFlat`` for CUDA tensors when faiss has GPUs).
        hnsw_m: HNSW graph degree (more: better recall, more memory and build time).
        ef_construction: HNSW beam width while building.
        ef_search: HNSW beam width while searching (at least the number of candidates is used).
        nlist: IVF lists; ``None`` picks ``min(4 sqrt(nb), nb // 39)`` (at least 1).
        nprobe: IVF lists visited per query.
        train_points_per_list: the IVF k-means trains on at most this many points per list.
    """

    method: str = "hnsw"
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 64
    nlist: int | None = None
    nprobe: int = 16
    train_points_per_list: int = 64

    def __post_init__(self):
        if self.method not in APPROXIMATE_METHODS:
            raise ValueError(f"unknown approximate kNN method {self.method!r}; choose one of {APPROXIMATE_METHODS}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "train_points_per_list"):
            _check_positive(name, getattr(self, name))
        if self.nlist is not None:
            _check_positive("nlist", self.nlist)

    def lists(self, nb: int) -> int:
        """IVF lists for a base of ``nb`` points (``nlist`` clamped to ``nb``)."""
        if self.nlist is not None:
            return min(self.nlist, nb)
        return max(1, min(int(4 * math.sqrt(nb)), nb // 39))


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ApproximateKNN.{name} must be a positive integer, got {value!r}")


def approximate_candidates(query: torch.Tensor, base: torch.Tensor, kc: int, options: ApproximateKNN) -> torch.Tensor:
    """Indices ``[nq, kc]`` int64 (on the input device) from a faiss approximate index built on
    ``base``; ``-1`` where the index returned fewer than ``kc`` points."""
    faiss = load_faiss()
    if faiss is None:
        raise ImportError(
            f"the approximate kNN method {options.method!r} needs the faiss package (pip install faiss-cpu)"
        )
    q = _as_float32(query)
    b = q if base is query else _as_float32(base)
    nb, d = b.shape
    if q.is_cuda and options.method == "hnsw":
        raise ValueError(
            "approximate kNN method 'hnsw' runs on the CPU only; for CUDA tensors use 'ivf' "
            "(with faiss-gpu) or an exact backend"
        )
    gpu = q.is_cuda and has_gpu(faiss)
    if q.is_cuda and not gpu:
        raise ValueError(
            f"approximate kNN method {options.method!r} on CUDA tensors needs faiss with GPU "
            "support (faiss-gpu); move the features to the CPU or use an exact backend"
        )
    if options.method == "hnsw":
        index = faiss.IndexHNSWFlat(d, options.hnsw_m)
        index.hnsw.efConstruction = options.ef_construction
        index.hnsw.efSearch = max(options.ef_search, kc)
        _add(index, b)
        return _search(index, q, kc)
    nlist = options.lists(nb)
    if gpu:
        if kc > GPU_MAX_K:
            raise ValueError(f"faiss on the GPU finds at most {GPU_MAX_K} neighbours per query, {kc} were needed")
        index = faiss.GpuIndexIVFFlat(
            gpu_resources(q.device.index), d, nlist, faiss.METRIC_L2, _gpu_config(faiss.GpuIndexIVFFlatConfig, q.device)
        )
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    index.cp.max_points_per_centroid = options.train_points_per_list
    index.cp.min_points_per_centroid = 1  # small bases: no warning about few training points
    index.nprobe = min(options.nprobe, nlist)
    _add(index, b, train=True)
    return _search(index, q, kc)
