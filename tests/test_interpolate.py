"""wnll_interpolate end to end: graphlearning reference, maximum principle, real MNIST, gradients, errors."""

import numpy as np
import pytest
import torch

import fastwnll
from fastwnll.wnll.weights import gaussian_weights


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
        (dict(xt=torch.zeros(5, 3, dtype=torch.int64)), TypeError, "floating-point torch.Tensor, got a torch.int64"),
    ],
)
def test_bad_input(change, error, match):
    args = dict(xt=torch.randn(5, 3), yt=torch.arange(5), xq=torch.randn(6, 3), k=4)
    args.update(change)
    extra = {key: args.pop(key) for key in ("num_classes", "k_sigma") if key in args}
    with pytest.raises(error, match=match):
        fastwnll.wnll_interpolate(args["xt"], args["yt"], args["xq"], k=args["k"], **extra)


# --------------------------------------------------------------------------------------------
# Scale, dtypes, autocast and TF32
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e18])
def test_scores_are_invariant_to_the_scale_of_the_features(device, dtype, scale):
    x, y = clusters(40)
    m = 60
    expected = fastwnll.wnll_interpolate(x[:m], y[:m], x[m:], k=8, tol=1e-12)  # float64, unit scale
    xs = (x * scale).to(dtype).to(device)
    u, info = fastwnll.wnll_interpolate(xs[:m], y[:m].to(device), xs[m:], k=8, return_info=True)
    assert info.converged and u.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-8
    torch.testing.assert_close(u.cpu().double(), expected, rtol=0, atol=tol)


@pytest.mark.parametrize("scale", [1e-30, 1e16])
def test_gradients_scale_with_the_features(scale):
    """The gradient at features x * s is the unit-scale gradient divided by s (float64)."""
    x, y = clusters(12)
    m = 18
    G = torch.randn(len(y) - m, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grads(s):
        xt, xq = (x[:m] * s).requires_grad_(), (x[m:] * s).requires_grad_()
        u = fastwnll.wnll_interpolate(xt, y[:m], xq, k=6, k_sigma=4, tol=1e-13)
        return torch.autograd.grad((u * G).sum(), (xt, xq))

    for got, expected in zip(grads(scale), grads(1.0)):
        torch.testing.assert_close(got * scale, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_features_are_computed_in_float32(device, half):
    x, y = clusters(30, dtype=torch.float32)
    x, y = x.to(half).to(device), y.to(device)
    m = 45
    expected = fastwnll.wnll_interpolate(x[:m].float(), y[:m], x[m:].float(), k=8).to(half)
    xq = x[m:].clone().requires_grad_()
    u = fastwnll.wnll_interpolate(x[:m], y[:m], xq, k=8)
    assert u.dtype == half and torch.equal(u, expected)
    (u.float() * torch.randn(u.shape, generator=torch.Generator().manual_seed(3)).to(device)).sum().backward()
    assert xq.grad.dtype == half and torch.isfinite(xq.grad).all() and xq.grad.abs().max() > 0


def test_autocast_does_not_change_the_scores(device):
    """Under autocast the kNN's matrix products would run in bfloat16/float16 and pick wrong neighbours."""
    x, y = clusters(200, dim=32, dtype=torch.float32)
    x, y = x.to(device), y.to(device)
    m = 150
    expected = fastwnll.wnll_interpolate(x[:m], y[:m], x[m:], k=10, knn_backend="torch")
    low = torch.bfloat16 if device == "cpu" else torch.float16
    with torch.autocast(device_type=device, dtype=low):
        got = fastwnll.wnll_interpolate(x[:m], y[:m], x[m:], k=10, knn_backend="torch")
    assert torch.equal(got, expected)


@pytest.mark.cuda
def test_cuda_tf32_is_off_inside():
    """With TF32 allowed globally, matrix products inside full_precision are still IEEE float32, and
    the interpolation is unchanged; the global setting is left as it was."""
    from fastwnll.extension.precision import full_precision

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(512, 512, generator=g).cuda(), torch.randn(512, 512, generator=g).cuda()
    x, y = clusters(300, dim=32, dtype=torch.float32)
    x, y = x.cuda(), y.cuda()
    ieee = a @ b
    expected = fastwnll.wnll_interpolate(x[:200], y[:200], x[200:], k=10, knn_backend="torch")
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = True
    try:
        assert not torch.equal(a @ b, ieee)  # TF32 is in effect outside
        with full_precision(a.device):
            assert torch.equal(a @ b, ieee)
        assert matmul.allow_tf32
        got = fastwnll.wnll_interpolate(x[:200], y[:200], x[200:], k=10, knn_backend="torch")
    finally:
        matmul.allow_tf32 = before
    assert torch.equal(got, expected)


# --------------------------------------------------------------------------------------------
# Arguments checked before any heavy work; validation passes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        (dict(mu=-1.0), "mu must be finite"),
        (dict(mu=float("nan")), "mu must be finite"),
        (dict(mu=1e300), "cannot be carried by torch.float32"),
        (dict(mu=1e37), "mu=1e\\+37 is too large for torch.float32"),
        (dict(kernel="laplace"), "unknown kernel"),
        (dict(tol=0.0), "tol must be"),
        (dict(tol=1.0), "tol must be"),
        (dict(k_sigma=1), "k_sigma=1"),
        (dict(k_sigma=10), "k_sigma=10"),
        (dict(max_iter=0), "max_iter"),
        (dict(on_nonconvergence="fail"), "on_nonconvergence"),
        (dict(knn_backend="annoy"), "unknown kNN backend"),
        (dict(num_classes=0), "num_classes"),
        (dict(k=0), "k=0"),
    ],
)
def test_arguments_are_checked_before_the_knn_search(monkeypatch, change, match):
    def no_search(*args, **kwargs):
        raise AssertionError("the kNN search ran before the arguments were checked")

    monkeypatch.setattr(fastwnll.wnll.interpolate, "knn_graph", no_search)
    x, y = clusters(10, dtype=torch.float32)
    options = dict(k=8)
    options.update(change)
    with pytest.raises(ValueError, match=match):
        fastwnll.wnll_interpolate(x[:15], y[:15], x[15:], **options)


