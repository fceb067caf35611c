"""The kNN search's arithmetic does not depend on the caller's precision settings: half-precision
features are searched in float32, autocast and reduced-precision float32 matrix products are switched
off inside and restored after."""

import pytest
import torch

from fastwnll.knn.search import exact_arithmetic, knn_graph, knn_search

BACKENDS = ["native", "torch", pytest.param("faiss", marks=pytest.mark.needs("faiss"))]


def clustered(n=400, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    return torch.randn(n, d, generator=g) + 3 * torch.randn(4, d, generator=g)[labels]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_searched_in_float32(backend, half):
    """Indices equal those of the float32 search on the same (exactly upcast) values; distances come
    back in the input dtype, equal to the float32 distances rounded to it."""
    x = clustered().to(half)
    idx, dist = knn_graph(x, 10, backend=backend)
    ref_idx, ref_dist = knn_graph(x.float(), 10, backend=backend)
    assert dist.dtype == half and idx.dtype == torch.int64
    assert torch.equal(idx, ref_idx)
    assert torch.equal(dist, ref_dist.to(half))
    q_idx, q_dist = knn_search(x[:50], x, 7, backend=backend)
    assert torch.equal(q_idx, knn_search(x[:50].float(), x.float(), 7, backend=backend)[0])
    assert q_dist.dtype == half


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_autocast_on_the_cpu_does_not_change_the_graph(backend, low):
    """Under torch.autocast("cpu") matrix products would run in bf16/fp16 and every neighbour set would
    change; the search switches it off and gives the same graph as without autocast."""
    x = clustered() + 100.0
    ref_idx, ref_dist = knn_graph(x, 12, backend=backend)
    with torch.autocast("cpu", dtype=low):
        idx, dist = knn_graph(x, 12, backend=backend)
        q_idx, _ = knn_search(x[:60], x[60:], 5, backend=backend)
        assert torch.is_autocast_enabled("cpu")  # restored inside the caller's region
    assert torch.equal(idx, ref_idx)
    assert torch.equal(dist, ref_dist)
    assert torch.equal(q_idx, knn_search(x[:60], x[60:], 5, backend=backend)[0])


def test_reduced_precision_float32_matmul_is_switched_off_and_restored():
    """A caller who allows bf16/TF32 float32 matrix products (as AMP recipes do) still gets the exact
    graph, and finds their settings unchanged afterwards."""
    x = clustered() + 100.0
    ref = knn_graph(x, 12, backend="torch")
    matmul = torch.backends.mkldnn.matmul
    before = (matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
    try:
        matmul.fp32_precision = "bf16"
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        with exact_arithmetic(x.device):
            assert matmul.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
        got = knn_graph(x, 12, backend="torch")
        assert (matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("bf16", "tf32")
    finally:
        matmul.fp32_precision, torch.backends.cuda.matmul.fp32_precision = before
    assert torch.equal(got[0], ref[0])


def test_settings_are_restored_when_the_search_raises():
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match="boom"):
            with exact_arithmetic(torch.device("cpu")):
                raise RuntimeError("boom")
        assert torch.is_autocast_enabled("cpu")
    assert matmul.fp32_precision == before


def test_half_precision_overflow_is_judged_in_float32():
    """float16 features near its maximum are fine once searched in float32 (their squared distances
    would overflow float16)."""
    x = (clustered(100, 4) * 3000).to(torch.float16)
    assert torch.isfinite(x).all() and float((x.float() ** 2).sum(1).max()) > torch.finfo(torch.float16).max
    idx, dist = knn_graph(x, 3)
    ref_idx, ref_dist = knn_graph(x.float(), 3)
    assert torch.equal(idx, ref_idx)
    assert torch.isfinite(dist).all() and torch.equal(dist, ref_dist.half())
