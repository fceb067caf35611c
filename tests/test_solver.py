"""The WNLL solver op (fastwnll.wnll_solve, torch.ops.fastwnll.wnll_solve / wnll_adjoint /
unreachable_queries).

References are built here from docs/design.md, section 2, independently of the library: the dense
system (torch.linalg.solve, differentiable for the gradient checks), a scipy.sparse system (spsolve)
and scipy's connected components.
"""

import math
import warnings

import numpy as np
import pytest
import torch

import fastwnll
from fastwnll.wnll.solver import WNLLConvergenceError, WNLLUnreachableError, unreachable_queries
from fastwnll.wnll.weights import gaussian_weights

F64, F32 = torch.float64, torch.float32


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# Graphs and references
# --------------------------------------------------------------------------------------------
def random_graph(n, m, k, C, seed=0, dtype=F64, one_hot=True):
    """Random directed graph on n nodes (templates 0..m-1) with k out-edges per node: duplicate edges
    on every third row, self-loops and template -> query edges by chance, and every query pointing at
    a template (so all are reachable). Returns idx [n, k] int64, w [n, k] in [0.1, 1], y [m, C]."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n, k), generator=g)
    idx[m:, 0] = torch.randint(0, m, (n - m,), generator=g)
    idx[::3, 1] = idx[::3, k - 1]
    w = (0.1 + 0.9 * torch.rand(n, k, generator=g, dtype=F64)).to(dtype)
    if one_hot:
        y = torch.nn.functional.one_hot(torch.randint(0, C, (m,), generator=g), C).to(dtype)
    else:
        y = torch.rand(m, C, generator=g, dtype=F64).to(dtype)
    return idx, w, y


def dense_system(idx, w, y, mu, degrees=False):
    """A [n_U, n_U] and b [n_U, C] of docs/design.md, section 2, built densely (differentiable in w); with
    degrees=True also dgr [n_U] (the diagonal of A but for self-loops, which cancel in A)."""
    n, k = idx.shape
    m = y.shape[0]
    rows = torch.arange(n).repeat_interleave(k)
    W = torch.zeros(n, n, dtype=w.dtype).index_put((rows, idx.reshape(-1)), w.reshape(-1), accumulate=True)
    S = W + W.T
    L, U = slice(0, m), slice(m, n)
    dgr = S[U].sum(1) + mu * W[L, U].sum(0)
    A = torch.diag(dgr) - S[U, U]
    b = (S[U, L] + mu * W[L, U].T) @ y
    return (A, b, dgr) if degrees else (A, b)


def dense_solve(idx, w, y, mu):
    A, b = dense_system(idx, w, y, mu)
    return torch.linalg.solve(A, b)


def scaled_solve(idx, w, y, mu):
    """The solution from the scaled system D^-1 A u = D^-1 b (D = diag(dgr)) in float64, accurate for any mu."""
    A, b, dgr = dense_system(idx, w.double(), y.double(), mu, degrees=True)
    d = dgr.unsqueeze(1)
    return torch.linalg.solve(A / d, b / d)


def scaled_residual(idx, w, y, mu, u):
    """max_c ||D^-1 (b_c - A u_c)|| / ||D^-1 b_c|| (D = diag(dgr)) in float64."""
    A, b, dgr = dense_system(idx, w.double(), y.double(), mu, degrees=True)
    d = dgr.unsqueeze(1)
    return (((b - A @ u.double()) / d).norm(dim=0) / (b / d).norm(dim=0)).max().item()


def two_query_graph():
    """Templates 0, 1 and queries 2, 3 with A = [[3, -2], [-2, 3]] and b = [[1, 0], [1, 0]]: b's
    columns are eigenvectors of A (CG converges in 1 iteration), e_0 is not (it needs 2)."""
    idx = torch.tensor([[1, 1], [0, 0], [0, 3], [0, 2]])
    return idx, torch.ones(4, 2, dtype=F64), torch.eye(2, dtype=F64)


# --------------------------------------------------------------------------------------------
# Forward: references, maximum principle, solve information
# --------------------------------------------------------------------------------------------
def test_random_graph_has_the_features_under_test():
    idx, _, _ = random_graph(40, 12, 5, 3)
    m = 12
    assert (idx[:m] >= m).any(), "no template -> query edges"
    assert (idx[::3, 1] == idx[::3, -1]).all(), "no duplicate edges"
    assert (idx == torch.arange(40).unsqueeze(1)).any(), "no self-loops"


@pytest.mark.parametrize("C", [1, 3, 10, 40])
@pytest.mark.parametrize("mu", [0.0, 0.7, 3.0])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_matches_dense_solve(dtype, mu, C):
    idx, w, y = random_graph(40, 12, 5, C, seed=C, dtype=dtype, one_hot=False)
    tol = 1e-12 if dtype == F64 else 1e-6
    u, info = fastwnll.wnll_solve(idx, w, y, mu=mu, tol=tol, return_info=True)
    ref = dense_solve(idx, w.double(), y.double(), mu)
    assert u.shape == (28, C) and u.dtype == dtype and info.converged
    atol = 1e-9 if dtype == F64 else 1e-4
    torch.testing.assert_close(u.double(), ref, atol=atol, rtol=atol)


def test_matches_scipy_spsolve_on_a_larger_graph():
    sp = pytest.importorskip("scipy.sparse")
    spla = pytest.importorskip("scipy.sparse.linalg")
    n, m, k, C, mu = 3000, 600, 10, 10, 4.0
    idx, w, y = random_graph(n, m, k, C, seed=7)
    rows = np.repeat(np.arange(n), k)
    W = sp.csr_matrix((w.numpy().ravel(), (rows, idx.numpy().ravel())), shape=(n, n))  # duplicates summed
    S = (W + W.T).tocsr()
    WLU = W[:m, m:]
    dgr = np.asarray(S[m:].sum(1)).ravel() + mu * np.asarray(WLU.sum(0)).ravel()
    A = (sp.diags(dgr) - S[m:, m:]).tocsc()
    b = (S[m:, :m] + mu * WLU.T) @ y.numpy()
    ref = spla.spsolve(A, b)
    u = fastwnll.wnll_solve(idx, w, y, mu=mu, tol=1e-12)
    np.testing.assert_allclose(u.numpy(), ref, atol=1e-9)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_maximum_principle(dtype):
    idx, w, y = random_graph(300, 60, 7, 5, seed=3, dtype=dtype)
    u = fastwnll.wnll_solve(idx, w, y, mu=300 / 60 - 1)
    eps = 1e-8 if dtype == F64 else 1e-4
    assert u.min() >= -eps and u.max() <= 1 + eps
    torch.testing.assert_close(u.sum(1), torch.ones(240, dtype=dtype), atol=eps, rtol=0)


def test_solve_info_reports_iterations_and_the_true_residual():
    idx, w, y = random_graph(200, 40, 6, 4, seed=5)
    u, info = fastwnll.wnll_solve(idx, w, y, mu=1.0, tol=1e-9, return_info=True)
    assert isinstance(info, fastwnll.SolveInfo)
    assert isinstance(info.iterations, int) and isinstance(info.residual, float)
    assert info.converged and 1 <= info.iterations <= 160 and 0 <= info.residual <= 1e-9
    true = scaled_residual(idx, w, y, 1.0, u)
    assert true <= 1e-9 and math.isclose(true, info.residual, rel_tol=1e-3, abs_tol=1e-14)
    assert 0 <= info.row_sum_error <= 1e-8
    torch.testing.assert_close(info.row_sum_error, (u.sum(1) - 1).abs().max().item(), rtol=0, atol=1e-15)
    # On the CPU the convergence test runs every iteration: one iteration fewer does not converge.
    _, fewer = fastwnll.wnll_solve(
        idx, w, y, mu=1.0, tol=1e-9, max_iter=info.iterations - 1, on_nonconvergence="ignore", return_info=True
    )
    assert not fewer.converged and fewer.iterations == info.iterations - 1 and fewer.residual > 1e-9
    _, loose = fastwnll.wnll_solve(idx, w, y, mu=1.0, tol=1e-3, return_info=True)
    assert loose.iterations < info.iterations


def test_zero_right_hand_side_columns_and_one_query():
    """A class no template has gives a zero column (0/0 step lengths are 0); one query solves in one step."""
    idx, w, y = random_graph(30, 10, 4, 3, seed=2)
    y = torch.cat([y, torch.zeros(10, 1, dtype=F64)], 1)
    u, info = fastwnll.wnll_solve(idx, w, y, mu=0.5, return_info=True)
    assert info.converged and (u[:, 3] == 0).all()
    idx, w, y = random_graph(6, 5, 3, 2, seed=1)
    u, info = fastwnll.wnll_solve(idx, w, y, mu=0.5, return_info=True)
    assert info.iterations == 1
    torch.testing.assert_close(u, dense_solve(idx, w, y, 0.5))


# --------------------------------------------------------------------------------------------
# Non-convergence policy, forward and backward
# --------------------------------------------------------------------------------------------
def test_forward_nonconvergence_policies():
    idx, w, y = random_graph(100, 20, 5, 3, seed=4)
    with pytest.raises(WNLLConvergenceError, match=r"forward solve did not converge.*after 1 iterations"):
        fastwnll.wnll_solve(idx, w, y, mu=1.0, max_iter=1)
    with pytest.warns(RuntimeWarning, match="forward solve did not converge"):
        u, info = fastwnll.wnll_solve(idx, w, y, mu=1.0, max_iter=1, on_nonconvergence="warn", return_info=True)
    assert not info.converged and info.iterations == 1 and info.residual > 1e-10 and u.shape == (80, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = fastwnll.wnll_solve(idx, w, y, mu=1.0, max_iter=1, on_nonconvergence="ignore", return_info=True)
    assert not info.converged


def test_two_query_graph_converges_forward_in_one_iteration_but_not_its_adjoint():
    idx, w, y = two_query_graph()
    torch.testing.assert_close(dense_system(idx, w, y, 0.5)[0], torch.tensor([[3.0, -2.0], [-2.0, 3.0]], dtype=F64))
    u, info = fastwnll.wnll_solve(idx, w, y, mu=0.5, max_iter=1, return_info=True)
    assert info.converged and info.iterations == 1
    _, iterations, residual = torch.ops.fastwnll.wnll_adjoint(idx, w, y, u, torch.eye(2, dtype=F64), 0.5, 1e-10, 1)
    assert int(iterations) == 1 and float(residual) > 0.1


@pytest.mark.parametrize("policy", ["raise", "warn", "ignore"])
def test_backward_nonconvergence_follows_the_forward_policy(policy):
    idx, w, y = two_query_graph()
    w.requires_grad_()
    u = fastwnll.wnll_solve(idx, w, y, mu=0.5, max_iter=1, on_nonconvergence=policy)
    loss = (u * torch.eye(2, dtype=F64)).sum()
    if policy == "raise":
        with pytest.raises(WNLLConvergenceError, match=r"adjoint \(backward\) solve did not converge"):
            loss.backward()
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.backward()
    messages = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    assert len(messages) == (1 if policy == "warn" else 0)
    assert all("adjoint (backward) solve did not converge" in msg for msg in messages)
    assert w.grad is not None and torch.isfinite(w.grad).all()


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------
def test_gradcheck_with_respect_to_w():
    idx, w, y = random_graph(10, 3, 3, 2, seed=11)
    w.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: fastwnll.wnll_solve(idx, v, y, mu=0.8, tol=1e-14), (w,))


def test_gradcheck_through_gaussian_weights_to_features():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(14, 3, generator=g, dtype=F64, requires_grad=True)
    idx, _ = fastwnll.knn_graph(x.detach(), 5)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).to(F64)

    def scores(features):
        return fastwnll.wnll_solve(idx, gaussian_weights(features, idx, k_sigma=4), y, mu=1.8, tol=1e-14)

    assert torch.autograd.gradcheck(scores, (x,))


@pytest.mark.parametrize("mu", [0.0, 1.3])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_adjoint_gradient_equals_dense_autograd(dtype, mu):
    idx, w, y = random_graph(60, 15, 5, 4, seed=8, dtype=dtype)
    G = torch.randn(45, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    w_ours = w.clone().requires_grad_()
    (fastwnll.wnll_solve(idx, w_ours, y, mu=mu, tol=1e-12 if dtype == F64 else 1e-6) * G.to(dtype)).sum().backward()
    w_ref = w.double().requires_grad_()
    (dense_solve(idx, w_ref, y.double(), mu) * G).sum().backward()
    assert w_ours.grad.dtype == dtype and w_ours.grad.shape == w.shape
    atol = 1e-9 if dtype == F64 else 2e-4
    torch.testing.assert_close(w_ours.grad.double(), w_ref.grad, atol=atol, rtol=atol)


def test_adjoint_op_edge_formula():
    """wnll_adjoint's grad_w against the formula of docs/design.md, section 2 evaluated with a dense Lam."""
    n, m, mu = 30, 8, 2.5
    idx, w, y = random_graph(n, m, 4, 3, seed=9)
    A, b = dense_system(idx, w, y, mu)
    u = torch.linalg.solve(A, b)
    G = torch.randn(n - m, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    grad_w, iterations, residual = torch.ops.fastwnll.wnll_adjoint(idx, w, y, u, G, mu, 1e-12, 100)
    lam = torch.cat([torch.zeros(m, 3, dtype=F64), torch.linalg.solve(A, G)])
    u_all = torch.cat([y, u])
    i = torch.arange(n).unsqueeze(1).expand(n, 4)
    c = torch.where((i < m) & (idx >= m), 1 + mu, 1.0)
    expected = -c * ((lam[i] - lam[idx]) * (u_all[i] - u_all[idx])).sum(-1)
    torch.testing.assert_close(grad_w, expected, atol=1e-10, rtol=1e-9)
    assert iterations.dtype == torch.int64 and residual.dtype == F64 and float(residual) <= 1e-12


def test_gradient_of_row_sums_vanishes():
    idx, w, y = random_graph(30, 10, 4, 2, seed=6)
    assert not fastwnll.wnll_solve(idx, w, y, mu=1.0).requires_grad
    w.requires_grad_()
    u = fastwnll.wnll_solve(idx, w, y, mu=1.0)
    (grad_w,) = torch.autograd.grad(u.sum(), (w,))
    assert grad_w.abs().max() < 1e-8  # rows of u sum to 1 for one-hot y whatever w is


# --------------------------------------------------------------------------------------------
# torch.compile (opcheck of every op: test_ops.py)
# --------------------------------------------------------------------------------------------
def test_torch_compile_with_gradients():
    idx, w, y = random_graph(40, 10, 5, 3, seed=14)
    G = torch.randn(30, 3, generator=torch.Generator().manual_seed(3), dtype=F64)

    def loss(v):
        return (torch.ops.fastwnll.wnll_solve(idx, v.exp(), y, 0.5, 1e-12, 200)[0] * G).sum()

    log_w = w.log()
    torch._dynamo.reset()
    try:
        compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
        a = log_w.clone().requires_grad_()
        compiled(a).backward()
    finally:
        torch._dynamo.reset()
    b = log_w.clone().requires_grad_()
    loss(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.slow
def test_torch_compile_of_the_public_function():
    """fastwnll.wnll_solve under torch.compile (its checks synchronise, so the graph breaks around them).
    aot_eager traces the op through its fake kernel and autograd formula without inductor's C++ build."""
    idx, w, y = random_graph(40, 10, 5, 3, seed=14)
    G = torch.randn(30, 3, generator=torch.Generator().manual_seed(3), dtype=F64)

    def loss(v):
        return (fastwnll.wnll_solve(idx, v.exp(), y, mu=0.5, tol=1e-12) * G).sum()

    log_w = w.log()
    torch._dynamo.reset()
    try:
        a = log_w.clone().requires_grad_()
        torch.compile(loss, backend="aot_eager")(a).backward()
    finally:
        torch._dynamo.reset()
    b = log_w.clone().requires_grad_()
    loss(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


# --------------------------------------------------------------------------------------------
# Convergence is only reported when checked: large mu, tol, residual drift, row sums
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mu", [1e6, 1e8, 1e12])
def test_large_mu_is_solved_accurately(device, dtype, mu):
    """A large mu makes the template rows' equations dominate ||b||; the scaled residual still asks every
    row for tol, so the solution is accurate (not rows summing to 0.3 with converged=True)."""
    idx, w, y = random_graph(300, 60, 7, 5, seed=3, dtype=dtype)
    u, info = fastwnll.wnll_solve(idx.to(device), w.to(device), y.to(device), mu=mu, return_info=True)
    tol = 1e-4 if dtype == F32 else 1e-8
    assert info.converged and info.row_sum_error <= tol
    torch.testing.assert_close(u.cpu().double(), scaled_solve(idx, w, y, mu), rtol=0, atol=tol)


def test_mu_beyond_the_dtype_is_rejected(device):
    idx, w, y = random_graph(300, 60, 7, 5, seed=3)
    with pytest.raises(ValueError, match=r"mu=1e\+300 cannot be carried by torch.float32"):
        fastwnll.wnll_solve(idx.to(device), w.float().to(device), y.float().to(device), mu=1e300)
    with pytest.raises(ValueError, match=r"mu=1e\+307 is too large for torch.float64.*largest weighted degree"):
        fastwnll.wnll_solve(idx.to(device), w.to(device), y.to(device), mu=1e307)
    u, info = fastwnll.wnll_solve(idx.to(device), w.to(device), y.to(device), mu=1e300, return_info=True)
    assert info.converged  # within float64's range: solved like any other mu
    torch.testing.assert_close(u.cpu(), scaled_solve(idx, w, y, 1e300), rtol=0, atol=1e-8)


@pytest.mark.parametrize("tol", [0.99999, 1.0, 2.0])
def test_tol_must_be_below_one(tol):
    idx, w, y = random_graph(30, 10, 4, 3, seed=2)
    if tol < 1:
        with pytest.raises(WNLLConvergenceError, match="maximum principle"):  # accepted, but u is no answer
            fastwnll.wnll_solve(idx, w, y, mu=1.0, tol=tol)
        return
    with pytest.raises(ValueError, match=r"tol must be .* < 1 \(u = 0 has relative residual 1\)"):
        fastwnll.wnll_solve(idx, w, y, mu=1.0, tol=tol)
    with pytest.raises(RuntimeError, match=r"tol must be in \(0, 1\)"):
        torch.ops.fastwnll.wnll_solve(idx, w, y, 1.0, tol, 100)


def test_tol_below_the_precision_of_float32_is_not_reported_as_converged(device):
    """CG's recursive residual keeps shrinking below what float32 can represent; the residual of the
    returned u cannot. The solve stops once restarts no longer help and says so."""
    idx, w, y = random_graph(300, 60, 7, 5, seed=3, dtype=F32)
    with pytest.raises(WNLLConvergenceError, match="stalled .* at the precision torch.float32 allows"):
        fastwnll.wnll_solve(idx.to(device), w.to(device), y.to(device), mu=4.0, tol=1e-9)
    u, info = fastwnll.wnll_solve(
        idx.to(device), w.to(device), y.to(device), mu=4.0, tol=1e-9, on_nonconvergence="ignore", return_info=True
    )
    assert not info.converged and info.iterations < 100
    assert math.isclose(scaled_residual(idx, w, y, 4.0, u.cpu()), info.residual, rel_tol=0.5)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_residual_is_recomputed_from_the_returned_u(device, dtype):
    idx, w, y = random_graph(300, 60, 7, 5, seed=3, dtype=dtype)
    tol = 1e-10 if dtype == F64 else 1e-5
    for mu in (0.0, 4.0, 1e6):
        u, info = fastwnll.wnll_solve(idx.to(device), w.to(device), y.to(device), mu=mu, tol=tol, return_info=True)
        true = scaled_residual(idx, w, y, mu, u.cpu())
        assert info.converged and true <= 1.5 * tol
        assert math.isclose(true, info.residual, rel_tol=0.1 if dtype == F64 else 0.5)
        assert info.row_sum_error == pytest.approx((u.cpu().double().sum(1) - 1).abs().max().item(), abs=1e-7)


def test_row_sums_are_checked_against_any_labels():
    """The row sums of u lie in the range of those of y whatever y is (maximum principle); an unreachable
    component solved without validation gives zero rows, which is reported."""
    idx, w, y = random_graph(100, 20, 5, 3, seed=4, one_hot=False)
    u, info = fastwnll.wnll_solve(idx, w, 3 * y - 1, mu=1.0, return_info=True)
    sums, bounds = u.sum(1), (3 * y - 1).sum(1)
    assert info.converged and bounds.min() - 1e-9 <= sums.min() and sums.max() <= bounds.max() + 1e-9
    n = 10
    idx = torch.tensor([[1, 2], [0, 3], [4, 5], [0, 1], [3, 5], [3, 4], [7, 8], [8, 9], [9, 6], [6, 7]])
    y = torch.eye(3, dtype=F64)
    with pytest.raises(WNLLConvergenceError, match=r"maximum principle: their sums lie up to 1.000e\+00 outside"):
        fastwnll.wnll_solve(idx, torch.ones(n, 2, dtype=F64), y, mu=1.0, validate=False)


# --------------------------------------------------------------------------------------------
# Half precision, second-order gradients
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_solved_in_float32(device, half):
    idx, w, y = random_graph(100, 20, 5, 3, seed=5, dtype=F32)
    idx, w, y = idx.to(device), w.to(half).to(device), y.to(half).to(device)
    expected = fastwnll.wnll_solve(idx, w.float(), y.float(), mu=2.0)
    v = w.clone().requires_grad_()
    u, info = fastwnll.wnll_solve(idx, v, y, mu=2.0, return_info=True)
    assert u.dtype == half and info.converged and torch.equal(u, expected.to(half))
    u.float().square().sum().backward()
    assert v.grad.dtype == half and torch.isfinite(v.grad).all()


def test_second_order_gradients_raise_a_clear_error(device):
    idx, w, y = (t.to(device) for t in random_graph(10, 3, 3, 2, seed=11))
    w.requires_grad_()
    G = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=F64).to(device)
    u = fastwnll.wnll_solve(idx, w, y, mu=0.8, tol=1e-14)
    (grad_w,) = torch.autograd.grad((u * G).sum(), w, create_graph=True)  # first order: fine
    with pytest.raises(RuntimeError, match="wnll_solve is once differentiable"):
        grad_w.square().sum().backward()
    with pytest.raises(RuntimeError, match="wnll_solve is once differentiable"):
        torch.autograd.gradgradcheck(lambda v: fastwnll.wnll_solve(idx, v, y, mu=0.8, tol=1e-14), (w,))


# --------------------------------------------------------------------------------------------
# Reachability (union-find) and the validation pass
# --------------------------------------------------------------------------------------------
def reachable_reference(idx, w, m):
    """Queries in no weakly connected component (positive-weight edges) holding a template (scipy)."""
    sp = pytest.importorskip("scipy.sparse")
    csgraph = pytest.importorskip("scipy.sparse.csgraph")
    n, k = idx.shape
    keep = (w > 0).reshape(-1).numpy()
    rows = np.repeat(np.arange(n), k)[keep]
    graph = sp.csr_matrix((np.ones(keep.sum()), (rows, idx.reshape(-1).numpy()[keep])), shape=(n, n))
    _, label = csgraph.connected_components(graph, directed=True, connection="weak")
    return torch.from_numpy(~np.isin(label[m:], label[:m]))


@pytest.mark.parametrize("seed", range(6))
def test_unreachable_queries_match_scipy_components(device, seed):
    g = torch.Generator().manual_seed(seed)
    n, m, k = 400, 1 + seed * 3, 2
    idx = torch.randint(0, n, (n, k), generator=g)
    w = torch.rand(n, k, generator=g, dtype=F64) * (torch.rand(n, k, generator=g) < 0.6)
    expected = reachable_reference(idx, w, m)
    assert 0 < expected.sum() < n - m  # both kinds present
    got = unreachable_queries(idx.to(device), w.to(device), m)
    assert got.device.type == device and torch.equal(got.cpu(), expected)


def test_reachability_on_a_long_chain():
    """100,000 nodes in a chain (k = 2: both neighbours), one template at the start, cut in the middle:
    one pass over the edges, however long the chain (label propagation needs one sweep per link)."""
    n = 100_000
    nodes = torch.arange(n)
    idx = torch.stack([(nodes - 1).clamp_min(0), (nodes + 1).clamp_max(n - 1)], 1)
    w = torch.ones(n, 2, dtype=F64)
    assert not unreachable_queries(idx, w, 1).any()
    w[n // 2, 0] = w[n // 2 - 1, 1] = 0.0  # the link between n/2 - 1 and n/2, both directions
    mask = unreachable_queries(idx, w, 1)
    assert torch.equal(mask, nodes[1:] >= n // 2)
    with pytest.raises(WNLLUnreachableError, match=f"{n // 2} of {n - 1} queries"):
        fastwnll.wnll_solve(idx, w, torch.ones(1, 1, dtype=F64), mu=1.0)


def test_validation_is_one_pass_and_validate_false_skips_it(monkeypatch):
    import fastwnll.wnll.solver as solver

    calls = []
    original = solver.host_copies
    monkeypatch.setattr(solver, "host_copies", lambda *t: calls.append(len(t)) or original(*t))
    idx, w, y = random_graph(200, 40, 6, 4, seed=5)
    checked = fastwnll.wnll_solve(idx, w, y, mu=1.0)
    assert calls == [3]  # idx, w, y copied (on CUDA) once; values and reachability checked on the copies
    calls.clear()
    trusted = fastwnll.wnll_solve(idx, w, y, mu=1.0, validate=False)
    assert calls == [] and torch.equal(trusted, checked)
    bad = idx.index_fill(0, torch.tensor([5]), 200)
    with pytest.raises(RuntimeError, match=r"idx values must lie in \[0, n=200\)"):  # the op still checks
        fastwnll.wnll_solve(bad, w, y, mu=1.0, validate=False)


# --------------------------------------------------------------------------------------------
# Bad input: the Python layer
# --------------------------------------------------------------------------------------------
def _base():
    idx, w, y = random_graph(12, 4, 3, 2, seed=15)
    return dict(idx=idx, w=w, y=y, mu=0.5)


def _set(key, value):
    return lambda a: a.update({key: value(a) if callable(value) else value})


def _fill(key, dim, index, value):
    """Sets a[key]'s row (dim 0) or column (dim 1) `index` to value."""
    return _set(key, lambda a: a[key].index_fill(dim, torch.tensor([index]), value))


PYTHON_ERRORS = [
    (_set("idx", [[1, 2]]), TypeError, "idx must be a torch.Tensor"),
    (_set("w", np.ones((12, 3))), TypeError, "w must be a torch.Tensor"),
    (_set("y", None), TypeError, "y must be a torch.Tensor"),
    (_set("idx", lambda a: a["idx"].reshape(-1)), ValueError, r"idx must have shape \[n, k\]"),
    (_set("idx", lambda a: a["idx"].int()), TypeError, "idx must be int64"),
    (lambda a: a.update(idx=a["idx"][:, :0], w=a["w"][:, :0]), ValueError, "at least one neighbour"),
    (_set("w", lambda a: a["w"][:, :2]), ValueError, "w must have idx's shape"),
    (lambda a: a.update(w=a["w"].int(), y=a["y"].int()), TypeError, "w must be float16, bfloat16, float32 or float64"),
    (_set("y", lambda a: a["y"][:, 0]), ValueError, r"y must have shape \[m, C\]"),
    (_set("y", lambda a: a["y"].float()), TypeError, "y must have w's dtype"),
    (_set("y", lambda a: a["y"][:0]), ValueError, "1 <= m < n=12"),
    (_set("y", lambda a: torch.ones(12, 2, dtype=F64)), ValueError, "got m=12"),
    (_set("y", lambda a: a["y"][:, :0]), ValueError, "at least one column"),
    (_set("w", lambda a: a["w"].to("meta")), ValueError, "idx is on cpu but w is on meta"),
    (_set("y", lambda a: a["y"].to("meta")), ValueError, "idx is on cpu but y is on meta"),
    (_set("mu", True), TypeError, "mu must be a real number"),
    (_set("mu", "1"), TypeError, "mu must be a real number"),
    (_set("mu", -0.1), ValueError, "mu must be finite and >= 0"),
    (_set("mu", float("nan")), ValueError, "mu must be finite"),
    (_set("mu", float("inf")), ValueError, "mu must be finite"),
    (_set("tol", 0.0), ValueError, "tol must be finite and > 0"),
    (_set("tol", -1e-3), ValueError, "tol must be finite and > 0"),
    (_set("tol", 1.0), ValueError, "tol must be finite and > 0 and < 1"),
    (_set("tol", float("nan")), ValueError, "tol must be finite"),
    (_set("max_iter", 0), ValueError, "max_iter must be an integer >= 1"),
    (_set("max_iter", 2.5), ValueError, "max_iter must be an integer >= 1"),
    (_set("max_iter", True), ValueError, "max_iter must be an integer >= 1"),
    (_set("on_nonconvergence", "fail"), ValueError, "on_nonconvergence must be one of"),
    (_fill("idx", 0, 2, -1), ValueError, r"idx values must lie in \[0, n=12\), got values in \[-1,"),
    (_fill("idx", 0, 2, 12), ValueError, r"idx values must lie in \[0, n=12\), got values in \[\d+, 12\]"),
    (_fill("w", 0, 1, float("nan")), ValueError, "w contains 3 NaN or Inf"),
    (_fill("w", 0, 1, float("inf")), ValueError, "w contains 3 NaN or Inf"),
    (_fill("w", 0, 1, -1.0), ValueError, "w must be >= 0, got 3 negative"),
    (_fill("y", 1, 0, float("nan")), ValueError, "y contains 4 NaN or Inf"),
]


@pytest.mark.parametrize("change, error, match", PYTHON_ERRORS)
def test_bad_input_python(change, error, match):
    args = _base()
    change(args)
    with pytest.raises(error, match=match):
        fastwnll.wnll_solve(**args)


def test_unreachable_queries_are_counted():
    """Queries 6..9 form a component with no edge to or from a template; zero-weight edges do not count."""
    n, m = 10, 3
    idx = torch.tensor([[1, 2], [0, 3], [4, 5], [0, 1], [3, 5], [3, 4], [7, 8], [8, 9], [9, 6], [6, 7]])
    w = torch.ones(n, 2, dtype=F64)
    y = torch.eye(3, dtype=F64)
    expected = torch.zeros(n - m, dtype=torch.bool)
    expected[3:] = True
    assert torch.equal(unreachable_queries(idx, w, m), expected)
    with pytest.raises(
        WNLLUnreachableError,
        match=r"4 of 7 queries are connected to no template.*rows \[3, 4, 5, 6\]"
        r".*nodes \[6, 7, 8, 9\]",
    ):
        fastwnll.wnll_solve(idx, w, y, mu=1.0)
    w[1, 1] = 0.0  # 1 -> 3 dropped; 3 -> 0 still connects node 3
    assert unreachable_queries(idx, w, m).sum() == 4
    w[2] = w[3] = 0.0  # 2 -> 4, 2 -> 5 and 3 -> 0, 3 -> 1 dropped: nodes 3, 4, 5 lose their last links
    with pytest.raises(WNLLUnreachableError, match="7 of 7 queries"):
        fastwnll.wnll_solve(idx, w, y, mu=1.0)


def test_unreachable_message_lists_at_most_eight():
    n = 20
    idx = torch.tensor([[0]] + [[i + 1 if i + 1 < n else 1] for i in range(1, n)])
    message = (
        r"19 of 19 queries.*rows \[0, 1, 2, 3, 4, 5, 6, 7\] and 11 more "
        r"\(nodes \[1, 2, 3, 4, 5, 6, 7, 8\] and 11 more\)"
    )
    with pytest.raises(WNLLUnreachableError, match=message):
        fastwnll.wnll_solve(idx, torch.ones(n, 1, dtype=F64), torch.ones(1, 1, dtype=F64), mu=1.0)


# --------------------------------------------------------------------------------------------
# Bad input: the C++ checks (the ops called directly)
# --------------------------------------------------------------------------------------------
def _op_args():
    idx, w, y = random_graph(12, 4, 3, 2, seed=16)
    return [idx, w, y, 0.5, 1e-10, 100]


def _arg(i, value):
    return lambda a: a.__setitem__(i, value(a) if callable(value) else value)


OP_ERRORS = [
    (_arg(0, lambda a: a[0].reshape(-1)), r"idx must have shape \[n, k\]"),
    (_arg(0, lambda a: a[0].int()), "idx must be int64"),
    (_arg(1, lambda a: a[1][:, :2]), "w must have idx's shape"),
    (lambda a: a.__setitem__(slice(1, 3), [a[1].half(), a[2].half()]), "w must be float32 or float64"),
    (_arg(2, lambda a: a[2][:, 0]), r"y must have shape \[m, C\]"),
    (_arg(2, lambda a: a[2].float()), "y must have w's dtype"),
    (_arg(2, lambda a: a[2][:0]), "1 <= m < n = 12"),
    (_arg(2, lambda a: torch.ones(12, 2, dtype=F64)), "1 <= m < n = 12"),
    (_arg(2, lambda a: a[2][:, :0]), "at least one column"),
    (lambda a: a.__setitem__(slice(0, 2), [a[0][:, :0], a[1][:, :0]]), "at least one neighbour"),
    (_arg(3, -1.0), "mu must be finite and >= 0"),
    (_arg(3, float("inf")), "mu must be finite and >= 0"),
    (_arg(3, float("nan")), "mu must be finite and >= 0"),
    (_arg(4, 0.0), r"tol must be in \(0, 1\)"),
    (_arg(4, float("nan")), r"tol must be in \(0, 1\)"),
    (_arg(4, 1.0), r"tol must be in \(0, 1\)"),
    (_arg(5, 0), "max_iter must be >= 1"),
    (_arg(0, lambda a: a[0].index_fill(0, torch.tensor([5]), 12)), r"idx values must lie in \[0, n=12\), got 12"),
    (_arg(0, lambda a: a[0].index_fill(0, torch.tensor([5]), -3)), r"idx values must lie in \[0, n=12\), got -3"),
]


@pytest.mark.parametrize("change, match", OP_ERRORS)
@pytest.mark.parametrize("op", ["wnll_solve", "wnll_adjoint"])
def test_bad_input_op(op, change, match):
    args = _op_args()
    u = torch.zeros(8, 2, dtype=F64)
    change(args)
    if op == "wnll_adjoint":
        args = args[:3] + [u, u] + args[3:]
    with pytest.raises(RuntimeError, match=match):
        getattr(torch.ops.fastwnll, op)(*args)


@pytest.mark.parametrize(
    "u_shape, g_shape, dtype, match",
    [
        ((7, 2), (7, 2), F64, r"u must have shape \[8, 2\]"),
        ((8, 3), (8, 3), F64, r"u must have shape \[8, 2\]"),
        ((8, 2), (8, 1), F64, "grad_u must have u's shape"),
        ((8, 2), (8, 2), F32, "u and grad_u must have w's dtype"),
    ],
)
def test_bad_adjoint_arguments(u_shape, g_shape, dtype, match):
    idx, w, y = _op_args()[:3]
    u, g = torch.zeros(u_shape, dtype=dtype), torch.zeros(g_shape, dtype=dtype)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fastwnll.wnll_adjoint(idx, w, y, u, g, 0.5, 1e-10, 100)


# --------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# --------------------------------------------------------------------------------------------
def _cuda(*tensors):
    return [t.cuda() for t in tensors]


def _solve_with_grad(idx, w, y, G, device, mu=4.0, tol=None):
    v = w.to(device).requires_grad_()
    u, info = fastwnll.wnll_solve(idx.to(device), v, y.to(device), mu=mu, tol=tol, return_info=True)
    (u * G.to(device)).sum().backward()
    assert u.device.type == device and v.grad.device.type == device and info.converged
    return u.detach(), v.grad, info


@pytest.mark.cuda
def test_cuda_kernels_are_compiled():
    assert fastwnll.extension.loader.cuda_compiled()


@pytest.mark.cuda
@pytest.mark.parametrize("C", [1, 10, 40])
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("n", [200, 30000])
def test_cuda_matches_cpu_forward_and_backward(n, dtype, C):
    m = n // 5
    idx, w, y = random_graph(n, m, 15, C, seed=n + C, dtype=dtype)
    G = torch.randn(n - m, C, generator=torch.Generator().manual_seed(4), dtype=dtype)
    tol = 1e-10 if dtype == F64 else 1e-5
    u_cpu, g_cpu, info_cpu = _solve_with_grad(idx, w, y, G, "cpu", tol=tol)
    u_gpu, g_gpu, info_gpu = _solve_with_grad(idx, w, y, G, "cuda", tol=tol)
    # Convergence is tested every 8 iterations on CUDA (every one on the CPU); rounding may move the
    # iteration where the residual crosses tol by one, and a restart from the recomputed residual
    # (when one side needs it) costs 8 more iterations on CUDA.
    assert info_gpu.iterations % 8 == 0
    assert info_cpu.iterations - 1 <= info_gpu.iterations <= info_cpu.iterations + 16
    atol = 1e-8 if dtype == F64 else 2e-4
    torch.testing.assert_close(u_gpu.cpu(), u_cpu, atol=atol, rtol=atol)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, atol=atol, rtol=10 * atol)


@pytest.mark.cuda
def test_cuda_matches_dense_solve_and_gradcheck():
    idx, w, y = random_graph(40, 12, 5, 3, seed=21)
    u = fastwnll.wnll_solve(idx.cuda(), w.cuda(), y.cuda(), mu=0.0, tol=1e-12)
    torch.testing.assert_close(u.cpu(), dense_solve(idx, w, y, 0.0), atol=1e-9, rtol=1e-9)
    idx, w, y = _cuda(*random_graph(10, 3, 3, 2, seed=11))
    w.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: fastwnll.wnll_solve(idx, v, y, mu=0.8, tol=1e-14), (w,))


@pytest.mark.cuda
def test_cuda_non_contiguous_inputs():
    n, m, k, C = 500, 100, 6, 4
    idx, w, y = random_graph(n, m, k, C, seed=22)
    G = torch.randn(n - m, C, generator=torch.Generator().manual_seed(5), dtype=F64)
    idx_t = idx.T.contiguous().cuda().T  # [n, k] views with strides (1, n)
    w_t = w.T.contiguous().cuda().T.requires_grad_()
    y_wide = torch.stack([y, torch.zeros_like(y)], 2).reshape(m, 2 * C).cuda()[:, ::2]  # y, stride (2C, 2)
    assert not (idx_t.is_contiguous() or w_t.is_contiguous() or y_wide.is_contiguous())
    u = fastwnll.wnll_solve(idx_t, w_t, y_wide, mu=2.0)
    (u * G.cuda().T.contiguous().T).sum().backward()
    u_ref, g_ref, _ = _solve_with_grad(idx, w, y, G, "cuda", mu=2.0)
    torch.testing.assert_close(u.detach(), u_ref)
    torch.testing.assert_close(w_t.grad, g_ref)


@pytest.mark.cuda
def test_cuda_is_deterministic_on_any_stream():
    idx, w, y = _cuda(*random_graph(20000, 4000, 15, 10, seed=23))
    first = fastwnll.wnll_solve(idx, w, y, mu=4.0)
    assert torch.equal(fastwnll.wnll_solve(idx, w, y, mu=4.0), first)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        again = fastwnll.wnll_solve(idx, w, y, mu=4.0)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(again, first)


@pytest.mark.cuda
def test_cuda_nonconvergence():
    idx, w, y = _cuda(*random_graph(100, 20, 5, 3, seed=4))
    with pytest.raises(WNLLConvergenceError, match="after 1 iterations"):
        fastwnll.wnll_solve(idx, w, y, mu=1.0, max_iter=1)


@pytest.mark.cuda
def test_cuda_synchronisations_per_solve():
    """Without validation a solve synchronises only for its convergence tests (one before the first
    iteration, which also checks idx, one every 8 iterations, one per residual recomputation); the
    validation pass adds one."""
    idx, w, y = _cuda(*random_graph(5000, 1000, 10, 10, seed=24, dtype=F32))
    fastwnll.wnll_solve(idx, w, y, mu=4.0)  # warm-up (kernels, allocator)

    def count(validate):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                _, info = fastwnll.wnll_solve(idx, w, y, mu=4.0, validate=validate, return_info=True)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(c.message) for c in caught), info

    trusted, info = count(False)
    checked, _ = count(True)
    assert 1 <= trusted <= 1 + info.iterations // 8 + 3
    assert trusted <= checked <= trusted + 1


@pytest.mark.cuda
def test_cuda_bad_input():
    idx, w, y = random_graph(12, 4, 3, 2, seed=16)
    with pytest.raises(ValueError, match="idx is on cpu but w is on cuda"):
        fastwnll.wnll_solve(idx, w.cuda(), y, mu=0.5)
    with pytest.raises(RuntimeError, match="idx, w and y must be on one device"):
        torch.ops.fastwnll.wnll_solve(idx, w.cuda(), y.cuda(), 0.5, 1e-10, 100)
    with pytest.raises(RuntimeError, match="idx, w and y must be on one device"):
        torch.ops.fastwnll.wnll_solve(idx.cuda(), w.cuda(), y, 0.5, 1e-10, 100)
    u = torch.zeros(8, 2, dtype=F64)
    with pytest.raises(RuntimeError, match="u and grad_u must be on idx's device"):
        torch.ops.fastwnll.wnll_adjoint(idx.cuda(), w.cuda(), y.cuda(), u, u.cuda(), 0.5, 1e-10, 100)
    bad = idx.index_fill(0, torch.tensor([5]), 12).cuda()
    with pytest.raises(RuntimeError, match=r"idx values must lie in \[0, n=12\), got values in \[\d+, 12\]"):
        torch.ops.fastwnll.wnll_solve(bad, w.cuda(), y.cuda(), 0.5, 1e-10, 100)
    with pytest.raises(RuntimeError, match=r"idx values must lie in \[0, n=12\)"):
        torch.ops.fastwnll.wnll_adjoint(bad, w.cuda(), y.cuda(), u.cuda(), u.cuda(), 0.5, 1e-10, 100)
    torch.cuda.synchronize()  # the device is still healthy
