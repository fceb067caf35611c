"""k-nearest-neighbour search: exact by default (fastwnll's C++ kernel on the CPU, faiss's flat index,
or a tiled torch path on any device), approximate on request (faiss HNSW or IVF-Flat).

How the exact search stays exact in floating point. The fast backends rank points by squared
distances in the matrix-product form ``|q|^2 + |b|^2 - 2 <q, b>``, whose rounding error is about
``d * eps * (|q|^2 + |b|^2)``: with features that share a large offset it exceeds the distances
themselves. So

1. both sets are first centred on the base's mean (this removes a common offset);
2. the backend returns ``k + 4`` candidates per row, which are re-scored with exact (direct
   difference) distances (:func:`refine_candidates`);
3. each row is *certified* with a rigorous bound of the product-form error: it passes when every
   point outside its candidates is provably farther than its k-th re-scored neighbour (see
   :func:`certified`);
4. rows that fail are searched again with ``k + 32`` candidates (this certifies rows among many
   near-duplicates, whose k-th and (k+4)-th distances are too close for the bound); rows failing
   again (far-apart clusters, where no single centre helps; large ties) are searched in float64,
   each group of nearby rows centred on its own mean, and certified again; the few that still fail
   are scanned with the re-scoring distances themselves.

**The result is a function of the points alone** (whatever the backend, the centre, the candidates
or the path a row took): the neighbours of row ``i`` are the ``k`` smallest pairs
``(dist(i, j), j)`` in lexicographic order, ties broken by the smaller index, where ``dist`` is the
one re-scoring distance of the working dtype (:func:`fastwnll.knn.tiled.distances`: a fixed order
of summation, symmetric bit for bit, the same on every device). So a graph can be updated by
merging (``fastwnll.TemplateBank``) and give the very graph a full search gives. Half-precision
features (float16, bfloat16) are searched in float32. Distances rely on no underflow of squared
coordinate differences (differences below ``1e-19`` of the largest coordinate in float32).
"""

from __future__ import annotations

import contextlib

import torch

from fastwnll.extension import loader
from fastwnll.knn.approximate import APPROXIMATE_METHODS, ApproximateKNN, approximate_candidates, parse_backend
from fastwnll.knn.faiss_index import GPU_MAX_K, flat_candidates, has_gpu, load_faiss
from fastwnll.knn.tiled import locality_order, refine, smallest

__all__ = [
    "ApproximateKNN",
    "BACKENDS",
    "certified",
    "check_backend",
    "check_points",
    "exact_backend",
    "knn_graph",
    "knn_search",
    "refine_candidates",
    "relative_error",
]

BACKENDS = ("auto", "native", "faiss", "torch") + APPROXIMATE_METHODS
# Extra candidates fetched before exact re-scoring; they also give the certificate its margin. Rows
# not certified (e.g. among many near-duplicates at the k-th distance) are searched again with more.
_EXTRA_CANDIDATES = 4
_WIDE_EXTRA = 32
# On CUDA, faiss-gpu is used by `auto` only above this many base points.
_FAISS_GPU_MIN_BASE = 1 << 16
# The native self-graph search puts the points in locality order above this many points.
_LOCALITY_MIN_POINTS = 512
# Rows re-searched together around one centre by the float64 fallback.
_FALLBACK_GROUP = 256
# Candidate coordinates (rows x columns x features) the last-resort scan re-scores at once.
_SCAN_CHUNK_ELEMENTS = 1 << 22


def check_points(name: str, x: torch.Tensor) -> None:
    """Raise a clear error unless ``x`` is a finite, non-empty floating-point ``[n, d]`` tensor."""
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


def _check_no_overflow(query: torch.Tensor, base: torch.Tensor, dtype: torch.dtype, input_dtype) -> None:
    """Squared distances in the matmul form |q|^2 + |b|^2 - 2<q, b> must be finite in ``dtype``."""
    largest = max(float(t.abs().max()) for t in ((query,) if base is query else (query, base)))
    limit = (torch.finfo(dtype).max / (4.0 * query.shape[1])) ** 0.5
    if largest > limit:
        raise ValueError(
            f"features are too large for {dtype} distances (max |x - mean| = {largest:.3g} > {limit:.3g}: "
            "squared distances would overflow); rescale them"
            + (" (faiss always computes in float32)" if dtype != input_dtype else " or use float64")
        )


