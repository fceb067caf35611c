"""Independent references for the TV tests (tests/test_tv.py, tests/test_tv_convergence.py): the
objective recomputed in numpy (float64), the test images, and converged float64 minimisers."""

import numpy as np
import torch
from conftest import find_mnist_dir

from fastwnll.data.idx import read_idx
from fastwnll.data.mnist import FILES, find_file


def objective(z, x, lam, mask=None, isotropic=True, per_plane=False):
    """1/2 sum M (z - x)^2 + lam * TV(z) with forward differences and a Neumann boundary, summed over
    all planes (a float) or, with ``per_plane``, one value per plane (array of ``x.shape[:-2]``)."""
    z = np.asarray(torch.as_tensor(z).double())
    x = np.asarray(torch.as_tensor(x).double())
    m = np.ones_like(x) if mask is None else np.asarray(torch.as_tensor(mask).double())
    dx = np.zeros_like(z)
    dy = np.zeros_like(z)
    dx[..., :, :-1] = z[..., :, 1:] - z[..., :, :-1]
    dy[..., :-1, :] = z[..., 1:, :] - z[..., :-1, :]
    tv = np.sqrt(dx**2 + dy**2) if isotropic else np.abs(dx) + np.abs(dy)
    terms = 0.5 * m * (z - x) ** 2 + lam * tv
    return terms.sum(axis=(-2, -1)) if per_plane else float(terms.sum())


def mnist_digits(n: int = 64) -> torch.Tensor:
    """The first ``n`` real MNIST test digits, float64 [n, 1, 28, 28] in [0, 1] (skips without data)."""
    path = find_file(find_mnist_dir(), FILES["test"][0])
    return torch.from_numpy(read_idx(path)[:n].astype(np.float64) / 255.0)[:, None]


def natural_crops() -> torch.Tensor:
    """Four 32x32 RGB crops of scikit-image's astronaut photograph, float64 [4, 3, 32, 32] in [0, 1]."""
    from skimage import data

    img = torch.from_numpy(data.astronaut().astype(np.float64) / 255.0).permute(2, 0, 1)
    return torch.stack([img[:, r : r + 32, c : c + 32] for r, c in ((40, 200), (100, 260), (300, 100), (420, 380))])
