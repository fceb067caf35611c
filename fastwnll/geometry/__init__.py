"""Feature-space geometry: how tightly each class clusters in a network's penultimate features, and
how far an attack moves them (the paper's explanation of the WNLL defence), as a picture and a table.
``fastwnll geometry`` on the command line, :func:`feature_geometry` in Python."""

from .analysis import feature_geometry
from .metrics import class_geometry, geometry_metrics, knn_true_share, mean_displacement
from .projection import pca_2d, project

__all__ = [
    "class_geometry",
    "feature_geometry",
    "geometry_metrics",
    "knn_true_share",
    "mean_displacement",
    "pca_2d",
    "project",
]
