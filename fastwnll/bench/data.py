"""Synthetic inputs of the microbenchmarks: no dataset needed."""

from __future__ import annotations

import torch

# Feature width of the WNLL and kNN benchmarks: that of the MNIST PCA features the published
# comparisons use (benchmarks/README.md).
DIM = 64
CLASSES = 10


def clustered_features(
    n: int,
    dim: int = DIM,
    classes: int = CLASSES,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in ``classes`` Gaussian clusters shaped like PCA features: ``(x [n, dim] dtype,
    y [n] int64)`` on ``device``, labels in turn (point ``i`` is in class ``i % classes``).

    Coordinate ``j`` (of centres and spreads alike) has scale ``(j + 1) ** -0.5``, the decaying
    spectrum of principal components; the centres are twice as spread as the points around them, so
    that the classes overlap a little, as digits do. Drawn in float64 on the CPU from ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, dim + 1, dtype=torch.float64) ** -0.5
    centres = 2 * torch.randn(classes, dim, generator=generator, dtype=torch.float64) * scale
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, dim, generator=generator, dtype=torch.float64) * scale
    return x.to(device=device, dtype=dtype), y.to(device)


def images(shape: tuple[int, ...], seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """Uniform random float32 images of ``shape`` (``[N, C, H, W]``) in [0, 1] on ``device``, drawn on
    the CPU from ``seed``."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(device)
