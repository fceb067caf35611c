"""The WNLL Laplacian solve (docs/design.md, section 2) as a differentiable torch op.

``wnll_solve(idx, w, y, mu=...)`` returns the harmonic extension ``u`` of the template labels ``y``
to the queries. Nodes ``0..m-1`` are the labelled templates, ``m..n-1`` the queries; the directed
kNN edges are ``i -> idx[i, t]`` with weight ``w[i, t]``. The compiled op ``fastwnll::wnll_solve``
solves ``A u = b`` for all classes with one multi-right-hand-side Jacobi-preconditioned CG; its
gradient with respect to ``w`` is the exact adjoint (one more solve with the same matrix, op
``fastwnll::wnll_adjoint``; fake kernels in :mod:`fastwnll.extension.fake_kernels`, autograd in
:mod:`fastwnll.wnll.adjoint`).

Validation of the values (one pass; on CUDA the inputs are copied to the host once, with one
synchronisation) happens before the solve; the solve itself reports convergence only after checking
the residual of the returned ``u`` and its row sums (:mod:`fastwnll.wnll.convergence`).
"""

from __future__ import annotations

import math
import numbers

import torch

from fastwnll.extension.precision import HALF, working_dtype
from fastwnll.wnll import adjoint  # noqa: F401  (loads the extension and registers the solve's autograd)
from fastwnll.wnll.convergence import DEFAULT_TOL, POLICIES, SolveInfo, WNLLConvergenceError, policy_scope, report

__all__ = ["wnll_solve", "unreachable_queries", "SolveInfo", "WNLLConvergenceError", "WNLLUnreachableError"]

# How many unreachable query indices an error message lists.
_LISTED = 8


class WNLLUnreachableError(ValueError):
    """Some queries are connected to no template in the graph, so the WNLL system is singular."""


