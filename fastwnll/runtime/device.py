"""The device and precision a run uses: ``--device`` and ``--amp`` resolved, and autocast."""

from __future__ import annotations

import contextlib

import torch

DEVICES = ("auto", "cpu", "cuda")
AMP = ("auto", "on", "off")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name not in DEVICES:
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
    if amp not in AMP:
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
