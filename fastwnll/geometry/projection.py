"""2-D projections of a model's clean and adversarial features for the picture.

``pca`` (default): the two leading principal directions of the *clean* features (centred on their
mean), computed in float64; the adversarial features are mapped with the same affine map, so an
arrow's length is the length of the displacement's component in that plane. Each component's sign
is fixed so that its largest-magnitude loading is positive (the same data give the same picture).

``tsne``: scikit-learn's t-SNE fitted on the clean and adversarial features together (t-SNE cannot
map new points); it keeps neighbourhoods, not distances, so arrows show which neighbourhood a point
moved to, not how far.
"""

from __future__ import annotations

import torch

PROJECTIONS = ("pca", "tsne")


def pca_2d(clean: torch.Tensor, adversarial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Project ``clean`` ``[N, d]`` and ``adversarial`` ``[M, d]`` (float, ``d >= 2``, ``N >= 2``) on
    the two leading principal directions of ``clean``.

    Returns ``(clean_2d [N, 2], adversarial_2d [M, 2], explained)``, float64 on the CPU, where
    ``explained`` holds the fraction of the clean features' variance along each of the two directions.
    """
    f = clean.detach().to("cpu", torch.float64)
    g = adversarial.detach().to("cpu", torch.float64)
    if f.dim() != 2 or g.dim() != 2 or f.shape[1] != g.shape[1] or f.shape[1] < 2 or f.shape[0] < 2:
        raise ValueError(
            f"PCA needs [N, d] clean and [M, d] adversarial features with N >= 2 and d >= 2, got "
            f"{tuple(f.shape)} and {tuple(g.shape)}"
        )
    mean = f.mean(0)
    _, singular, vh = torch.linalg.svd(f - mean, full_matrices=False)
    components = vh[:2]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))
    components = components * signs
    variance = singular.pow(2)
    total = float(variance.sum())
    explained = [float(v) / total if total > 0 else 0.0 for v in variance[:2]]
    return (f - mean) @ components.T, (g - mean) @ components.T, explained


def tsne_2d(clean: torch.Tensor, adversarial: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """t-SNE of the clean ``[N, d]`` and adversarial ``[M, d]`` features together (scikit-learn,
    PCA initialisation, ``random_state=seed``, perplexity ``min(30, (N + M - 1) / 3)``).
    Returns ``(clean_2d [N, 2], adversarial_2d [M, 2])``, float64 on the CPU."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise RuntimeError("projection 'tsne' needs scikit-learn (pip install scikit-learn); use 'pca'") from None

    both = torch.cat([clean.detach().cpu(), adversarial.detach().cpu()]).to(torch.float64)
    if both.shape[0] < 4:
        raise ValueError(f"t-SNE needs at least 4 points in all, got {both.shape[0]}")
    perplexity = min(30.0, (both.shape[0] - 1) / 3)
    embedded = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(both.numpy())
    embedded = torch.from_numpy(embedded).to(torch.float64)
    return embedded[: clean.shape[0]], embedded[clean.shape[0] :]


def project(clean: torch.Tensor, adversarial: torch.Tensor, method: str = "pca", seed: int = 0) -> dict:
    """``{"clean": [N, 2], "adversarial": [M, 2], "axes": (x label, y label)}`` with ``method``
    "pca" (:func:`pca_2d`) or "tsne" (:func:`tsne_2d`)."""
    if method not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    if method == "pca":
        f, g, explained = pca_2d(clean, adversarial)
        axes = tuple(f"PC{i + 1} ({100 * e:.0f}% of clean variance)" for i, e in enumerate(explained))
    else:
        f, g = tsne_2d(clean, adversarial, seed)
        axes = ("t-SNE 1", "t-SNE 2")
    return {"clean": f, "adversarial": g, "axes": axes}
