"""The paper's MNIST CNN (docs/design.md, section 4.1) and a smaller CNN of the same style for 8x8 digits."""

from __future__ import annotations

from torch import nn

from .base import InputCheck


def _conv_stack(channels: tuple[int, int, int, int], in_channels: int, padding: int) -> list[nn.Module]:
    c1, c2, c3, c4 = channels
    return [
        nn.Conv2d(in_channels, c1, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c2, c3, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
    ]


def _he_init(trunk: nn.Sequential) -> nn.Sequential:
    """He-normal (fan-in, ReLU gain) weights and zero biases for the convolutions and linear layers:
    with PyTorch's default initialization this plain ReLU stack starts with a vanishing signal and
    stalls for several epochs."""
    for m in trunk.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return trunk


def mnist_cnn_trunk(in_channels: int = 1) -> nn.Sequential:
    """MNIST CNN up to the buffer block: images ``[N, in_channels, 28, 28]`` -> ``[N, 200]``.

    Four unpadded 3x3 convolutions (32, 32, max-pool 2, 64, 64, max-pool 2; 28 -> 26 -> 24 -> 12 ->
    10 -> 8 -> 4, so 4*4*64 = 1024 features), each followed by ReLU, then ``Linear(1024, 200)``,
    ReLU, dropout 0.5."""
    return _he_init(
        nn.Sequential(
            InputCheck("mnist_cnn", in_channels, (28, 28)),
            *_conv_stack((32, 32, 64, 64), in_channels, padding=0),
            nn.Linear(4 * 4 * 64, 200),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )
    )


def digits_cnn_trunk(in_channels: int = 1) -> nn.Sequential:
    """The MNIST CNN's layout scaled down for 8x8 digits: images ``[N, in_channels, 8, 8]`` -> ``[N, 64]``.

    Four padded 3x3 convolutions (16, 16, max-pool 2, 32, 32, max-pool 2; 8 -> 4 -> 2, so
    2*2*32 = 128 features), each followed by ReLU, then ``Linear(128, 64)``, ReLU, dropout 0.5."""
    return _he_init(
        nn.Sequential(
            InputCheck("digits_cnn", in_channels, (8, 8)),
            *_conv_stack((16, 16, 32, 32), in_channels, padding=1),
            nn.Linear(2 * 2 * 32, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )
    )
