"""Face backbone `sfnet20`: the 20-layer residual CNN of SphereFace (Liu et al. 2017, "SphereFace: Deep Hypersphere
Embedding for Face Recognition", Table 2, "64-CNN"-style SFNet-20): four stages, each a 3x3 conv
of stride 2 followed by 1 / 2 / 4 / 1 residual units of two 3x3 convs, PReLU after every conv,
identity shortcuts, channels 64 / 128 / 256 / 512, then a fully connected embedding layer over
the flattened last feature map. 4 + 2 * (1 + 2 + 4 + 1) = 20 conv layers. `width` scales the
channels (0.25 -> 16/32/64/128, for CPU demos; 1.0 is the paper's net). The paper's net has no
batch norm; `batch_norm=True` adds it after every conv (as later SFNet variants do).

Input: (B, 3, H, W) float images, e.g. (uint8 - 127.5) / 128 as SphereFace; H and W must equal
`input_size` (the FC layer is sized for it; 112x96 in the paper, square here by default).
Output: (B, embed_dim). `feat_dim` is accepted and ignored so `build_encoder(name, feat_dim=...,
embed_dim=...)` works as for the speaker encoders.
"""
from __future__ import annotations

import torch
import torch.nn as nn

SFNET20_UNITS = (1, 2, 4, 1)
SFNET_CHANNELS = (64, 128, 256, 512)


def _conv(cin: int, cout: int, stride: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, 1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.PReLU(cout))
    return layers


class SphereResidualUnit(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))): SphereFace's residual unit (identity shortcut)."""

    def __init__(self, channels: int, batch_norm: bool = False):
        super().__init__()
        self.body = nn.Sequential(*_conv(channels, channels, 1, batch_norm), *_conv(channels, channels, 1, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SFNet(nn.Module):
    def __init__(self, units=SFNET20_UNITS, embed_dim: int = 512, width: float = 0.25,
                 input_size: int | tuple[int, int] = 112, in_channels: int = 3, batch_norm: bool = False):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if h < 16 or w < 16:
            raise ValueError(f"input_size must be >= 16 pixels (4 stride-2 stages), got {h}x{w}")
        self.embed_dim, self.input_size = embed_dim, (h, w)
        channels = [max(1, int(round(c * width))) for c in SFNET_CHANNELS]
        cin = in_channels
        for i, (n, cout) in enumerate(zip(units, channels)):  # stage1..stage4
            setattr(self, f"stage{i + 1}", nn.Sequential(
                *_conv(cin, cout, 2, batch_norm), *[SphereResidualUnit(cout, batch_norm) for _ in range(n)]))
            cin = cout
        for _ in range(len(units)):  # output size of a k3/s2/p1 conv
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        self.fc = nn.Linear(cin * h * w, embed_dim)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")  # PReLU starts at 0.25
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            for unit in stage:
                if isinstance(unit, SphereResidualUnit):  # residual branches start small: stable deep nets without BN
                    last = [m for m in unit.body if isinstance(m, nn.Conv2d)][-1]
                    last.weight.data.mul_(0.1)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(f"SFNet expects images (B, C, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {tuple(x.shape)}; build it with input_size=(H, W) of your images")
        out = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.fc(out.flatten(1))


def sfnet20(feat_dim: int = 3, embed_dim: int = 512, width: float = 0.25,
            input_size: int | tuple[int, int] = 112, in_channels: int = 3, batch_norm: bool = False) -> nn.Module:
    """SphereFace SFNet-20 (see module doc); `feat_dim` is ignored."""
    del feat_dim
    return SFNet(SFNET20_UNITS, embed_dim, width, input_size, in_channels, batch_norm)