def check_backend(backend):
    """``backend`` checked, as every function taking a kNN backend accepts it: a name of
    :data:`BACKENDS` (returned as it is), an :class:`ApproximateKNN` (returned as it is) or the spec
    string of one, ``"method:name=value,..."`` such as ``"hnsw:ef_search=128,hnsw_m=16"`` (returned
    parsed, :func:`fastwnll.knn.approximate.parse_backend`). ValueError naming the choices otherwise."""
    if isinstance(backend, ApproximateKNN) or (isinstance(backend, str) and backend in BACKENDS):
        return backend
    if isinstance(backend, str) and ":" in backend:
        return parse_backend(backend)
    raise ValueError(
        f"unknown kNN backend {backend!r}; choose one of {BACKENDS}, pass an ApproximateKNN or its spec "
        "string such as 'hnsw:ef_search=128'"
    )


def exact_backend(backend) -> bool:
    """Whether the checked ``backend`` (:func:`check_backend`) is an exact one."""
    return not (isinstance(backend, ApproximateKNN) or backend in APPROXIMATE_METHODS)


def _resolve_backend(backend, query: torch.Tensor, nb: int, kc: int):
    """The backend that runs for ``kc`` candidates per row: an exact backend name, or an
    :class:`ApproximateKNN`."""
    backend = check_backend(backend)
    if isinstance(backend, ApproximateKNN):
        return backend
    if backend in APPROXIMATE_METHODS:
        return ApproximateKNN(method=backend)
    faiss = load_faiss()
    if backend == "faiss" and faiss is None:
        raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu)")
    if backend == "native":
        loader.load()  # raises ImportError with the rebuild hint when the extension is missing
    if backend != "auto":
        return backend
    if query.is_cuda:
        return "faiss" if has_gpu(faiss) and nb >= _FAISS_GPU_MIN_BASE and kc <= GPU_MAX_K else "torch"
    if loader.available():
        return "native"
    return "faiss" if faiss is not None else "torch"


@contextlib.contextmanager
def exact_arithmetic(device: torch.device):
    """Within: autocast off (CPU and ``device``) and IEEE float32 matrix products (no TF32 or
    bf16 inner products), whatever the caller enabled; restored after. The precision settings are
    process-wide, so a matrix product running concurrently in another thread sees them too."""
    flags = []
    for name in ("cuda", "mkldnn"):
        matmul = getattr(getattr(torch.backends, name, None), "matmul", None)
        try:
            flags.append((matmul, matmul.fp32_precision))
        except AttributeError:  # torch before the fp32_precision settings: the legacy global switch
            flags = None
            break
    legacy = torch.get_float32_matmul_precision() if flags is None else None
    devices = {"cpu", device.type}
    with contextlib.ExitStack() as stack:
        for device_type in devices:
            stack.enter_context(torch.autocast(device_type, enabled=False))
        try:
            if flags is None:
                torch.set_float32_matmul_precision("highest")
            else:
                for matmul, _ in flags:
                    matmul.fp32_precision = "ieee"
            yield
        finally:
            if flags is None:
                torch.set_float32_matmul_precision(legacy)
            else:
                for matmul, value in flags:
                    matmul.fp32_precision = value


def relative_error(dtype: torch.dtype, dim: int) -> float:
    """Relative error unit of a length-``dim`` inner product, squared norm or distance in ``dtype``:
    ``(dim + 5) u`` (``u`` the unit roundoff), above the worst case ``gamma_{dim+2} + 2u`` of any
    summation order, the centring's rounding included."""
    return (dim + 5) * torch.finfo(dtype).eps / 2


