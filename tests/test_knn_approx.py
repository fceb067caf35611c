"""Approximate kNN (faiss HNSW and IVF-Flat): recall on data with known neighbours, exact distances
for what it returns, rows with too few results searched exactly, options, and WNLL on real data."""

import pytest
import torch

import fastwnll
from fastwnll.knn import search as knn_module
from fastwnll.knn.search import ApproximateKNN, knn_graph, knn_search

METHODS = [pytest.param(method, marks=pytest.mark.needs("faiss")) for method in ("hnsw", "ivf")]


def recall(idx, ref_idx):
    """Mean fraction of the true k neighbours found per row."""
    hits = (idx.unsqueeze(2) == ref_idx.unsqueeze(1)).any(2)
    return hits.float().mean().item()


def groups_of(size, count, d=8, seed=0):
    """``count`` tight groups of ``size`` points, far apart: each point's size-1 nearest neighbours are
    exactly its group mates."""
    g = torch.Generator().manual_seed(seed)
    centres = 100 * torch.randn(count, d, generator=g)
    return centres.repeat_interleave(size, 0) + 0.1 * torch.randn(size * count, d, generator=g)


@pytest.mark.parametrize("method", METHODS)
def test_known_neighbours_are_found(method):
    x = groups_of(11, 300)
    idx, dist = knn_graph(x, 10, backend=method)
    group = torch.arange(x.shape[0]) // 11
    assert (group[idx] == group.unsqueeze(1)).float().mean() > 0.98
    assert not (idx == torch.arange(x.shape[0]).unsqueeze(1)).any()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recall_against_the_exact_graph_and_exact_distances(method, dtype):
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(4000) % 20
    x = (torch.randn(4000, 32, generator=g) + 2 * torch.randn(20, 32, generator=g)[labels] + 1000).to(dtype)
    idx, dist = knn_graph(x, 15, backend=method)
    ref_idx, _ = knn_graph(x, 15)
    assert recall(idx, ref_idx) > 0.9
    true = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist").gather(1, idx)
    torch.testing.assert_close(dist.double(), true, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
    assert (dist[:, 1:] >= dist[:, :-1]).all() and dist.dtype == dtype


@pytest.mark.needs("faiss")
def test_query_against_base():
    x = groups_of(9, 200, seed=2)
    query = x[::9] + 0.01
    idx, _ = knn_search(query, x, 9, backend="hnsw")
    assert (idx // 9 == torch.arange(200).unsqueeze(1)).float().mean() > 0.98


@pytest.mark.needs("faiss")
def test_rows_with_too_few_results_are_searched_exactly(monkeypatch):
    """IVF with ~4 points per list and one list probed returns fewer than k points for most rows
    (-1 entries): those rows are searched exactly, so every row is complete and right."""
    x = groups_of(3, 200, seed=3)
    redone = []
    original = knn_module._exact_rows

    def spy(query, base, k, exclude):
        redone.append(exclude)  # the rows' own indices in the graph
        return original(query, base, k, exclude)

    monkeypatch.setattr(knn_module, "_exact_rows", spy)
    idx, dist = knn_graph(x, 8, backend=ApproximateKNN("ivf", nlist=150, nprobe=1))
    assert len(redone) == 1 and len(redone[0]) > 100
    ref_idx, ref_dist = knn_graph(x, 8)
    assert idx.min() >= 0 and torch.isfinite(dist).all()
    torch.testing.assert_close(dist[redone[0]], ref_dist[redone[0]])


@pytest.mark.needs("faiss")
def test_minus_one_entries_from_the_index_never_reach_the_caller(monkeypatch):
    x = groups_of(6, 50, seed=4)
    real = knn_module.approximate_candidates

    def holes(query, base, kc, options):
        cand = real(query, base, kc, options)
        cand[::7, 2:] = -1  # rows 0, 7, 14, ... keep 2 candidates (one may be the point itself)
        return cand

    monkeypatch.setattr(knn_module, "approximate_candidates", holes)
    idx, dist = knn_graph(x, 5, backend="hnsw")
    ref_idx, ref_dist = knn_graph(x, 5)
    assert idx.min() >= 0
    torch.testing.assert_close(dist[::7], ref_dist[::7])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="annoy"), "unknown approximate kNN method 'annoy'"),
        (dict(nprobe=0), r"ApproximateKNN.nprobe must be a positive integer, got 0"),
        (dict(hnsw_m=2.5), "hnsw_m must be a positive integer"),
        (dict(nlist=-3), "nlist must be a positive integer"),
        (dict(ef_search=True), "ef_search must be a positive integer"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ApproximateKNN(**kwargs)


def test_default_list_count():
    assert ApproximateKNN("ivf").lists(10_000) == 256
    assert ApproximateKNN("ivf").lists(1_000_000) == 4000
    assert ApproximateKNN("ivf").lists(20) == 1
    assert ApproximateKNN("ivf", nlist=500).lists(100) == 100


@pytest.mark.parametrize("method", METHODS)
def test_wnll_accuracy_with_the_approximate_graph(mnist_pca, method):
    """Through wnll_interpolate's knn_backend: accuracy on 2,000 real MNIST queries within one point of
    the exact graph's (recall@15 is about 0.99 here)."""
    x, y = mnist_pca
    x = x[:3000].float()
    y = y[:3000]
    exact = fastwnll.wnll_interpolate(x[:1000], y[:1000], x[1000:], k=15)
    approx = fastwnll.wnll_interpolate(x[:1000], y[:1000], x[1000:], k=15, knn_backend=method)
    acc_exact = (exact.argmax(1) == y[1000:]).float().mean()
    acc_approx = (approx.argmax(1) == y[1000:]).float().mean()
    assert acc_exact > 0.9 and abs(acc_approx - acc_exact) < 0.01


# ----------------------------------------------------------------------------------------------
# ApproximateKNN objects and their spec strings wherever a backend name is taken


def _labelled(seed=0, n=240, d=6, classes=3):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return torch.randn(classes, d, generator=g)[y] * 3 + torch.randn(n, d, generator=g), y


APPROXIMATE = [
    pytest.param(b, marks=pytest.mark.needs("faiss"), id=str(b))
    for b in (
        ApproximateKNN(ef_search=24, hnsw_m=8),
        ApproximateKNN("ivf", nlist=4, nprobe=4),
        "hnsw:ef_search=24,hnsw_m=8",
        " ivf : nlist = 4 , nprobe=4 ",
    )
]


@pytest.mark.parametrize("backend", APPROXIMATE)
def test_approximate_backends_work_in_the_function_the_bank_and_the_head(backend):
    """wnll_interpolate, TemplateBank and a WNLLHead (a training step with its gradient, then eval
    transductive and inductive) take an ApproximateKNN or its spec; with recall 1 on well separated
    classes the graph, and so every score, is the exact backend's."""
    import torch.nn.functional as F

    from fastwnll.nn import WNLLHead, wnll_batch

    x, y = _labelled()
    t, yt, q = x[:90], y[:90], x[90:]
    exact = fastwnll.wnll_interpolate(t, yt, q, k=6)
    torch.testing.assert_close(fastwnll.wnll_interpolate(t, yt, q, k=6, knn_backend=backend), exact)
    bank = fastwnll.TemplateBank(t, yt, k=6, knn_backend=backend)
    assert not bank.exact
    torch.testing.assert_close(bank.interpolate(q), exact)
    head = WNLLHead(6, 3, k=6, knn_backend=backend)
    assert not head.exact_knn and isinstance(head.knn_backend, ApproximateKNN)
    with wnll_batch(head, y) as batch:
        F.cross_entropy(head(x), batch.targets).backward()
    assert head.linear.weight.grad.abs().sum() > 0
    head.eval()
    head.set_templates(t, yt)
    for inference in ("transductive", "inductive"):
        head.inference = inference
        reference = fastwnll.TemplateBank(t, yt, k=6).interpolate(q, inductive=inference == "inductive")
        torch.testing.assert_close(head(q).exp(), reference.clamp_min(1e-8) / reference.clamp_min(1e-8).sum(1, True))
    clone = WNLLHead(6, 3, k=6, knn_backend=backend)
    clone.load_state_dict(head.state_dict())
    assert clone.knn_backend == head.knn_backend


def test_an_approximate_spec_round_trips_and_bad_specs_name_the_problem():
    from fastwnll.knn import check_backend

    options = ApproximateKNN("ivf", nlist=64, nprobe=8)
    assert options.spec() == "ivf:nlist=64,nprobe=8"
    assert check_backend(options.spec()) == options
    assert ApproximateKNN().spec() == "hnsw" and check_backend("hnsw") == "hnsw"
    for spec, match in [
        ("annoy:k=3", "starts with one of"),
        ("hnsw:", "has ':' but no options"),
        ("hnsw:ef=3", r"bad option 'ef='?3'?.*hnsw_m, ef_construction"),
        ("hnsw:ef_search", "write name=value"),
        ("hnsw:ef_search=1.5", "must be a positive integer, got '1.5'"),
        ("hnsw:ef_search=0", "ef_search must be a positive integer, got 0"),
        ("ivf:nprobe=2,nprobe=3", "given twice"),
        ("exact", "unknown kNN backend 'exact'"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_backend(spec)
    x, y = _labelled()
    for call in (
        lambda: fastwnll.wnll_interpolate(x[:90], y[:90], x[90:], knn_backend="hnsw:m=3"),
        lambda: fastwnll.TemplateBank(x, y, knn_backend=3),
        lambda: fastwnll.WNLLHead(6, 3, knn_backend="flat"),
    ):
        with pytest.raises(ValueError, match="kNN backend"):
            call()


def test_training_configuration_and_command_line_take_an_approximate_spec():
    from fastwnll.cli import build_parser
    from fastwnll.runtime.config import TrainConfig

    config = TrainConfig(head="wnll", knn_backend=ApproximateKNN(ef_search=32)).resolve()
    assert config.knn_backend == "hnsw:ef_search=32"  # JSON-serialisable in checkpoints
    assert config.head_kwargs()["knn_backend"] == "hnsw:ef_search=32"
    assert fastwnll.WNLLHead(4, 2, **config.head_kwargs()).knn_backend == ApproximateKNN(ef_search=32)
    with pytest.raises(ValueError, match="knn_backend: bad option"):
        TrainConfig(head="wnll", knn_backend="hnsw:efsearch=32").resolve()
    args = build_parser().parse_args(["train", "--knn-backend", "ivf:nprobe=4"])
    assert args.knn_backend == "ivf:nprobe=4"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--knn-backend", "ivf:nprobe=four"])
