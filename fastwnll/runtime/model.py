"""The network of a run: built from its configuration, checked against its data, rebuilt from a checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from fastwnll.nn.head import WNLLHead
from fastwnll.nn.modes import eval_mode
from fastwnll.nn.network import head_mode, set_head_mode

from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig


def build_model(config: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The configured network (``fastwnll.models.build``) for images with ``in_channels`` channels,
    with a linear or WNLL head, on the CPU."""
    from fastwnll.models import build

    return build(config.model, num_classes, head=config.head, in_channels=in_channels, **config.head_kwargs())


def check_fits(model: nn.Module, x: torch.Tensor, num_classes: int, config: TrainConfig) -> None:
    """Run ``model`` (CPU) on two examples of ``x`` [N, C, H, W] and raise ValueError, naming the model
    and the input shape, when it cannot take them or does not return ``[2, num_classes]`` scores.
    The model's train/eval flags and head modes are left as they were."""
    try:
        with eval_mode(model), head_mode(model, "linear"), torch.no_grad():
            out = model(x[:2])
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"model {config.model!r} cannot take {config.dataset!r} inputs of shape {list(x.shape[1:])}: {error}"
        ) from None
    if out.shape != (min(2, x.shape[0]), num_classes):
        raise ValueError(
            f"model {config.model!r} returned shape {list(out.shape)} for {config.dataset!r} inputs; "
            f"expected [batch, {num_classes}]"
        )


def load_weights(model: nn.Module, weights: dict, source) -> None:
    """Load the state_dict ``weights`` of a checkpoint into ``model``; CheckpointError naming
    ``source`` (the file) and the parameters when they do not fit the network (missing or unexpected
    entries, other shapes) or when a WNLL head's saved template bank is inconsistent."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        details = " ".join(line.strip() for line in str(error).splitlines()[1:]) or str(error)
        raise CheckpointError(
            source, f"the saved weights do not fit the {type(model).__name__} network: {details}"
        ) from None
    for name, head in model.named_modules():
        if not isinstance(head, WNLLHead):
            continue
        labels = head.template_labels
        if labels.shape[0] != head.template_features.shape[0]:
            raise CheckpointError(
                source,
                f"the template bank of {name!r} has {head.template_features.shape[0]} "
                f"feature rows but {labels.shape[0]} labels",
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= head.num_classes):
            raise CheckpointError(source, f"the template bank of {name!r} has labels outside [0, {head.num_classes})")


def load_model(checkpoint, device: torch.device | str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """Rebuild the network saved in a training checkpoint (a path, a run directory, or a loaded
    payload) on ``device``: ``(model in eval mode, its TrainConfig, the checkpoint payload)``.
    WNLL heads are in wnll mode with the saved template bank (empty in a checkpoint saved before
    the last epoch of a run with no stage-2 evaluation). A checkpoint whose configuration or weights
    do not make a network raises CheckpointError naming the file and the problem."""
    source = "the checkpoint payload" if isinstance(checkpoint, dict) else checkpoint
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    try:
        config = TrainConfig.from_dict(payload["config"])
        model = build_model(config, payload["num_classes"], payload["in_channels"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(source, f"its configuration does not make a network: {error}") from None
    load_weights(model, payload["model"], source)
    set_head_mode(model, "wnll")
    return model.to(device).eval(), config, payload
