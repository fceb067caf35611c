"""What a run is made of: device, precision, data tensors, model (from a config or a checkpoint)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from fastwnll.nn.head import WNLLHead

from .config import TrainConfig


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA device (use --device cpu or auto)")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """Autocast dtype for the network's layers: bfloat16 (or float16 where bfloat16 is unsupported)
    on CUDA with ``amp`` "auto" or "on"; None (full float32) on CPU or with "off". The WNLL solve
    always runs in float32 (the head turns autocast off)."""
    if amp not in ("auto", "on", "off"):
        raise ValueError(f"amp must be 'auto', 'on' or 'off', got {amp!r}")
    if amp == "on" and device.type != "cuda":
        raise ValueError("amp='on' needs a CUDA device (mixed precision is used on CUDA only)")
    if amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def load_split(config: TrainConfig, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [N, C, H, W] float32 in [0, 1], y [N] int64)`` of ``split`` ("train" or "test"), on the CPU."""
    from fastwnll.data import load_dataset

    x, y = load_dataset(config.dataset, data_dir=config.data_dir, split=split, seed=config.seed,
                        **({"download": True} if config.download else {}))
    if x.shape[0] == 0:
        raise ValueError(f"the {split} split of {config.dataset!r} is empty")
    return x, y


def build_model(config: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The configured network (``fastwnll.models.build``) for images with ``in_channels`` channels,
    with a linear or WNLL head, on the CPU."""
    from fastwnll.models import build

    return build(config.model, num_classes, head=config.head, in_channels=in_channels, **config.head_kwargs())


def check_fits(model: nn.Module, x: torch.Tensor, num_classes: int, config: TrainConfig) -> None:
    """Run ``model`` (CPU) on two examples of ``x`` [N, C, H, W] and raise ValueError, naming the model
    and the input shape, when it cannot take them or does not return ``[2, num_classes]`` scores."""
    flags = [(m, m.training) for m in model.modules()]
    modes = [(h, h.mode) for h in wnll_heads(model)]
    model.eval()
    set_head_mode(model, "linear")
    try:
        with torch.no_grad():
            out = model(x[:2])
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"model {config.model!r} cannot take {config.dataset!r} inputs of shape "
                         f"{list(x.shape[1:])}: {error}") from None
    finally:
        for m, training in flags:
            m.training = training
        for h, mode in modes:
            h.mode = mode
    if out.shape != (min(2, x.shape[0]), num_classes):
        raise ValueError(f"model {config.model!r} returned shape {list(out.shape)} for {config.dataset!r} inputs; "
                         f"expected [batch, {num_classes}]")


def wnll_heads(model: nn.Module) -> list[WNLLHead]:
    """The :class:`WNLLHead` modules inside ``model`` (empty for a linear-head network)."""
    return [m for m in model.modules() if isinstance(m, WNLLHead)]


def set_head_mode(model: nn.Module, mode: str) -> None:
    """Put every WNLL head of ``model`` in ``mode`` ("linear" or "wnll")."""
    for head in wnll_heads(model):
        head.mode = mode
