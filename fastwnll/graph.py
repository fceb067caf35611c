"""Edge weights of the WNLL graph (DESIGN section 2), written in torch so that autograd carries the
gradient from the edge weights back to the features (through the distances and the scales sigma_i).
"""
from __future__ import annotations

import torch

KERNELS = ("gaussian", "seed")


def gaussian_weights(x: torch.Tensor, idx: torch.Tensor, *, k_sigma: int = 8,
                     kernel: str = "gaussian") -> torch.Tensor:
    """Directed kNN weights ``w_ij = exp(-||x_i - x_j||^2 / sigma_i^2)``.

    ``sigma_i`` is the distance from ``i`` to its ``k_sigma``-th nearest neighbour counted with the
    point itself as the first (the seed code's convention): ``k_sigma = 8`` is the 7th nearest
    *other* point, i.e. column ``k_sigma - 2`` of ``idx``, which must be sorted by distance as
    :func:`fastwnll.knn_graph` returns it. A zero ``sigma_i`` (many duplicate points) is floored at
    ``eps * mean squared neighbour distance`` so the weights stay finite.

    Args:
        x: ``[n, d]`` float features, any device; may require grad.
        idx: ``[n, k]`` int64 neighbour indices on ``x``'s device, ascending distance per row.
        k_sigma: ``2 <= k_sigma <= k + 1``.
        kernel: ``"gaussian"`` (the paper's, default) or ``"seed"``, the published code's form
            ``exp(-(d_ij^2 / sigma_i^2)^2)`` (it feeds squared distances through the Gaussian).

    Returns:
        ``w``: ``[n, k]`` in ``x``'s dtype, values in ``(0, 1]``, differentiable w.r.t. ``x``.
    """
    if idx.dim() != 2 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"idx must have shape [n={x.shape[0]}, k], got {tuple(idx.shape)}")
    k_sigma = _check_options(idx.shape[1], k_sigma, kernel)
    return _weights(torch.linalg.vector_norm(x.unsqueeze(1) - x[idx], dim=-1).square(), k_sigma, kernel)


def weights_from_distances(dist: torch.Tensor, *, k_sigma: int = 8, kernel: str = "gaussian") -> torch.Tensor:
    """The weights of :func:`gaussian_weights` from the kNN distances ``dist`` ``[n, k]`` (ascending per
    row, as :func:`fastwnll.knn_graph` returns them), without gathering the features again.

    For forward-only use: the result carries gradient only to ``dist``, not to the features.
    Returns ``[n, k]`` in ``dist``'s dtype and device.
    """
    if dist.dim() != 2:
        raise ValueError(f"dist must have shape [n, k], got {tuple(dist.shape)}")
    return _weights(dist.square(), _check_options(dist.shape[1], k_sigma, kernel), kernel)


def _check_options(k: int, k_sigma, kernel: str) -> int:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if isinstance(k_sigma, bool) or not isinstance(k_sigma, int) or not 2 <= k_sigma <= k + 1:
        raise ValueError(
            f"k_sigma={k_sigma!r} must be an integer in [2, k+1={k + 1}] "
            "(it counts the point itself as the first neighbour)"
        )
    return k_sigma


def _weights(d2: torch.Tensor, k_sigma: int, kernel: str) -> torch.Tensor:
    """``exp(-d2 / sigma2)`` (or its square's, kernel "seed") with ``sigma2`` column ``k_sigma - 2`` of ``d2``."""
    sigma2 = d2[:, k_sigma - 2 : k_sigma - 1]
    floor = torch.finfo(d2.dtype).eps * (d2.detach().mean() + torch.finfo(d2.dtype).tiny)
    ratio = d2 / sigma2.clamp_min(floor)
    return torch.exp(-(ratio * ratio if kernel == "seed" else ratio))
