"""WeSpeaker's ResNet speaker encoders (resnet18, resnet34): fbank (B, T, F) as a 1-channel image
-> embedding (B, embed_dim). Layer names echo WeSpeaker's (layer1..4, seg_1/seg_2)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.encoders.pooling import SegmentLayers, stats_pool


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """WeSpeaker ResNet: fbank as a 1-channel image (B, 1, F, T), stem stride 1, stage strides
    1, 2, 2, 2 (time and frequency both /8), TSTP over time of channel x freq, linear embedding.

    m_channels=32 is WeSpeaker's width; 16 gives voxceleb_trainer's "thin" ResNet width.
    two_emb_layer is off by default, as in WeSpeaker's ResNet and its VoxCeleb configs.
    """

    def __init__(self, num_blocks, feat_dim: int = 80, embed_dim: int = 256,
                 m_channels: int = 32, two_emb_layer: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.conv1 = nn.Conv2d(1, m_channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        in_planes = m_channels
        for i, (n, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):  # layer1..layer4
            planes = m_channels * 2 ** i
            blocks = [BasicBlock(in_planes, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        freq = feat_dim
        for _ in range(3):  # output size of a k3/s2/p1 conv; exact for any feat_dim
            freq = (freq - 1) // 2 + 1
        self.segment = SegmentLayers(2 * in_planes * freq, embed_dim, two_emb_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.transpose(1, 2).unsqueeze(1))))  # (B, 1, F, T) in
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, C, F/8, T/8)
        return self.segment(stats_pool(out))


def resnet18(feat_dim: int = 80, embed_dim: int = 256, m_channels: int = 32,
             two_emb_layer: bool = False) -> nn.Module:
    return ResNet([2, 2, 2, 2], feat_dim, embed_dim, m_channels, two_emb_layer)


def resnet34(feat_dim: int = 80, embed_dim: int = 256, m_channels: int = 32,
             two_emb_layer: bool = False) -> nn.Module:
    return ResNet([3, 4, 6, 3], feat_dim, embed_dim, m_channels, two_emb_layer)

