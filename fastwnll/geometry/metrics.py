"""Numbers that describe the geometry of a labelled feature set and how an attack moves it.

Definitions (features ``f_i`` of the clean images, ``g_i`` of their adversarial versions, true
labels ``y_i``, ``i = 1..N``; ``C`` = the classes present among the ``y_i``; all distances Euclidean,
computed in float64):

- class centroid ``mu_c`` = mean of the clean features ``f_i`` with ``y_i = c``;
- **intra-class spread** ``s`` = RMS distance of a clean feature to its own class centroid,
  pooled over all images: ``s = sqrt(mean_i ||f_i - mu_{y_i}||^2)``;
- **inter-class distance** ``D`` = mean over the ``|C|(|C|-1)/2`` unordered pairs of classes of
  ``||mu_c - mu_c'||``; ``D_min`` the smallest such distance;
- **spread ratio** = ``s / D`` (smaller: tighter, better separated clusters);
- **displacement** = mean over the images of ``||g_i - f_i||``; **relative displacement** =
  displacement / ``D`` (the attack's movement in units of the typical distance between classes),
  with its standard error over the images, ``std_i ||g_i - f_i|| / sqrt(N) / D`` (sample standard
  deviation; ``D`` taken as exact);
- **kNN-true share** of a feature set = fraction of its features whose ``k`` nearest templates
  (a labelled bank of training features) are mostly of the true class: strictly more than ``k/2``
  of the ``k`` labels equal ``y_i``. With WNLL weights that decay with distance this is the
  condition under which the interpolation favours the true class.

Ratios are the numbers to compare between models: each network scales its feature space its own
way, and ``s / D``, displacement / ``D`` and the kNN shares do not change when all features are
multiplied by a constant or shifted by a common offset.
"""

from __future__ import annotations

import torch


def _check_features(name: str, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point torch.Tensor, got "
            f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape [N, d] with N, d >= 1, got {tuple(x.shape)}")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{name} has {x.shape[0]} rows, expected {rows}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x.detach().to(torch.float64)


def _check_labels(name: str, y: torch.Tensor, rows: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise TypeError(f"{name} must be a 1-D int64 torch.Tensor of class labels")
    if y.shape[0] != rows:
        raise ValueError(f"{name} has {y.shape[0]} labels for {rows} feature rows")
    return y


def class_geometry(features: torch.Tensor, labels: torch.Tensor) -> dict:
    """Intra-class spread and inter-class distances of ``features`` ``[N, d]`` (float, any device)
    with labels ``[N]`` (int64), as defined in the module docstring.

    Returns floats: ``spread`` (``s``), ``inter_class_mean`` (``D``), ``inter_class_min``
    (``D_min``), ``spread_ratio`` (``s / D``) and the int ``classes`` (``|C|``). Raises ValueError
    when fewer than two classes are present or two class centroids coincide (``D_min = 0``).
    """
    f = _check_features("features", features)
    y = _check_labels("labels", labels, f.shape[0]).to(f.device)
    classes, index = torch.unique(y, return_inverse=True)
    if classes.numel() < 2:
        raise ValueError(f"class geometry needs features of at least two classes, got {classes.numel()}")
    counts = torch.bincount(index, minlength=classes.numel()).to(f.dtype)
    centroids = torch.zeros(classes.numel(), f.shape[1], dtype=f.dtype, device=f.device)
    centroids.index_add_(0, index, f)
    centroids /= counts[:, None]
    spread = (f - centroids[index]).pow(2).sum(1).mean().sqrt()
    i, j = torch.triu_indices(classes.numel(), classes.numel(), offset=1, device=f.device)
    between = (centroids[i] - centroids[j]).norm(dim=1)
    if float(between.min()) == 0:
        raise ValueError("two class centroids coincide (inter-class distance 0): the ratios are undefined")
    mean = between.mean()
    return {
        "spread": float(spread),
        "inter_class_mean": float(mean),
        "inter_class_min": float(between.min()),
        "spread_ratio": float(spread / mean),
        "classes": int(classes.numel()),
    }


def displacements(clean: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    """Float64 ``[N]``: the Euclidean distance between matching rows of ``clean`` and ``adversarial``
    (both ``[N, d]``), on ``clean``'s device."""
    f = _check_features("clean features", clean)
    g = _check_features("adversarial features", adversarial, f.shape[0])
    if g.shape != f.shape:
        raise ValueError(f"clean and adversarial features differ in shape: {tuple(f.shape)} vs {tuple(g.shape)}")
    return (g.to(f.device) - f).norm(dim=1)


def mean_displacement(clean: torch.Tensor, adversarial: torch.Tensor) -> float:
    """Mean Euclidean distance between matching rows of ``clean`` and ``adversarial`` (both ``[N, d]``)."""
    return float(displacements(clean, adversarial).mean())


def knn_true_share(
    features: torch.Tensor, labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, k: int
) -> float:
    """Fraction of the rows of ``features`` ``[N, d]`` (true labels ``labels`` ``[N]``) whose ``k``
    nearest rows of ``bank`` ``[M, d]`` (labels ``bank_labels`` ``[M]``) hold the true label more
    than ``k/2`` times. Exact Euclidean kNN in float64 (:func:`fastwnll.knn_search`); ``1 <= k <= M``."""
    from fastwnll.knn.search import knn_search

    f = _check_features("features", features)
    y = _check_labels("labels", labels, f.shape[0]).to(f.device)
    b = _check_features("template bank", bank).to(f.device)
    by = _check_labels("template labels", bank_labels, b.shape[0]).to(f.device)
    if b.shape[1] != f.shape[1]:
        raise ValueError(
            f"the template bank has features of width {b.shape[1]} but the queries have width {f.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= b.shape[0]:
        raise ValueError(f"k must be an integer in [1, {b.shape[0]}] (the number of templates), got {k!r}")
    idx, _ = knn_search(f, b, k)
    votes = (by[idx] == y[:, None]).sum(1)
    return float((2 * votes > k).double().mean())


def geometry_metrics(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    k: int,
) -> dict:
    """All the numbers of the module docstring for one model.

    Args:
        clean, adversarial: ``[N, d]`` float features of the clean images and of their adversarial
            versions (row ``i`` of one matches row ``i`` of the other).
        labels: ``[N]`` int64 true labels.
        bank, bank_labels: ``[M, d]`` template features and their ``[M]`` int64 labels.
        k: neighbours for the kNN-true shares.
    Returns:
        :func:`class_geometry`'s dict plus ``displacement``, ``relative_displacement`` (displacement
        / ``D``), ``relative_displacement_se`` (its standard error; 0 for a single image),
        ``knn_true_clean`` and ``knn_true_adversarial``.
    """
    result = class_geometry(clean, labels)
    moved = displacements(clean, adversarial)
    spread_of_moves = float(moved.std()) if moved.numel() > 1 else 0.0
    result["displacement"] = float(moved.mean())
    result["relative_displacement"] = result["displacement"] / result["inter_class_mean"]
    result["relative_displacement_se"] = spread_of_moves / moved.numel() ** 0.5 / result["inter_class_mean"]
    result["knn_true_clean"] = knn_true_share(clean, labels, bank, bank_labels, k)
    result["knn_true_adversarial"] = knn_true_share(adversarial, labels, bank, bank_labels, k)
    return result
