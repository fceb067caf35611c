"""The functional WNLL interpolation: kNN graph + Gaussian weights + compiled Laplacian solve."""

from __future__ import annotations

import torch

from fastwnll.extension.precision import full_precision, working_dtype
from fastwnll.knn.search import check_backend, knn_graph
from fastwnll.wnll.solver import check_mu_range, check_options, check_reachable, host_copies, solve
from fastwnll.wnll.weights import check_options as check_graph_options
from fastwnll.wnll.weights import unit_scale, weights_from_distances, weights_of_points


def check_features(name: str, x) -> None:
    """A floating-point ``[n, d]`` tensor with ``n, d >= 1`` (values not checked)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = f"a {x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {kind}")
    if x.dim() != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty [n, d] tensor, got shape {tuple(x.shape)}")


def check_labels(y, m: int, num_classes, device) -> None:
    """``y``: ``[m]`` int64 labels on ``device``; ``num_classes``: None or a positive int (values not checked)."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y_templates must be a torch.Tensor of int64 labels, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise TypeError(f"y_templates must hold int64 class labels, got {y.dtype}")
    if y.dim() != 1 or y.shape[0] != m:
        raise ValueError(f"y_templates must have shape [{m}] (one label per template), got {tuple(y.shape)}")
    if y.device != device:
        raise ValueError(f"y_templates is on {y.device} but the features are on {device}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


def _check_values(x_templates, x_queries, y, num_classes) -> int:
    """Features finite, labels in range (one host synchronisation). Returns num_classes resolved."""
    stats = torch.stack(
        [
            (~torch.isfinite(x_templates)).any(dim=1).sum(),
            (~torch.isfinite(x_queries)).any(dim=1).sum(),
            y.min(),
            y.max(),
        ]
    ).tolist()
    for name, bad in (("x_templates", stats[0]), ("x_queries", stats[1])):
        if bad:
            raise ValueError(f"{name} contains NaN or Inf values (in {bad} rows)")
    return classes_of(stats[2], stats[3], num_classes)


def classes_of(lo: int, hi: int, num_classes: int | None, name: str = "y_templates") -> int:
    """``num_classes`` (default ``hi + 1``) after checking that labels in ``[lo, hi]`` fit in it."""
    num_classes = hi + 1 if num_classes is None else num_classes
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{name} has labels in [{lo}, {hi}], outside [0, num_classes={num_classes})")
    return num_classes


def solver_options(mu, k: int, n: int, m: int, tol, max_iter, on_nonconvergence, dtype) -> tuple[float, float]:
    """``(mu, tol)`` of the solve of a graph of ``n`` nodes, ``m`` of them templates, ``k``
    neighbours each, in ``dtype``: ``mu=None`` is the paper's ``n/m - 1``; all options checked."""
    mu, tol = check_options(n / m - 1.0 if mu is None else mu, tol, max_iter, on_nonconvergence, dtype)
    check_mu_range(mu, float(k + n), n, dtype)  # weights <= 1: a node's weighted degree is below k + n
    return mu, tol


def in_dtype(out, dtype: torch.dtype, return_info: bool):
    """The scores ``out`` (or ``(scores, info)`` with ``return_info``) cast to ``dtype`` (no copy
    when they have it)."""
    if return_info:
        return out[0].to(dtype), out[1]
    return out.to(dtype)


def wnll_interpolate(
    x_templates: torch.Tensor,
    y_templates: torch.Tensor,
    x_queries: torch.Tensor,
    *,
    k: int = 15,
    k_sigma: int | None = None,
    mu: float | None = None,
    num_classes: int | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    kernel: str = "gaussian",
    knn_backend="auto",
    on_nonconvergence: str = "raise",
    return_info: bool = False,
    validate: bool = True,
):
    """WNLL class scores of the queries: the harmonic extension of the templates' one-hot labels.

    Builds the kNN graph of all ``n = m + n_q`` points (templates first), the directed Gaussian
    weights (:func:`fastwnll.gaussian_weights`) and solves the WNLL system of docs/design.md,
    section 2 for all classes at once with the compiled solver. Differentiable with respect to both
    feature sets (exact adjoint gradient through the solve, the weights and the scales sigma_i; the
    kNN indices are piecewise constant and carry none); once differentiable (second-order
    gradients raise an error).

    All arguments are checked before the kNN search. The result is invariant to a global scale of
    the features (they are brought to unit scale by a power of two first, exactly). Half-precision
    features are computed in float32 and the scores returned in the input dtype; autocast and TF32
    matrix products are off inside, whatever the caller's settings.

    Args:
        x_templates: ``[m, d]`` float template features (float16, bfloat16, float32 or float64), CPU
            or CUDA, ``m >= 1``.
        y_templates: ``[m]`` int64 labels in ``[0, num_classes)`` on the same device.
        x_queries: ``[n_q, d]`` query features, same dtype and device, ``n_q >= 1``.
        k: neighbours per node, ``1 <= k < n``.
        k_sigma: scale neighbour counted with the point itself (see gaussian_weights); ``None``
            means ``min(8, k + 1)`` (the seed code's 8 for ``k >= 7``).
        mu: weight of the template term; ``None`` is the paper's ``n/m - 1`` (the seed code used ``n/m``).
        num_classes: defaults to ``max(y_templates) + 1``.
        tol, max_iter, on_nonconvergence: passed to :func:`fastwnll.wnll_solve`.
        kernel: ``"gaussian"`` or ``"seed"``. knn_backend: exact ``"auto"``, ``"native"``,
            ``"faiss"`` or ``"torch"``, or approximate ``"hnsw"``, ``"ivf"``, an
            :class:`fastwnll.ApproximateKNN` or its spec string (see :func:`fastwnll.knn_search`).
        return_info: also return the solver's :class:`fastwnll.SolveInfo`.
        validate: check the feature values (finite), the label range and that every query reaches a
            template before solving (two host synchronisations on CUDA besides the kNN search's).
            ``False`` skips them for trusted inputs in training loops (with ``num_classes`` given
            there is then no synchronisation outside the kNN search and the solver); labels out of
            range then give zero label rows, and unreachable queries a non-converged solve.

    Returns:
        ``[n_q, num_classes]`` scores in the features' dtype; every row is a probability vector
        (entries in [0, 1], summing to 1 up to the solver tolerance). With ``return_info``, a tuple
        ``(scores, info)``.

    Raises:
        fastwnll.WNLLUnreachableError: some queries are not connected to any template in the graph.
        fastwnll.WNLLConvergenceError: the solve did not converge (``on_nonconvergence="raise"``).
    """
    check_features("x_templates", x_templates)
    check_features("x_queries", x_queries)
    if x_templates.shape[1] != x_queries.shape[1]:
        raise ValueError(f"x_templates has {x_templates.shape[1]} features but x_queries has {x_queries.shape[1]}")
    if x_templates.device != x_queries.device:
        raise ValueError(f"x_templates is on {x_templates.device} but x_queries is on {x_queries.device}")
    if x_templates.dtype != x_queries.dtype:
        raise TypeError(f"x_templates is {x_templates.dtype} but x_queries is {x_queries.dtype}")
    m, n = x_templates.shape[0], x_templates.shape[0] + x_queries.shape[0]
    check_labels(y_templates, m, num_classes, x_templates.device)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k={k!r} must be an integer with 1 <= k < n={n} (templates + queries)")
    k_sigma = check_graph_options(k, k_sigma, kernel)
    knn_backend = check_backend(knn_backend)
    dtype = working_dtype(x_templates.dtype)
    mu, tol = solver_options(mu, k, n, m, tol, max_iter, on_nonconvergence, dtype)
    if validate:
        num_classes = _check_values(x_templates, x_queries, y_templates, num_classes)
    elif num_classes is None:
        num_classes = int(y_templates.max()) + 1
    device = x_templates.device
    with full_precision(device):
        # The interpolation is invariant to a global scale of the features: the kNN search runs at unit scale
        x = unit_scale(torch.cat([x_templates, x_queries]).to(dtype))
        idx, dist = knn_graph(x.detach(), k, backend=knn_backend)
        if torch.is_grad_enabled() and x.requires_grad:
            w = weights_of_points(x, idx, k_sigma, kernel)
        else:  # forward only: the kNN search's exact distances give the same weights without a second gather
            w = weights_from_distances(dist, k_sigma=k_sigma, kernel=kernel)
        labels = (y_templates.unsqueeze(1) == torch.arange(num_classes, device=device)).to(dtype)
        if validate:
            check_reachable(*host_copies(idx, w), m)
        out = solve(
            idx,
            w,
            labels,
            mu=mu,
            tol=tol,
            max_iter=max_iter,
            on_nonconvergence=on_nonconvergence,
            return_info=return_info,
        )
    return in_dtype(out, x_templates.dtype, return_info)