def certified(
    dist: torch.Tensor, k: int, spread: torch.Tensor, rho_search: float, rho_refine: float, available: int
) -> torch.Tensor:
    """[nq] bool: rows whose k smallest candidates, in ``(distance, index)`` order, are provably the
    k smallest of all points in that order.

    ``dist`` ``[nq, kc]``: re-scored distances of a row's candidates, ascending (inf for invalid
    entries and the point itself), each within relative error ``rho_refine`` of the exact distance.
    The candidates are the ``kc`` smallest product-form squared distances of centred points, each
    within ``rho_search (2 a + d)^2`` of the true ``d^2`` (``a^2 = spread``, the query's squared
    distance from the centre; ``d`` the point's distance). So ``T``, the largest product-form value
    kept, is ``>= d_M^2 - rho (2a + d_M)^2`` for the farthest candidate ``d_M``, and a point left out
    (product-form value ``>= T``) closer than ``d_M`` lies at squared distance
    ``L = d_M^2 - 2 rho (2a + d_M)^2`` or more. The row passes when every point left out is provably
    re-scored *strictly* above the k-th distance ``D_k`` (so that no left-out point ties with it
    and could win on the index): ``L > (D_k / (1 - rho_refine))^2`` (also when ``D_k = 0``: then
    every duplicate of the point must be a candidate), or when every point is a candidate. All
    bounds taken at their error margins, in float64.
    """
    count = torch.isfinite(dist).sum(1)  # ascending rows: the finite entries come first
    dk = dist[:, k - 1].to(torch.float64) / (1 - rho_refine)
    far = dist.gather(1, (count - 1).clamp_min(0).unsqueeze(1)).squeeze(1).to(torch.float64) * (1 - rho_refine)
    lower = far.square() - 2 * rho_search * (2 * spread.sqrt() + far).square()
    return (count >= available) | ((count >= k) & (lower > dk.square()))


def _candidates_native(query, base, kc):
    """Indices [nq, kc] of fastwnll's C++ blocked search of centred ``query`` in ``base`` (on the
    CPU; CUDA inputs are copied). The extension is loaded (by :func:`_resolve_backend`)."""
    return torch.ops.fastwnll.knn_candidates(query.cpu(), base.cpu(), kc, False).to(query.device)


def _native_graph(x, centre, kc):
    """(candidates [n, kc], spread [n] float64) of the self-graph of ``x`` by the C++ search, which
    scores each pair once and never returns the point itself; ``spread`` is ``|x_i - centre|^2``.

    Above a few tiles the points are first put in locality order (see
    :func:`fastwnll.knn.tiled.locality_order`), centred in the same copy, so the search holds one
    copy of the points.
    """
    device, x, centre = x.device, x.cpu(), centre.cpu()
    perm = locality_order(x) if x.shape[0] > _LOCALITY_MIN_POINTS else None
    xc = x - centre if perm is None else x.index_select(0, perm).sub_(centre)
    _check_no_overflow(xc, xc, xc.dtype, xc.dtype)
    cand = torch.ops.fastwnll.knn_candidates(xc, xc, kc, True)
    spread = torch.linalg.vector_norm(xc, dim=1, dtype=torch.float64).square()
    del xc
    if perm is not None:  # back to the caller's numbering, rows and entries
        valid = cand >= 0
        cand = perm[cand.clamp_min_(0)].masked_fill_(~valid, -1)
        del valid
        cand = torch.empty_like(cand).index_copy_(0, perm, cand)
        spread = torch.empty_like(spread).index_copy_(0, perm, spread)
    return cand.to(device), spread.to(device)


def refine_candidates(
    query: torch.Tensor, base: torch.Tensor, cand: torch.Tensor, k: int, exclude: torch.Tensor | None = None
):
    """The ``k`` smallest candidates of each row in ``(distance, index)`` order, with the re-scoring
    distance of every exact path (:func:`fastwnll.knn.tiled.distances`; on the CPU the equivalent
    C++ op ``fastwnll::knn_refine`` when the extension is built).

    Args:
        query: ``[nq, d]``, base: ``[nb, d]`` float32/float64, one dtype and device.
        cand: ``[nq, kc]`` int64 indices into ``base`` (``-1``: no candidate), ``k <= kc``.
        exclude: ``[nq]`` int64 base row never returned for each query row (the point itself), or None.

    Returns:
        ``(idx [nq, k] int64, dist [nq, k] in query's dtype)``; entries without a candidate are
        ``(-1, inf)`` and come last.
    """
    if query.device.type == "cpu" and loader.available():
        if exclude is not None:
            cand = cand.masked_fill(cand == exclude.unsqueeze(1), -1)
        return torch.ops.fastwnll.knn_refine(query, base, cand, k, None)
    return refine(query, base, cand, k, exclude=exclude)


