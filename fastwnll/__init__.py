"""fastwnll: fast, exact WNLL graph interpolation, TV minimization and adversarial training.

The public names below, and the subpackages (``fastwnll.nn``, ``fastwnll.data``, ...), are
imported lazily (on first use), so ``import fastwnll`` stays cheap and the command-line interface
starts quickly, while ``import fastwnll; fastwnll.nn.TVM(...)`` works as for any package.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "knn_graph": "fastwnll.knn",
    "knn_search": "fastwnll.knn",
    "ApproximateKNN": "fastwnll.knn",
    "gaussian_weights": "fastwnll.wnll",
    "weights_from_distances": "fastwnll.wnll",
    "wnll_solve": "fastwnll.wnll",
    "SolveInfo": "fastwnll.wnll",
    "WNLLConvergenceError": "fastwnll.wnll",
    "WNLLUnreachableError": "fastwnll.wnll",
    "wnll_interpolate": "fastwnll.wnll",
    "TemplateBank": "fastwnll.wnll",
    "tv_denoise": "fastwnll.tv",
    "tvm": "fastwnll.tv",
    "keep_mask": "fastwnll.tv",
    "TVInfo": "fastwnll.tv",
    "TVConvergenceWarning": "fastwnll.tv",
    "WNLLHead": "fastwnll.nn",
    "info": "fastwnll.extension.info",
}

# Subpackages reachable as attributes of ``fastwnll`` without importing them first.
SUBPACKAGES = (
    "attacks",
    "bench",
    "data",
    "evaluation",
    "extension",
    "geometry",
    "knn",
    "models",
    "nn",
    "runtime",
    "train",
    "tv",
    "wnll",
)

__all__ = sorted(_EXPORTS) + list(SUBPACKAGES) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in SUBPACKAGES:
        return importlib.import_module(f"fastwnll.{name}")  # importing sets the attribute
    raise AttributeError(f"module 'fastwnll' has no attribute {name!r}")


def __dir__():
    return __all__
