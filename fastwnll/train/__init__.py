"""Training and evaluation: natural or PGD adversarial training, the paper's two-stage linear/WNLL
schedule, TVM augmentation, exact-resume checkpoints, and the CLI commands train / evaluate / demo."""
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .evaluate import accuracy, evaluate_checkpoint, head_accuracies, load_model
from .trainer import train

__all__ = ["TrainConfig", "accuracy", "evaluate_checkpoint", "head_accuracies", "load_checkpoint", "load_model",
           "train"]
