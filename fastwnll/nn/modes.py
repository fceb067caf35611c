"""``eval_mode``: a model in eval mode for the duration of a block, every train/eval flag restored after."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block; on exit (also after an exception) the ``training`` flag of
    every submodule is put back exactly as it was, so a model with a mix of training and frozen
    parts (the paper's stage 2) comes back unchanged. Yields ``model``."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training
