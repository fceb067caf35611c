"""The parts of the kNN search written in torch (any device): tiled top-k of squared distances, exact
re-scoring of candidates, and the locality order used by the native search.

Every function here works in bounded extra memory: distance tiles are sized by a byte budget
(:func:`tile_budget`), never by the square of the number of points.
"""

from __future__ import annotations

import numpy as np
import torch

# Byte budget of one tile of distances on the CPU (cache-friendly tiles are no slower than big ones).
_CPU_TILE_BYTES = 128 << 20
# On CUDA the budget is a quarter of the free device memory, within these bounds.
_CUDA_TILE_BYTES = (256 << 20, 4 << 30)
# Rows a tile keeps at least when the base is so large that its columns must be split.
_MIN_TILE_ROWS = 64
# Largest tile of gathered candidate coordinates the exact re-scoring materialises (elements; kept
# cache-sized, which is several times faster on CPUs than one big gather).
_REFINE_TILE_ELEMENTS = 1 << 20
# locality_order: one centroid per this many points, this many Lloyd iterations, and the number of
# (point, centroid) distances it holds at once.
_LOCALITY_CLUSTER = 256
_LOCALITY_ITERATIONS = 2
_LOCALITY_CHUNK_ELEMENTS = 1 << 20


def tile_budget(device: torch.device) -> int:
    """Bytes one tile of distances may take on ``device``: 128 MiB on the CPU; on CUDA a quarter of
    the free memory, clamped to [256 MiB, 4 GiB]."""
    if device.type != "cuda":
        return _CPU_TILE_BYTES
    free, _ = torch.cuda.mem_get_info(device)
    return min(max(free // 4, _CUDA_TILE_BYTES[0]), _CUDA_TILE_BYTES[1])


def tile_shape(nq: int, nb: int, kc: int, dim: int, dtype: torch.dtype, budget: int) -> tuple[int, int]:
    """(rows, columns) of one tile of a ``[nq, nb]`` search for ``kc`` neighbours in ``dim``
    dimensions, so that the tile's distances plus a copy of its base rows (``columns x dim``, shifted
    or cast) take at most ``budget`` bytes: the whole base when ``_MIN_TILE_ROWS`` rows of it fit,
    else column chunks (at least ``kc`` wide); then as many rows as the budget allows."""
    size = torch.finfo(dtype).bits // 8
    per_column = size * (_MIN_TILE_ROWS + dim)
    cols = nb if nb * per_column <= budget else min(nb, max(kc, budget // per_column))
    return max(1, min(nq, (budget - cols * dim * size) // (cols * size))), cols


def smallest(
    query: torch.Tensor,
    base: torch.Tensor,
    kc: int,
    *,
    exclude: torch.Tensor | None = None,
    centre: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Indices ``[nq, kc]`` int64 of the ``kc`` rows of ``base`` nearest to each row of ``query`` by
    squared distances in the matrix-product form ``|q|^2 + |b|^2 - 2 <q, b>`` (candidates: the error
    is about ``d * eps * (|q|^2 + |b|^2)``, so centre the points first; ties in any order).

    Args:
        query: ``[nq, d]``, base: ``[nb, d]``, floating point, on one device.
        kc: ``1 <= kc <= nb`` (``nb - 1`` with ``exclude``).
        exclude: ``[nq]`` int64 base row never returned for each query row (the point itself).
        centre: ``[d]``; both sets are shifted by ``-centre`` (tile by tile) before the distances.
        dtype: arithmetic dtype (tiles are cast to it); default the input dtype.

    A tile (distances and the shifted base rows) takes at most :func:`tile_budget` bytes (base
    columns are split when needed).
    """
    dtype = dtype or query.dtype
    nq, nb = query.shape[0], base.shape[0]
    rows, cols = tile_shape(nq, nb, kc, query.shape[1], dtype, tile_budget(query.device))
    out = torch.empty(nq, kc, dtype=torch.int64, device=query.device)
    for r0 in range(0, nq, rows):
        q = _shifted(query[r0 : r0 + rows], centre, dtype)
        qn = (q * q).sum(1, keepdim=True)
        best_d = best_i = None
        for c0 in range(0, nb, cols):
            b = _shifted(base[c0 : c0 + cols], centre, dtype)
            d2 = torch.addmm((b * b).sum(1).unsqueeze(0), q, b.T, alpha=-2.0).add_(qn)
            if exclude is not None:
                own = exclude[r0 : r0 + rows] - c0
                hit = ((own >= 0) & (own < b.shape[0])).nonzero().squeeze(1)
                d2[hit, own[hit]] = float("inf")
            top = d2.topk(min(kc, b.shape[0]), dim=1, largest=False)
            cand_d, cand_i = top.values, top.indices + c0
            if best_d is not None:
                cand_d, cand_i = torch.cat([best_d, cand_d], 1), torch.cat([best_i, cand_i], 1)
                keep = cand_d.topk(kc, dim=1, largest=False).indices
                cand_d, cand_i = cand_d.gather(1, keep), cand_i.gather(1, keep)
            best_d, best_i = cand_d, cand_i
        out[r0 : r0 + rows] = best_i
    return out


def _shifted(x: torch.Tensor, centre: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    x = x.to(dtype)
    return x if centre is None else x - centre.to(dtype)


def distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``|a - b|`` along the last dimension (``a``, ``b`` broadcastable
    ``[..., d]``), from coordinate differences, with one fixed order of summation: the same
    floating-point operations as the C++ op ``fastwnll::knn_refine`` (eight running sums over the
    columns ``t = l mod 8`` of the whole groups of eight, then the remaining columns in order, then
    the eight sums in order). Elementwise operations only, so a pair's distance does not depend on
    the shapes or the device it is computed with, and ``distances(a, b) == distances(b, a)`` bit for
    bit: every exact kNN path computes distances this way (on the CPU through the C++ op). The
    square root is correctly rounded (IEEE): torch's vectorised CPU ``sqrt`` is not always (it is
    off by one unit in the last place for about 1 % of float64 inputs), so CPU tensors take
    numpy's."""
    diff = a - b
    sq = diff * diff
    d = sq.shape[-1]
    whole = d - d % 8
    acc = torch.zeros_like(sq[..., 0])
    for t in range(whole, d):
        acc = acc + sq[..., t]
    if whole:
        groups = sq[..., :whole].unflatten(-1, (whole // 8, 8))
        lanes = groups[..., 0, :]
        for g in range(1, whole // 8):
            lanes = lanes + groups[..., g, :]
        for lane in range(8):
            acc = acc + lanes[..., lane]
    if acc.device.type == "cpu":
        np.sqrt(acc.numpy(), out=acc.numpy())  # acc is a new tensor: in place
        return acc
    return acc.sqrt()


def refine(
    query: torch.Tensor,
    base: torch.Tensor,
    cand: torch.Tensor,
    k: int,
    *,
    exclude: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
):
    """Exact Euclidean distances of the candidates ``cand`` ``[nq, kc]`` (:func:`distances`, in
    ``dtype``, default the input dtype); ``-1`` entries and ``cand == exclude[row]`` count as inf
    (and are returned as ``-1``); the ``k`` smallest per row in ascending ``(distance, index)``
    order: ``(idx [nq, k] int64, dist [nq, k] in dtype)``.

    The same computation as the C++ op ``fastwnll::knn_refine`` (used for CPU tensors), for any
    device and with a per-row excluded index.
    """
    dtype = dtype or query.dtype
    nq = query.shape[0]
    idx = torch.empty(nq, k, dtype=torch.int64, device=query.device)
    dist = torch.empty(nq, k, dtype=dtype, device=query.device)
    tile = max(1, min(nq, _REFINE_TILE_ELEMENTS // (cand.shape[1] * query.shape[1])))
    for start in range(0, nq, tile):
        c = cand[start : start + tile]
        q = query[start : start + tile].to(dtype)
        invalid = c < 0
        if exclude is not None:
            invalid |= c == exclude[start : start + tile].unsqueeze(1)
        c = c.masked_fill(invalid, -1).sort(dim=1).values  # ties are broken by the index
        d = distances(base[c.clamp_min(0)].to(dtype), q.unsqueeze(1)).masked_fill_(c < 0, float("inf"))
        best, order = d.sort(dim=1, stable=True)
        idx[start : start + tile] = c.gather(1, order[:, :k])
        dist[start : start + tile] = best[:, :k]
    return idx, dist


def locality_order(x: torch.Tensor) -> torch.Tensor:
    """Permutation [n] int64 that groups nearby rows of ``x`` ([n, d], any float dtype and device).

    Rows are sorted by their nearest centroid after a few Lloyd iterations with ``n // 256``
    centroids started from a fixed random sample (deterministic), in coordinates relative to the
    mean (so a common offset does not swamp the matrix-product distances). Extra memory is
    O(n + d * n / 256): distances to the centroids are computed a chunk of rows at a time. Any
    permutation gives the same kNN result; a good one makes the native search faster.
    """
    n = x.shape[0]
    clusters = max(1, n // _LOCALITY_CLUSTER)
    mean = x.mean(0)
    start = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:clusters].to(x.device)
    centroids = x[start] - mean
    for _ in range(_LOCALITY_ITERATIONS):
        assign = _nearest_centroid(x, mean, centroids)
        counts = torch.bincount(assign, minlength=clusters).clamp_min(1).unsqueeze(1).to(x.dtype)
        centroids = torch.zeros_like(centroids).index_add_(0, assign, x).div_(counts).sub_(mean)
    return torch.argsort(_nearest_centroid(x, mean, centroids), stable=True)


def _nearest_centroid(x: torch.Tensor, mean: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[n] int64 index of the centroid nearest to each row of ``x - mean`` (matrix-product form; an
    approximate grouping is enough)."""
    norms = (centroids * centroids).sum(1)
    chunk = max(1, _LOCALITY_CHUNK_ELEMENTS // max(centroids.shape[0], x.shape[1]))
    # written into one preallocated output: small results kept between the chunks' large temporaries
    # would fragment the heap (glibc then grows it by a chunk per iteration)
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for s in range(0, x.shape[0], chunk):
        out[s : s + chunk] = torch.addmm(norms, x[s : s + chunk] - mean, centroids.T, alpha=-2.0).argmin(1)
    return out
