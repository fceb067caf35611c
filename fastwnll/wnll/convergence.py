"""How a WNLL solve reports its outcome: :class:`SolveInfo`, the convergence error, and the
non-convergence policy shared by the forward solve and the adjoint solve of its backward.

A solve counts as converged only when the residual recomputed from the returned ``u`` is at most
``tol`` and, for the forward solve, the row sums of ``u`` obey the maximum principle (they lie within
the range of the row sums of the labels ``y``: exactly 1 for probability rows) up to
:func:`row_sum_tolerance`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from dataclasses import dataclass

import torch

DEFAULT_TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
POLICIES = ("raise", "warn", "ignore")

# The on_nonconvergence policy of the wnll_solve call being recorded for autograd: read when the
# op's autograd context is set up, so its backward reports a non-converged adjoint solve the same way.
_POLICY = contextvars.ContextVar("fastwnll_wnll_policy", default="raise")


class WNLLConvergenceError(RuntimeError):
    """A WNLL solve (forward or adjoint) did not reach ``tol`` within ``max_iter`` iterations, or its
    result breaks the maximum principle by more than rounding allows."""


@dataclass(frozen=True)
class SolveInfo:
    """Outcome of one solve, measured on the returned solution.

    ``iterations``: CG iterations run. ``residual``: the Jacobi-scaled relative residual
    ``max_c ||D^-1 (b_c - A u_c)|| / ||D^-1 b_c||`` (``D = diag(dgr)``, the weighted degrees), recomputed from ``u``.
    ``row_sum_error``: how far the row sums of ``u`` lie outside the range of the row sums of ``y``,
    relative to the largest row of ``y`` (``max_r |sum_c u_rc - 1|`` for probability rows; NaN for
    an adjoint solve, which has no such constraint). ``converged``: ``residual <= tol`` and
    ``row_sum_error <= row_sum_tolerance(tol, dtype)``.
    """

    iterations: int
    residual: float
    converged: bool
    row_sum_error: float = math.nan


def row_sum_tolerance(tol: float, dtype: torch.dtype) -> float:
    """The largest row-sum error a converged forward solve may have: ``min(0.5, 1000 * max(tol, eps))``
    with ``eps`` the machine epsilon of ``dtype`` (float32 or float64).

    The row-sum error of an accurate solve is its residual amplified by how weakly the queries are
    tied to the templates (on kNN graphs, 10 to a few hundred times ``tol``); garbage (rows of zeros,
    overflow, a dtype too coarse for the system) misses by a large fraction of 1.
    """
    return min(0.5, 1000.0 * max(tol, torch.finfo(dtype).eps))


def current_policy() -> str:
    """The non-convergence policy of the enclosing :func:`policy_scope` (``"raise"`` outside any)."""
    return _POLICY.get()


@contextlib.contextmanager
def policy_scope(policy: str):
    """Makes ``policy`` the :func:`current_policy` inside the block."""
    token = _POLICY.set(policy)
    try:
        yield
    finally:
        _POLICY.reset(token)


def is_concrete(t: torch.Tensor) -> bool:
    """False while torch.compile / AOTAutograd traces with fake or functional tensors."""
    return type(t) is torch.Tensor and not torch.compiler.is_compiling()


def _reason(info: SolveInfo, tol: float, row_tol: float, max_iter: int, dtype: torch.dtype) -> str:
    if math.isnan(info.residual):
        return (
            f"its residual is NaN after {info.iterations} iterations: the system overflowed {dtype} "
            "(mu or the weights too large) or holds non-finite values"
        )
    if info.residual > tol:
        if info.iterations < max_iter:
            return (
                f"its relative residual stalled at {info.residual:.3e} > tol={tol:.3e} after "
                f"{info.iterations} iterations, at the precision {dtype} allows for this system "
                "(use float64 or a larger tol)"
            )
        return (
            f"relative residual {info.residual:.3e} > tol={tol:.3e} after {info.iterations} iterations "
            "(raise max_iter or tol)"
        )
    return (
        f"its relative residual {info.residual:.3e} <= tol={tol:.3e} but the rows of u break the maximum "
        f"principle: their sums lie up to {info.row_sum_error:.3e} outside the range of the rows of y "
        f"(allowed: {row_tol:.1e}); the system is too ill-conditioned for this tol and {dtype} (lower tol "
        "or use float64), or some queries reach no template (validate=False skips that check)"
    )


def report(
    iterations: torch.Tensor,
    residual: torch.Tensor,
    row_sum_error: torch.Tensor | None,
    *,
    tol: float,
    max_iter: int,
    dtype: torch.dtype,
    policy: str,
    what: str,
) -> SolveInfo:
    """The :class:`SolveInfo` of a solve from the op's CPU scalars, after applying ``policy``
    (``"raise"``: :class:`WNLLConvergenceError`, ``"warn"``: RuntimeWarning, ``"ignore"``) when it did
    not converge. ``row_sum_error`` is None for an adjoint solve; ``what`` names the solve in messages."""
    residual = float(residual)
    row_error = math.nan if row_sum_error is None else float(row_sum_error)
    row_tol = row_sum_tolerance(tol, dtype)
    converged = residual <= tol and (row_sum_error is None or row_error <= row_tol)
    info = SolveInfo(int(iterations), residual, converged, row_error)
    if not converged and policy != "ignore":
        message = f"WNLL {what} solve did not converge: {_reason(info, tol, row_tol, max_iter, dtype)}"
        if policy == "raise":
            raise WNLLConvergenceError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return info
