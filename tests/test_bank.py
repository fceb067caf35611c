"""TemplateBank: the indexed bank gives exactly the full rebuild's graph and scores (random and real
MNIST features, ties, duplicates, queries that displace the templates' neighbours, scale changes,
float32 and float64), the same gradients, the inductive closed form of one query at a time, and it
re-indexes itself when the bank changes."""

import contextlib

import pytest
import torch

import fastwnll
from fastwnll import TemplateBank
from fastwnll.knn import tiled as knn_torch
from fastwnll.knn.search import knn_graph
from fastwnll.wnll import bank as bank_module
from fastwnll.wnll.interpolate import wnll_interpolate
from fastwnll.wnll.weights import unit_scale

pytestmark = pytest.mark.usefixtures("one_thread")

DTYPES = [torch.float32, torch.float64]


def full_graph(templates, queries, k):
    """The full rebuild's graph: kNN graph of all points at the unit scale wnll_interpolate uses."""
    return knn_graph(unit_scale(torch.cat([templates, queries])), k)


@contextlib.contextmanager
def bank_path():
    """Within: transductive calls take the bank's own path whatever the number of queries (not the
    full rebuild it switches to for many queries)."""
    saved = bank_module.REBUILD_QUERIES_PER_TEMPLATE
    bank_module.REBUILD_QUERIES_PER_TEMPLATE = float("inf")
    try:
        yield
    finally:
        bank_module.REBUILD_QUERIES_PER_TEMPLATE = saved


def assert_same_as_full(templates, labels, queries, k, **options):
    """The bank's graph and scores (its own path) equal the full rebuild's bit for bit; returns the bank."""
    bank = TemplateBank(templates, labels, k=k, **options)
    idx, dist = bank.graph(queries)
    ref_idx, ref_dist = full_graph(templates, queries, k)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(dist, ref_dist)
    with bank_path():
        scores = bank.interpolate(queries)
    expected = wnll_interpolate(templates, labels, queries, k=k, **options)
    assert torch.equal(scores, expected)
    assert torch.equal(bank.interpolate(queries), expected)  # whichever path it takes by itself
    return bank


