"""What a training run is made of and leaves behind, shared by ``fastwnll.train`` (which writes runs)
and ``fastwnll.evaluation`` (which reads them): the run's configuration (:class:`TrainConfig`), its
device and precision, its data splits, its network, and its checkpoint files."""

from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data import fixed_subset, load_split, template_rows
from .device import amp_dtype, autocast, resolve_device
from .model import build_model, check_fits, load_model, load_weights

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "TrainConfig",
    "amp_dtype",
    "autocast",
    "build_model",
    "check_fits",
    "fixed_subset",
    "load_checkpoint",
    "load_model",
    "load_split",
    "load_weights",
    "resolve_device",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "template_rows",
]
