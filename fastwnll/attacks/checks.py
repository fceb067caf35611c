"""Argument validation shared by the attacks: clear errors for bad inputs and budgets."""

from __future__ import annotations

import importlib
import math
import numbers

import torch
from torch import nn

# The optional-dependency group of pyproject.toml that brings the libraries some attacks call.
EVAL_EXTRA = "eval"


def require_library(module: str, attack: str):
    """The module ``module`` that attack ``attack`` calls; ImportError naming both and the extra to
    install when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"the {attack} attack calls the {module} library, which is not installed: "
            f"pip install 'fastwnll[{EVAL_EXTRA}]' (or pip install {module})"
        ) from error


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer; None for a model without tensors."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Check a batch ``x`` ([B, ...], float, finite, in [0, 1]) and labels ``y`` ([B], int64) for ``model``."""
    check_model(model)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must be a batch [B, C, H, W] (at least 2 dimensions), got shape {tuple(x.shape)}")
    if y.dtype != torch.int64:
        raise TypeError(f"y must be int64 class labels, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have shape [B] = [{x.shape[0]}] to match x {tuple(x.shape)}, got {tuple(y.shape)}")
    device = model_device(model)
    if device is not None and (x.device != device or y.device != device):
        raise RuntimeError(
            f"x is on {x.device} and y on {y.device} but the model is on {device}; move them to the same device"
        )
    if y.device != x.device:
        raise RuntimeError(f"x is on {x.device} but y is on {y.device}; move them to the same device")
    if x.numel() == 0:
        raise ValueError("x is empty")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must lie in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]")
    if y.min() < 0:
        raise ValueError(f"y must hold class indices >= 0, got {y.min().item()}")


def check_output(out: torch.Tensor, y: torch.Tensor) -> None:
    """Check that the model output is [B, num_classes] and that every label is a valid class."""
    if out.dim() != 2 or out.shape[0] != y.shape[0]:
        raise ValueError(f"the model must return [B, num_classes] = [{y.shape[0]}, C] scores, got {tuple(out.shape)}")
    if y.max() >= out.shape[1]:
        raise ValueError(f"label {y.max().item()} is out of range for a model with {out.shape[1]} classes")


def positive_float(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float, > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}")
    return value


def check_eps(eps, name: str = "eps") -> float | None:
    """An attack radius ``eps`` as a float >= 0 (None passes through: an unbounded attack); ValueError otherwise."""
    if eps is None:
        return None
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps):
        raise ValueError(f"{name} must be a finite number >= 0, got {eps!r}")
    if eps < 0:
        raise ValueError(f"{name} must be >= 0, got {eps}")
    return float(eps)


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def step_budget(eps, alpha, steps) -> tuple[float, float, int]:
    """The budget of an iterative attack, checked: ``(eps >= 0, alpha > 0, steps >= 1)`` as
    ``(float, float, int)`` (see :func:`positive_float`, :func:`positive_int`)."""
    return positive_float("eps", eps, allow_zero=True), positive_float("alpha", alpha), positive_int("steps", steps)


def check_generator(generator: torch.Generator | None, x: torch.Tensor) -> None:
    """A random generator (or None) on the device type of ``x``; RuntimeError naming both otherwise."""
    if generator is not None and generator.device.type != x.device.type:
        raise RuntimeError(f"the generator is on {generator.device} but x is on {x.device}")
