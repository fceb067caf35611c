"""Shared fixtures: the device/dtype matrix, single-threaded torch for a module, and the repository's
test data (the real MNIST test files), raw and reduced by PCA.

Device/dtype matrix: tests take the ``device`` fixture (``"cpu"``, then ``"cuda"``) and/or the
``dtype`` fixture (float32, float64), or parametrize with the ``DEVICES`` / ``DTYPES`` lists. Every
test marked ``cuda`` (the CUDA entries of the matrix are) is skipped when no CUDA device is present,
so files need no skip marker of their own. A test (or a parameter) marked ``needs("faiss", ...)`` is
skipped when one of those optional packages cannot be imported.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fastwnll.data.idx import read_idx
from fastwnll.data.mnist import FILES, find_file, mnist_dirs
from fastwnll.data.paths import DATA_DIR_ENV

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]

# The test data: the real MNIST test files t10k-{images-idx3,labels-idx1}-ubyte[.gz], looked up in
# $FASTWNLL_DATA_DIR (the variable the package reads) or, when it is unset, beside the repository
# in ../shared/data/mnist. The package itself never looks there: tests pass the folder explicitly.
MNIST_ROOT = Path(os.environ.get(DATA_DIR_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist")


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for marker in item.iter_markers("needs"):
        for module in marker.args:
            pytest.importorskip(module)


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


def find_mnist_dir() -> Path:
    """The folder holding the real MNIST test files (pass it as ``data_dir``); the calling test is
    skipped, saying where it looked and what to set, when they are absent."""
    for folder in mnist_dirs(MNIST_ROOT):
        if all(find_file(folder, stem) for stem in FILES["test"]):
            return folder
    pytest.skip(
        f"needs the real MNIST test files ({' and '.join(s + '[.gz]' for s in FILES['test'])}), not found "
        f"under {MNIST_ROOT}: set {DATA_DIR_ENV} to the folder holding them"
    )


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """See :func:`find_mnist_dir`."""
    return find_mnist_dir()


@pytest.fixture(scope="session")
def mnist_pca(mnist_dir):
    """(x [10000, 50] float64 PCA features of the real MNIST test images, y [10000] int64)."""
    images_stem, labels_stem = FILES["test"]
    x = torch.from_numpy(read_idx(find_file(mnist_dir, images_stem)).reshape(10000, -1).astype(np.float64) / 255.0)
    y = torch.from_numpy(read_idx(find_file(mnist_dir, labels_stem)).astype(np.int64))
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)  # deterministic PCA: top eigenvectors of the scatter matrix
    return x @ vectors[:, -50:].flip(1), y
