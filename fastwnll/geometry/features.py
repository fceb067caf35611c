"""Penultimate features of a network (the input of its head, linear or WNLL) and its template bank."""

from __future__ import annotations

import torch
from torch import nn

from .upstream import Target, attack_mode, load_split, wnll_heads


def feature_width(model: nn.Module, name: str) -> int:
    """The width of the features ``model`` feeds its head: ``model.head.in_features``.

    Raises ValueError (naming the model ``name``) when the model has no ``embed()`` method or no
    head with ``in_features``, i.e. when it is not built like :class:`fastwnll.models.base.Classifier`.
    """
    width = getattr(getattr(model, "head", None), "in_features", None)
    if not callable(getattr(model, "embed", None)) or not isinstance(width, int):
        raise ValueError(
            f"{name}: the network ({type(model).__name__}) has no penultimate features to read: it needs "
            "an embed() method and a head with in_features, as the networks of fastwnll.models have"
        )
    return width


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, *, batch_size: int, name: str) -> torch.Tensor:
    """The head's input features of images ``x`` ``[N, C, H, W]`` (CPU or the model's device):
    ``[N, width]`` float32 on the CPU, computed ``batch_size`` rows at a time in eval mode (the
    model's train/eval flags are restored). Raises ValueError, naming ``name``, when ``embed()``
    returns anything but ``[rows, width]`` with ``width = model.head.in_features``."""
    width = feature_width(model, name)
    device = next(model.parameters()).device
    chunks = []
    with attack_mode(model):
        for start in range(0, x.shape[0], batch_size):
            rows = x[start : start + batch_size].to(device)
            out = model.embed(rows)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (rows.shape[0], width):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"{name}: the network's features have shape {shape} for {rows.shape[0]} images, "
                    f"but its head expects [{rows.shape[0]}, {width}]"
                )
            chunks.append(out.float().cpu())
    return torch.cat(chunks)


def wnll_head(model: nn.Module):
    """The model's first :class:`fastwnll.nn.WNLLHead` (None for a network with a plain linear head)."""
    heads = wnll_heads(model)
    return heads[0] if heads else None


def template_bank(
    target: Target, *, templates: int, batch_size: int, seed: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Labelled training features for the kNN-true shares: ``(features [M, width] float32 CPU,
    labels [M] int64 CPU, source)``.

    The WNLL head's own bank when the checkpoint has one (``source`` "head bank"); otherwise the
    features of ``templates`` training images, a fixed random subset seeded with ``seed`` (default:
    the training seed, the subset training itself would draw; ``source`` "training features").
    Raises ValueError when the bank's width is not the network's feature width.
    """
    model, name = target.model, target.name
    width = feature_width(model, name)
    head = wnll_head(model)
    if head is not None and head.num_templates:
        bank = head.template_features
        if bank.dim() != 2 or bank.shape[1] != width:
            raise ValueError(
                f"{name}: the WNLL template bank holds features of shape {tuple(bank.shape)}, but the "
                f"network's features have width {width}"
            )
        return bank.detach().float().cpu(), head.template_labels.detach().cpu(), "head bank"
    if isinstance(templates, bool) or not isinstance(templates, int) or templates < 1:
        raise ValueError(f"templates must be an integer >= 1, got {templates!r}")
    x, y = load_split(target.config, "train")
    generator = torch.Generator().manual_seed(target.config.seed if seed is None else seed)
    rows = torch.randperm(x.shape[0], generator=generator)[:templates]
    return embed(model, x[rows], batch_size=batch_size, name=name), y[rows], "training features"