def test_default_k_sigma_allows_few_neighbours():
    """k_sigma=None is min(8, k + 1), so k < 7 works (the seed's fixed 8 needs k >= 7)."""
    x, y = clusters(20)
    for k in (2, 4, 6):
        u = fastwnll.wnll_interpolate(x[:30], y[:30], x[30:], k=k)
        torch.testing.assert_close(u, fastwnll.wnll_interpolate(x[:30], y[:30], x[30:], k=k, k_sigma=k + 1))
    torch.testing.assert_close(
        fastwnll.wnll_interpolate(x[:30], y[:30], x[30:], k=10),
        fastwnll.wnll_interpolate(x[:30], y[:30], x[30:], k=10, k_sigma=8),
    )


def test_validation_runs_once_and_validate_false_skips_it(monkeypatch):
    import fastwnll.wnll.interpolate as interpolate

    calls = []
    for name in ("_check_values", "check_reachable"):
        original = getattr(interpolate, name)
        monkeypatch.setattr(interpolate, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    x, y = clusters(20)
    checked = fastwnll.wnll_interpolate(x[:30], y[:30], x[30:], k=6)
    assert calls == ["_check_values", "check_reachable"]
    calls.clear()
    trusted = fastwnll.wnll_interpolate(x[:30], y[:30], x[30:], k=6, num_classes=3, validate=False)
    assert calls == [] and torch.equal(trusted, checked)


def test_validate_false_never_reports_unchecked_convergence():
    """Without the reachability check, queries cut off from the templates get zero rows, which the
    row-sum check reports as non-convergence."""
    xt = torch.randn(10, 2, dtype=torch.float64)
    xq = torch.cat([torch.randn(10, 2, dtype=torch.float64), 1000 + torch.randn(6, 2, dtype=torch.float64)])
    with pytest.raises(fastwnll.WNLLConvergenceError, match="maximum principle"):
        fastwnll.wnll_interpolate(xt, torch.zeros(10, dtype=torch.int64), xq, k=5, k_sigma=3, validate=False)


# --------------------------------------------------------------------------------------------
# Second-order gradients
# --------------------------------------------------------------------------------------------
def test_second_order_gradients_raise_a_clear_error():
    x, y = clusters(12)
    m = 18
    xt, xq = x[:m].clone().requires_grad_(), x[m:].clone().requires_grad_()
    G = torch.randn(len(y) - m, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    u = fastwnll.wnll_interpolate(xt, y[:m], xq, k=6, k_sigma=4, tol=1e-13)
    (gq,) = torch.autograd.grad((u * G).sum(), xq, create_graph=True)  # a gradient penalty's first step
    with pytest.raises(RuntimeError, match="wnll_solve is once differentiable"):
        gq.square().sum().backward()
    (g1,) = torch.autograd.grad((fastwnll.wnll_interpolate(xt, y[:m], xq, k=6, k_sigma=4, tol=1e-13) * G).sum(), xq)
    torch.testing.assert_close(gq.detach(), g1)  # the first-order gradient itself is unaffected
