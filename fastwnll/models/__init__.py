"""The paper's networks (CIFAR ResNets, the MNIST CNN, a digits CNN) with a linear or WNLL head
(:func:`build`), and :func:`attach_head` to give any classifier a ``WNLLHead``."""

from __future__ import annotations

from .base import Classifier
from .heads import attach_head
from .registry import MODELS, build

__all__ = ["MODELS", "Classifier", "attach_head", "build"]
