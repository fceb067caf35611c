"""kNN search against a brute-force float64 reference, for every exact backend, and its input errors."""

import pytest
import torch

from fastwnll.knn import search as knn_module
from fastwnll.knn import tiled as knn_torch
from fastwnll.knn.search import knn_graph, knn_search

BACKENDS = ["native", "torch", pytest.param("faiss", marks=pytest.mark.needs("faiss"))]


def brute_force(query, base, k, exclude_self):
    d = torch.cdist(query.double(), base.double(), compute_mode="donot_use_mm_for_euclid_dist")
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    dist, idx = d.sort(dim=1, stable=True)
    return idx[:, :k], dist[:, :k]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_graph_matches_brute_force(backend, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g).to(dtype)
    idx, dist = knn_graph(x, 15, backend=backend)
    ref_idx, ref_dist = brute_force(x, x, 15, True)
    assert idx.dtype == torch.int64 and dist.dtype == dtype
    assert idx.shape == dist.shape == (300, 15)
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-5, atol=1e-6)
    assert (idx == ref_idx).float().mean() > 0.999  # ties in float32 may swap order
    assert not (idx == torch.arange(300).unsqueeze(1)).any()
    assert (dist[:, 1:] >= dist[:, :-1]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_between_sets(backend):
    g = torch.Generator().manual_seed(1)
    q, b = torch.randn(70, 5, generator=g, dtype=torch.float64), torch.randn(200, 5, generator=g, dtype=torch.float64)
    idx, dist = knn_search(q, b, 9, backend=backend)
    ref_idx, ref_dist = brute_force(q, b, 9, False)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist, ref_dist)


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_are_neighbours_but_self_is_not(backend):
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [6.0, 5.0]], dtype=torch.float64)
    idx, dist = knn_graph(x, 2, backend=backend)
    for i in range(3):
        assert i not in idx[i].tolist()
        assert set(idx[i].tolist()) == {0, 1, 2} - {i}
        assert dist[i].abs().max() == 0


def test_tiled_torch_path_equals_untiled(monkeypatch):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(257, 8, generator=g, dtype=torch.float64)
    whole = knn_graph(x, 6, backend="torch")
    monkeypatch.setattr(knn_torch, "_CPU_TILE_BYTES", 2000)  # 14 rows x 11 columns per tile
    assert knn_torch.tile_shape(257, 257, 11, 8, torch.float64, 2000) == (14, 11)
    tiled = knn_graph(x, 6, backend="torch")
    assert torch.equal(whole[0], tiled[0])
    torch.testing.assert_close(whole[1], tiled[1])


def test_auto_uses_the_native_kernel_on_cpu():
    x = torch.randn(50, 3)
    assert knn_module._resolve_backend("auto", x, 50, 20) == "native"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [5, 257, 700])
def test_native_graph_over_many_tiles(n, dtype):
    """Several 256-row tiles, a partial last tile, and k = n - 1 (every other point is a neighbour)."""
    g = torch.Generator().manual_seed(n)
    x = (torch.randn(n, 10, generator=g) + 4 * torch.randint(0, 3, (n, 1), generator=g)).to(dtype)
    for k in sorted({1, min(15, n - 1), n - 1}):
        idx, dist = knn_graph(x, k, backend="native")
        ref_idx, ref_dist = brute_force(x, x, k, True)
        torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-5, atol=1e-5)
        assert (idx == ref_idx).float().mean() > 0.999


def test_native_search_between_sets_and_offset_self():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(600, 7, generator=g, dtype=torch.float64)
    query = torch.randn(300, 7, generator=g, dtype=torch.float64)
    idx, dist = knn_search(query, base, 12, backend="native")
    ref_idx, ref_dist = brute_force(query, base, 12, False)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist, ref_dist)
    # query rows 0..99 are base rows 300..399: themselves excluded by index
    idx, dist = knn_search(base[300:400], base, 4, backend="native", exclude_self=True, self_offset=300)
    d = torch.cdist(base[300:400], base, compute_mode="donot_use_mm_for_euclid_dist")
    d[torch.arange(100), torch.arange(300, 400)] = float("inf")
    torch.testing.assert_close(dist, d.sort(dim=1).values[:, :4])


