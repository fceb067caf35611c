"""Brute-force float64 reference of the kNN tests (test_knn_exact.py, test_knn_cuda.py) and their data."""

import torch


def reference_distances(query, base):
    """[nq, nb] float64 Euclidean distances from coordinate differences (no matrix-product form)."""
    return torch.cdist(query.double(), base.double(), compute_mode="donot_use_mm_for_euclid_dist")


def assert_exact(query, base, k, idx, dist, offset=None):
    """idx/dist are the k nearest neighbours of each query row (up to ties within rounding): valid,
    distinct, never the point itself, distances right and ascending, and the k smallest of the row.
    Tensors on any device (compared on the CPU)."""
    query, base, idx, dist = query.cpu(), base.cpu(), idx.cpu(), dist.cpu()
    nq = query.shape[0]
    rtol = 1e-5 if query.dtype == torch.float32 else 1e-12
    ref = reference_distances(query, base)
    if offset is not None:
        ref[torch.arange(nq), torch.arange(nq) + offset] = float("inf")
        assert not (idx == torch.arange(nq).unsqueeze(1) + offset).any()
    assert idx.shape == dist.shape == (nq, k) and idx.dtype == torch.int64 and dist.dtype == query.dtype
    assert (idx.sort(1).values[:, 1:] != idx.sort(1).values[:, :-1]).all()
    true = ref.gather(1, idx)
    torch.testing.assert_close(dist.double(), true, rtol=rtol, atol=0)
    assert (dist[:, 1:] >= dist[:, :-1]).all()
    best = ref.topk(k, dim=1, largest=False).values
    torch.testing.assert_close(true.sort(1).values, best, rtol=rtol, atol=0)


def spread_points(n, d, seed, dtype, offset=0.0, clusters=1, gap=0.0):
    """Unit-spread Gaussian points, plus a common offset, in ``clusters`` groups ``gap`` apart."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    centres = gap * torch.randn(clusters, d, generator=g, dtype=torch.float64)
    return (x + centres[torch.arange(n) % clusters] + offset).to(dtype)
