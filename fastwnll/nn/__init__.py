"""Neural-network modules: the drop-in ``WNLLHead`` and the ``TVM`` input-cleaning layer, and the
context managers that switch a model's train/eval flags and head modes and restore them."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "WNLLHead": "fastwnll.nn.head",
    "wnll_batch": "fastwnll.nn.head",
    "collect_templates": "fastwnll.nn.head",
    "graph_summary": "fastwnll.nn.head",
    "wnll_heads": "fastwnll.nn.head",
    "set_head_mode": "fastwnll.nn.head",
    "head_mode": "fastwnll.nn.head",
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
