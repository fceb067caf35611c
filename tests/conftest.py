"""Shared fixtures: the device/dtype matrix, single-threaded torch for a module, and the real MNIST
test split in ../shared/data/mnist reduced by PCA.

Device/dtype matrix: tests take the ``device`` fixture (``"cpu"``, then ``"cuda"``) and/or the
``dtype`` fixture (float32, float64), or parametrize with the ``DEVICES`` / ``DTYPES`` lists. Every
test marked ``cuda`` (the CUDA entries of the matrix are) is skipped when no CUDA device is present,
so files need no skip marker of their own.
"""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fastwnll.data.idx import read_idx

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]

MNIST_DIR = Path(os.environ.get("FASTWNLL_MNIST10K_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device of the test: "cpu", or "cuda" (skipped without a GPU)."""
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request) -> torch.dtype:
    """The floating dtype of the test: float32 or float64."""
    return request.param


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for the whole module (restored after): the small models and solves of the
    tests run fastest, and most reproducibly, that way on the shared 2-core CI machine. Modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist_pca():
    """(x [10000, 50] float64 PCA features of the real MNIST test images, y [10000] int64)."""
    images = MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    if not images.exists():
        pytest.skip(f"real MNIST data not found at {MNIST_DIR}")
    x = torch.from_numpy(read_idx(images).reshape(10000, -1).astype(np.float64) / 255.0)
    y = torch.from_numpy(read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)  # deterministic PCA: top eigenvectors of the scatter matrix
    return x @ vectors[:, -50:].flip(1), y