def _centred(query, base, centre, search_dtype):
    """(query - centre, base - centre) (one tensor when ``query is base``), checked for overflow of
    squared distances in ``search_dtype``."""
    base_c = base - centre
    query_c = base_c if query is base else query - centre
    _check_no_overflow(query_c, base_c, search_dtype, query.dtype)
    return query_c, base_c


def _certified_search(query, base, k, backend, offset, centre, extra, rows=None):
    """(idx [r, k], dist [r, k], ok [r] bool) for the query rows ``rows`` (None: all): ``k + extra``
    candidates from ``backend`` on points centred on ``centre``, re-scored and certified."""
    nb, dim = base.shape
    available = nb - (offset is not None)
    search_dtype = torch.float32 if backend == "faiss" else query.dtype
    kc = min(k + extra + (offset is not None), nb)
    if rows is None and backend == "native" and offset == 0 and query is base:
        # a self-graph: the point itself is never a candidate, no extra slot for it
        cand, spread = _native_graph(query, centre, min(k + extra, available))
    else:
        sub = query if rows is None else query[rows]
        query_c, base_c = _centred(sub, base, centre, search_dtype)
        if backend == "native":
            cand = _candidates_native(query_c, base_c, kc)
        elif backend == "faiss":
            cand = flat_candidates(query_c, base_c, kc)
        else:
            cand = smallest(query_c, base_c, min(kc, available), exclude=_own_rows(query, rows, offset))
        spread = torch.linalg.vector_norm(query_c, dim=1, dtype=torch.float64).square()
        del base_c, query_c
    sub = query if rows is None else query[rows]
    idx, dist = refine_candidates(sub, base, cand, cand.shape[1], _own_rows(query, rows, offset))
    del cand
    ok = certified(dist, k, spread, relative_error(search_dtype, dim), relative_error(query.dtype, dim), available)
    return idx[:, :k].contiguous(), dist[:, :k].contiguous(), ok


def _own_rows(query, rows, offset):
    """[r] int64: the base row of each query row's point itself (None without one)."""
    if offset is None:
        return None
    return (torch.arange(query.shape[0], device=query.device) if rows is None else rows) + offset


def _exact(query, base, k, backend, offset):
    """Exact (idx [nq, k], dist [nq, k]) in the input dtype (float32/float64): steps 1-3 of the
    module docstring on ``backend``, rows not certified searched again with ``_WIDE_EXTRA``
    candidates (a whole self-graph again when many failed), then :func:`_exact_rows` for the rest."""
    centre = base.mean(0, dtype=torch.float64).to(base.dtype)
    idx, dist, ok = _certified_search(query, base, k, backend, offset, centre, _EXTRA_CANDIDATES)
    failed = (~ok).nonzero().squeeze(1)
    if failed.numel():
        if failed.numel() > query.shape[0] // 8 and backend == "native" and offset == 0 and query is base:
            idx, dist, ok = _certified_search(query, base, k, backend, offset, centre, _WIDE_EXTRA)
        else:
            idx[failed], dist[failed], ok[failed] = _certified_search(
                query, base, k, backend, offset, centre, _WIDE_EXTRA, failed
            )
    _redo_rows(query, base, k, offset, ~ok, idx, dist)
    return idx, dist


def _redo_rows(query, base, k, offset, redo, idx, dist) -> None:
    """Overwrite the rows ``redo`` ([nq] bool) of ``idx``/``dist`` with :func:`_exact_rows`."""
    rows = redo.nonzero().squeeze(1)
    if rows.numel():
        exclude = None if offset is None else rows + offset
        idx[rows], sub = _exact_rows(query[rows], base, k, exclude)
        dist[rows] = sub.to(dist.dtype)


