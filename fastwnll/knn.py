"""Exact k-nearest-neighbour search: faiss (CPU, or GPU when faiss has GPUs) or a tiled torch path.

Both backends return the same thing: candidate neighbours found by the backend are re-scored with
exact Euclidean distances in the input dtype, the point itself is excluded by index (duplicates of
it are kept, at distance 0), and the ``k`` best are sorted by ascending distance.
"""
from __future__ import annotations

import torch

BACKENDS = ("auto", "faiss", "torch")
# Extra candidates fetched before exact re-scoring, so near-ties lost to round-off are recovered.
_EXTRA_CANDIDATES = 4
# Largest tile of squared distances the torch path materialises at once (elements).
_TILE_ELEMENTS = 1 << 25
# Largest tile of gathered candidate coordinates the exact re-scoring materialises (elements; kept
# cache-sized, which is several times faster on CPUs than one big gather).
_REFINE_TILE_ELEMENTS = 1 << 20
# On CUDA, faiss-gpu is used by `auto` only above this many base points.
_FAISS_GPU_MIN_BASE = 1 << 16


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


def _choose_backend(backend: str, query: torch.Tensor, base: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kNN backend {backend!r}; choose one of {BACKENDS}")
    faiss = _faiss()
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu)")
    if backend != "auto":
        return backend
    if query.is_cuda:
        return "faiss" if _faiss_has_gpu(faiss) and base.shape[0] >= _FAISS_GPU_MIN_BASE else "torch"
    return "faiss" if faiss is not None else "torch"


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
    """Exact distances of the candidates; drop self and invalid (-1) entries; keep the k nearest, sorted."""
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
        backend: ``"faiss"`` (flat exact index; GPU index for CUDA tensors when faiss has GPUs,
            otherwise the search runs on the CPU), ``"torch"`` (tiled matmul + top-k, never more
            than ~32M distances in memory at once, any device) or ``"auto"`` (faiss for CPU
            tensors; torch for CUDA tensors unless faiss-gpu is present and ``nb >= 65536``).
        exclude_self: query row ``i`` is base row ``i + self_offset`` and must not be returned
            as its own neighbour (used for graphs; duplicates of the point are still returned).
        self_offset: see ``exclude_self``.

    Returns:
        ``(idx, dist)``: ``idx`` ``[nq, k]`` int64 indices into ``base``; ``dist`` ``[nq, k]``
        exact Euclidean distances in the input dtype, ascending along each row. Both are on the
        input device and carry no gradient.
    """
    check_points("query", query)
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
    query, base = query.detach(), base.detach()
    offset = self_offset if exclude_self else None
    kc = min(k + _EXTRA_CANDIDATES + (1 if exclude_self else 0), nb)
    if _choose_backend(backend, query, base) == "faiss":
        cand = _candidates_faiss(query, base, kc)
    else:
        cand = _candidates_torch(query, base, min(kc, available), offset)
    return _refine(query, base, cand, k, offset)


def knn_graph(x: torch.Tensor, k: int, *, backend: str = "auto"):
    """Exact kNN graph of the rows of ``x``, each point itself excluded.

    Args:
        x: ``[n, d]`` float32/float64, CPU or CUDA, finite.
        k: neighbours per point, ``1 <= k < n``.
        backend: ``"auto"``, ``"faiss"`` or ``"torch"`` (see :func:`knn_search`).

    Returns:
        ``(idx [n, k] int64, dist [n, k])`` with Euclidean distances ascending along each row.
    """
    check_points("x", x)
    return knn_search(x, x, k, backend=backend, exclude_self=True)
