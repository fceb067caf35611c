"""Fake (meta) kernels of every ``torch.ops.fastwnll`` op, so that ``torch.compile`` /
``torch.export`` can trace them.

The schemas are declared in C++ (``csrc/ops.cpp``, which names this module with
``set_python_module``, so torch imports it when it needs a fake kernel); :func:`fastwnll.extension.load`
imports it too. The autograd of the one differentiable op, ``wnll_solve``, is registered by
:mod:`fastwnll.wnll.adjoint`. ``wnll_adjoint``, ``unreachable_queries`` and the kNN ops return
integer outputs, masks, or values used for selection (the kNN distances are recomputed
differentiably by :func:`fastwnll.gaussian_weights`), so they have no autograd of their own.
"""

from __future__ import annotations

import torch

from fastwnll import _C  # noqa: F401  (the import registers the ops' schemas and kernels)


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
