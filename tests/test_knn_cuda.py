"""The kNN search on CUDA: exact on offset data whatever autocast and TF32 say, half precision in
float32, faiss-gpu with one cached resource object per device and the index on the tensors' device,
no copy of CUDA tensors to the host by ``auto``, distance tiles sized by free memory, and the
approximate methods' device rules. Every test needs a GPU (skipped without one); the CPU analogues
are in test_knn_precision.py, test_knn_memory.py and test_knn_approx.py."""

import pytest
import torch
from knn_reference import assert_exact, spread_points

from fastwnll.knn import faiss_index as knn_faiss
from fastwnll.knn import tiled as knn_torch
from fastwnll.knn.search import ApproximateKNN, knn_graph, knn_search

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

FAISS_GPU = knn_faiss.has_gpu(knn_faiss.load_faiss())
needs_faiss_gpu = pytest.mark.skipif(not FAISS_GPU, reason="needs faiss with GPU support")
CUDA_BACKENDS = ["auto", "torch", pytest.param("faiss", marks=needs_faiss_gpu)]


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offset, clusters, gap", [(1e3, 1, 0.0), (0.0, 2, 1e3), (1e4, 3, 1e4)])
def test_exact_on_offset_data(backend, dtype, offset, clusters, gap):
    x = spread_points(900, 16, 0, dtype, offset, clusters, gap).cuda()
    idx, dist = knn_graph(x, 15, backend=backend)
    assert idx.is_cuda and dist.is_cuda
    assert_exact(x, x, 15, idx, dist, offset=0)
    idx, dist = knn_search(x[:300], x[300:], 10, backend=backend)
    assert_exact(x[:300], x[300:], 10, idx, dist)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_autocast_does_not_change_the_graph(low, backend):
    x = spread_points(900, 32, 1, torch.float32, 100.0, 4, 3.0).cuda()
    ref = knn_graph(x, 15, backend=backend)
    with torch.autocast("cuda", dtype=low):
        got = knn_graph(x, 15, backend=backend)
        assert torch.is_autocast_enabled("cuda")
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert_exact(x, x, 15, *got, offset=0)


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_tf32_is_switched_off_inside_and_restored(backend):
    """With TF32 allowed (10-bit mantissas in float32 matrix products) the search is still exact on
    offset data, and the caller's setting is unchanged afterwards."""
    x = spread_points(2000, 64, 2, torch.float32, 1e3).cuda()
    before = torch.backends.cuda.matmul.fp32_precision
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        idx, dist = knn_graph(x, 15, backend=backend)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = before
    assert_exact(x, x, 15, idx, dist, offset=0)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_searched_in_float32(half):
    x = spread_points(600, 16, 3, torch.float32, 0.0, 4, 4.0).to("cuda", half)
    idx, dist = knn_graph(x, 10)
    ref_idx, ref_dist = knn_graph(x.float(), 10)
    assert dist.dtype == half and torch.equal(idx, ref_idx) and torch.equal(dist, ref_dist.to(half))


def _no_host_copies(monkeypatch):
    """Make any copy of a CUDA tensor of more than 64 elements to the host raise."""
    real_cpu, real_numpy, real_to = torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.to

    def check(t):
        if t.is_cuda and t.numel() > 64:
            raise AssertionError(f"CUDA tensor {tuple(t.shape)} copied to the host")

    def cpu(self, *args, **kwargs):
        check(self)
        return real_cpu(self, *args, **kwargs)

    def numpy(self, *args, **kwargs):
        check(self)
        return real_numpy(self, *args, **kwargs)

    def to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu":
            check(self)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    monkeypatch.setattr(torch.Tensor, "to", to)


@pytest.mark.parametrize("n", [3000, 70_000])
def test_auto_never_copies_cuda_tensors_to_the_host(monkeypatch, n):
    """auto on CUDA: the torch path, or faiss-gpu from 65,536 points when present; the re-scoring,
    certificate and fallback all stay on the device (offset clusters exercise the fallback)."""
    x = spread_points(n, 16, 4, torch.float32, 1e3, 2, 1e3).cuda()
    _no_host_copies(monkeypatch)
    idx, dist = knn_graph(x, 10)
    idx2, _ = knn_search(x[:500], x, 5, exclude_self=True)
    monkeypatch.undo()
    assert idx.is_cuda and dist.is_cuda and idx2.is_cuda
    sample = torch.arange(0, n, n // 300, device="cuda")  # about 300 rows checked against brute force
    d = torch.cdist(x[sample].double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    d[torch.arange(len(sample)), sample] = float("inf")
    torch.testing.assert_close(dist[sample].double(), d.topk(10, largest=False).values, rtol=1e-5, atol=0)


@needs_faiss_gpu
def test_faiss_gpu_resources_are_cached_per_device_and_the_index_sits_on_the_tensors_device():
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    assert knn_faiss.gpu_resources(device.index) is knn_faiss.gpu_resources(device.index)
    x = spread_points(5000, 32, 5, torch.float32, 1e3).to(device)
    idx, dist = knn_graph(x, 15, backend="faiss")
    assert idx.device == device and dist.device == device
    assert_exact(x, x, 15, idx, dist, offset=0)
    assert knn_faiss.gpu_resources.cache_info().currsize <= torch.cuda.device_count()


def test_torch_tiles_are_sized_by_memory_and_exact_for_a_large_base():
    """A 400,000-point base: tiles of hundreds of rows (not 2^25 / nb = 83), same neighbours as the
    CPU's native search."""
    budget = knn_torch.tile_budget(torch.device("cuda"))
    rows, cols = knn_torch.tile_shape(4000, 400_000, 20, 16, torch.float32, budget)
    assert cols == 400_000 and rows > 83 and (rows + 16) * cols * 4 <= budget
    g = torch.Generator().manual_seed(6)
    base = torch.randn(400_000, 16, generator=g) + 100.0
    query = base[:4000] + 0.01
    idx, dist = knn_search(query.cuda(), base.cuda(), 10, backend="torch")
    ref_idx, ref_dist = knn_search(query, base, 10, backend="native")
    torch.testing.assert_close(dist.cpu(), ref_dist, rtol=1e-5, atol=0)
    assert (idx.cpu() == ref_idx).float().mean() > 0.999


def test_approximate_methods_on_cuda_tensors_are_refused_clearly_when_they_cannot_run():
    x = spread_points(500, 8, 7, torch.float32).cuda()
    with pytest.raises(ValueError, match="'hnsw' runs on the CPU only"):
        knn_graph(x, 5, backend="hnsw")
    if not FAISS_GPU:
        with pytest.raises(ValueError, match="'ivf' on CUDA tensors needs faiss with GPU support"):
            knn_graph(x, 5, backend="ivf")


@needs_faiss_gpu
def test_ivf_on_the_gpu_has_good_recall():
    x = spread_points(20_000, 32, 8, torch.float32, 0.0, 50, 5.0).cuda()
    idx, _ = knn_graph(x, 15, backend=ApproximateKNN("ivf", nprobe=32))
    ref, _ = knn_graph(x, 15)
    assert idx.is_cuda
    assert (idx.unsqueeze(2) == ref.unsqueeze(1)).any(2).float().mean() > 0.9
