"""Gaussian edge weights: formula, the k_sigma convention, the seed-code kernel, scale invariance,
half precision, autocast, gradients, errors."""

import math

import pytest
import torch

from fastwnll import knn_graph
from fastwnll.wnll.weights import gaussian_weights, weights_from_distances


def test_weights_follow_the_formula_with_seed_sigma_convention():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    idx, dist = knn_graph(x, 10)
    w = gaussian_weights(x, idx, k_sigma=8)
    i, t = 5, 3
    d_all = (x - x[i]).norm(dim=1)
    d_all[i] = float("inf")
    sigma = d_all.sort().values[6]  # 8th counting the point itself = 7th other point
    expected = math.exp(-(float(d_all[idx[i, t]]) ** 2) / float(sigma) ** 2)
    assert w[i, t].item() == pytest.approx(expected, rel=1e-12)
    assert w[i, 6].item() == pytest.approx(math.exp(-1.0), rel=1e-12)  # the sigma neighbour itself
    assert ((w > 0) & (w <= 1)).all()


def test_seed_kernel_squares_the_ratio():
    x = torch.randn(30, 4, dtype=torch.float64)
    idx, _ = knn_graph(x, 9)
    gauss = gaussian_weights(x, idx, k_sigma=5)
    seed = gaussian_weights(x, idx, k_sigma=5, kernel="seed")
    torch.testing.assert_close(seed, torch.exp(-(torch.log(gauss) ** 2)))


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
    with pytest.raises(TypeError, match="idx must be int64"):
        gaussian_weights(x, idx.int())
    with pytest.raises(ValueError, match="at least one neighbour"):
        gaussian_weights(x, idx[:, :0])


@pytest.mark.parametrize("value, shown", [(-1, r"\[-1, \d+\]"), (20, r"\[\d+, 20\]"), (-21, r"\[-21, ")])
def test_out_of_range_indices_are_rejected(device, value, shown):
    x = torch.randn(20, 2, device=device)
    idx, _ = knn_graph(x, 5)
    idx[3, 2] = value
    with pytest.raises(ValueError, match=r"idx values must lie in \[0, n=20\), got values in " + shown):
        gaussian_weights(x, idx)


def test_default_k_sigma_follows_k():
    """k_sigma=None is min(8, k + 1): the seed's 8 for k >= 7, the farthest neighbour below."""
    x = torch.randn(40, 3, dtype=torch.float64)
    idx, dist = knn_graph(x, 10)
    torch.testing.assert_close(gaussian_weights(x, idx), gaussian_weights(x, idx, k_sigma=8), rtol=0, atol=0)
    for k in (1, 4, 6):
        expected = gaussian_weights(x, idx[:, :k], k_sigma=k + 1)
        torch.testing.assert_close(gaussian_weights(x, idx[:, :k]), expected, rtol=0, atol=0)
        torch.testing.assert_close(weights_from_distances(dist[:, :k]), expected)


def reference_weights(x, idx, k_sigma):
    """exp(-(d / sigma)^2) computed in float64 from unit-scale features."""
    d = (x.double().unsqueeze(1) - x.double()[idx]).norm(dim=-1)
    return torch.exp(-((d / d[:, k_sigma - 2 : k_sigma - 1]) ** 2))


@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e18])
def test_weights_are_invariant_to_the_scale_of_the_features(device, dtype, scale):
    """exp(-d^2 / sigma^2) only sees distance ratios: tiny and huge features (still representable, also
    in float32) give the unit-scale weights, from the features and from the distances alike."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 8, generator=g, dtype=torch.float64)
    idx, dist = knn_graph(x, 10)
    expected = reference_weights(x, idx, 6)
    tol = 2e-6 if dtype == torch.float32 else 1e-12
    xs = (x * scale).to(dtype).to(device)
    got = gaussian_weights(xs, idx.to(device), k_sigma=6)
    assert got.dtype == dtype
    torch.testing.assert_close(got.cpu().double(), expected, rtol=tol, atol=tol)
    from_dist = weights_from_distances((dist * scale).to(dtype).to(device), k_sigma=6)
    torch.testing.assert_close(from_dist.cpu().double(), expected, rtol=tol, atol=tol)


def test_power_of_two_scales_give_identical_weights(device, dtype):
    x = torch.randn(100, 5, generator=torch.Generator().manual_seed(2), dtype=dtype).to(device)
    idx, _ = knn_graph(x, 8)
    w = gaussian_weights(x, idx)
    for power in (-100, 60):
        assert torch.equal(gaussian_weights(x * 2.0**power, idx), w)


@pytest.mark.parametrize("scale", [1e-30, 1e16])
def test_gradients_at_extreme_scales(scale):
    """float64 gradcheck with perturbations and tolerances in the features' units; the gradient at
    scale s is the unit-scale gradient divided by s."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(25, 3, generator=g, dtype=torch.float64)
    idx, _ = knn_graph(x, 6)
    xs = (x * scale).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: gaussian_weights(z, idx, k_sigma=4), (xs,), eps=1e-6 * scale, atol=1e-5 / scale
    )
    G = torch.randn(25, 6, generator=g, dtype=torch.float64)
    (grad_s,) = torch.autograd.grad((gaussian_weights(xs, idx, k_sigma=4) * G).sum(), xs)
    x1 = x.clone().requires_grad_()
    (grad_1,) = torch.autograd.grad((gaussian_weights(x1, idx, k_sigma=4) * G).sum(), x1)
    torch.testing.assert_close(grad_s * scale, grad_1, rtol=1e-12, atol=1e-12)


def test_duplicates_beyond_the_scale_neighbour_give_zero_and_one():
    """More duplicates than k_sigma - 1: sigma = 0 is floored relative to the row, duplicates weigh 1,
    the other neighbours 0; all finite, gradients too."""
    x = torch.cat([torch.zeros(6, 2), torch.ones(6, 2)]).double().requires_grad_()
    idx, _ = knn_graph(x.detach(), 7)
    w = gaussian_weights(x, idx, k_sigma=4)
    same = (idx < 6) == (torch.arange(12) < 6).unsqueeze(1)
    assert torch.equal(w, same.double())
    w.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(device, half):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(100, 6, generator=g).to(half)
    idx, dist = knn_graph(x.float(), 8)
    expected = gaussian_weights(x.float(), idx).to(half)
    xd = x.to(device, copy=True).requires_grad_()
    w = gaussian_weights(xd, idx.to(device))
    assert w.dtype == half and torch.equal(w.cpu(), expected)
    assert torch.equal(
        weights_from_distances(dist.to(half).to(device)).cpu(), weights_from_distances(dist.to(half).float()).to(half)
    )
    G = torch.randn(100, 8, generator=g)
    (w.float() * G.to(device)).sum().backward()
    x32 = x.float().requires_grad_()
    (gaussian_weights(x32, idx) * G.to(half).float()).sum().backward()  # w's gradient passes through half
    assert xd.grad.dtype == half
    torch.testing.assert_close(xd.grad.cpu(), x32.grad.to(half))


def test_autocast_does_not_change_the_weights(device):
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(6)).to(device)
    idx, dist = knn_graph(x, 10)
    w, wd = gaussian_weights(x, idx), weights_from_distances(dist)
    low = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device_type=device, dtype=low):
        assert torch.equal(gaussian_weights(x, idx), w)
        assert torch.equal(weights_from_distances(dist), wd)


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