def _exact_rows(query, base, k, exclude):
    """Exact (idx [nq, k], dist [nq, k]) by the careful path: float64 product form with ``k + 32``
    candidates, each group of nearby rows (locality order) centred on its own mean, re-scored and
    certified; rows still uncertified (ties) by :func:`_scan_rows`. ``exclude``: [nq] base row of
    each query's point itself, or None."""
    nq, nb = query.shape[0], base.shape[0]
    available = nb - (exclude is not None)
    kc = min(available, k + _WIDE_EXTRA)
    order = locality_order(query) if nq > 2 * _FALLBACK_GROUP else torch.arange(nq, device=query.device)
    cand = torch.empty(nq, kc, dtype=torch.int64, device=query.device)
    spread = torch.empty(nq, dtype=torch.float64, device=query.device)
    for start in range(0, nq, _FALLBACK_GROUP):
        rows = order[start : start + _FALLBACK_GROUP]
        group = query[rows].to(torch.float64)
        centre = group.mean(0)
        cand[rows] = smallest(
            group, base, kc, exclude=None if exclude is None else exclude[rows], centre=centre, dtype=torch.float64
        )
        spread[rows] = (group - centre).square().sum(1)
    idx, dist = refine_candidates(query, base, cand, kc, exclude)
    dim = query.shape[1]
    ok = certified(dist, k, spread, relative_error(torch.float64, dim), relative_error(query.dtype, dim), available)
    idx, dist = idx[:, :k].contiguous(), dist[:, :k].contiguous()
    rows = (~ok).nonzero().squeeze(1)
    if rows.numel():
        idx[rows], dist[rows] = _scan_rows(query[rows], base, k, None if exclude is None else exclude[rows])
    return idx, dist