def test_native_candidates_do_not_depend_on_threads_or_order():
    """The op's lists are ordered by (distance, index): same result for any thread count or point order."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(900, 16, generator=g)
    op = torch.ops.fastwnll.knn_candidates
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = op(x, x, 20, True)
        torch.set_num_threads(2)
        two = op(x, x, 20, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    assert not (one == torch.arange(900).unsqueeze(1)).any()
    ref = knn_graph(x, 20, backend="torch")[0]
    assert (one.sort(1).values == ref.sort(1).values).float().mean() > 0.999
    perm = torch.randperm(900, generator=g)
    assert torch.equal(knn_graph(x[perm], 20, backend="native")[0], perm.argsort()[knn_graph(x, 20)[0][perm]])


def test_locality_order_is_a_permutation_grouping_clusters():
    g = torch.Generator().manual_seed(5)
    centres = 10 * torch.randn(4, 8, generator=g)
    labels = torch.arange(1024) % 4
    x = centres[labels] + torch.randn(1024, 8, generator=g)
    perm = knn_torch.locality_order(x)
    assert torch.equal(perm.sort().values, torch.arange(1024))
    runs = (labels[perm][1:] != labels[perm][:-1]).sum()
    assert runs <= 8  # the four clusters come out (almost) contiguous


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [9, 16, 5])
def test_cpp_refine_equals_the_torch_refine_bit_for_bit(monkeypatch, dtype, dim):
    """The C++ re-scoring of CPU candidates and the torch one used on other devices give the same
    bits (one order of summation), including -1 entries, the point itself, duplicate candidates and
    duplicate points, whose ties are broken by the index whatever the candidates' order."""
    g = torch.Generator().manual_seed(6)
    base = torch.randn(50, dim, generator=g).to(dtype)
    base[7] = base[3]  # a duplicate pair
    query = base[10:40]
    cand = torch.randint(0, 50, (30, 12), generator=g)
    cand[:, 0] = torch.arange(10, 40)  # the point itself
    cand[::4, 5] = -1
    cand[0, :3] = torch.tensor([7, 3, 7])
    for exclude in (torch.arange(10, 40), None):
        ours = knn_module.refine_candidates(query, base, cand, 8, exclude)
        monkeypatch.setattr(knn_module.loader, "available", lambda: False)
        ref = knn_module.refine_candidates(query, base, cand, 8, exclude)
        monkeypatch.undo()
        assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])
    idx, dist = ours
    tie = dist[:, 1:] == dist[:, :-1]
    assert tie[0].any() and (idx[:, 1:][tie] >= idx[:, :-1][tie]).all()  # equal distances: ascending index
    # symmetric bit for bit, and the same as a direct evaluation in the fixed order
    forward = knn_torch.distances(base[:20].unsqueeze(1), base[20:].unsqueeze(0))
    assert torch.equal(forward, knn_torch.distances(base[20:].unsqueeze(0), base[:20].unsqueeze(1)))
    sq = (base[:20].unsqueeze(1) - base[20:].unsqueeze(0)).double().square().sum(-1).sqrt()
    torch.testing.assert_close(forward.double(), sq)
    bad = cand.clone()
    bad[1, 1] = 50
    with pytest.raises(RuntimeError, match="candidate 50 out of range"):
        torch.ops.fastwnll.knn_refine(query, base, bad, 8, None)


def test_native_op_rejects_bad_arguments():
    op = torch.ops.fastwnll.knn_candidates
    x = torch.randn(10, 3)
    with pytest.raises(RuntimeError, match="same tensor as query"):
        op(x, x.clone(), 3, True)
    with pytest.raises(RuntimeError, match=r"kc must lie in \[1, 9\]"):
        op(x, x, 10, True)
    with pytest.raises(RuntimeError, match="float32 or both float64"):
        op(x, x.double(), 3, False)
    with pytest.raises(RuntimeError, match="features"):
        op(x, torch.randn(10, 4), 3, False)


def test_real_mnist_neighbours_share_labels(mnist_pca):
    x, y = mnist_pca
    idx, _ = knn_graph(x[:3000], 5)
    agree = (y[:3000][idx] == y[:3000].unsqueeze(1)).float().mean()
    assert agree > 0.85  # 5-NN label agreement on 3k real digits is about 0.87


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0], [3.0, 4.0]]), ValueError, "NaN or Inf"),
        (torch.tensor([[0.0, float("inf")], [1.0, 2.0], [3.0, 4.0]]), ValueError, "NaN or Inf"),
        (torch.zeros(3, 2, dtype=torch.int64), TypeError, "floating point"),
        (torch.zeros(3), ValueError, r"shape \[n, d\]"),
        (torch.zeros(0, 2), ValueError, "empty"),
    ],
)
def test_bad_points(bad, error, match):
    with pytest.raises(error, match=match):
        knn_graph(bad, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_features_whose_squared_distances_overflow_are_rejected(backend):
    x = torch.randn(20, 4) * 1e19
    with pytest.raises(ValueError, match="too large for torch.float32 distances"):
        knn_graph(x, 3, backend=backend)
    if backend == "faiss":  # faiss computes in float32 whatever the input dtype
        with pytest.raises(ValueError, match="faiss always computes in float32"):
            knn_graph(x.double(), 3, backend=backend)
    else:
        idx, _ = knn_graph(x.double(), 3, backend=backend)
        assert idx.min() >= 0


def test_bad_arguments():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="k=10 is too large"):
        knn_graph(x, 10)
    with pytest.raises(ValueError, match="positive integer"):
        knn_graph(x, 0)
    with pytest.raises(ValueError, match="unknown kNN backend"):
        knn_graph(x, 3, backend="annoy")
    with pytest.raises(ValueError, match="features"):
        knn_search(x, torch.randn(10, 4), 3)
    with pytest.raises(TypeError, match="float64"):
        knn_search(x, x.double(), 3)
    with pytest.raises(ValueError, match="unknown kNN backend"):
        knn_graph(x, 3, backend=None)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            dict(exclude_self=True, self_offset=-1),
            ValueError,
            r"self_offset=-1 out of range.*0 <= self_offset <= nb - nq = 6",
        ),
        (dict(exclude_self=True, self_offset=7), ValueError, r"self_offset=7 out of range"),
        (dict(self_offset=2), ValueError, "only used with exclude_self=True"),
        (dict(exclude_self=False, self_offset=0), ValueError, "only used with exclude_self=True"),
        (dict(exclude_self=True, self_offset=2.0), TypeError, "self_offset must be an int, got float"),
        (dict(exclude_self=True, self_offset=True), TypeError, "self_offset must be an int, got bool"),
        (dict(exclude_self=1), TypeError, "exclude_self must be a bool"),
    ],
)
def test_bad_self_offset(kwargs, error, match):
    base = torch.randn(10, 3)
    with pytest.raises(error, match=match):
        knn_search(base[:4], base, 2, **kwargs)


def test_self_offset_at_both_ends_of_its_range():
    g = torch.Generator().manual_seed(7)
    base = torch.randn(40, 3, generator=g, dtype=torch.float64)
    for offset in (0, 30):
        idx, _ = knn_search(base[offset : offset + 10], base, 3, exclude_self=True, self_offset=offset)
        assert not (idx == torch.arange(offset, offset + 10).unsqueeze(1)).any()
