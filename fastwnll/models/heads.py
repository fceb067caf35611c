"""Output layers: a linear or WNLL head for a new model, and swapping the final layer of an existing one."""

from __future__ import annotations

import torch
from torch import nn

HEADS = ("linear", "wnll")


def make_head(head: str, in_features: int, num_classes: int, **head_kwargs) -> nn.Module:
    """``nn.Linear(in_features, num_classes)`` for ``head="linear"`` (no keyword arguments), or
    ``fastwnll.nn.WNLLHead(in_features, num_classes, **head_kwargs)`` for ``head="wnll"``."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if head == "linear":
        if head_kwargs:
            raise TypeError(f"head='linear' takes no head options, got {sorted(head_kwargs)} (they are WNLLHead's)")
        return nn.Linear(in_features, num_classes)
    from fastwnll.nn.head import WNLLHead

    return WNLLHead(in_features, num_classes, **head_kwargs)


def attach_head(model: nn.Module, attr: str = "fc", head: str = "wnll", **head_kwargs) -> nn.Module:
    """Swap the final layer of a classifier in place, keeping its weights.

    - ``head="wnll"``: the ``nn.Linear`` at ``attr`` becomes a ``WNLLHead`` with the same
      ``in_features``, ``out_features``, device and dtype whose linear layer (used in linear mode and
      by the surrogate gradient) starts from the old layer's weights and bias (zero bias if it had none).
      The new layer takes the old one's train/eval flag.
    - ``head="linear"``: the ``WNLLHead`` at ``attr`` becomes an ``nn.Linear`` holding its linear
      layer's weights (``head_kwargs`` not allowed).

    Example: ``attach_head(torchvision.models.resnet18(num_classes=10), "fc")``.

    Args:
        model: any ``nn.Module``.
        attr: the layer's dotted path inside ``model`` (``"fc"``, ``"classifier.6"``, ``"head"``).
        head: "wnll" or "linear".
        head_kwargs: WNLLHead options (``k``, ``k_sigma``, ``template_fraction``, ``gradient``, ...).
    Returns:
        ``model`` itself.
    """
    from fastwnll.nn.head import WNLLHead

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    parent_path, _, name = attr.rpartition(".")
    try:
        parent = model.get_submodule(parent_path)
        old = parent.get_submodule(name)
    except AttributeError:
        raise AttributeError(f"{type(model).__name__} has no submodule {attr!r}") from None
    if head == "wnll":
        if not isinstance(old, nn.Linear):
            raise TypeError(f"attach_head(head='wnll') replaces an nn.Linear, but {attr!r} is a {type(old).__name__}")
        new = WNLLHead(
            old.in_features, old.out_features, device=old.weight.device, dtype=old.weight.dtype, **head_kwargs
        )
        source = old
    else:
        if not isinstance(old, WNLLHead):
            raise TypeError(f"attach_head(head='linear') replaces a WNLLHead, but {attr!r} is a {type(old).__name__}")
        if head_kwargs:
            raise TypeError(f"head='linear' takes no head options, got {sorted(head_kwargs)}")
        source = old.linear
        new = nn.Linear(source.in_features, source.out_features, device=source.weight.device, dtype=source.weight.dtype)
    target = new.linear if head == "wnll" else new
    with torch.no_grad():
        target.weight.copy_(source.weight)
        if source.bias is None:
            target.bias.zero_()
        else:
            target.bias.copy_(source.bias)
    new.train(old.training)
    setattr(parent, name, new)
    return model
