"""The WNLL Laplacian solve (DESIGN section 2) as a differentiable torch op.

``wnll_solve(idx, w, y, mu=...)`` returns the harmonic extension ``u`` of the template labels ``y``
to the queries. Nodes ``0..m-1`` are the labelled templates, ``m..n-1`` the queries; the directed
kNN edges are ``i -> idx[i, t]`` with weight ``w[i, t]``. The compiled op ``fastwnll::wnll_solve``
solves ``A u = b`` for all classes with one multi-right-hand-side Jacobi-preconditioned CG; its
gradient with respect to ``w`` is the exact adjoint (one more solve with the same matrix, op
``fastwnll::wnll_adjoint``). Both ops have fake kernels, so ``torch.compile`` can trace them.
"""
from __future__ import annotations

import contextvars
import math
import numbers
import warnings
from dataclasses import dataclass

import torch

from fastwnll import _ext

_ext.load()  # registers torch.ops.fastwnll.wnll_solve / wnll_adjoint

DEFAULT_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
POLICIES = ("raise", "warn", "ignore")
# Label-propagation sweeps between two host synchronisations in the reachability check on GPUs.
_SWEEPS_PER_CHECK_CUDA = 4
# How many unreachable query indices an error message lists.
_LISTED = 8

# The on_nonconvergence policy of the wnll_solve call being recorded for autograd: read when the
# op's autograd context is set up, so its backward reports a non-converged adjoint solve the same way.
_POLICY = contextvars.ContextVar("fastwnll_wnll_policy", default="raise")


class WNLLConvergenceError(RuntimeError):
    """The CG solve (forward or adjoint) did not reach ``tol`` within ``max_iter`` iterations."""


class WNLLUnreachableError(ValueError):
    """Some queries are connected to no template in the graph, so the WNLL system is singular."""


@dataclass(frozen=True)
class SolveInfo:
    """Outcome of one CG solve: iterations run, final max relative residual over the classes
    (``max_c ||r_c|| / ||b_c||``), and whether it reached the tolerance."""

    iterations: int
    residual: float
    converged: bool


def _report(iterations: torch.Tensor, residual: torch.Tensor, tol: float, policy: str, what: str) -> SolveInfo:
    info = SolveInfo(int(iterations), float(residual), float(residual) <= tol)
    if not info.converged and policy != "ignore":
        message = (
            f"WNLL {what} solve did not converge: relative residual {info.residual:.3e} > tol={tol:.3e} "
            f"after {info.iterations} iterations (raise max_iter or tol)"
        )
        if policy == "raise":
            raise WNLLConvergenceError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return info


def _is_concrete(t: torch.Tensor) -> bool:
    """False while torch.compile / AOTAutograd traces with fake or functional tensors."""
    return type(t) is torch.Tensor and not torch.compiler.is_compiling()


# --------------------------------------------------------------------------------------------
# Fake kernels and autograd of the compiled ops
# --------------------------------------------------------------------------------------------
def _scalars():
    return (torch.empty((), dtype=torch.int64, device="cpu"), torch.empty((), dtype=torch.float64, device="cpu"))


@torch.library.register_fake("fastwnll::wnll_solve")
def _wnll_solve_fake(idx, w, y, mu, tol, max_iter):
    return (w.new_empty((idx.shape[0] - y.shape[0], y.shape[1])), *_scalars())


@torch.library.register_fake("fastwnll::wnll_adjoint")
def _wnll_adjoint_fake(idx, w, y, u, grad_u, mu, tol, max_iter):
    return (w.new_empty(w.shape), *_scalars())


def _setup_context(ctx, inputs, output):
    idx, w, y, mu, tol, max_iter = inputs
    u, iterations, residual = output
    ctx.save_for_backward(idx, w, y, u)
    ctx.mu, ctx.tol, ctx.max_iter = mu, tol, max_iter
    ctx.policy = _POLICY.get()
    ctx.mark_non_differentiable(iterations, residual)


def _backward(ctx, grad_u, _grad_iterations, _grad_residual):
    if grad_u is None or not ctx.needs_input_grad[1]:
        return None, None, None, None, None, None
    idx, w, y, u = ctx.saved_tensors
    grad_w, iterations, residual = torch.ops.fastwnll.wnll_adjoint(
        idx, w, y, u, grad_u, ctx.mu, ctx.tol, ctx.max_iter
    )
    if _is_concrete(residual):
        _report(iterations, residual, ctx.tol, ctx.policy, "adjoint (backward)")
    return None, grad_w, None, None, None, None


