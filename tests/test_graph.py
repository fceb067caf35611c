"""Gaussian edge weights: formula, the k_sigma convention, the seed-code kernel, gradients, errors."""
import math

import pytest
import torch

from fastwnll import knn_graph
from fastwnll.graph import gaussian_weights, weights_from_distances


def test_weights_follow_the_formula_with_seed_sigma_convention():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    idx, dist = knn_graph(x, 10)
    w = gaussian_weights(x, idx, k_sigma=8)
    i, t = 5, 3
    d_all = (x - x[i]).norm(dim=1)
    d_all[i] = float("inf")
    sigma = d_all.sort().values[6]  # 8th counting the point itself = 7th other point
    expected = math.exp(-float(d_all[idx[i, t]]) ** 2 / float(sigma) ** 2)
    assert w[i, t].item() == pytest.approx(expected, rel=1e-12)
    assert w[i, 6].item() == pytest.approx(math.exp(-1.0), rel=1e-12)  # the sigma neighbour itself
    assert ((w > 0) & (w <= 1)).all()


def test_seed_kernel_squares_the_ratio():
    x = torch.randn(30, 4, dtype=torch.float64)
    idx, _ = knn_graph(x, 9)
    gauss = gaussian_weights(x, idx, k_sigma=5)
    seed = gaussian_weights(x, idx, k_sigma=5, kernel="seed")
    torch.testing.assert_close(seed, torch.exp(-torch.log(gauss) ** 2))


def test_gradient_reaches_features_through_distances_and_sigma():
    x = torch.randn(25, 3, dtype=torch.float64, requires_grad=True)
    idx, _ = knn_graph(x.detach(), 6)
    assert torch.autograd.gradcheck(lambda z: gaussian_weights(z, idx, k_sigma=4), (x,))


def test_duplicate_points_give_finite_weights():
    x = torch.zeros(12, 2, dtype=torch.float64)
    idx, _ = knn_graph(x, 8)
    w = gaussian_weights(x, idx)
    assert torch.isfinite(w).all() and (w == 1).all()


def test_bad_arguments():
    x = torch.randn(20, 2)
    idx, _ = knn_graph(x, 5)
    with pytest.raises(ValueError, match="k_sigma=7"):
        gaussian_weights(x, idx, k_sigma=7)
    with pytest.raises(ValueError, match="k_sigma=1"):
        gaussian_weights(x, idx, k_sigma=1)
    with pytest.raises(ValueError, match="unknown kernel"):
        gaussian_weights(x, idx, kernel="laplace")
    with pytest.raises(ValueError, match="idx must have shape"):
        gaussian_weights(x, idx[:10])


def test_weights_from_distances_match_gaussian_weights():
    torch.manual_seed(3)
    x = torch.randn(200, 6, dtype=torch.float64)
    idx, dist = knn_graph(x, 10)
    for kernel in ("gaussian", "seed"):
        expected = gaussian_weights(x, idx, k_sigma=5, kernel=kernel)
        got = weights_from_distances(dist, k_sigma=5, kernel=kernel)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="dist must have shape"):
        weights_from_distances(dist[0], k_sigma=5)
    with pytest.raises(ValueError, match="k_sigma"):
        weights_from_distances(dist, k_sigma=12)