# --------------------------------------------------------------------------------------------
# Checks without host synchronisation: scalars, shapes, dtypes, devices
# --------------------------------------------------------------------------------------------
def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_options(mu, tol, max_iter, on_nonconvergence, dtype: torch.dtype) -> tuple[float, float]:
    """Checks the solver's scalar options for a solve in ``dtype`` (float32 or float64).

    ``mu``: finite, ``>= 0`` and ``1 + mu`` representable in ``dtype``; ``tol``: ``None`` (the dtype's
    default) or in ``(0, 1)`` (``u = 0`` has relative residual 1, so ``tol >= 1`` accepts it without
    any iteration); ``max_iter``: integer ``>= 1``; ``on_nonconvergence`` in :data:`POLICIES`.
    Returns ``(mu, tol)`` as floats.
    """
    mu = _real("mu", mu)
    if not math.isfinite(mu) or mu < 0:
        raise ValueError(f"mu must be finite and >= 0, got {mu}")
    if 1.0 + mu > torch.finfo(dtype).max:
        raise ValueError(
            f"mu={mu:g} cannot be carried by {dtype} (largest value {torch.finfo(dtype).max:.3g}); "
            "use float64 or a smaller mu"
        )
    if tol is None:
        tol = DEFAULT_TOL[dtype]
    else:
        tol = _real("tol", tol)
        if not 0 < tol < 1:
            raise ValueError(f"tol must be finite and > 0 and < 1 (u = 0 has relative residual 1), got {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if on_nonconvergence not in POLICIES:
        raise ValueError(f"on_nonconvergence must be one of {POLICIES}, got {on_nonconvergence!r}")
    return mu, tol


def check_mu_range(mu: float, degree: float, n: int, dtype: torch.dtype) -> None:
    """The WNLL system in ``dtype`` stays finite: its entries reach ``(1 + mu) * degree`` (``degree``: the
    largest weighted degree of a node, out- plus in-weights, times the largest label magnitude, at
    least 1) and the solver's sums over the ``n`` nodes ``n`` times that."""
    largest = (1.0 + mu) * max(degree, 1.0) * n
    if not largest <= torch.finfo(dtype).max:
        raise ValueError(
            f"mu={mu:g} is too large for {dtype}: the WNLL system's entries and their sums reach (1 + mu) * "
            f"{degree:.3g} (largest weighted degree) * {n} (nodes) = {largest:.3g}, beyond the largest {dtype} "
            f"value {torch.finfo(dtype).max:.3g}; use float64 or a smaller mu"
        )


def _check_tensors(idx, w, y) -> None:
    for name, t in (("idx", idx), ("w", w), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if idx.dim() != 2:
        raise ValueError(f"idx must have shape [n, k], got shape {tuple(idx.shape)}")
    if idx.dtype != torch.int64:
        raise TypeError(f"idx must be int64, got {idx.dtype}")
    if idx.shape[1] < 1:
        raise ValueError(f"idx must have at least one neighbour per node, got shape {tuple(idx.shape)}")
    if w.shape != idx.shape:
        raise ValueError(f"w must have idx's shape {tuple(idx.shape)}, got {tuple(w.shape)}")
    if w.dtype not in DEFAULT_TOL and w.dtype not in HALF:
        raise TypeError(f"w must be float16, bfloat16, float32 or float64, got {w.dtype}")
    if y.dim() != 2:
        raise ValueError(f"y must have shape [m, C] (one label row per template), got shape {tuple(y.shape)}")
    if y.dtype != w.dtype:
        raise TypeError(f"y must have w's dtype {w.dtype}, got {y.dtype}")
    n, m = idx.shape[0], y.shape[0]
    if not 1 <= m < n:
        raise ValueError(f"y must have 1 <= m < n={n} rows (templates; the other nodes are queries), got m={m}")
    if y.shape[1] < 1:
        raise ValueError("y must have at least one column (class)")
    for name, t in (("w", w), ("y", y)):
        if t.device != idx.device:
            raise ValueError(f"idx is on {idx.device} but {name} is on {t.device}; put them on one device")


# --------------------------------------------------------------------------------------------
# Value checks: one pass on host copies
# --------------------------------------------------------------------------------------------
def host_copies(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Detached CPU copies of ``tensors`` (all on one device): for CUDA tensors, asynchronous copies
    followed by one synchronisation of the current stream."""
    device = tensors[0].device
    if device.type == "cpu":
        return [t.detach() for t in tensors]
    if device.type != "cuda":
        return [t.detach().cpu() for t in tensors]
    copies = [t.detach().to("cpu", non_blocking=True) for t in tensors]
    torch.cuda.current_stream(device).synchronize()
    return copies


def _check_values(idx, w, y, mu: float, dtype: torch.dtype) -> None:
    """idx in [0, n), w finite and >= 0, y finite, mu small enough for ``dtype`` (CPU tensors)."""
    n = idx.shape[0]
    lo, hi = (int(v) for v in torch.aminmax(idx))
    if lo < 0 or hi >= n:
        raise ValueError(f"idx values must lie in [0, n={n}), got values in [{lo}, {hi}]")
    w_bad = int((~torch.isfinite(w)).sum())
    if w_bad:
        raise ValueError(f"w contains {w_bad} NaN or Inf values")
    w_neg = int((w < 0).sum())
    if w_neg:
        raise ValueError(f"w must be >= 0, got {w_neg} negative values")
    y_bad = int((~torch.isfinite(y)).sum())
    if y_bad:
        raise ValueError(f"y contains {y_bad} NaN or Inf values")
    wd = w.double()
    degree = wd.sum(1).index_add_(0, idx.reshape(-1), wd.reshape(-1)).max()
    check_mu_range(mu, float(degree) * max(1.0, float(y.abs().max())), n, dtype)


def unreachable_queries(idx: torch.Tensor, w: torch.Tensor, m: int) -> torch.Tensor:
    """Queries connected to no template through edges of positive weight (either direction).

    One union-find pass over the edges on the CPU (op ``fastwnll::unreachable_queries``), linear in
    ``n * k`` whatever the shape of the graph; CUDA inputs are copied to the host once (one
    synchronisation).

    Args:
        idx: ``[n, k]`` int64 neighbour indices in ``[0, n)``; w: ``[n, k]`` weights, same device.
        m: number of templates (nodes ``0..m-1``), ``1 <= m < n``.

    Returns:
        ``[n - m]`` bool mask on idx's device, True for the unreachable queries (rows of ``u``).
    """
    idx_host, w_host = host_copies(idx, w)
    return torch.ops.fastwnll.unreachable_queries(idx_host, w_host, m).to(idx.device)


def check_reachable(idx_host: torch.Tensor, w_host: torch.Tensor, m: int) -> None:
    """Raises :class:`WNLLUnreachableError` naming the queries connected to no template (CPU tensors)."""
    mask = torch.ops.fastwnll.unreachable_queries(idx_host, w_host, m)
    bad = mask.nonzero().flatten()
    if bad.numel():
        listed = bad[:_LISTED].tolist()
        more = f" and {bad.numel() - _LISTED} more" if bad.numel() > _LISTED else ""
        raise WNLLUnreachableError(
            f"{bad.numel()} of {mask.numel()} queries are connected to no template through edges of positive "
            f"weight, so the WNLL system is singular: query rows {listed}{more} "
            f"(nodes {[m + q for q in listed]}{more}). Add templates or neighbours (larger k)."
        )


# --------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------
def solve(idx, w, y, *, mu: float, tol: float, max_iter: int, on_nonconvergence: str, return_info: bool):
    """The compiled solve and its convergence report, for checked float32/float64 arguments."""
    with policy_scope(on_nonconvergence):
        u, iterations, residual, row_sum_error = torch.ops.fastwnll.wnll_solve(idx, w, y, mu, tol, int(max_iter))
    info = report(
        iterations,
        residual,
        row_sum_error,
        tol=tol,
        max_iter=int(max_iter),
        dtype=w.dtype,
        policy=on_nonconvergence,
        what="forward",
    )
    return (u, info) if return_info else u


def wnll_solve(
    idx: torch.Tensor,
    w: torch.Tensor,
    y: torch.Tensor,
    *,
    mu: float,
    tol: float | None = None,
    max_iter: int = 1000,
    on_nonconvergence: str = "raise",
    return_info: bool = False,
    validate: bool = True,
):
    """Solve the WNLL system of docs/design.md, section 2 for the queries, all classes at once.

    Nodes ``0..m-1`` are the templates (``m = y.shape[0]``), ``m..n-1`` the queries. With
    ``S = W + W^T`` (``W[i, idx[i, t]] = w[i, t]``, duplicates summed), solves ``A u = b`` where
    ``A = diag(dgr) - S_UU``, ``dgr_i = sum_j S_ij + mu sum_{j in L} w_ji`` and
    ``b = (S_UL + mu W_LU^T) y`` by Jacobi-preconditioned CG from ``u = 0`` (on CUDA the convergence
    test runs every few iterations, so ``iterations`` may exceed the minimum by a few).

    Convergence is judged on the returned ``u``: the Jacobi-scaled relative residual
    ``max_c ||D^-1 (b_c - A u_c)|| / ||D^-1 b_c||`` (``D = diag(dgr)``; each equation in units of the
    probabilities it averages, so rows with a large ``mu`` term do not hide the others) recomputed
    from ``u`` must be ``<= tol`` (CG restarts from ``u`` while that helps), and the row sums of ``u``
    must lie in the range of those of ``y`` (1 for probability rows: the maximum principle) within
    :func:`fastwnll.wnll.convergence.row_sum_tolerance`. Differentiable with respect to ``w`` (exact
    adjoint: one more solve with the same matrix), once: second-order gradients raise an error;
    ``idx`` and ``y`` get no gradient.

    Args:
        idx: ``[n, k]`` int64 neighbour indices in ``[0, n)``, CPU or CUDA.
        w: ``[n, k]`` edge weights, finite and >= 0, same device; may require grad. float32/float64;
            float16/bfloat16 are solved in float32 and ``u`` (and the gradient) returned in w's dtype.
        y: ``[m, C]`` template label rows (one-hot or probabilities), w's dtype and device, ``1 <= m < n``.
        mu: weight of the template term, finite >= 0 (the paper's ``n/m - 1``), small enough that
            the system is finite in the working dtype (checked with the values).
        tol: target of the scaled relative residual, in ``(0, 1)``; ``None`` means 1e-5 for
            float32 (and half precision) and 1e-10 for float64. Used by the backward's adjoint solve too.
        max_iter: CG iteration cap (>= 1), forward and backward each.
        on_nonconvergence: ``"raise"`` (:class:`WNLLConvergenceError`), ``"warn"`` (RuntimeWarning)
            or ``"ignore"``, for the forward solve and for the backward's adjoint solve.
        return_info: also return the :class:`SolveInfo` of the forward solve.
        validate: check the values before solving (idx in range, w finite and >= 0, y finite, mu
            small enough for the dtype, every query connected to a template): one pass over host
            copies, one synchronisation on CUDA. ``False`` skips all of it for trusted inputs in
            training loops (idx is still range-checked by the op, with the solver's first
            convergence test); convergence is still only reported after the residual and row-sum
            checks, and unreachable queries then show up as a row-sum error (non-convergence).

    Returns:
        ``u``: ``[n - m, C]`` in w's dtype on w's device; with ``return_info``, ``(u, info)``.

    Raises:
        TypeError / ValueError: malformed arguments (message names the problem).
        WNLLUnreachableError: some queries are connected to no template (the system is singular).
        WNLLConvergenceError: no convergence (with ``on_nonconvergence="raise"``).
    """
    _check_tensors(idx, w, y)
    dtype = working_dtype(w.dtype)
    mu, tol = check_options(mu, tol, max_iter, on_nonconvergence, dtype)
    ww, yw = w.to(dtype), y.to(dtype)
    if validate:
        idx_host, w_host, y_host = host_copies(idx, ww, yw)
        _check_values(idx_host, w_host, y_host, mu, dtype)
        check_reachable(idx_host, w_host, y.shape[0])
    out = solve(
        idx, ww, yw, mu=mu, tol=tol, max_iter=max_iter, on_nonconvergence=on_nonconvergence, return_info=return_info
    )
    if w.dtype == dtype:
        return out
    return (out[0].to(w.dtype), out[1]) if return_info else out.to(w.dtype)