def _scan_rows(query, base, k, exclude):
    """(idx [nq, k], dist [nq, k]): every point of ``base`` re-scored (:func:`refine_candidates`), a
    chunk of columns at a time merged with the best so far; exact by construction, O(nq nb d)."""
    nq, nb = query.shape[0], base.shape[0]
    chunk = max(k + 1, _SCAN_CHUNK_ELEMENTS // max(1, nq * query.shape[1]))
    idx = dist = None
    for start in range(0, nb, chunk):
        cols = torch.arange(start, min(nb, start + chunk), device=query.device).expand(nq, -1)
        cand = cols if idx is None else torch.cat([idx, cols], 1)
        idx, dist = refine_candidates(query, base, cand, min(k, cand.shape[1]), exclude)
    return idx, dist


def _approximate(query, base, k, options, offset):
    """(idx, dist) from a faiss approximate index, re-scored exactly; rows with fewer than ``k``
    valid neighbours (the index returned -1 entries) are searched exactly instead."""
    query_c, base_c = _centred(query, base, base.mean(0, dtype=torch.float64).to(base.dtype), torch.float32)
    kc = min(k + _EXTRA_CANDIDATES + (offset is not None), base.shape[0])
    cand = approximate_candidates(query_c, base_c, kc, options)
    del base_c, query_c
    idx, dist = refine_candidates(query, base, cand, k, _own_rows(query, None, offset))
    _redo_rows(query, base, k, offset, ~torch.isfinite(dist[:, -1]), idx, dist)
    return idx, dist


def _check_self(exclude_self, self_offset, nq: int, nb: int):
    """The validated offset of the query rows in the base (None without ``exclude_self``)."""
    if not isinstance(exclude_self, bool):
        raise TypeError(f"exclude_self must be a bool, got {type(exclude_self).__name__}")
    if not exclude_self:
        if self_offset is not None:
            raise ValueError(
                "self_offset is only used with exclude_self=True (query row i is base row i + self_offset)"
            )
        return None
    if self_offset is None:
        self_offset = 0
    if isinstance(self_offset, bool) or not isinstance(self_offset, int):
        raise TypeError(f"self_offset must be an int, got {type(self_offset).__name__}")
    if not 0 <= self_offset <= nb - nq:
        raise ValueError(
            f"self_offset={self_offset} out of range: query rows i + self_offset must be base rows, "
            f"so 0 <= self_offset <= nb - nq = {nb - nq}"
        )
    return self_offset


def knn_search(
    query: torch.Tensor,
    base: torch.Tensor,
    k: int,
    *,
    backend="auto",
    exclude_self: bool = False,
    self_offset: int | None = None,
):
    """The k nearest neighbours in ``base`` of every row of ``query``: exact unless an approximate
    backend is chosen.

    Args:
        query: ``[nq, d]`` float32/float64 (float16/bfloat16: searched in float32), CPU or CUDA.
        base: ``[nb, d]``, same dtype and device as ``query``.
        k: neighbours per query, ``1 <= k <= nb`` (``k <= nb - 1`` with ``exclude_self``).
        backend: exact: ``"native"`` (fastwnll's C++ kernel: blocked matrix products and a
            vectorised threshold filter, multi-threaded; on the CPU, CUDA inputs are copied; for a
            graph each pair of points is scored once), ``"faiss"`` (flat index, float32; GPU index
            on the tensors' device for CUDA tensors when faiss has GPUs, otherwise the search runs
            on the CPU), ``"torch"`` (tiled matmul + top-k, tiles sized by memory, any device) or
            ``"auto"`` (native for CPU tensors, else faiss, else torch; for CUDA tensors torch, or
            faiss-gpu when present and ``nb >= 65536``: never a copy to the host). Every exact
            backend gives the same neighbours (see the module docstring for how they are made exact).
            Approximate: ``"hnsw"``, ``"ivf"``, an :class:`ApproximateKNN` with its options or
            its spec string (``"hnsw:ef_search=128"``, :func:`check_backend`): faiss indexes,
            **not exact** (true neighbours may be missed; distances are exact for the points
            returned; rows for which the index returns fewer than ``k`` points are
            searched exactly instead).
        exclude_self: query row ``i`` is base row ``i + self_offset`` and must not be returned
            as its own neighbour (used for graphs; duplicates of the point are still returned).
        self_offset: int in ``[0, nb - nq]``, default 0; only with ``exclude_self``.

    Returns:
        ``(idx, dist)``: ``idx`` ``[nq, k]`` int64 indices into ``base``; ``dist`` ``[nq, k]``
        Euclidean distances (computed from coordinate differences) in the input dtype, ascending
        along each row. Both are on the input device and carry no gradient. Autocast and TF32 are
        switched off inside (see :func:`exact_arithmetic`).
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
    nq, nb = query.shape[0], base.shape[0]
    offset = _check_self(exclude_self, self_offset, nq, nb)
    available = nb - 1 if exclude_self else nb
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > available:
        raise ValueError(
            f"k={k} is too large: only {available} neighbours exist"
            + (f" (k must be < n={nb}, the point itself is excluded)" if exclude_self else f" (nb={nb})")
        )
    chosen = _resolve_backend(backend, query, nb, k + _EXTRA_CANDIDATES + 1)
    work = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    self_graph = offset == 0 and query is base
    q = query.detach().to(work)
    b = q if self_graph else base.detach().to(work)
    with exact_arithmetic(q.device):
        if isinstance(chosen, ApproximateKNN):
            idx, dist = _approximate(q, b, k, chosen, offset)
        else:
            idx, dist = _exact(q, b, k, chosen, offset)
    return idx, dist.to(query.dtype)


def knn_graph(x: torch.Tensor, k: int, *, backend="auto"):
    """kNN graph of the rows of ``x``, each point itself excluded (exact unless ``backend`` is
    approximate).

    Args:
        x: ``[n, d]`` floating point (half precision is searched in float32), CPU or CUDA, finite.
        k: neighbours per point, ``1 <= k < n``.
        backend: as in :func:`knn_search` (``"auto"``, ``"native"``, ``"faiss"``, ``"torch"``;
            approximate ``"hnsw"``, ``"ivf"`` or an :class:`ApproximateKNN`).

    Returns:
        ``(idx [n, k] int64, dist [n, k])`` with Euclidean distances in ``x``'s dtype, ascending
        along each row.
    """
    check_points("x", x)
    return knn_search(x, x, k, backend=backend, exclude_self=True)
