"""Robustness evaluation: defended models (TVM with BPDA/EOT), the paper's and the adaptive attack
protocols, single attacks on checkpoints, report grids (Markdown, JSON, PNG) with the worst case over
every attack of a cell, masking diagnostics, and the CLI commands ``fastwnll attack`` and
``fastwnll report``."""

from .budgets import CW_DEFAULTS, attack_kwargs
from .defense import DEFENSES, TVMDefense, attack_target, defended, make_tvm
from .diagnostics import MaskingWarning, diagnose
from .grid import GridConfig, run_grid
from .protocol import PROTOCOLS, AttackSetting, resolve, uses_wnll
from .report import write_report
from .robustness import Evaluator
from .targets import Target, check_same_data, eval_data, load_target

__all__ = [
    "CW_DEFAULTS",
    "DEFENSES",
    "PROTOCOLS",
    "AttackSetting",
    "Evaluator",
    "GridConfig",
    "MaskingWarning",
    "TVMDefense",
    "Target",
    "attack_kwargs",
    "attack_target",
    "check_same_data",
    "defended",
    "diagnose",
    "eval_data",
    "load_target",
    "make_tvm",
    "resolve",
    "run_grid",
    "uses_wnll",
    "write_report",
]
