"""Neural-network modules: the drop-in ``WNLLHead`` (:mod:`~fastwnll.nn.head`) and the ``TVM``
input-cleaning layer (:mod:`~fastwnll.nn.tvm`); the labels of a training batch
(:mod:`~fastwnll.nn.batch`); the functions over a whole model that find, switch and fill its WNLL
heads (:mod:`~fastwnll.nn.network`) and that save and restore its train/eval flags
(:mod:`~fastwnll.nn.modes`)."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "WNLLHead": "fastwnll.nn.head",
    "wnll_batch": "fastwnll.nn.batch",
    "split_batch": "fastwnll.nn.batch",
    "collect_templates": "fastwnll.nn.network",
    "graph_summary": "fastwnll.nn.network",
    "wnll_heads": "fastwnll.nn.network",
    "uses_wnll": "fastwnll.nn.network",
    "set_head_mode": "fastwnll.nn.network",
    "set_inference": "fastwnll.nn.network",
    "head_mode": "fastwnll.nn.network",
    "eval_mode": "fastwnll.nn.modes",
    "TVM": "fastwnll.nn.tvm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastwnll.nn' has no attribute {name!r}")


def __dir__():
    return __all__
