"""Fake (meta) kernels of every ``torch.ops.fastwnll`` op and the autograd of the differentiable one.

The schemas are declared in C++ (``csrc/ops.cpp``, which names this module with
``set_python_module``); importing this module (``fastwnll._ext.load()`` does) registers:

- fake kernels for ``wnll_solve``, ``wnll_adjoint``, ``unreachable_queries``, ``knn_candidates`` and
  ``knn_refine``, so that ``torch.compile`` / ``torch.export`` can trace them;
- the autograd of ``wnll_solve`` with respect to ``w``: the exact adjoint gradient (one
  ``wnll_adjoint`` solve with the same matrix). It is once differentiable: a second backward through
  it (``create_graph=True``, then differentiating the gradient again) raises a clear error rather
  than returning a Hessian-vector product that misses the adjoint's own derivative.

``wnll_adjoint``, ``unreachable_queries`` and the kNN ops return integer outputs, masks, or values
used for selection (the kNN distances are recomputed differentiably by
:func:`fastwnll.gaussian_weights`), so they have no autograd of their own.
"""

from __future__ import annotations

import torch

from fastwnll import _ext
from fastwnll.convergence import current_policy, is_concrete, report

_ext.load()

SECOND_ORDER_MESSAGE = (
    "fastwnll.wnll_solve is once differentiable: its backward (the adjoint solve) has no derivative of its "
    "own, so second-order gradients through the WNLL solve (create_graph=True followed by another backward: "
    "gradient penalties, Hessian-vector products, double backward) are not supported"
)


def _cpu_scalar(dtype: torch.dtype) -> torch.Tensor:
    return torch.empty((), dtype=dtype, device="cpu")


@torch.library.register_fake("fastwnll::wnll_solve")
def _wnll_solve_fake(idx, w, y, mu, tol, max_iter):
    u = w.new_empty((idx.shape[0] - y.shape[0], y.shape[1]))
    return u, _cpu_scalar(torch.int64), _cpu_scalar(torch.float64), _cpu_scalar(torch.float64)


@torch.library.register_fake("fastwnll::wnll_adjoint")
def _wnll_adjoint_fake(idx, w, y, u, grad_u, mu, tol, max_iter):
    return w.new_empty(w.shape), _cpu_scalar(torch.int64), _cpu_scalar(torch.float64)


@torch.library.register_fake("fastwnll::unreachable_queries")
def _unreachable_queries_fake(idx, w, m):
    return idx.new_empty((idx.shape[0] - m,), dtype=torch.bool)


@torch.library.register_fake("fastwnll::knn_candidates")
def _knn_candidates_fake(query, base, kc, self_graph):
    return query.new_empty((query.shape[0], kc), dtype=torch.int64)


@torch.library.register_fake("fastwnll::knn_refine")
def _knn_refine_fake(query, base, cand, k, self_offset):
    return query.new_empty((query.shape[0], k), dtype=torch.int64), query.new_empty((query.shape[0], k))


class _FirstOrderOnly(torch.autograd.Function):
    """``grad`` (computed without a graph) recorded as a function of ``dependencies``, the tensors it
    really depends on, with a backward that raises: every second-order path through it fails loudly."""

    @staticmethod
    def forward(ctx, grad, *dependencies):
        return grad.clone()

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(SECOND_ORDER_MESSAGE)


def _setup_context(ctx, inputs, output):
    idx, w, y, mu, tol, max_iter = inputs
    ctx.save_for_backward(idx, w, y, output[0])
    ctx.mu, ctx.tol, ctx.max_iter = mu, tol, max_iter
    ctx.policy = current_policy()
    ctx.mark_non_differentiable(*output[1:])


def _backward(ctx, grad_u, *_):
    if grad_u is None or not ctx.needs_input_grad[1]:
        return None, None, None, None, None, None
    idx, w, y, u = ctx.saved_tensors
    with torch.no_grad():
        grad_w, iterations, residual = torch.ops.fastwnll.wnll_adjoint(
            idx, w, y, u, grad_u, ctx.mu, ctx.tol, ctx.max_iter
        )
    if is_concrete(residual):
        report(
            iterations,
            residual,
            None,
            tol=ctx.tol,
            max_iter=ctx.max_iter,
            dtype=w.dtype,
            policy=ctx.policy,
            what="adjoint (backward)",
        )
        if torch.is_grad_enabled():  # create_graph=True: differentiating grad_w again must fail loudly
            grad_w = _FirstOrderOnly.apply(grad_w, w, grad_u)
    return None, grad_w, None, None, None, None


torch.library.register_autograd("fastwnll::wnll_solve", _backward, setup_context=_setup_context)
