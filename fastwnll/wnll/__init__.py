"""Stages 2-4 of the pipeline: from a kNN graph to class scores.

- :mod:`~fastwnll.wnll.weights`: the Gaussian edge weights (differentiable, scale-free);
- :mod:`~fastwnll.wnll.solver`: :func:`wnll_solve`, the Laplacian solve as a torch op, with
  :mod:`~fastwnll.wnll.adjoint` (its exact adjoint gradient) and :mod:`~fastwnll.wnll.convergence`
  (what a solve reports: :class:`SolveInfo`, the non-convergence policy);
- :mod:`~fastwnll.wnll.interpolate`: :func:`wnll_interpolate`, the whole activation (kNN graph +
  weights + solve) for one set of templates and queries;
- :mod:`~fastwnll.wnll.bank`: :class:`TemplateBank`, a fixed template set indexed once.
"""

from fastwnll.wnll.bank import TemplateBank
from fastwnll.wnll.interpolate import wnll_interpolate
from fastwnll.wnll.solver import SolveInfo, WNLLConvergenceError, WNLLUnreachableError, wnll_solve
from fastwnll.wnll.weights import gaussian_weights, weights_from_distances

__all__ = [
    "SolveInfo",
    "TemplateBank",
    "WNLLConvergenceError",
    "WNLLUnreachableError",
    "gaussian_weights",
    "weights_from_distances",
    "wnll_interpolate",
    "wnll_solve",
]
