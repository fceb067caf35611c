"""Edge weights of the WNLL graph (docs/design.md, section 2), written in torch so that autograd carries
the gradient from the edge weights back to the features (through the distances and the scales sigma_i).

The weights depend on distances only through the ratios ``d_ij / sigma_i``, so they are invariant to a
global scale of the features. They are computed that way: the features are divided by a power of two
near their largest magnitude (:func:`unit_scale`), and each row of distances by a power of two near its
largest value (exact in floating point), so features of any magnitude that the dtype represents (1e-30
or 1e30 in float32) give the weights of unit-scale features, without underflow or overflow of squared
distances.
"""

from __future__ import annotations

import torch

from fastwnll.extension.precision import no_autocast, working_dtype

KERNELS = ("gaussian", "seed")
# Default k_sigma (the seed code's), capped at k + 1 for graphs with fewer neighbours.
DEFAULT_K_SIGMA = 8


def gaussian_weights(
    x: torch.Tensor, idx: torch.Tensor, *, k_sigma: int | None = None, kernel: str = "gaussian"
) -> torch.Tensor:
    """Directed kNN weights ``w_ij = exp(-||x_i - x_j||^2 / sigma_i^2)``.

    ``sigma_i`` is the distance from ``i`` to its ``k_sigma``-th nearest neighbour counted with the
    point itself as the first (the seed code's convention): ``k_sigma = 8`` is the 7th nearest
    *other* point, i.e. column ``k_sigma - 2`` of ``idx``, which must be sorted by distance as
    :func:`fastwnll.knn_graph` returns it. ``sigma_i`` is floored at ``eps`` (the working dtype's
    machine epsilon) times the largest distance of row ``i``, so duplicate points give finite weights:
    1 for the duplicates, 0 for the others when more than ``k_sigma - 1`` neighbours are duplicates.

    Half-precision features are computed in float32 and the weights returned in the input dtype;
    autocast is off inside.

    Args:
        x: ``[n, d]`` float features (float16, bfloat16, float32 or float64), any device; may require grad.
        idx: ``[n, k]`` int64 neighbour indices in ``[0, n)`` on ``x``'s device, ascending distance per
            row (checked: one host synchronisation).
        k_sigma: ``2 <= k_sigma <= k + 1``; ``None`` means ``min(8, k + 1)``.
        kernel: ``"gaussian"`` (the paper's, default) or ``"seed"``, the published code's form
            ``exp(-(d_ij^2 / sigma_i^2)^2)`` (it feeds squared distances through the Gaussian).

    Returns:
        ``w``: ``[n, k]`` in ``x``'s dtype, values in ``[0, 1]``, differentiable w.r.t. ``x``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point [n, d] tensor, got {_describe(x)}")
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx must have shape [n={x.shape[0]}, k], got {_describe(idx)}")
    if idx.dtype != torch.int64:
        raise TypeError(f"idx must be int64, got {idx.dtype}")
    if idx.device != x.device:
        raise ValueError(f"idx is on {idx.device} but x is on {x.device}")
    k_sigma = check_options(idx.shape[1], k_sigma, kernel)
    if idx.numel():
        lo, hi = (int(v) for v in torch.stack(torch.aminmax(idx)).tolist())
        if lo < 0 or hi >= x.shape[0]:
            raise ValueError(f"idx values must lie in [0, n={x.shape[0]}), got values in [{lo}, {hi}]")
    return weights_of_points(x, idx, k_sigma, kernel)


def weights_from_distances(dist: torch.Tensor, *, k_sigma: int | None = None, kernel: str = "gaussian") -> torch.Tensor:
    """The weights of :func:`gaussian_weights` from the kNN distances ``dist`` ``[n, k]`` (ascending per
    row, as :func:`fastwnll.knn_graph` returns them), without gathering the features again.

    For forward-only use: the result carries gradient only to ``dist``, not to the features.
    ``k_sigma`` and ``kernel`` as for :func:`gaussian_weights`. Returns ``[n, k]`` in ``dist``'s dtype and
    device (half precision computed in float32; autocast off inside).
    """
    if not isinstance(dist, torch.Tensor) or dist.dim() != 2 or not dist.is_floating_point():
        raise ValueError(f"dist must have shape [n, k] and a floating-point dtype, got {_describe(dist)}")
    k_sigma = check_options(dist.shape[1], k_sigma, kernel)
    with no_autocast(dist.device):
        return _weights(dist.to(working_dtype(dist.dtype)), k_sigma, kernel).to(dist.dtype)


def check_options(k: int, k_sigma, kernel: str) -> int:
    """Checks ``kernel`` and ``k_sigma`` for a graph with ``k`` neighbours; returns ``k_sigma`` with its
    default (``None``: ``min(8, k + 1)``) resolved."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if k < 1:
        raise ValueError("the graph must have at least one neighbour per point (k >= 1)")
    if k_sigma is None:
        return min(DEFAULT_K_SIGMA, k + 1)
    if isinstance(k_sigma, bool) or not isinstance(k_sigma, int) or not 2 <= k_sigma <= k + 1:
        raise ValueError(
            f"k_sigma={k_sigma!r} must be an integer in [2, k+1={k + 1}] "
            "(it counts the point itself as the first neighbour), or None for min(8, k+1)"
        )
    return k_sigma


def weights_of_points(x: torch.Tensor, idx: torch.Tensor, k_sigma: int, kernel: str) -> torch.Tensor:
    """:func:`gaussian_weights` without the argument checks (``idx`` trusted, ``k_sigma`` resolved)."""
    with no_autocast(x.device):
        xs = unit_scale(x.to(working_dtype(x.dtype)))
        return _weights(torch.linalg.vector_norm(xs.unsqueeze(1) - xs[idx], dim=-1), k_sigma, kernel).to(x.dtype)


def unit_scale(x: torch.Tensor) -> torch.Tensor:
    """``x`` divided by the power of two ``2^e <= max|x| < 2^(e+1)``: exact, no host synchronisation,
    differentiable (the scale is a constant). The squared distances of unit-scale features neither
    overflow nor underflow: a difference would have to be below ``1e-19 * max|x|`` (float32) to
    vanish, far below the features' own resolution."""
    return x / power_of_two_below(x.detach().abs().amax())


def power_of_two_below(v: torch.Tensor) -> torch.Tensor:
    """The power of two ``2^e <= v < 2^(e+1)`` elementwise (0.5 for ``v == 0``), in ``v``'s dtype: dividing
    by it is exact and maps ``v`` to ``[1, 2)``."""
    _, exponent = torch.frexp(v)
    return torch.ldexp(torch.ones_like(v), exponent - 1)


def _weights(dist: torch.Tensor, k_sigma: int, kernel: str) -> torch.Tensor:
    """``exp(-(d / sigma)^2)`` (or that ratio squared once more, kernel "seed") with ``sigma`` column
    ``k_sigma - 2`` of the distances ``dist`` ``[n, k]`` (in any per-row unit), floored per row."""
    r = dist / power_of_two_below(dist.detach().amax(dim=1, keepdim=True))  # row maximum in [1, 2)
    sigma = r[:, k_sigma - 2 : k_sigma - 1].clamp_min(torch.finfo(r.dtype).eps)
    ratio = (r / sigma).square()
    return torch.exp(-(ratio * ratio if kernel == "seed" else ratio))


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} tensor of shape {tuple(t.shape)}"
    return type(t).__name__
