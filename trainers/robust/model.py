"""The CRP paper's classifiers (as in its official code, MLSpeech/CRP), each behind a normalization layer.

Inputs are pixels in [0, 1]; (x - mean) / std per channel is the network's first layer, so attacks, their
epsilon and the training perturbations all live in pixel space [0, 1].

    mnist_net   conv5x5(32, pad 2)-ReLU-maxpool2 - conv5x5(64, pad 2)-ReLU-maxpool2 - FC1024-ReLU-dropout 0.5 - FC
                (the Madry MNIST net: 3,274,634 parameters for 10 classes)
    resnet18    the CIFAR-style ResNet-18 (3x3 stem, 4 stages of 2 basic blocks, 64-128-256-512 channels), with
                the official code's details: stem padding 3 (32 -> 34 pixels), dropout 0.3 before a 4x4
                average pool. stem_padding=1 gives the usual ResNet-18 (same parameters: 11,173,962).
    wrn         Wide ResNet depth-widen (28-10 by default: 36.5M parameters), pre-activation blocks with biased
                convolutions and dropout 0.1 between their convolutions, as the official code's copy of
                meliketoy/wide-resnet.pytorch (its last BatchNorm keeps momentum 0.9: Torch7's convention
                carried over, kept for faithfulness).
`width` scales every channel count (1.0 = the paper's; 0.25 for CPU demos).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainers.encoders.resnet import BasicBlock  # the same post-activation block (3x3-BN-ReLU-3x3-BN + shortcut)

MODELS = ("mnist_net", "resnet18", "wrn")
# per-channel mean / std of the training pixels in [0, 1], as the official code's configs
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "svhn": ((0.4376821, 0.4437697, 0.47280442), (0.19803012, 0.20101562, 0.19703614)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}


class Normalize(nn.Module):
    """(x - mean) / std per channel; buffers, so they travel with the weights and to the device."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class MnistNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0, image_size: int = 28,
                 dropout: float = 0.5):
        super().__init__()
        c1, c2, hidden = _w(32, width), _w(64, width), _w(1024, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(c2 * (image_size // 4) ** 2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), self.dropout, self.training)
        return self.fc2(x)


class ResNet18(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, stem_padding: int = 3,
                 dropout: float = 0.3):
        super().__init__()
        widths = [_w(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, stem_padding, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(cin, c, stride), BasicBlock(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, num_classes)
        self.dropout = dropout

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.dropout(out, self.dropout, self.training)
        # the official code pools a 4x4 window (the whole map at 32 px with padding 1; its top-left 4x4 of
        # 5x5 with the default padding 3); adaptive pooling would change the faithful model
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride))

    def forward(self, x):
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        return self.conv2(F.relu(self.bn2(out))) + self.shortcut(x)


class WideResNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: float = 1.0, depth: int = 28,
                 widen: int = 10, dropout: float = 0.1):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"model.depth of a Wide ResNet must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        stages = [_w(16, width)] + [_w(c * widen, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, stages[0], 3, padding=1)
        blocks, cin = [], stages[0]
        for i, c in enumerate(stages[1:]):
            for j in range(n):
                blocks.append(WideBlock(cin, c, (1 if i == 0 else 2) if j == 0 else 1, dropout))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin, momentum=0.9)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def build_classifier(name: str, normalization: str, num_classes: int, in_channels: int, image_size: int,
                     width: float = 1.0, **kwargs) -> nn.Sequential:
    """Normalize -> the named network; `normalization` names a dataset's statistics (or "none")."""
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; choose from {', '.join(MODELS)}")
    if not width > 0:
        raise ValueError(f"model.width must be > 0, got {width}")
    if normalization == "none":
        mean, std = (0.0,) * in_channels, (1.0,) * in_channels
    elif normalization in NORMALIZATION:
        mean, std = NORMALIZATION[normalization]
    else:
        raise ValueError(f"unknown model.normalization {normalization!r}; choose from "
                         f"{', '.join(NORMALIZATION)} or none")
    if len(mean) != in_channels:
        raise ValueError(f"model.normalization {normalization} has {len(mean)} channel(s), the images have "
                         f"{in_channels}")
    if name == "mnist_net":
        net = MnistNet(in_channels, num_classes, width, image_size, **kwargs)
    elif name == "resnet18":
        net = ResNet18(in_channels, num_classes, width, **kwargs)
    else:
        net = WideResNet(in_channels, num_classes, width, **kwargs)
    return nn.Sequential(Normalize(mean, std), net)
