"""Exact k-nearest-neighbour search: fastwnll's C++ kernel (CPU), faiss (CPU, or GPU when faiss has
GPUs) or a tiled torch path (any device).

All backends return the same thing: candidate neighbours found by the backend are re-scored with
exact Euclidean distances in the input dtype, the point itself is excluded by index (duplicates of
it are kept, at distance 0), and the ``k`` best are sorted by ascending distance.
"""
from __future__ import annotations

import torch

from fastwnll import _ext

BACKENDS = ("auto", "native", "faiss", "torch")
# Extra candidates fetched before exact re-scoring, so near-ties lost to round-off are recovered.
_EXTRA_CANDIDATES = 4
# Largest tile of squared distances the torch path materialises at once (elements).
_TILE_ELEMENTS = 1 << 25
# Largest tile of gathered candidate coordinates the exact re-scoring materialises (elements; kept
# cache-sized, which is several times faster on CPUs than one big gather).
_REFINE_TILE_ELEMENTS = 1 << 20
# On CUDA, faiss-gpu is used by `auto` only above this many base points.
_FAISS_GPU_MIN_BASE = 1 << 16
# The native self-graph search first orders the points by a few k-means (Lloyd) iterations with one
# centroid per this many points, so that its distance tiles hold nearby points.
_LOCALITY_CLUSTER = 256
_LOCALITY_ITERATIONS = 2


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_has_gpu(faiss) -> bool:
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def check_points(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [n, d], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise ValueError(f"{name} contains NaN or Inf values (in {bad} rows)")


def _check_no_overflow(query: torch.Tensor, base: torch.Tensor, dtype: torch.dtype) -> None:
    """Squared distances in the matmul form |q|^2 + |b|^2 - 2<q, b> must be finite in ``dtype``."""
    largest = max(float(t.abs().max()) for t in ((query,) if base is query else (query, base)))
    limit = (torch.finfo(dtype).max / (4.0 * query.shape[1])) ** 0.5
    if largest > limit:
        raise ValueError(
            f"features are too large for {dtype} distances (max |x| = {largest:.3g} > {limit:.3g}: "
            "squared distances would overflow); rescale them"
            + (" (faiss always computes in float32)" if dtype != query.dtype else " or use float64")
        )


def _choose_backend(backend: str, query: torch.Tensor, base: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}; choose one of {BACKENDS}")
    faiss = _faiss()
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu)")
    if backend == "native":
        _ext.load()  # raises ImportError with the rebuild hint when the extension is missing
    if backend != "auto":
        return backend
    if query.is_cuda:
        return "faiss" if _faiss_has_gpu(faiss) and base.shape[0] >= _FAISS_GPU_MIN_BASE else "torch"
    if _ext.available():
        return "native"
    return "faiss" if faiss is not None else "torch"


def locality_order(x: torch.Tensor) -> torch.Tensor:
    """Permutation [n] int64 that groups nearby rows of ``x`` ([n, d], any float dtype and device).

    Rows are sorted by their nearest centroid after a few Lloyd iterations with ``n // 256``
    centroids started from a fixed random sample (deterministic). Any permutation gives the same
    kNN result; a good one makes the native search faster.
    """
    n = x.shape[0]
    clusters = max(1, n // _LOCALITY_CLUSTER)
    start = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:clusters].to(x.device)
    centroids = x[start]
    for _ in range(_LOCALITY_ITERATIONS):
        assign = ((centroids * centroids).sum(1) - 2.0 * (x @ centroids.T)).argmin(1)
        counts = torch.bincount(assign, minlength=clusters).clamp_min(1).unsqueeze(1).to(x.dtype)
        centroids = torch.zeros_like(centroids).index_add_(0, assign, x) / counts
    assign = ((centroids * centroids).sum(1) - 2.0 * (x @ centroids.T)).argmin(1)
    return torch.argsort(assign, stable=True)


