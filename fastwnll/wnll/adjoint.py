"""The autograd of ``fastwnll::wnll_solve`` with respect to ``w``: the exact adjoint gradient
(docs/design.md, section 2.3), one ``fastwnll::wnll_adjoint`` solve with the same matrix plus one
pass over the edges.

It is once differentiable: a second backward through it (``create_graph=True``, then differentiating
the gradient again) raises a clear error rather than returning a Hessian-vector product that misses
the adjoint's own derivative. Importing this module registers the autograd; :mod:`fastwnll.wnll.solver`
does.
"""

from __future__ import annotations

import torch

from fastwnll.extension import loader
from fastwnll.wnll.convergence import current_policy, is_concrete, report

loader.load()

SECOND_ORDER_MESSAGE = (
    "fastwnll.wnll_solve is once differentiable: its backward (the adjoint solve) has no derivative of its "
    "own, so second-order gradients through the WNLL solve (create_graph=True followed by another backward: "
    "gradient penalties, Hessian-vector products, double backward) are not supported"
)


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
