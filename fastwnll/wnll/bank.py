"""``TemplateBank``: a fixed set of labelled templates indexed once, so that WNLL interpolations of
queries against it (docs/design.md, section 2.5) cost O(queries x templates x d) instead of a kNN
graph of all points, and give exactly the graph, weights and scores of the full rebuild.

How. The kNN graph of templates + queries is a function of the points alone (``fastwnll.knn.search``: the
``k`` smallest ``(distance, index)`` pairs per row, templates numbered ``0..m-1``, queries after
them). So, per scale of the features (the full rebuild divides all points by a power of two,
``fastwnll.wnll.weights.unit_scale``, which the queries can change):

- once: each template's ``k`` nearest templates (``knn_graph`` of the bank, with its distances);
- per call: the product-form distances of the queries to all points (one matrix product with the
  bank, centred on its mean), from which
  - each query's row: its ``k + 4`` (then ``k + 32``) smallest candidates re-scored with the
    distance of every exact path and certified (``fastwnll.knn.search.certified``; a query failing twice is
    searched by ``knn_search``);
  - each template's row: a query enters it only if strictly closer than its ``k``-th template (on a
    tie the template wins: it has the smaller index); the pairs that can (a rigorous bound of the
    product-form error) are re-scored and merged into the template's list.

Only the rows that touch a query enter the WNLL system (template-template edges do not), so the
solve runs on that subgraph, numbered in the same order: the compiled solver then performs the very
operations of the full solve. The weights of the template rows are those of their full merged rows
(``sigma_j`` and all). The gradient flows to the queries only (the bank is a constant).
"""

from __future__ import annotations

import torch

from fastwnll.extension.precision import full_precision, working_dtype
from fastwnll.knn.search import (
    certified,
    check_backend,
    check_points,
    exact_arithmetic,
    exact_backend,
    knn_graph,
    knn_search,
    refine_candidates,
    relative_error,
)
from fastwnll.wnll.interpolate import (
    check_features,
    check_labels,
    classes_of,
    in_dtype,
    solver_options,
    wnll_interpolate,
)
from fastwnll.wnll.solver import check_reachable, host_copies, solve
from fastwnll.wnll.weights import check_options as check_graph_options
from fastwnll.wnll.weights import power_of_two_below, weights_from_distances

__all__ = ["TemplateBank", "contents_stamp"]

# Candidates per query row: first k + this many, then k + _WIDE_EXTRA (as fastwnll.knn.search does).
_EXTRA = 4
_WIDE_EXTRA = 32
# Product-form distances held at once (query rows x points): tiles of queries small enough to stay in
# cache (large temporaries cost page faults on every call).
_TILE_ELEMENTS = 1 << 19
# Indexes kept, one per scale of the features (a few: the queries' magnitude rarely varies by more).
_SCALES = 4
# A transductive call with at least this many queries per template rebuilds the whole graph instead
# (fastwnll.wnll_interpolate: the same scores, bit for bit): the bank's path costs O(q (m + q) d) in
# torch, the rebuild O((m + q)^2 d) in the native search, and the rebuild was as fast from about
# q = m / 5 on (1 thread of a 2-core x86-64 VM, 64 features: m = 1000 templates, q = 200: bank
# 0.015 s, rebuild 0.019 s; q = 400: 0.028 s vs 0.022 s; m = 10,000, q = 2,000: 0.50 s vs 0.46 s;
# q = 30,000 against m = 1,000: 26.6 s vs 4.9 s).
REBUILD_QUERIES_PER_TEMPLATE = 0.2


def contents_stamp(t: torch.Tensor) -> tuple:
    """What identifies the contents of ``t`` without reading them: storage, layout and version counter
    (which every in-place change through autograd-visible tensors increments). An inference tensor has
    no version counter: its stamp equals no other, so whatever depends on it is always rebuilt."""
    version = object() if t.is_inference() else t._version
    return t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, t.device, version