def _candidates_native(query, base, kc, self_graph):
    """Indices [nq, kc] from fastwnll's C++ blocked search (on the CPU; CUDA inputs are copied).

    For a self-graph the points are first put in locality order (see :func:`locality_order`) and
    each pair is scored once; the point itself is never a candidate. The extension is loaded
    (by :func:`_choose_backend`).
    """
    q, b = query.cpu(), base.cpu()
    if not self_graph:
        return torch.ops.fastwnll.knn_candidates(q, b, kc, False).to(query.device)
    if q.shape[0] <= 2 * _LOCALITY_CLUSTER:  # one or two tiles: nothing to gain from an order
        return torch.ops.fastwnll.knn_candidates(q, q, kc, True).to(query.device)
    perm = locality_order(q)
    xp = q[perm].contiguous()
    cand = torch.ops.fastwnll.knn_candidates(xp, xp, kc, True)
    cand = torch.where(cand >= 0, perm[cand.clamp_min(0)], cand)
    out = torch.empty_like(cand)
    out[perm] = cand
    return out.to(query.device)


def _candidates_torch(query, base, kc, self_offset):
    """Indices [nq, kc] of the kc smallest matmul-form squared distances, tile by tile."""
    nq, nb = query.shape[0], base.shape[0]
    base_sq = (base * base).sum(1)
    tile = max(1, min(nq, _TILE_ELEMENTS // nb))
    out = torch.empty(nq, kc, dtype=torch.int64, device=query.device)
    for start in range(0, nq, tile):
        q = query[start:start + tile]
        d2 = (q * q).sum(1, keepdim=True) + base_sq - 2.0 * (q @ base.T)
        if self_offset is not None:
            rows = torch.arange(q.shape[0], device=q.device)
            d2[rows, rows + start + self_offset] = float("inf")
        out[start:start + tile] = d2.topk(kc, dim=1, largest=False).indices
    return out


def _candidates_faiss(query, base, kc):
    """Indices [nq, kc] from a flat (exact) faiss L2 index, on the GPU when query is CUDA and faiss has GPUs."""
    faiss = _faiss()
    q = query.detach().float().contiguous()
    b = base.detach().float().contiguous()
    d = b.shape[1]
    if q.is_cuda and _faiss_has_gpu(faiss):
        import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take torch CUDA tensors)

        index = faiss.GpuIndexFlatL2(faiss.StandardGpuResources(), d)
        index.add(b)
        _, ids = index.search(q, kc)
        return ids.to(torch.int64)
    index = faiss.IndexFlatL2(d)
    index.add(b.cpu().numpy())
    _, ids = index.search(q.cpu().numpy(), kc)
    return torch.from_numpy(ids).to(device=query.device, dtype=torch.int64)


def _refine(query, base, cand, k, self_offset):
    """Exact distances of the candidates; drop self and invalid (-1) entries; keep the k nearest, sorted.

    CPU tensors go through the C++ op ``fastwnll::knn_refine`` when the extension is built; the
    torch code below (used on other devices) computes the same thing.
    """
    if query.device.type == "cpu" and _ext.available():
        return torch.ops.fastwnll.knn_refine(query, base, cand, k, self_offset)
    nq = query.shape[0]
    idx = torch.empty(nq, k, dtype=torch.int64, device=query.device)
    dist = torch.empty(nq, k, dtype=query.dtype, device=query.device)
    tile = max(1, min(nq, _REFINE_TILE_ELEMENTS // (cand.shape[1] * query.shape[1])))
    for start in range(0, nq, tile):
        c = cand[start:start + tile]
        q = query[start:start + tile]
        d = torch.linalg.vector_norm(base[c.clamp_min(0)] - q.unsqueeze(1), dim=-1)
        invalid = c < 0
        if self_offset is not None:
            rows = torch.arange(start, start + q.shape[0], device=c.device) + self_offset
            invalid |= c == rows.unsqueeze(1)
        d = d.masked_fill(invalid, float("inf"))
        best, order = d.sort(dim=1, stable=True)
        idx[start:start + tile] = c.gather(1, order[:, :k])
        dist[start:start + tile] = best[:, :k]
    return idx, dist


def knn_search(query: torch.Tensor, base: torch.Tensor, k: int, *, backend: str = "auto",
               exclude_self: bool = False, self_offset: int = 0):
    """Exact k nearest neighbours in ``base`` of every row of ``query``.

    Args:
        query: ``[nq, d]`` float32/float64, CPU or CUDA.
        base: ``[nb, d]``, same dtype and device as ``query``.
        k: neighbours per query, ``1 <= k <= nb`` (``k <= nb - 1`` with ``exclude_self``).
        backend: ``"native"`` (fastwnll's C++ kernel: blocked matrix products and a vectorised
            threshold filter, multi-threaded; on the CPU, CUDA inputs are copied; for a graph each
            pair of points is scored once), ``"faiss"`` (flat exact index; GPU index for CUDA
            tensors when faiss has GPUs, otherwise the search runs on the CPU), ``"torch"`` (tiled
            matmul + top-k, never more than ~32M distances in memory at once, any device) or
            ``"auto"`` (native for CPU tensors, else faiss, else torch; torch for CUDA tensors
            unless faiss-gpu is present and ``nb >= 65536``).
        exclude_self: query row ``i`` is base row ``i + self_offset`` and must not be returned
            as its own neighbour (used for graphs; duplicates of the point are still returned).
        self_offset: see ``exclude_self``.

    Returns:
        ``(idx, dist)``: ``idx`` ``[nq, k]`` int64 indices into ``base``; ``dist`` ``[nq, k]``
        exact Euclidean distances in the input dtype, ascending along each row. Both are on the
        input device and carry no gradient.
    """
    check_points("query", query)
    if base is not query:
        check_points("base", base)
    if query.device != base.device:
        raise ValueError(f"query is on {query.device} but base is on {base.device}")
    if query.dtype != base.dtype:
        raise TypeError(f"query is {query.dtype} but base is {base.dtype}")
    if query.shape[1] != base.shape[1]:
        raise ValueError(f"query has {query.shape[1]} features but base has {base.shape[1]}")
    nb = base.shape[0]
    available = nb - 1 if exclude_self else nb
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > available:
        raise ValueError(
            f"k={k} is too large: only {available} neighbours exist"
            + (f" (k must be < n={nb}, the point itself is excluded)" if exclude_self else f" (nb={nb})")
        )
    self_graph = exclude_self and self_offset == 0 and query is base
    query = query.detach()
    base = query if self_graph else base.detach()
    offset = self_offset if exclude_self else None
    kc = min(k + _EXTRA_CANDIDATES + (1 if exclude_self else 0), nb)
    chosen = _choose_backend(backend, query, base)
    _check_no_overflow(query, base, torch.float32 if chosen == "faiss" else query.dtype)
    if chosen == "native":
        # a native self-graph never returns the point itself: no extra slot for it
        cand = _candidates_native(query, base, min(k + _EXTRA_CANDIDATES, available) if self_graph else kc,
                                  self_graph)
    elif chosen == "faiss":
        cand = _candidates_faiss(query, base, kc)
    else:
        cand = _candidates_torch(query, base, min(kc, available), offset)
    return _refine(query, base, cand, k, offset)


def knn_graph(x: torch.Tensor, k: int, *, backend: str = "auto"):
    """Exact kNN graph of the rows of ``x``, each point itself excluded.

    Args:
        x: ``[n, d]`` float32/float64, CPU or CUDA, finite.
        k: neighbours per point, ``1 <= k < n``.
        backend: ``"auto"``, ``"native"``, ``"faiss"`` or ``"torch"`` (see :func:`knn_search`).

    Returns:
        ``(idx [n, k] int64, dist [n, k])`` with Euclidean distances ascending along each row.
    """
    check_points("x", x)
    return knn_search(x, x, k, backend=backend, exclude_self=True)
