"""The CIFAR ResNets of He et al. (2016, "Deep residual learning", section 4.2): depth 6n+2, three
stages of n basic blocks with 16, 32 and 64 channels, global average pooling.

Shortcuts are option B: identity, except where a block changes the resolution and width
(the first block of stages 2 and 3), where the shortcut is a strided 1x1 convolution + batch norm.
This is what the paper's own code (BaoWangMath/DNN-DataDependentActivation, ``resnet.py``) uses;
He et al.'s CIFAR experiments used option A (zero-padded identity), which has 2,752 fewer
parameters at every depth (ResNet20 with a linear 64->10 classifier: 269,722 with option A, 272,474
here; 276,634 with the buffer block).
"""

from __future__ import annotations

import math

from torch import nn

from .base import InputCheck

DEPTHS = (20, 32, 44, 56, 110)
WIDTHS = (16, 32, 64)


class BasicBlock(nn.Module):
    """``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``;
    ``[N, c_in, H, W] -> [N, c_out, H/stride, W/stride]``."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet_trunk(depth: int, in_channels: int = 3) -> nn.Sequential:
    """CIFAR ResNet-``depth`` up to the global average pool: images ``[N, in_channels, H, W]`` (any
    size; 32x32 for CIFAR) -> features ``[N, 64]``. Convolutions get He-normal (fan-out) weights."""
    if depth not in DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {DEPTHS}, got {depth}")
    blocks_per_stage = (depth - 2) // 6
    layers: list[nn.Module] = [
        InputCheck(f"resnet{depth}", in_channels),
        nn.Conv2d(in_channels, WIDTHS[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(WIDTHS[0]),
        nn.ReLU(inplace=True),
    ]
    c_in = WIDTHS[0]
    for stage, width in enumerate(WIDTHS):
        for b in range(blocks_per_stage):
            layers.append(BasicBlock(c_in, width, 2 if stage > 0 and b == 0 else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    trunk = nn.Sequential(*layers)
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return trunk