def _untracked(t: torch.Tensor) -> bool:
    """Whether in-place changes of ``t`` can bypass its version counter: an inference tensor has none,
    and fused optimizers (``torch.optim.Adam(..., fused=True)`` and the like) update the leaf tensors
    they train (parameters) without bumping it."""
    return t.is_inference() or (t.is_leaf and t.requires_grad)


class _Index:
    """The bank at one scale: ``points`` (the templates divided by ``scale``, with spare rows where
    each call writes its queries), the centred copy and norms for the product form, each template's
    ``K = min(k, m - 1)`` nearest templates (``idx``, ``dist`` ``[m, K]``) and ``kth`` ``[m]``, the
    distance a query must beat to enter a template's list (inf when ``K < k``: every query enters)."""

    def __init__(self, features: torch.Tensor, scale: torch.Tensor, k: int, backend):
        m, d = features.shape
        self.m, self.scale = m, scale
        self.points = features / scale
        big = min(k, m - 1)
        if big:
            self.idx, self.dist = knn_graph(self.points, big, backend=backend)
        else:
            self.idx = torch.empty(m, 0, dtype=torch.int64, device=features.device)
            self.dist = self.points.new_empty(m, 0)
        self.kth = self.dist[:, k - 1] if big == k else self.points.new_full((m,), float("inf"))
        centre = self.points.mean(0, dtype=torch.float64).to(self.points.dtype)
        self.centred = self.points - centre
        self.centre = centre
        self.sq_norms = (self.centred * self.centred).sum(1)
        # A query i may enter template j's list only if P_ij < enter_bound_j + 2 rho a_i^2 (see
        # TemplateBank._search): P_ij is within rho (a + b)^2 <= 2 rho (a^2 + b^2) of the exact d^2 (a, b
        # the centred norms), and the re-scored distance must be below kth_j, so d < kth_j / (1 - rho).
        # Inflated by a few roundings of the bound itself; inf where every query enters.
        rho = relative_error(self.points.dtype, d)
        norms = torch.linalg.vector_norm(self.centred, dim=1, dtype=torch.float64)
        bound = (self.kth.to(torch.float64) / (1 - rho)).square() + 2 * rho * norms.square()
        self.enter_bound = bound.to(self.points.dtype) * (1 + 4 * torch.finfo(self.points.dtype).eps)

    def with_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """``[m + q, d]``: the templates then ``queries``, in a buffer grown as needed (the
        templates are not copied on every call)."""
        m, q = self.m, queries.shape[0]
        if self.points.shape[0] < m + q:
            with torch.inference_mode(False):  # a normal tensor, written in place in any mode
                grown = self.points.new_empty(m + max(q, self.points.shape[0] - m), self.points.shape[1])
                grown[:m] = self.points[:m]
            self.points = grown
        self.points[m : m + q] = queries
        return self.points[: m + q]

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for t in (self.points, self.centred, self.idx, self.dist, self.kth, self.sq_norms, self.enter_bound)
        )


class _Graph:
    """The graph of one call: the query rows (``query_idx``, ``query_dist`` ``[q, k]``) and the
    template rows a query entered (``rows`` ``[r]`` ascending, ``row_idx``, ``row_dist`` ``[r, k]``), all
    in the numbering templates ``0..m-1``, queries ``m..``; distances at ``index.scale``."""

    def __init__(self, index, query_idx, query_dist, rows, row_idx, row_dist):
        self.index, self.query_idx, self.query_dist = index, query_idx, query_dist
        self.rows, self.row_idx, self.row_dist = rows, row_idx, row_dist


