"""The APIs of other fastwnll subpackages that ``fastwnll.geometry`` uses: imported here and nowhere
else in the package, so that a move of any of them changes this file alone."""

from fastwnll.attacks import attack_mode, attack_spec
from fastwnll.evaluation import (
    PROTOCOLS,
    Evaluator,
    Target,
    check_same_data,
    eval_data,
    load_target,
    resolve,
    uses_wnll,
)
from fastwnll.nn.network import wnll_heads
from fastwnll.runtime import load_split, resolve_device
from fastwnll.runtime.files import check_outputs

__all__ = [
    "PROTOCOLS",
    "Evaluator",
    "Target",
    "attack_mode",
    "attack_spec",
    "check_outputs",
    "check_same_data",
    "eval_data",
    "load_split",
    "load_target",
    "resolve",
    "resolve_device",
    "uses_wnll",
    "wnll_heads",
]
