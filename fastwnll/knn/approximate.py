"""Approximate kNN candidates from faiss's HNSW and IVF-Flat indexes, on request only
(``backend="hnsw"``, ``"ivf"``, an :class:`ApproximateKNN` or its spec string such as
``"hnsw:ef_search=128,hnsw_m=16"``): fast for large bases, not exact."""

from __future__ import annotations

import dataclasses
import math

import torch

from fastwnll.knn.faiss_index import (
    GPU_MAX_K,
    add_points,
    as_float32,
    gpu_config,
    gpu_resources,
    has_gpu,
    load_faiss,
    search_index,
)

APPROXIMATE_METHODS = ("hnsw", "ivf")


@dataclasses.dataclass(frozen=True)
class ApproximateKNN:
    """Options of an approximate (faiss) kNN search; pass it, just its method name ``"hnsw"`` or
    ``"ivf"``, or its spec string (:meth:`spec`, :func:`parse_backend`: ``"hnsw:ef_search=128"``)
    wherever a kNN backend is taken: ``backend`` of :func:`fastwnll.knn_search` and
    :func:`fastwnll.knn_graph`, ``knn_backend`` of :func:`fastwnll.wnll_interpolate`,
    :class:`fastwnll.TemplateBank` and :class:`fastwnll.WNLLHead`, ``--knn-backend`` of ``fastwnll train``.

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

    def spec(self) -> str:
        """The spec string of these options: the method, then ``:name=value`` pairs (comma-separated)
        of the options that differ from their defaults; :func:`parse_backend` reads it back."""
        changed = [
            f"{f.name}={getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.name != "method" and getattr(self, f.name) != f.default
        ]
        return self.method + (":" + ",".join(changed) if changed else "")

    def lists(self, nb: int) -> int:
        """IVF lists for a base of ``nb`` points (``nlist`` clamped to ``nb``)."""
        if self.nlist is not None:
            return min(self.nlist, nb)
        return max(1, min(int(4 * math.sqrt(nb)), nb // 39))


_OPTIONS = tuple(f.name for f in dataclasses.fields(ApproximateKNN) if f.name != "method")


def parse_backend(spec: str) -> ApproximateKNN:
    """The :class:`ApproximateKNN` of a spec string ``"method:name=value,name=value"`` (``method``
    ``"hnsw"`` or ``"ivf"``; names among the class's options, values positive integers; ``"hnsw"``
    alone gives the defaults). ValueError naming the part that is wrong."""
    if not isinstance(spec, str):
        raise TypeError(f"an approximate kNN spec must be a string, got {type(spec).__name__}")
    method, colon, rest = spec.strip().partition(":")
    method = method.strip()
    if method not in APPROXIMATE_METHODS:
        raise ValueError(
            f"unknown kNN backend {spec!r}: an approximate spec starts with one of {APPROXIMATE_METHODS}, "
            "e.g. 'hnsw:ef_search=128,hnsw_m=16'"
        )
    if colon and not rest.strip():
        raise ValueError(f"the kNN backend spec {spec!r} has ':' but no options; write {method!r} alone")
    options = {}
    for part in rest.split(",") if rest.strip() else ():
        name, eq, value = (t.strip() for t in part.partition("="))
        if not eq or name not in _OPTIONS:
            raise ValueError(
                f"bad option {part.strip()!r} in the kNN backend spec {spec!r}: write name=value with a name "
                f"among {', '.join(_OPTIONS)}"
            )
        if name in options:
            raise ValueError(f"option {name!r} is given twice in the kNN backend spec {spec!r}")
        try:
            options[name] = int(value)
        except ValueError:
            raise ValueError(
                f"option {name!r} of the kNN backend spec {spec!r} must be a positive integer, got {value!r}"
            ) from None
    return ApproximateKNN(method=method, **options)


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
    q = as_float32(query)
    b = q if base is query else as_float32(base)
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
        add_points(index, b)
        return search_index(index, q, kc)
    nlist = options.lists(nb)
    if gpu:
        if kc > GPU_MAX_K:
            raise ValueError(f"faiss on the GPU finds at most {GPU_MAX_K} neighbours per query, {kc} were needed")
        index = faiss.GpuIndexIVFFlat(
            gpu_resources(q.device.index), d, nlist, faiss.METRIC_L2, gpu_config(faiss.GpuIndexIVFFlatConfig, q.device)
        )
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    index.cp.max_points_per_centroid = options.train_points_per_list
    index.cp.min_points_per_centroid = 1  # small bases: no warning about few training points
    index.nprobe = min(options.nprobe, nlist)
    add_points(index, b, train=True)
    return search_index(index, q, kc)
