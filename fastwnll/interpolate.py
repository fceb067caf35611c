"""The functional WNLL interpolation: kNN graph + Gaussian weights + compiled Laplacian solve."""
from __future__ import annotations

import torch

from fastwnll.graph import gaussian_weights, weights_from_distances
from fastwnll.knn import check_points, knn_graph
from fastwnll.solver import wnll_solve


def _check_labels(y: torch.Tensor, m: int, num_classes: int | None, device) -> int:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y_templates must be a torch.Tensor of int64 labels, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise TypeError(f"y_templates must hold int64 class labels, got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != m:
        raise ValueError(f"y_templates must have shape [{m}] (one label per template), got {tuple(y.shape)}")
    if y.device != device:
        raise ValueError(f"y_templates is on {y.device} but the features are on {device}")
    lo, hi = int(y.min()), int(y.max())
    if num_classes is None:
        num_classes = hi + 1
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"y_templates has labels in [{lo}, {hi}], outside [0, num_classes={num_classes})")
    return num_classes


def wnll_interpolate(x_templates: torch.Tensor, y_templates: torch.Tensor, x_queries: torch.Tensor, *,
                     k: int = 15, k_sigma: int = 8, mu: float | None = None, num_classes: int | None = None,
                     tol: float | None = None, max_iter: int = 1000, kernel: str = "gaussian",
                     knn_backend: str = "auto", on_nonconvergence: str = "raise", return_info: bool = False):
    """WNLL class scores of the queries: the harmonic extension of the templates' one-hot labels.

    Builds the kNN graph of all ``n = m + n_q`` points (templates first), the directed Gaussian
    weights (:func:`fastwnll.gaussian_weights`) and solves the WNLL system of DESIGN section 2 for
    all classes at once with the compiled solver. Differentiable with respect to both feature sets
    (exact adjoint gradient through the solve, the weights and the scales sigma_i; the kNN indices
    are piecewise constant and carry none).

    Args:
        x_templates: ``[m, d]`` float32/float64 template features, CPU or CUDA, ``m >= 1``.
        y_templates: ``[m]`` int64 labels in ``[0, num_classes)`` on the same device.
        x_queries: ``[n_q, d]`` query features, same dtype and device, ``n_q >= 1``.
        k: neighbours per node, ``k < n``. k_sigma: scale neighbour (see gaussian_weights).
        mu: weight of the template term; ``None`` is the paper's ``n/m - 1`` (the seed code used ``n/m``).
        num_classes: defaults to ``max(y_templates) + 1``.
        tol, max_iter, on_nonconvergence: passed to :func:`fastwnll.wnll_solve`.
        kernel: ``"gaussian"`` or ``"seed"``. knn_backend: ``"auto"``, ``"native"``, ``"faiss"`` or
            ``"torch"`` (see :func:`fastwnll.knn_search`).
        return_info: also return the solver's :class:`fastwnll.SolveInfo`.

    Returns:
        ``[n_q, num_classes]`` scores in the features' dtype; every row is a probability vector
        (entries in [0, 1], summing to 1 up to the solver tolerance). With ``return_info``, a tuple
        ``(scores, info)``.

    Raises:
        fastwnll.WNLLUnreachableError: some queries are not connected to any template in the graph.
    """
    check_points("x_templates", x_templates)
    check_points("x_queries", x_queries)
    if x_templates.shape[1] != x_queries.shape[1]:
        raise ValueError(
            f"x_templates has {x_templates.shape[1]} features but x_queries has {x_queries.shape[1]}"
        )
    if x_templates.device != x_queries.device:
        raise ValueError(f"x_templates is on {x_templates.device} but x_queries is on {x_queries.device}")
    if x_templates.dtype != x_queries.dtype:
        raise TypeError(f"x_templates is {x_templates.dtype} but x_queries is {x_queries.dtype}")
    m = x_templates.shape[0]
    num_classes = _check_labels(y_templates, m, num_classes, x_templates.device)
    x = torch.cat([x_templates, x_queries])
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k={k!r} must be an integer with 1 <= k < n={n} (templates + queries)")
    idx, dist = knn_graph(x.detach(), k, backend=knn_backend)
    if torch.is_grad_enabled() and x.requires_grad:
        w = gaussian_weights(x, idx, k_sigma=k_sigma, kernel=kernel)
    else:  # forward only: the kNN search's exact distances give the same weights without a second gather
        w = weights_from_distances(dist, k_sigma=k_sigma, kernel=kernel)
    labels = torch.nn.functional.one_hot(y_templates, num_classes).to(x.dtype)
    return wnll_solve(idx, w, labels, mu=n / m - 1.0 if mu is None else mu, tol=tol, max_iter=max_iter,
                      on_nonconvergence=on_nonconvergence, return_info=return_info)
