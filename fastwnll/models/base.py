"""The structure every model of :mod:`fastwnll.models` shares: trunk -> buffer block -> head."""

from __future__ import annotations

import torch
from torch import nn


class InputCheck(nn.Module):
    """Identity layer that rejects inputs a model cannot take, with a message naming the model.

    Args:
        model: the model's name for the messages.
        channels: the number of input channels C.
        size: the required ``(H, W)``, or None for any size.
    """

    def __init__(self, model: str, channels: int, size: tuple[int, int] | None = None):
        super().__init__()
        self.model, self.channels, self.size = model, channels, size

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, C, H, W]`` floating point (any device), returned unchanged."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                f"{self.model} expects a floating-point image tensor, got "
                f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        hw = "H, W" if self.size is None else f"{self.size[0]}, {self.size[1]}"
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"{self.model} expects images of shape [N, {self.channels}, {hw}], got {list(x.shape)}")
        if self.size is not None and tuple(x.shape[2:]) != tuple(self.size):
            raise ValueError(f"{self.model} expects images of shape [N, {self.channels}, {hw}], got {list(x.shape)}")
        return x


class Classifier(nn.Module):
    """``forward(x) = head(buffer(trunk(x)))``.

    Attributes:
        trunk: images ``[N, C, H, W]`` -> features ``[N, F]`` (checks its input; see :class:`InputCheck`).
        buffer: the buffer block ``[N, F] -> [N, embed_dim]`` (``Linear + ReLU``), the only part
            the paper's stage 2 trains.
        head: ``nn.Linear(embed_dim, num_classes)`` (logits) or :class:`fastwnll.nn.WNLLHead`
            (log-probabilities).
    """

    def __init__(self, trunk: nn.Module, buffer: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk, self.buffer, self.head = trunk, buffer, head

    @property
    def embed_dim(self) -> int:
        """Width of the head's input features."""
        return self.head.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` -> the head's input features ``[N, embed_dim]`` (same device and dtype)."""
        return self.buffer(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` -> class scores ``[N, num_classes]`` (a WNLL head in training
        mode returns its query rows only; see :class:`fastwnll.nn.WNLLHead`)."""
        return self.head(self.embed(x))


def buffer_block(width: int) -> nn.Sequential:
    """The buffer block ``Linear(width, width) + ReLU`` (docs/design.md, section 4.1)."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True))
