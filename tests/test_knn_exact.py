"""The exact kNN search is exact in floating point on awkward data: features sharing a large offset,
far-apart clusters, ties, float32 and float64, for every exact backend, graph and query-vs-base search,
checked against a brute-force float64 reference computed from coordinate differences."""

import pytest
import torch
from knn_reference import assert_exact, spread_points

import fastwnll
from fastwnll.knn import search as knn_module
from fastwnll.knn.search import knn_graph, knn_search

BACKENDS = ["native", "torch", pytest.param("faiss", marks=pytest.mark.needs("faiss"))]
DTYPES = [torch.float32, torch.float64]


CASES = {
    # name: (dtype, offset, clusters, gap)
    "offset 1e3 float32": (torch.float32, 1e3, 1, 0.0),
    "offset 1e5 float32": (torch.float32, 1e5, 1, 0.0),
    "offset 1e5 float64": (torch.float64, 1e5, 1, 0.0),
    "offset 1e8 float64": (torch.float64, 1e8, 1, 0.0),
    "two clusters 1e3 apart float32": (torch.float32, 0.0, 2, 1e3),
    "two clusters 1e4 apart, offset 1e4, float32": (torch.float32, 1e4, 2, 1e4),
    "two clusters 1e8 apart float64": (torch.float64, 0.0, 2, 1e8),
    "five clusters 1e3 apart float32": (torch.float32, 0.0, 5, 1e3),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_graph_is_exact_on_awkward_data(backend, case):
    dtype, offset, clusters, gap = CASES[case]
    x = spread_points(600, 16, 0, dtype, offset, clusters, gap)
    idx, dist = knn_graph(x, 15, backend=backend)
    assert_exact(x, x, 15, idx, dist, offset=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_search_is_exact_on_awkward_data(backend, case):
    dtype, offset, clusters, gap = CASES[case]
    base = spread_points(700, 16, 1, dtype, offset, clusters, gap)
    query = spread_points(300, 16, 2, dtype, offset, clusters, gap)
    idx, dist = knn_search(query, base, 10, backend=backend)
    assert_exact(query, base, 10, idx, dist)
    # query rows are base rows 200..499 (exclude_self with an offset)
    idx, dist = knn_search(base[200:500], base, 10, backend=backend, exclude_self=True, self_offset=200)
    assert_exact(base[200:500], base, 10, idx, dist, offset=200)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_on_a_grid_with_duplicates(backend, dtype):
    """Integer grid points (many equal distances at every rank), each point twice, with an offset:
    the returned distances are the k smallest, whichever of the tied points are returned."""
    grid = torch.cartesian_prod(*[torch.arange(6.0)] * 3)
    x = (torch.cat([grid, grid]) + 1000.0).to(dtype)
    for k in (1, 6, 19):
        idx, dist = knn_graph(x, k, backend=backend)
        assert_exact(x, x, k, idx, dist, offset=0)
        assert (dist[:, 0] == 0).all()  # every point's duplicate is its nearest neighbour


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_tiles_with_offset(backend):
    """Several 256-point tiles of the native kernel (locality order, near and far rounds) on offset
    data with clusters of different sizes."""
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 7, (1500,), generator=g)
    x = (
        torch.randn(1500, 24, generator=g, dtype=torch.float64)
        + 6 * torch.randn(7, 24, generator=g, dtype=torch.float64)[labels]
        + 500.0
    ).float()
    idx, dist = knn_graph(x, 15, backend=backend)
    assert_exact(x, x, 15, idx, dist, offset=0)


def test_rows_are_redone_only_when_the_certificate_fails(monkeypatch):
    """Unit-spread points with a common offset pass the certificate after centring (no row re-searched);
    far-apart clusters do not (centring on the common mean cannot help), and are re-searched."""
    redone = []
    original = knn_module._exact_rows

    def spy(query, base, k, exclude):
        redone.append(query.shape[0])
        return original(query, base, k, exclude)

    monkeypatch.setattr(knn_module, "_exact_rows", spy)
    knn_graph(spread_points(600, 16, 0, torch.float32, 1e3), 15, backend="native")
    assert redone == []
    knn_graph(spread_points(600, 16, 0, torch.float32, 0.0, 2, 1e3), 15, backend="native")
    assert redone and redone[0] > 500


def test_certificate_rejects_a_wrong_candidate_set():
    """A row whose k-th re-scored distance is not clearly below the farthest candidate's is not
    certified; one with a clear gap is; a complete candidate set always is. A row whose k nearest
    are duplicates (distance 0) passes only when a candidate is farther: otherwise a duplicate of
    lower index may have been left out."""
    dist = torch.tensor(
        [[1.0, 2.0, 3.0, 3.0], [1.0, 2.0, 3.0, 9.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
    )
    spread = torch.tensor([1.0, 1.0, 1e-6, 1e-6], dtype=torch.float64)
    ok = knn_module.certified(dist, 3, spread, 1e-6, 1e-6, available=10)
    assert ok.tolist() == [False, True, False, True]
    # a huge spread (query far from the centre) voids the margin
    assert not knn_module.certified(dist[1:2], 3, torch.tensor([1e7], dtype=torch.float64), 1e-6, 1e-6, 10).any()
    assert knn_module.certified(dist[:1], 3, spread[:1], 1e-6, 1e-6, available=4).all()
    assert knn_module.certified(dist[2:3], 3, spread[2:3], 1e-6, 1e-6, available=4).all()


def test_wnll_float32_agrees_with_float64_on_offset_features():
    """The end-to-end symptom: with a common offset of 1,000, float32 WNLL predictions match float64."""
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(900) % 3
    x = (
        torch.randn(900, 16, generator=g, dtype=torch.float64)
        + 1.5 * torch.randn(3, 16, generator=g, dtype=torch.float64)[labels]
    )
    x = x + 1000.0
    m = 300
    u64 = fastwnll.wnll_interpolate(x[:m], labels[:m], x[m:], k=15)
    u32 = fastwnll.wnll_interpolate(x[:m].float(), labels[:m], x[m:].float(), k=15)
    idx64, _ = knn_graph(x, 15)
    idx32, _ = knn_graph(x.float(), 15)
    assert (idx32.sort(1).values == idx64.sort(1).values).all(1).float().mean() > 0.99
    assert (u32.argmax(1) == u64.argmax(1)).float().mean() > 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_duplicates_are_certified_with_more_candidates(monkeypatch, backend):
    """40 groups of 60 near-duplicates: the 15th and 19th distances are too close for the bound, so
    about half the rows fail the first certificate; searched again with k + 32 candidates they all
    pass (none reaches the float64 re-search), and the graph is exact."""
    g = torch.Generator().manual_seed(5)
    x = (10 * torch.randn(40, 16, generator=g)).repeat_interleave(60, 0) + 0.1 * torch.randn(2400, 16, generator=g)
    searches, redone = [], []
    certified_search, exact_rows = knn_module._certified_search, knn_module._exact_rows

    def spy_search(*args):
        result = certified_search(*args)
        searches.append((args[6], int((~result[2]).sum())))
        return result

    def spy_rows(query, *args):
        redone.append(query.shape[0])
        return exact_rows(query, *args)

    monkeypatch.setattr(knn_module, "_certified_search", spy_search)
    monkeypatch.setattr(knn_module, "_exact_rows", spy_rows)
    idx, dist = knn_graph(x, 15, backend=backend)
    assert searches[0][0] == 4 and searches[0][1] > 500
    assert searches[1] == (32, 0) and redone == []
    assert_exact(x, x, 15, idx, dist, offset=0)
