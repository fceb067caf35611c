"""The kNN search's extra memory is linear in the number of points: the locality order computes its
point-to-centroid distances by chunks, and the torch path sizes its distance tiles by a byte budget
(a quarter of the free memory on CUDA), splitting the base's columns when it is very large."""

import subprocess
import sys

import pytest
import torch

from fastwnll.knn import tiled as knn_torch
from fastwnll.knn.search import knn_search

CHILD = """
import torch
from fastwnll.knn.tiled import locality_order


def status(key):
    return next(int(line.split()[1]) << 10 for line in open("/proc/self/status") if line.startswith(key))


x = torch.randn({n}, 4, generator=torch.Generator().manual_seed(0))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident set size (VmHWM) to the current one
before = status("VmRSS:")
perm = locality_order(x)
assert torch.equal(perm.sort().values, torch.arange({n}))
print(status("VmHWM:") - before)
"""


def test_locality_order_memory_is_linear():
    """200,000 points: the old n x n/256 distance matrices took 1.2 GB; now about 25 MB."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(n=200_000)],
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    extra = int(out.stdout.strip())
    assert extra < 100 << 20, f"locality_order used {extra / 2**20:.0f} MiB extra"


def test_tile_shape_follows_the_byte_budget():
    # whole base rows when 64 of them (and a copy of the base rows) fit; as many rows as the budget holds
    assert knn_torch.tile_shape(10_000, 1000, 20, 16, torch.float32, 4 << 20) == (1032, 1000)
    assert knn_torch.tile_shape(10, 1000, 20, 16, torch.float32, 4 << 20) == (10, 1000)
    # a base too large for 64 rows: column chunks (never narrower than kc), 64 rows
    assert knn_torch.tile_shape(10_000, 10**6, 20, 16, torch.float64, 4 << 20) == (64, 6553)
    assert knn_torch.tile_shape(10_000, 10**6, 50, 16, torch.float64, 1000) == (1, 50)
    for nq, nb, dim, dtype in [
        (5, 7, 3, torch.float32),
        (10**5, 10**6, 64, torch.float32),
        (300, 10**7, 128, torch.float64),
    ]:
        rows, cols = knn_torch.tile_shape(nq, nb, 16, dim, dtype, 128 << 20)
        size = torch.finfo(dtype).bits // 8
        assert (rows + dim) * cols * size <= 128 << 20 and 1 <= rows <= nq and cols <= nb


def test_cuda_tiles_are_sized_by_free_memory(monkeypatch):
    """On CUDA a 1M-point 64-d base gets ~1,000-row tiles from a 4 GiB budget (80 GB free), not the 33
    rows of a fixed 2^25-element tile; with little free memory the budget shrinks but stays >= 256 MiB."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 << 30, 96 << 30))
    budget = knn_torch.tile_budget(torch.device("cuda", 0))
    assert budget == 4 << 30
    assert knn_torch.tile_shape(10**6, 10**6, 20, 64, torch.float32, budget) == (1009, 10**6)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 << 30, 96 << 30))
    assert knn_torch.tile_budget(torch.device("cuda", 0)) == 512 << 20
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 << 20, 96 << 30))
    assert knn_torch.tile_budget(torch.device("cuda", 0)) == 256 << 20
    assert knn_torch.tile_budget(torch.device("cpu")) == 128 << 20


@pytest.mark.parametrize("budget", [3000, 40_000])
def test_column_chunks_give_the_same_neighbours(monkeypatch, budget):
    """Tiles split along the base (running top-k merged chunk by chunk), with the point itself excluded
    in whichever chunk holds it: the same result as one tile."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(500, 6, generator=g, dtype=torch.float64)
    whole = knn_search(base[100:300], base, 9, backend="torch", exclude_self=True, self_offset=100)
    monkeypatch.setattr(knn_torch, "_CPU_TILE_BYTES", budget)
    assert knn_torch.tile_shape(200, 500, 14, 6, torch.float64, budget)[1] < 500
    split = knn_search(base[100:300], base, 9, backend="torch", exclude_self=True, self_offset=100)
    assert torch.equal(whole[0], split[0])
    torch.testing.assert_close(whole[1], split[1])
