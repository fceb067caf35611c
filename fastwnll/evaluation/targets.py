"""Models under evaluation: loading training checkpoints, choosing the head, and the test subset."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from fastwnll.models.heads import HEADS as MODEL_HEADS
from fastwnll.nn.network import check_inference, set_head_mode, set_inference, wnll_heads
from fastwnll.runtime import TrainConfig, fixed_subset, load_model, load_split

# The head a checkpoint is read through: "auto" is the one it was trained with.
HEADS = ("auto", *MODEL_HEADS)


@dataclass
class Target:
    """A network ready for attacks: ``model`` in eval mode on its device, its training config, the
    head it is read through ("linear" or "wnll"), ``num_classes`` and where it came from."""

    name: str
    model: nn.Module
    config: TrainConfig
    head: str
    num_classes: int
    path: str
    finished: bool

    @property
    def dataset(self) -> str:
        return self.config.dataset

    def describe(self) -> dict:
        """JSON-serialisable facts about the model (for reports)."""
        return {
            "name": self.name,
            "checkpoint": self.path,
            "head": self.head,
            "model": self.config.model,
            "dataset": self.config.dataset,
            "adv_training": self.config.adv,
            "adv_eps": self.config.eps if self.config.adv == "pgd" else None,
            "finished": self.finished,
        }


def load_target(
    checkpoint: str | os.PathLike,
    *,
    name: str | None = None,
    head: str = "auto",
    device: torch.device | str = "cpu",
    inference: str | None = None,
) -> Target:
    """Load a training checkpoint (file or run directory) for evaluation.

    ``head``: ``"wnll"`` reads the network through its WNLL heads (they need a template bank, which
    training stores at the end); ``"linear"`` through the linear layer of every WNLL head (or the
    network's own linear head), which also works for a checkpoint saved before stage 2; ``"auto"``
    is the training config's head. ``inference``: ``"transductive"`` or ``"inductive"`` for every
    WNLL head (see :class:`fastwnll.nn.WNLLHead`; default: as saved, transductive). Raises
    FileNotFoundError for a missing checkpoint and ValueError for a head the checkpoint cannot provide.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    check_inference(inference)
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    model, config, payload = load_model(checkpoint, device)
    heads = wnll_heads(model)
    if head == "auto":
        head = "wnll" if config.head == "wnll" else "linear"
    if head == "wnll":
        if not heads:
            raise ValueError(f"{checkpoint} has a linear head; it cannot be read through a WNLL head")
        if not all(h.num_templates for h in heads):
            raise ValueError(
                f"{checkpoint} has no WNLL template bank (saved before the end of training?); "
                "use head 'linear' to read it through its linear layer"
            )
        set_head_mode(model, "wnll")
        set_inference(model, inference)
    else:
        set_head_mode(model, "linear")
    for p in model.parameters():
        p.requires_grad_(False)
    return Target(
        name=name or str(checkpoint),
        model=model.eval(),
        config=config,
        head=head,
        num_classes=int(payload["num_classes"]),
        path=str(checkpoint),
        finished=bool(payload.get("finished", False)),
    )


def eval_data(target: Target, n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed subset of ``n`` images of the target's test split (all when None), on the CPU:
    ``(x [n, C, H, W] float32 in [0, 1], y [n] int64)``, the first ``n`` of a permutation seeded
    with ``seed`` (so a smaller ``n`` gives a prefix of a larger one)."""
    x, y = load_split(target.config, "test")
    if n is None:
        return x, y
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if n > x.shape[0]:
        raise ValueError(f"n={n} exceeds the {x.shape[0]} images of the {target.dataset} test split")
    rows = fixed_subset(x.shape[0], n, seed)
    return x[rows], y[rows]


def check_same_data(source: Target, target: Target) -> None:
    """Raise ValueError unless ``source`` and ``target`` were trained on the same dataset with the same
    classes and test images (a transfer attack crafts on one and evaluates on the other)."""
    if source.dataset != target.dataset:
        raise ValueError(
            f"mismatched datasets: the transfer source {source.name} was trained on {source.dataset!r} "
            f"but the target {target.name} on {target.dataset!r}"
        )
    if source.num_classes != target.num_classes:
        raise ValueError(
            f"mismatched datasets: the transfer source has {source.num_classes} classes, the target "
            f"{target.num_classes}"
        )
    xs, ys = load_split(source.config, "test")
    xt, yt = load_split(target.config, "test")
    if xs.shape != xt.shape or not (torch.equal(xs, xt) and torch.equal(ys, yt)):
        raise ValueError(
            f"mismatched datasets: the test splits of {source.name} and {target.name} differ "
            f"({tuple(xs.shape)} vs {tuple(xt.shape)} images; check data_dir)"
        )
