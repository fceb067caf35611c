"""Training: natural or PGD adversarial training, the paper's two-stage linear/WNLL schedule, TVM
augmentation, exact-resume checkpoints, and the CLI commands train / demo. The run's configuration,
checkpoint files and model rebuilding live in :mod:`fastwnll.runtime`, the natural accuracy a run
reports in :mod:`fastwnll.evaluation.natural`; both are re-exported here."""

from fastwnll.evaluation.natural import accuracy, evaluate_checkpoint, head_accuracies
from fastwnll.runtime import TrainConfig, load_checkpoint, load_model

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
