"""wnll_interpolate end to end: graphlearning reference, maximum principle, real MNIST, gradients, errors."""
import numpy as np
import pytest
import torch

import fastwnll
from fastwnll.graph import gaussian_weights


def clusters(n_per, dim=4, classes=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(classes, dim, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per)
    x = centres[y] + torch.randn(len(y), dim, generator=g)
    perm = torch.randperm(len(y), generator=g)
    return x[perm].to(dtype), y[perm]


def test_solver_matches_graphlearning_wnll_on_a_symmetric_graph():
    """graphlearning's laplace(reweighting='wnll') reweights a symmetric W as D W + W D with
    a = n/m on templates and 1 elsewhere. For symmetric directed weights (w_ij = w_ji) this is
    exactly our system with mu = n/m - 1 (the paper's): the template coefficient is
    (1 + n/m) w = 2w + mu w. We verify it on the complete graph with a global Gaussian scale."""
    gl = pytest.importorskip("graphlearning")
    import scipy.sparse as sp

    x, y = clusters(20)
    n, m = len(y), 15
    d2 = torch.cdist(x, x) ** 2
    W = torch.exp(-d2 / d2.mean())
    W.fill_diagonal_(0)
    idx = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, n)]) for i in range(n)])
    w = W.gather(1, idx)
    labels = torch.nn.functional.one_hot(y[:m], 3).double()
    ours = fastwnll.wnll_solve(idx, w, labels, mu=n / m - 1, tol=1e-12)
    ref = gl.ssl.laplace(sp.csr_matrix(W.numpy()), reweighting="wnll", tol=1e-12).fit(np.arange(m), y[:m].numpy())
    np.testing.assert_allclose(ours.numpy(), ref[m:], atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maximum_principle_and_accuracy_on_clusters(dtype):
    x, y = clusters(60, dtype=dtype)
    m = 45
    u = fastwnll.wnll_interpolate(x[:m], y[:m], x[m:], k=10)
    assert u.shape == (len(y) - m, 3) and u.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-8
    assert (u >= -tol).all() and (u <= 1 + tol).all()
    torch.testing.assert_close(u.sum(1), torch.ones(len(u), dtype=dtype), atol=tol, rtol=0)
    assert (u.argmax(1) == y[m:]).float().mean() > 0.95


def test_equals_the_explicit_pipeline():
    x, y = clusters(30)
    m, k = 20, 8
    u, info = fastwnll.wnll_interpolate(x[:m], y[:m], x[m:], k=k, k_sigma=5, mu=1.5, return_info=True)
    idx, _ = fastwnll.knn_graph(x, k)
    w = gaussian_weights(x, idx, k_sigma=5)
    ref = fastwnll.wnll_solve(idx, w, torch.nn.functional.one_hot(y[:m]).double(), mu=1.5)
    torch.testing.assert_close(u, ref)
    assert info.converged and info.iterations >= 1


def test_real_mnist_accuracy(mnist_pca):
    """Laplace learning on 50-d PCA of real MNIST: 2,000 templates label 4,000 queries."""
    x, y = mnist_pca
    x, y = x[:6000].float(), y[:6000]
    u = fastwnll.wnll_interpolate(x[:2000], y[:2000], x[2000:], k=15)
    accuracy = (u.argmax(1) == y[2000:]).float().mean().item()
    assert accuracy > 0.93, accuracy


def test_gradients_reach_both_feature_sets():
    x, y = clusters(12)
    m = 18
    xt = x[:m].clone().requires_grad_()
    xq = x[m:].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: fastwnll.wnll_interpolate(a, y[:m], b, k=6, k_sigma=4, tol=1e-13), (xt, xq)
    )


def test_num_classes_larger_than_labels_seen():
    x, y = clusters(10)
    u = fastwnll.wnll_interpolate(x[:20], y[:20], x[20:], k=5, k_sigma=4, num_classes=5)
    assert u.shape[1] == 5 and u[:, 3:].abs().max() == 0


def test_unreachable_queries_are_reported():
    xt = torch.randn(10, 2, dtype=torch.float64)
    xq = torch.cat([torch.randn(10, 2, dtype=torch.float64), 1000 + torch.randn(6, 2, dtype=torch.float64)])
    with pytest.raises(fastwnll.WNLLUnreachableError, match="6"):
        fastwnll.wnll_interpolate(xt, torch.zeros(10, dtype=torch.int64), xq, k=5, k_sigma=3)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(xt=torch.zeros(0, 3)), ValueError, "empty"),
        (dict(yt=torch.zeros(5)), TypeError, "int64"),
        (dict(yt=torch.tensor([0, 1, 2, 3, -1])), ValueError, "outside"),
        (dict(yt=torch.tensor([0, 1, 2, 3, 9]), num_classes=4), ValueError, "outside"),
        (dict(yt=torch.zeros(4, dtype=torch.int64)), ValueError, r"shape \[5\]"),
        (dict(xq=torch.randn(6, 2)), ValueError, "features"),
        (dict(xq=torch.randn(6, 3, dtype=torch.float64)), TypeError, "float64"),
        (dict(xq=torch.full((6, 3), float("nan"))), ValueError, "NaN"),
        (dict(k=11), ValueError, "k=11"),
        (dict(k_sigma=9, k=4), ValueError, "k_sigma"),
    ],
)
def test_bad_input(change, error, match):
    args = dict(xt=torch.randn(5, 3), yt=torch.arange(5), xq=torch.randn(6, 3), k=4)
    args.update(change)
    extra = {key: args.pop(key) for key in ("num_classes", "k_sigma") if key in args}
    with pytest.raises(error, match=match):
        fastwnll.wnll_interpolate(args["xt"], args["yt"], args["xq"], k=args["k"], **extra)