torch.library.register_autograd("fastwnll::wnll_solve", _backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _real(name: str, value, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def _check_arguments(idx, w, y, mu, tol, max_iter, on_nonconvergence):
    """Shapes, dtypes, devices and scalars (no host synchronisation). Returns (mu, tol)."""
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
    if w.dtype not in DEFAULT_TOL:
        raise TypeError(f"w must be float32 or float64, got {w.dtype}")
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
    mu = _real("mu", mu, allow_zero=True)
    tol = DEFAULT_TOL[w.dtype] if tol is None else _real("tol", tol, allow_zero=False)
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if on_nonconvergence not in POLICIES:
        raise ValueError(f"on_nonconvergence must be one of {POLICIES}, got {on_nonconvergence!r}")
    return mu, tol


def _check_values(idx, w, y) -> None:
    """idx in [0, n), w finite and >= 0, y finite: one host synchronisation."""
    stats = torch.stack([
        idx.amin().double(), idx.amax().double(),
        (~torch.isfinite(w)).sum().double(), (w < 0).sum().double(), (~torch.isfinite(y)).sum().double(),
    ]).tolist()
    lo, hi, w_bad, w_neg, y_bad = (int(v) for v in stats)
    n = idx.shape[0]
    if lo < 0 or hi >= n:
        raise ValueError(f"idx values must lie in [0, n={n}), got values in [{lo}, {hi}]")
    if w_bad:
        raise ValueError(f"w contains {w_bad} NaN or Inf values")
    if w_neg:
        raise ValueError(f"w must be >= 0, got {w_neg} negative values")
    if y_bad:
        raise ValueError(f"y contains {y_bad} NaN or Inf values")


def unreachable_queries(idx: torch.Tensor, w: torch.Tensor, m: int) -> torch.Tensor:
    """Queries connected to no template through edges of positive weight (either direction).

    Label propagation from the templates over ``S = W + W^T``, one hop per sweep (the sweep count is
    the largest hop distance from a template, a handful for kNN graphs), with a host synchronisation
    after every sweep on the CPU and every few sweeps on GPUs.

    Args:
        idx: ``[n, k]`` int64 neighbour indices in ``[0, n)``; w: ``[n, k]`` weights >= 0, same device.
        m: number of templates (nodes ``0..m-1``).

    Returns:
        ``[n - m]`` bool mask on idx's device, True for the unreachable queries (rows of ``u``).
    """
    n = idx.shape[0]
    positive = w > 0
    targets = idx.reshape(-1)
    reached = torch.zeros(n, dtype=torch.bool, device=idx.device)
    reached[:m] = True
    sweeps = _SWEEPS_PER_CHECK_CUDA if idx.is_cuda else 1
    count = m
    while True:
        for _ in range(sweeps):
            pulled = (reached[idx] & positive).any(dim=1)  # i -> j with j reached
            pushed = (reached.unsqueeze(1) & positive).reshape(-1).to(torch.int32)  # i reached, i -> j
            hits = torch.zeros(n, dtype=torch.int32, device=idx.device).index_add_(0, targets, pushed)
            reached = reached | pulled | (hits > 0)
        new_count = int(reached.sum())
        if new_count == count:
            return ~reached[m:]
        count = new_count


def _check_reachable(idx, w, m) -> None:
    mask = unreachable_queries(idx, w, m)
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
def wnll_solve(idx: torch.Tensor, w: torch.Tensor, y: torch.Tensor, *, mu: float, tol: float | None = None,
               max_iter: int = 1000, on_nonconvergence: str = "raise", return_info: bool = False):
    """Solve the WNLL system of DESIGN section 2 for the queries, all classes at once.

    Nodes ``0..m-1`` are the templates (``m = y.shape[0]``), ``m..n-1`` the queries. With
    ``S = W + W^T`` (``W[i, idx[i, t]] = w[i, t]``, duplicates summed), solves ``A u = b`` where
    ``A = diag(dgr) - S_UU``, ``dgr_i = sum_j S_ij + mu sum_{j in L} w_ji`` and
    ``b = (S_UL + mu W_LU^T) y`` by Jacobi-preconditioned CG from ``u = 0`` (on CUDA the convergence
    test runs every few iterations, so ``iterations`` may exceed the minimum by a few).
    Differentiable with respect to ``w`` (exact adjoint: one more solve with the same matrix);
    ``idx`` and ``y`` get no gradient.

    Args:
        idx: ``[n, k]`` int64 neighbour indices in ``[0, n)``, CPU or CUDA.
        w: ``[n, k]`` float32/float64 edge weights, finite and >= 0, same device; may require grad.
        y: ``[m, C]`` template label rows (one-hot or probabilities), w's dtype and device, ``1 <= m < n``.
        mu: weight of the template term, finite >= 0 (the paper's ``n/m - 1``).
        tol: relative residual target ``max_c ||r_c|| / ||b_c||``; ``None`` means 1e-5 for float32
            and 1e-10 for float64. Used by the backward's adjoint solve too.
        max_iter: CG iteration cap (>= 1), forward and backward each.
        on_nonconvergence: ``"raise"`` (:class:`WNLLConvergenceError`), ``"warn"`` (RuntimeWarning)
            or ``"ignore"``, for the forward solve and for the backward's adjoint solve.
        return_info: also return a :class:`SolveInfo` of the forward solve.

    Returns:
        ``u``: ``[n - m, C]`` in w's dtype on w's device; with ``return_info``, ``(u, info)``.

    Raises:
        TypeError / ValueError: malformed arguments (message names the problem).
        WNLLUnreachableError: some queries are connected to no template (the system is singular).
        WNLLConvergenceError: CG did not reach ``tol`` (with ``on_nonconvergence="raise"``).
    """
    mu, tol = _check_arguments(idx, w, y, mu, tol, max_iter, on_nonconvergence)
    _check_values(idx, w, y)
    m = y.shape[0]
    _check_reachable(idx, w.detach(), m)
    token = _POLICY.set(on_nonconvergence)
    try:
        u, iterations, residual = torch.ops.fastwnll.wnll_solve(idx, w, y, mu, tol, int(max_iter))
    finally:
        _POLICY.reset(token)
    info = _report(iterations, residual, tol, on_nonconvergence, "forward")
    return (u, info) if return_info else u
