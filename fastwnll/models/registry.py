"""``build``: the paper's networks by name, each with its buffer block and a linear or WNLL head."""

from __future__ import annotations

from .base import Classifier, buffer_block
from .cnn import digits_cnn_trunk, mnist_cnn_trunk
from .heads import make_head
from .resnet import DEPTHS, resnet_trunk

MODELS = tuple(f"resnet{d}" for d in DEPTHS) + ("mnist_cnn", "digits_cnn")
# name -> (trunk builder taking in_channels, trunk output width, default in_channels)
_TRUNKS = {
    **{f"resnet{d}": ((lambda c, d=d: resnet_trunk(d, c)), 64, 3) for d in DEPTHS},
    "mnist_cnn": (mnist_cnn_trunk, 200, 1),
    "digits_cnn": (digits_cnn_trunk, 64, 1),
}


def build(
    name: str, num_classes: int = 10, *, head: str = "linear", in_channels: int | None = None, **head_kwargs
) -> Classifier:
    """A network of :data:`MODELS` as a :class:`~fastwnll.models.base.Classifier` (CPU, float32).

    - ``resnet20/32/44/56/110``: CIFAR ResNets (option-B shortcuts, see :mod:`fastwnll.models.resnet`),
      inputs ``[N, 3, H, W]`` (32x32 for CIFAR-10), trunk -> 64 features, buffer ``Linear(64, 64) + ReLU``.
    - ``mnist_cnn``: the paper's MNIST CNN, inputs ``[N, 1, 28, 28]``, trunk -> 200 features,
      buffer ``Linear(200, 200) + ReLU``.
    - ``digits_cnn``: the same style for 8x8 images, inputs ``[N, 1, 8, 8]``, trunk -> 64 features,
      buffer ``Linear(64, 64) + ReLU``.

    Args:
        name: one of :data:`MODELS`.
        num_classes: number of classes (>= 2).
        head: "linear" (``nn.Linear``, logits) or "wnll" (:class:`fastwnll.nn.WNLLHead`, log-probabilities).
        in_channels: input channels (default 3 for the ResNets, 1 for the CNNs).
        head_kwargs: options of the WNLL head (``k``, ``k_sigma``, ``template_fraction``, ``gradient``, ...).
    """
    if name not in _TRUNKS:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    make_trunk, width, default_channels = _TRUNKS[name]
    if in_channels is None:
        in_channels = default_channels
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    classifier_head = make_head(head, width, num_classes, **head_kwargs)
    return Classifier(make_trunk(in_channels), buffer_block(width), classifier_head)