class TemplateBank:
    """A WNLL template bank indexed for repeated interpolations (docs/design.md, section 2.5).

    ``bank.interpolate(x)`` equals ``fastwnll.wnll_interpolate(features, labels, x, ...)`` with the
    same options, bit for bit (transductive mode, exact kNN backend): same kNN graph (indices and
    distances), same weights, same scores; the gradient with respect to ``x`` is the same up to
    the order of floating-point sums. The bank's own kNN lists are computed once per scale of the
    features and kept (``[m, k]``, never ``m x m``); a call then computes the distances of the
    queries to the templates and to each other only.

    A transductive call with many queries (at least :data:`REBUILD_QUERIES_PER_TEMPLATE` per
    template) with an exact backend is computed by the full rebuild itself, which then costs less
    than the bank's update (quadratic in the queries too) and gives the same result.

    **Transductive vs inductive.** In the WNLL graph the queries of one call are nodes too, so a
    query's scores depend on the other queries of the call (their neighbours, and the ``mu`` of
    ``n/m - 1``): the paper's protocol. ``inductive=True`` interpolates each query against the bank
    alone (as ``wnll_interpolate(features, labels, x[i:i+1])`` would, ``mu`` defaulting to ``1/m``):
    deterministic and independent of the batch. With one query all its graph neighbours are
    templates, so its score has a closed form, ``u = sum_j c_j y_j / sum_j c_j`` with
    ``c_j = w_qj + (1 + mu) w_jq`` (``w_jq > 0`` only for the templates whose ``k`` nearest the
    query enters, with their ``sigma_j`` recomputed): no solve.

    ``features`` and ``labels`` are kept by reference (not copied), whatever tensors they are, and
    the bank re-indexes itself when their contents change: it detects in-place changes through the
    version counters (as autograd does). Two kinds of tensors can change without them, and for
    those the bank also keeps a copy of the contents and compares it on every call (one pass over
    the tensor, one host synchronisation): inference tensors (made under ``torch.inference_mode``,
    they have no version counter) and leaf tensors that require grad, such as an ``nn.Parameter``
    (fused optimizers, ``torch.optim.Adam/AdamW/SGD(..., fused=True)``, update them without bumping
    it; so do writes through ``.data``). For other tensors, changes that bypass the version counter
    (writes through ``.data``, numpy views or DLPack) are not seen: make a new bank then.

    Args:
        features: ``[m, d]`` float template features (float16, bfloat16, float32 or float64), CPU or
            CUDA, finite; kept by reference (not copied; see above for how changes are seen).
        labels: ``[m]`` int64 labels in ``[0, num_classes)``, same device.
        k, k_sigma, kernel: graph options as for :func:`fastwnll.wnll_interpolate`.
        num_classes: default ``max(labels) + 1``.
        knn_backend: exact (``"auto"``, ``"native"``, ``"faiss"``, ``"torch"``: the result is
            exact and does not depend on the choice) or approximate (``"hnsw"``, ``"ivf"``, an
            :class:`fastwnll.ApproximateKNN` or its spec string): then the bank's own kNN lists are approximate (the
            queries' distances are still computed exactly), :attr:`exact` is False and the graph
            is *not* that of the full rebuild.

    Attributes:
        exact: whether the graph is the exact kNN graph (the backend is exact).
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        k: int = 15,
        k_sigma: int | None = None,
        kernel: str = "gaussian",
        num_classes: int | None = None,
        knn_backend="auto",
    ):
        check_features("features", features)
        check_labels(labels, features.shape[0], num_classes, features.device)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k_sigma = check_graph_options(k, k_sigma, kernel)
        self.k, self.kernel, self.knn_backend = k, kernel, check_backend(knn_backend)
        self.exact = exact_backend(self.knn_backend)
        self.features, self.labels = features, labels
        self._num_classes = num_classes
        self._validate()

    @torch.inference_mode(False)
    def _validate(self) -> None:
        """Checks the values of the bank and (re)sets what depends on them; drops the indexes. Its
        tensors are normal ones even when called in inference mode (they are reused outside it)."""
        check_points("features", self.features)
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(self.labels)).tolist())
        self.num_classes = classes_of(lo, hi, self._num_classes, "labels")
        work = working_dtype(self.features.dtype)
        self._work = self.features.detach().to(work)
        self._scale = power_of_two_below(self._work.abs().amax())
        self._one_hot = (self.labels.unsqueeze(1) == torch.arange(self.num_classes, device=self.labels.device)).to(work)
        self._indexes: dict[float, _Index] = {}
        self._stamps = self._stamp()
        # the contents of tensors whose version counter may miss a change (see the class docstring)
        self._copies = tuple(t.detach().clone() if _untracked(t) else None for t in (self.features, self.labels))

    @property
    def num_templates(self) -> int:
        return self.features.shape[0]

    def index_bytes(self) -> int:
        """Memory held by the indexes built so far (bytes)."""
        return sum(index.nbytes() for index in self._indexes.values())

    def _stamp(self) -> tuple:
        """The stamps of the features and labels; without the version counter where it is not
        trusted (those tensors are compared with their copies instead)."""
        return tuple(
            contents_stamp(t)[:-1] if _untracked(t) else contents_stamp(t) for t in (self.features, self.labels)
        )

    def _current(self) -> None:
        if self._stamp() != self._stamps or any(
            copy is not None and not torch.equal(copy, t) for copy, t in zip(self._copies, (self.features, self.labels))
        ):
            self._validate()

    def _check_queries(self, queries: torch.Tensor, validate: bool) -> None:
        check_features("queries", queries)
        if queries.shape[1] != self.features.shape[1]:
            raise ValueError(f"queries have {queries.shape[1]} features but the bank has {self.features.shape[1]}")
        if queries.device != self.features.device:
            raise ValueError(f"queries are on {queries.device} but the bank is on {self.features.device}")
        if queries.dtype != self.features.dtype:
            raise TypeError(f"queries are {queries.dtype} but the bank is {self.features.dtype}")
        if validate:
            check_points("queries", queries)

    @torch.inference_mode(False)
    def _index(self, queries: torch.Tensor) -> _Index:
        """The index at the scale of the full rebuild with these queries (the largest magnitude of
        all points, as a power of two), built on first use (normal tensors even in inference mode:
        the index is reused outside it)."""
        scale = torch.maximum(self._scale, power_of_two_below(queries.detach().abs().amax()))
        key = float(scale)
        index = self._indexes.pop(key, None)
        if index is None:
            if len(self._indexes) >= _SCALES:
                self._indexes.pop(next(iter(self._indexes)))
            index = _Index(self._work, scale, self.k, self.knn_backend)
        self._indexes[key] = index  # most recently used last
        return index

    # ----------------------------------------------------------------------------- public
    def graph(self, queries: torch.Tensor, *, validate: bool = True):
        """The kNN graph of templates + ``queries`` (templates first), as ``fastwnll.knn_graph`` of the
        full rebuild's unit-scale points gives it (bit for bit with an exact backend).

        Args:
            queries: ``[q, d]``, the bank's dtype and device; ``k < m + q``.
        Returns:
            ``(idx [m + q, k] int64, dist [m + q, k])``: distances of the points divided by the
            power of two of ``fastwnll.wnll.weights.unit_scale`` (half precision: float32).
        """
        self._current()
        self._check_queries(queries, validate)
        self._check_size(queries.shape[0])
        with full_precision(queries.device):
            g = self._transductive_graph(queries.detach().to(self._work.dtype))
            big = g.index.idx.shape[1]
            idx = g.index.idx.new_empty(self.num_templates, self.k)
            dist = g.index.dist.new_empty(self.num_templates, self.k)
            if big == self.k:
                idx.copy_(g.index.idx)
                dist.copy_(g.index.dist)
            idx[g.rows], dist[g.rows] = g.row_idx, g.row_dist
            return torch.cat([idx, g.query_idx]), torch.cat([dist, g.query_dist])

    def interpolate(
        self,
        queries: torch.Tensor,
        *,
        inductive: bool = False,
        mu: float | None = None,
        tol: float | None = None,
        max_iter: int = 1000,
        on_nonconvergence: str = "raise",
        return_info: bool = False,
        validate: bool = True,
    ):
        """WNLL class scores of ``queries`` against the bank.

        Args:
            queries: ``[q, d]`` features, the bank's dtype and device; may require grad (the
                gradient flows to them, not to the bank).
            inductive: ``False`` (transductive, the paper's protocol): one graph of the bank and all
                queries, exactly ``fastwnll.wnll_interpolate(features, labels, queries)``;
                ``True``: each query against the bank alone (see the class docstring).
            mu: template weight; ``None`` is ``n/m - 1`` with ``n`` the nodes of the graph
                (``q/m`` transductive, ``1/m`` inductive).
            tol, max_iter, on_nonconvergence, return_info: as for :func:`fastwnll.wnll_interpolate`
                (transductive only: the inductive form solves nothing, and ``return_info`` is
                refused there).
            validate: check the queries' values (finite) and, transductive, that every query reaches
                a template (one host synchronisation on CUDA besides the search's).

        Returns:
            ``[q, num_classes]`` scores in the queries' dtype (rows are probability vectors); with
            ``return_info``, ``(scores, fastwnll.SolveInfo)``.
        """
        self._current()
        self._check_queries(queries, validate)
        q, m = queries.shape[0], self.num_templates
        if not isinstance(inductive, bool):
            raise TypeError(f"inductive must be True or False, got {inductive!r}")
        if inductive and return_info:
            raise ValueError("return_info=True needs a solve: the inductive form has none (closed form)")
        self._check_size(1 if inductive else q)
        n = m + (1 if inductive else q)
        dtype = self._work.dtype
        mu, tol = solver_options(mu, self.k, n, m, tol, max_iter, on_nonconvergence, dtype)
        if not inductive and self.exact and q >= REBUILD_QUERIES_PER_TEMPLATE * m:
            # the cheaper path for many queries: the full rebuild (the bank as a constant)
            return wnll_interpolate(
                self.features.detach(),
                self.labels,
                queries,
                k=self.k,
                k_sigma=self.k_sigma,
                mu=mu,
                num_classes=self.num_classes,
                tol=tol,
                max_iter=max_iter,
                kernel=self.kernel,
                knn_backend=self.knn_backend,
                on_nonconvergence=on_nonconvergence,
                return_info=return_info,
                validate=validate,
            )
        x = queries.to(dtype)
        with full_precision(queries.device):
            if inductive:
                out = self._inductive(x, mu)
            else:
                g = self._transductive_graph(x.detach())
                out = self._solve(g, x, mu, tol, max_iter, on_nonconvergence, return_info, validate)
        return in_dtype(out, queries.dtype, return_info)

    def _check_size(self, q: int) -> None:
        if self.k >= self.num_templates + q:
            raise ValueError(f"k={self.k} must be < n={self.num_templates + q} (templates + queries of one graph)")

    # ----------------------------------------------------------------------------- search
    def _search(self, index: _Index, xs: torch.Tensor, base, transductive: bool):
        """Query rows and entering pairs of the queries ``xs`` ``[q, d]`` (scaled). Transductive: the
        rows are over ``base`` (templates then queries, each query's own row excluded); otherwise over
        the templates alone. Returns ``(idx [q, k], dist [q, k], pairs [2, p])``, the (query,
        template) pairs that may enter a template's list (``_Index.enter_bound``)."""
        m, q = self.num_templates, xs.shape[0]
        centred = xs - index.centre
        sq = (centred * centred).sum(1)
        spread = torch.linalg.vector_norm(centred, dim=1, dtype=torch.float64).square()
        own = torch.arange(m, m + q, device=xs.device) if transductive else None
        available = m + q - 1 if transductive else m
        rho = relative_error(xs.dtype, xs.shape[1])
        row_bound = (2 * rho * spread).to(xs.dtype) * (1 + 4 * torch.finfo(xs.dtype).eps)
        idx, dist, pairs = [], [], []
        tile = max(1, _TILE_ELEMENTS // (m + q if transductive else m))
        for start in range(0, q, tile):
            rows = slice(start, min(q, start + tile))
            with exact_arithmetic(xs.device):
                to_bank = torch.addmm(index.sq_norms.unsqueeze(0), centred[rows], index.centred.T, alpha=-2.0).add_(
                    sq[rows].unsqueeze(1)
                )
                parts = [to_bank]
                if transductive:
                    to_queries = torch.addmm(sq.unsqueeze(0), centred[rows], centred.T, alpha=-2.0).add_(
                        sq[rows].unsqueeze(1)
                    )
                    itself = torch.arange(to_queries.shape[0], device=xs.device)
                    to_queries[itself, own[rows] - m] = float("inf")
                    parts.append(to_queries)
            found = self._nearest(base, xs[rows], parts, spread[rows], available, None if own is None else own[rows])
            idx.append(found[0])
            dist.append(found[1])
            # pairs: P < column + row, i.e. P - column < row (in place: the tile's values are no longer needed)
            pair = (to_bank.sub_(index.enter_bound.unsqueeze(0)) < row_bound[rows].unsqueeze(1)).nonzero().T
            pair[0] += start
            pairs.append(pair)
        return torch.cat(idx), torch.cat(dist), torch.cat(pairs, 1)

    @staticmethod
    def _smallest(parts, kc: int, todo) -> torch.Tensor:
        """``[len(todo), kc]`` indices (templates, then queries) of the ``kc`` smallest product-form
        values of the rows ``todo`` over ``parts`` (the values to the templates, then to the queries)."""
        values, indices, offset = [], [], 0
        for part in parts:
            top = part[todo].topk(min(kc, part.shape[1]), dim=1, largest=False, sorted=False)
            values.append(top.values)
            indices.append(top.indices + offset)
            offset += part.shape[1]
        if len(parts) == 1:
            return indices[0]
        best = torch.cat(values, 1).topk(kc, dim=1, largest=False, sorted=False).indices
        return torch.cat(indices, 1).gather(1, best)

    def _nearest(self, base, rows_x, parts, spread, available: int, exclude):
        """The ``k`` nearest points of ``base`` to each row of ``rows_x`` in ``(distance, index)``
        order (``exclude``: each row's own index, or None), from their product-form values ``parts``:
        ``k + 4`` candidates re-scored and certified, then ``k + 32``, then a full search."""
        k, dim = self.k, base.shape[1]
        rho = relative_error(base.dtype, dim)
        idx = dist = None
        todo = torch.arange(rows_x.shape[0], device=base.device)
        for kc in (min(k + _EXTRA, available), min(k + _WIDE_EXTRA, available)):
            sub = None if exclude is None else exclude[todo]
            found_idx, found_dist = refine_candidates(rows_x[todo], base, self._smallest(parts, kc, todo), kc, sub)
            ok = certified(found_dist, k, spread[todo], rho, rho, available)
            if idx is None:
                idx, dist = found_idx[:, :k].clone(), found_dist[:, :k].clone()
            else:
                idx[todo], dist[todo] = found_idx[:, :k], found_dist[:, :k]
            todo = todo[~ok]
            if not todo.numel():
                return idx, dist
        idx[todo], dist[todo] = self._searched(base, rows_x[todo], k, None if exclude is None else exclude[todo])
        return idx, dist

    @staticmethod
    def _searched(base, rows_x, k: int, exclude):
        """``knn_search`` of ``rows_x`` in ``base``; with ``exclude`` (each row's own index), ``k + 1``
        neighbours of which the point itself is dropped (the last one when it is not among them)."""
        if exclude is None:
            return knn_search(rows_x, base, k)
        idx, dist = knn_search(rows_x, base, k + 1)
        drop = idx == exclude.unsqueeze(1)
        drop[:, -1] |= ~drop.any(1)
        keep = ~drop
        return idx[keep].view(-1, k), dist[keep].view(-1, k)

    def _transductive_graph(self, x: torch.Tensor) -> _Graph:
        """The query rows and the changed template rows of the graph of the bank and ``x`` ``[q, d]``
        (detached, working dtype)."""
        index = self._index(x)
        xs = x / index.scale
        base = index.with_queries(xs)
        query_idx, query_dist, (i, j) = self._search(index, xs, base, transductive=True)
        rows, row_idx, row_dist = self._merge(index, base, i, j, queries_at=self.num_templates)
        return _Graph(index, query_idx, query_dist, rows, row_idx, row_dist)

    def _merge(self, index: _Index, base, i, j, queries_at: int):
        """Merge the candidate pairs (query ``i``, template ``j``) into the templates' lists: re-scored,
        kept when strictly closer than ``kth[j]``, and each changed list sorted in ``(distance,
        index)`` order with the query numbered ``queries_at + i``. Returns ``(rows [r], idx [r, k],
        dist [r, k])``, rows ascending."""
        node = queries_at + i
        d = refine_candidates(base[j], base, node.unsqueeze(1), 1)[1].squeeze(1)
        enter = d < index.kth[j]
        order = torch.argsort(j[enter], stable=True)
        j, node, d = j[enter][order], node[enter][order], d[enter][order]
        rows, counts = torch.unique_consecutive(j, return_counts=True)
        width = int(counts.max()) if counts.numel() else 0
        group = torch.repeat_interleave(torch.arange(rows.shape[0], device=j.device), counts)
        slot = torch.arange(j.shape[0], device=j.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        extra_idx = torch.full((rows.shape[0], width), base.shape[0], dtype=torch.int64, device=j.device)
        extra_dist = torch.full((rows.shape[0], width), float("inf"), dtype=d.dtype, device=j.device)
        extra_idx[group, slot], extra_dist[group, slot] = node, d
        # the templates' lists are in (distance, index) order and the queries follow in index order (the
        # pairs come query by query), all of larger index: a stable sort by distance merges them
        cand_idx = torch.cat([index.idx[rows], extra_idx], 1)
        cand_dist = torch.cat([index.dist[rows], extra_dist], 1)
        keep = cand_dist.argsort(dim=1, stable=True)[:, : self.k]
        return rows, cand_idx.gather(1, keep), cand_dist.gather(1, keep)

    # ----------------------------------------------------------------------------- weights and scores
    def _solve(
        self,
        g: _Graph,
        x,
        mu: float,
        tol: float,
        max_iter: int,
        on_nonconvergence: str,
        return_info: bool,
        validate: bool,
    ):
        """The WNLL solve on the subgraph of the rows that touch a query (see the module docstring).
        ``x``: ``[q, d]`` queries in the working dtype, maybe requiring grad."""
        index, m, k = g.index, self.num_templates, self.k
        involved = torch.zeros(m, dtype=torch.bool, device=x.device)
        involved[g.rows] = True
        involved[g.query_idx[g.query_idx < m]] = True
        if not involved.any():  # no query touches a template: one isolated template, the check then says so
            involved[0] = True
        nodes = involved.nonzero().squeeze(1)  # the templates of the subgraph, in their order
        mp = nodes.shape[0]
        number = torch.cumsum(involved, 0) - 1  # template -> its node in the subgraph
        to_query = g.row_idx >= m
        row_dist, query_dist = g.row_dist, g.query_dist
        if torch.is_grad_enabled() and x.requires_grad:
            row_dist, query_dist = self._differentiable(g, x / index.scale)
        w = weights_from_distances(torch.cat([row_dist, query_dist]), k_sigma=self.k_sigma, kernel=self.kernel)
        row_w, query_w = w[: g.rows.shape[0]], w[g.rows.shape[0] :]
        # template-template edges do not enter the system: self-loops of weight 0 in the subgraph
        at = number[g.rows]
        idx = torch.arange(mp, device=x.device).unsqueeze(1).repeat(1, k)
        idx[at] = torch.where(to_query, g.row_idx - m + mp, at.unsqueeze(1))
        query_idx = torch.where(g.query_idx >= m, g.query_idx - m + mp, number[g.query_idx.clamp(max=m - 1)])
        idx = torch.cat([idx, query_idx])
        w = torch.cat([w.new_zeros(mp, k).index_copy(0, at, torch.where(to_query, row_w, 0)), query_w])
        if validate:
            check_reachable(*host_copies(idx, w), mp)
        return solve(
            idx,
            w,
            self._one_hot[nodes],
            mu=mu,
            tol=tol,
            max_iter=max_iter,
            on_nonconvergence=on_nonconvergence,
            return_info=return_info,
        )

    @staticmethod
    def _differentiable(g: _Graph, xs):
        """The distances of ``g``'s query rows and template rows recomputed with autograd to the
        queries ``xs`` (scaled), as ``fastwnll.wnll.weights.weights_of_points`` computes them in the
        full rebuild (template-template distances too, so that the weights are its weights bit for bit;
        they carry no gradient)."""
        m = g.index.m
        points = torch.cat([g.index.points[:m], xs])
        query_dist = torch.linalg.vector_norm(xs.unsqueeze(1) - points[g.query_idx], dim=-1)
        row_dist = torch.linalg.vector_norm(points[g.rows].unsqueeze(1) - points[g.row_idx], dim=-1)
        return row_dist, query_dist

    def _inductive(self, x, mu: float) -> torch.Tensor:
        """Closed-form scores of each query of ``x`` ``[q, d]`` (working dtype, maybe requiring grad)
        in the graph of the bank and that query alone (see the class docstring)."""
        m, q, k = self.num_templates, x.shape[0], self.k
        index = self._index(x)
        xs = x.detach() / index.scale
        templates = index.points[:m]
        query_idx, query_dist, (i, j) = self._search(index, xs, templates, transductive=False)
        d = refine_candidates(templates[j], xs, i.unsqueeze(1), 1)[1].squeeze(1)
        enter = d < index.kth[j]
        i, j, d = i[enter], j[enter], d[enter]
        # each entered template row with the query inserted at its place in (distance, index) order
        # (after the templates at its distance: they have smaller indices); k <= K + 1 columns
        listed = torch.cat([index.dist[j], index.dist.new_full((j.shape[0], 1), float("inf"))], 1)
        at = (listed <= d.unsqueeze(1)).sum(1, keepdim=True)
        if torch.is_grad_enabled() and x.requires_grad:
            xg = x / index.scale
            query_dist = torch.linalg.vector_norm(xg.unsqueeze(1) - templates[query_idx], dim=-1)
            d = torch.linalg.vector_norm(templates[j] - xg[i], dim=-1)
        column = torch.arange(k, device=x.device).unsqueeze(0)
        after = listed.gather(1, (column - 1).clamp_min(0).expand(j.shape[0], -1))
        merged = torch.where(column < at, listed[:, :k], torch.where(column == at, d.unsqueeze(1), after))
        w_in = weights_from_distances(merged, k_sigma=self.k_sigma, kernel=self.kernel).gather(1, at).squeeze(1)
        w_out = weights_from_distances(query_dist, k_sigma=self.k_sigma, kernel=self.kernel)
        rows = torch.arange(q, device=x.device).unsqueeze(1).expand(-1, k)
        scores = torch.zeros(q, self.num_classes, dtype=x.dtype, device=x.device)
        scores = scores.index_put(
            (rows.reshape(-1), self.labels[query_idx].reshape(-1)), w_out.reshape(-1), accumulate=True
        )
        scores = scores.index_put((i, self.labels[j]), (1 + mu) * w_in, accumulate=True)
        return scores / scores.sum(1, keepdim=True)