def gaussian(n, d, seed, dtype, scale=1.0):
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,q,k", [(300, 40, 15), (60, 7, 15), (12, 9, 15), (500, 1, 5), (200, 150, 8)])
def test_equals_the_full_rebuild_on_random_data(dtype, m, q, k):
    """Including banks smaller than k + 1 (every query enters every template's list) and more
    queries than the lists hold."""
    templates, queries = gaussian(m, 10, 0, dtype), gaussian(q, 10, 1, dtype, 1.3)
    labels = torch.arange(m) % 4
    assert_same_as_full(templates, labels, queries, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_the_full_rebuild_on_real_mnist_features(mnist_pca, dtype):
    x, y = mnist_pca
    x = x.to(dtype)
    bank = assert_same_as_full(x[:2000], y[:2000], x[2000:2300], 15)
    # the same bank again, with other queries (the index is reused)
    scores = bank.interpolate(x[5000:5100])
    assert torch.equal(scores, wnll_interpolate(x[:2000], y[:2000], x[5000:5100]))
    assert (scores.argmax(1) == y[5000:5100]).float().mean() > 0.85


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_and_duplicates_follow_the_index_rule(dtype):
    """Integer grid points, each twice (equal distances at every rank, duplicates at distance 0), with
    queries that duplicate templates (a tie with a template: the template, of smaller index, wins)
    and queries halfway between them; offset by 1,000."""
    grid = torch.cartesian_prod(*[torch.arange(5.0)] * 3)
    templates = (torch.cat([grid, grid]) + 1000.0).to(dtype)
    labels = torch.arange(templates.shape[0]) % 3
    queries = torch.cat([grid[::7], grid[::11] + 0.5, grid[:3]]).to(dtype) + 1000.0
    for k in (1, 6, 19):
        assert_same_as_full(templates, labels, queries, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_queries_that_displace_the_templates_neighbours(dtype):
    """Queries right next to templates enter their lists (and push out their k-th neighbour), some
    several into one list, some exactly at a template's k-th distance (the template keeps its
    place); the changed rows carry new sigmas."""
    templates = (gaussian(400, 6, 2, dtype) * 64).round() / 64  # coarse values: the mirror below is exact
    labels = torch.arange(400) % 5
    bank = TemplateBank(templates, labels, k=10)
    near = templates[:30] + 1e-3 * gaussian(30, 6, 3, dtype)
    crowd = templates[40:41] + 1e-4 * gaussian(12, 6, 4, dtype)  # 12 queries around one template
    # a query at exactly the 10th distance of template 50: its 10th neighbour mirrored through it
    idx, dist = knn_graph(unit_scale(templates), 10)
    at_kth = (2 * templates[50] - templates[idx[50, 9]]).unsqueeze(0)
    queries = torch.cat([near, crowd, at_kth])
    idx, dist = bank.graph(queries)
    ref_idx, ref_dist = full_graph(templates, queries, 10)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    displaced = (idx[:400] >= 400).any(1)
    assert displaced.sum() >= 30 and (idx[40] >= 400).sum() == 10  # the crowd fills template 40's list
    points = unit_scale(torch.cat([templates, queries]))
    own = knn_graph(points[:400], 10)[1]  # template 50's 10th distance among the templates
    assert knn_torch.distances(points[50], points[-1]) == own[50, 9]  # a tie with the query...
    assert not (idx[50] == 442).any()  # ...which the template, of smaller index, wins
    assert torch.equal(bank.interpolate(queries), wnll_interpolate(templates, labels, queries, k=10))


@pytest.mark.parametrize("dtype", DTYPES)
def test_queries_that_change_the_scale(dtype):
    """Queries larger than the bank (the full rebuild's power-of-two scale changes), far away from
    it (the product-form bound is loose: rows go through the fallbacks), or tiny: all exact; one
    index per scale, a few kept."""
    templates = gaussian(300, 8, 5, dtype)
    labels = torch.arange(300) % 3
    bank = TemplateBank(templates, labels, k=12)
    for queries in (
        gaussian(20, 8, 6, dtype, 16.0),
        gaussian(5, 8, 7, dtype) + 1e4,
        gaussian(9, 8, 8, dtype, 1e-3),
        torch.cat([gaussian(5, 8, 9, dtype, 40.0), templates[:5]]),
    ):
        idx, dist = bank.graph(queries)
        ref_idx, ref_dist = full_graph(templates, queries, 12)
        assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
        assert torch.equal(bank.interpolate(queries), wnll_interpolate(templates, labels, queries, k=12))
    assert 1 < len(bank._indexes) <= bank_module._SCALES


def test_options_are_those_of_wnll_interpolate():
    templates, queries = gaussian(150, 5, 10, torch.float64), gaussian(30, 5, 11, torch.float64)
    labels = torch.arange(150) % 3
    for options in ({"k_sigma": 3, "kernel": "seed"}, {"num_classes": 5}):
        assert_same_as_full(templates, labels, queries, 7, **options)
    bank = TemplateBank(templates, labels, k=7)
    for options in ({"mu": 2.5}, {"tol": 1e-4, "max_iter": 500}):
        assert torch.equal(
            bank.interpolate(queries, **options), wnll_interpolate(templates, labels, queries, k=7, **options)
        )
    scores, info = bank.interpolate(queries, return_info=True)
    _, ref_info = wnll_interpolate(templates, labels, queries, k=7, return_info=True)
    assert info == ref_info and info.converged


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_as_the_full_rebuild(dtype):
    templates, queries = gaussian(120, 6, 12, dtype), gaussian(15, 6, 13, dtype)
    labels = torch.arange(120) % 3
    bank = TemplateBank(templates, labels, k=9)
    scores = bank.interpolate(queries)
    assert scores.dtype == dtype
    assert torch.equal(scores, wnll_interpolate(templates, labels, queries, k=9))


def test_gradients_equal_autograd_through_the_full_rebuild():
    """float64, exact gradient with respect to the queries (the bank is a constant), transductive and
    inductive, on data where queries enter template lists."""
    templates = gaussian(150, 5, 14, torch.float64)
    labels = torch.arange(150) % 3
    queries = torch.cat([gaussian(12, 5, 15, torch.float64), templates[:6] + 0.01])
    g = gaussian(18, 3, 16, torch.float64)
    bank = TemplateBank(templates, labels, k=8)
    for inductive in (False, True):
        x = queries.clone().requires_grad_(True)
        (bank.interpolate(x, inductive=inductive) * g).sum().backward()
        ref = queries.clone().requires_grad_(True)
        if inductive:
            scores = torch.cat([wnll_interpolate(templates, labels, ref[i : i + 1], k=8) for i in range(18)])
        else:
            scores = wnll_interpolate(templates, labels, ref, k=8)
        (scores * g).sum().backward()
        assert ref.grad.abs().max() > 1e-3
        torch.testing.assert_close(x.grad, ref.grad, rtol=1e-9, atol=1e-12)


def test_gradcheck_of_the_bank():
    templates = gaussian(40, 3, 17, torch.float64)
    labels = torch.arange(40) % 2
    bank = TemplateBank(templates, labels, k=6)
    queries = gaussian(5, 3, 18, torch.float64).requires_grad_(True)
    for inductive in (False, True):
        assert torch.autograd.gradcheck(lambda x: bank.interpolate(x, inductive=inductive, tol=1e-13), (queries,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_inductive_equals_one_query_at_a_time_and_ignores_the_batch(mnist_pca, dtype):
    x, y = mnist_pca
    templates, labels, queries = x[:1500].to(dtype), y[:1500], x[3000:3060].to(dtype)
    bank = TemplateBank(templates, labels)
    scores = bank.interpolate(queries, inductive=True)
    single = torch.cat([wnll_interpolate(templates, labels, queries[i : i + 1]) for i in range(60)])
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(scores, single, **tol)
    # batch composition, order and size do not matter, bit for bit
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bank.interpolate(queries[order], inductive=True), scores[order])
    assert torch.equal(
        torch.cat([bank.interpolate(queries[i : i + 7], inductive=True) for i in range(0, 60, 7)]), scores
    )
    far = torch.cat([queries, 30 * queries[:5]])  # other queries of another scale in the batch
    assert torch.equal(bank.interpolate(far, inductive=True)[:60], scores)
    # whereas transductive scores do depend on the batch
    assert not torch.equal(bank.interpolate(queries)[:10], bank.interpolate(queries[:10]))


def test_inductive_closed_form_in_a_tiny_bank():
    """k = m (every template is a neighbour of the query and the query enters every list)."""
    templates = gaussian(6, 2, 19, torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    queries = gaussian(4, 2, 20, torch.float64)
    bank = TemplateBank(templates, labels, k=6)
    single = torch.cat([wnll_interpolate(templates, labels, queries[i : i + 1], k=6) for i in range(4)])
    torch.testing.assert_close(bank.interpolate(queries, inductive=True), single, rtol=1e-9, atol=1e-12)


def test_in_place_changes_rebuild_the_index():
    """A stale index would be a silently wrong answer: edits of the features or labels through
    their version counters re-index the bank."""
    templates = gaussian(100, 4, 21, torch.float64)
    labels = torch.arange(100) % 2
    queries = gaussian(10, 4, 22, torch.float64)
    bank = TemplateBank(templates, labels, k=6)
    bank.interpolate(queries)
    templates[:50] += 3.0
    assert torch.equal(bank.interpolate(queries), wnll_interpolate(templates, labels, queries, k=6))
    templates.mul_(-1)
    assert torch.equal(bank.graph(queries)[0], full_graph(templates, queries, 6)[0])
    labels[::3] = 1 - labels[::3]
    assert torch.equal(bank.interpolate(queries), wnll_interpolate(templates, labels, queries, k=6))


def test_an_inference_tensor_is_kept_by_reference_and_its_changes_are_seen():
    """Inference tensors have no version counter; the bank keeps them by reference (as documented)
    and compares their contents on every call, so edits made in inference mode are seen."""
    with torch.inference_mode():
        templates = gaussian(120, 5, 40, torch.float32)
        labels = torch.arange(120) % 3
    queries = gaussian(15, 5, 41, torch.float32)
    bank = TemplateBank(templates, labels, k=7)
    assert bank.features is templates and bank.labels is labels
    before = bank.interpolate(queries, inductive=True)
    with torch.inference_mode():
        templates[:40] += 2.5  # a small part of the bank, in place
        labels[:9] = 2
        after = bank.interpolate(queries)
    fresh = TemplateBank(templates.clone(), labels.clone(), k=7)
    assert torch.equal(after, fresh.interpolate(queries))
    assert torch.equal(bank.interpolate(queries, inductive=True), fresh.interpolate(queries, inductive=True))
    assert not torch.equal(bank.interpolate(queries, inductive=True), before)
    with torch.inference_mode():
        templates[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        bank.interpolate(queries)


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW", "SGD"])
def test_a_parameter_trained_by_a_fused_optimizer_is_seen_to_change(optimizer):
    """Fused optimizers write the parameters without bumping their version counters; a bank over a
    parameter compares its contents instead, so it follows every step (and .data writes too)."""
    templates = torch.nn.Parameter(gaussian(90, 4, 42, torch.float32))
    labels = torch.arange(90) % 3
    queries = gaussian(12, 4, 43, torch.float32)
    bank = TemplateBank(templates, labels, k=6)
    step = getattr(torch.optim, optimizer)([templates], lr=0.3, fused=True)
    for _ in range(2):
        version = templates._version
        before = bank.interpolate(queries)
        (templates[:30] - 1.0).square().sum().backward()
        step.step()
        step.zero_grad()
        assert templates._version == version  # the case: no bump
        after = bank.interpolate(queries)
        assert not torch.equal(after, before)
        assert torch.equal(after, wnll_interpolate(templates.detach().clone(), labels, queries, k=6))
    templates.data[:5] *= -1
    assert torch.equal(bank.interpolate(queries), wnll_interpolate(templates.detach().clone(), labels, queries, k=6))


@pytest.mark.parametrize("dtype", DTYPES + [torch.float16])
@pytest.mark.parametrize("m,q", [(50, 10), (50, 400), (300, 61), (7, 30)])
def test_many_queries_take_the_full_rebuild_with_the_same_results(dtype, m, q):
    """From REBUILD_QUERIES_PER_TEMPLATE queries per template on, a transductive call is the full
    rebuild (no index is built): the same scores bit for bit as the bank's own path, the same solve
    information, and gradients equal up to the order of sums."""
    templates, queries = gaussian(m, 6, 44, dtype), gaussian(q, 6, 45, dtype, 1.2)
    labels = torch.arange(m) % 3
    bank = TemplateBank(templates, labels, k=6)
    work = torch.float32 if dtype == torch.float16 else dtype
    x = queries.to(work).requires_grad_(True) if dtype != torch.float16 else queries
    scores, info = bank.interpolate(x, return_info=True, mu=0.5)
    assert (len(bank._indexes) == 0) == (q >= bank_module.REBUILD_QUERIES_PER_TEMPLATE * m)
    with bank_path():
        own, own_info = bank.interpolate(x, return_info=True, mu=0.5)
    assert torch.equal(scores, own) and info.iterations == own_info.iterations and info.converged
    assert torch.equal(scores, wnll_interpolate(templates, labels, queries, k=6, mu=0.5))
    if x.requires_grad:
        weights = torch.randn(scores.shape, generator=torch.Generator().manual_seed(46), dtype=work)
        (grad,) = torch.autograd.grad((scores * weights).sum(), x)
        with bank_path():
            (own_grad,) = torch.autograd.grad((bank.interpolate(x, mu=0.5) * weights).sum(), x)
        tol = {"rtol": 1e-4, "atol": 1e-6} if work == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}
        torch.testing.assert_close(grad, own_grad, **tol)


def test_the_index_holds_lists_not_a_matrix():
    m = 3000
    bank = TemplateBank(gaussian(m, 16, 23, torch.float32), torch.arange(m) % 10, k=15)
    bank.interpolate(gaussian(50, 16, 24, torch.float32))
    assert bank.index_bytes() < 8 * m * (2 * 16 + 2 * 15 + 50)  # coordinates and k-lists, far from m * m


def test_approximate_backend_says_so():
    templates, queries = gaussian(400, 8, 25, torch.float32), gaussian(20, 8, 26, torch.float32)
    labels = torch.arange(400) % 4
    assert TemplateBank(templates, labels).exact
    pytest.importorskip("faiss")
    bank = TemplateBank(templates, labels, knn_backend="hnsw")
    assert not bank.exact
    scores = bank.interpolate(queries)
    torch.testing.assert_close(scores.sum(1), torch.ones(20), rtol=0, atol=1e-4)
    assert not TemplateBank(templates, labels, knn_backend=fastwnll.ApproximateKNN("ivf")).exact


def test_fallback_rows_are_exact(monkeypatch):
    """Rows whose candidates the certificate rejects (forced here) are searched by knn_search."""
    templates, queries = gaussian(200, 6, 27, torch.float64), gaussian(25, 6, 28, torch.float64)
    labels = torch.arange(200) % 3
    monkeypatch.setattr(bank_module, "certified", lambda dist, *args: torch.zeros(dist.shape[0], dtype=torch.bool))
    for inductive in (False, True):
        bank = TemplateBank(templates, labels, k=9)
        if not inductive:
            idx, dist = bank.graph(queries)
            ref_idx, ref_dist = full_graph(templates, queries, 9)
            assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
        monkeypatch.undo()
        expected = TemplateBank(templates, labels, k=9).interpolate(queries, inductive=inductive)
        monkeypatch.setattr(bank_module, "certified", lambda dist, *args: torch.zeros(dist.shape[0], dtype=torch.bool))
        assert torch.equal(bank.interpolate(queries, inductive=inductive), expected)


def test_unreachable_queries_are_reported():
    """Queries whose graph neighbours are other queries only (and that no template links to)."""
    templates = gaussian(30, 2, 29, torch.float64)
    labels = torch.arange(30) % 2
    queries = gaussian(12, 2, 30, torch.float64, 0.01) + 1e3
    with pytest.raises(fastwnll.WNLLUnreachableError, match="12 of 12 queries"):
        TemplateBank(templates, labels, k=5).interpolate(queries)


def test_clear_errors():
    templates, labels = gaussian(20, 3, 31, torch.float32), torch.arange(20) % 2
    bank = TemplateBank(templates, labels, k=5)
    with pytest.raises(ValueError, match="bank has 3"):
        bank.interpolate(torch.randn(4, 2))
    with pytest.raises(TypeError, match="float64"):
        bank.interpolate(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN"):
        bank.interpolate(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="return_info"):
        bank.interpolate(torch.randn(2, 3), inductive=True, return_info=True)
    with pytest.raises(ValueError, match="k=30 must be < n"):
        TemplateBank(templates, labels, k=30).interpolate(torch.randn(2, 3))
    with pytest.raises(ValueError, match="outside"):
        TemplateBank(templates, labels + 1, num_classes=2)
    with pytest.raises(ValueError, match="NaN"):
        TemplateBank(templates.masked_fill(templates > 1, float("nan")), labels)
    with pytest.raises(ValueError, match="kNN backend"):
        TemplateBank(templates, labels, knn_backend="kdtree")
    with pytest.raises(ValueError, match="k_sigma"):
        TemplateBank(templates, labels, k=3, k_sigma=6)


@pytest.mark.cuda
def test_cuda_bank_equals_the_full_rebuild_and_the_cpu():
    """On the GPU the re-scoring distances are the same bits as on the CPU, so the graph is too."""
    templates, queries = gaussian(800, 12, 32, torch.float32), gaussian(64, 12, 33, torch.float32)
    labels = torch.arange(800) % 5
    cpu = TemplateBank(templates, labels).graph(queries)
    bank = TemplateBank(templates.cuda(), labels.cuda())
    idx, dist = bank.graph(queries.cuda())
    ref_idx, ref_dist = full_graph(templates.cuda(), queries.cuda(), 15)
    assert torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist)
    assert torch.equal(idx.cpu(), cpu[0]) and torch.equal(dist.cpu(), cpu[1])
    scores = bank.interpolate(queries.cuda())
    assert torch.equal(scores, wnll_interpolate(templates.cuda(), labels.cuda(), queries.cuda()))
    inductive = bank.interpolate(queries.cuda(), inductive=True)
    torch.testing.assert_close(inductive.cpu(), TemplateBank(templates, labels).interpolate(queries, inductive=True))
