"""Training: natural or PGD adversarial training, the paper's two-stage linear/WNLL schedule, TVM
augmentation, exact-resume checkpoints, natural accuracy of a checkpoint, and the CLI commands
train / evaluate / demo. The run's configuration, checkpoint files and model rebuilding live in
:mod:`fastwnll.runtime` (shared with :mod:`fastwnll.evaluation`) and are re-exported here."""

from fastwnll.runtime import TrainConfig, load_checkpoint, load_model

from .evaluate import accuracy, evaluate_checkpoint, head_accuracies
from .trainer import train

__all__ = [
    "TrainConfig",
    "accuracy",
    "evaluate_checkpoint",
    "head_accuracies",
    "load_checkpoint",
    "load_model",
    "train",
]
