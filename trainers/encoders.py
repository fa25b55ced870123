"""Speaker encoders built by name: x-vector TDNN and (thin) ResNet, WeSpeaker-style.

All take fbank batches (B, T, F) with any T and return embeddings (B, embed_dim); the head that
turns embeddings into a loss lives in heads.py. Layer names echo WeSpeaker's (frame_1..5,
layer1..4, seg_1/seg_2) to ease comparison; the embedding layers sit under `segment.`.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F


def stats_pool(x: torch.Tensor) -> torch.Tensor:
    """TSTP: concat(mean, std) over the last (time) axis, all other axes flattened.

    Unbiased variance plus 1e-7 inside the sqrt as WeSpeaker; a single frame would make the
    unbiased variance NaN, so then the biased one (0) is used instead.
    """
    var = torch.var(x, dim=-1, correction=1 if x.shape[-1] > 1 else 0)
    return torch.cat([x.mean(dim=-1).flatten(1), torch.sqrt(var + 1e-7).flatten(1)], dim=1)


class TdnnLayer(nn.Module):
    """Conv1d -> ReLU -> BN without affine, the order and BN of Kaldi's / WeSpeaker's x-vector."""

    def __init__(self, in_dim: int, out_dim: int, context: int, dilation: int = 1):
        super().__init__()
        self.conv_1d = nn.Conv1d(in_dim, out_dim, context, dilation=dilation)
        self.bn = nn.BatchNorm1d(out_dim, affine=False)

    def forward(self, x):
        return self.bn(F.relu(self.conv_1d(x)))


class SegmentLayers(nn.Module):
    """Pooled stats -> seg_1 [-> ReLU -> BN(affine=False) -> seg_2]; the last output is the
    embedding (as WeSpeaker, which feeds the head with its second output when there are two)."""

    def __init__(self, in_dim: int, embed_dim: int, two_emb_layer: bool):
        super().__init__()
        self.seg_1 = nn.Linear(in_dim, embed_dim)
        self.two_emb_layer = two_emb_layer
        if two_emb_layer:
            self.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
            self.seg_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, stats):
        out = self.seg_1(stats)
        return self.seg_2(self.seg_bn_1(F.relu(out))) if self.two_emb_layer else out


class XVector(nn.Module):
    """x-vector TDNN (Snyder et al. 2018, WeSpeaker XVEC): 5 frame layers, stats pooling,
    two segment layers (the paper's segment6/7; two_emb_layer=False keeps only one)."""

    # (context, dilation) of the frame layers; together they see 15 frames.
    FRAME_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))
    MIN_FRAMES = 1 + sum((c - 1) * d for c, d in FRAME_LAYERS)

    def __init__(self, feat_dim: int = 80, embed_dim: int = 256, hid_dim: int = 512,
                 stats_dim: int = 1500, two_emb_layer: bool = True):
        super().__init__()
        self.embed_dim = embed_dim
        dims = [feat_dim] + [hid_dim] * 4 + [stats_dim]
        for i, (c, d) in enumerate(self.FRAME_LAYERS):  # frame_1..frame_5
            setattr(self, f"frame_{i + 1}", TdnnLayer(dims[i], dims[i + 1], c, d))
        self.segment = SegmentLayers(2 * stats_dim, embed_dim, two_emb_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] < self.MIN_FRAMES:  # unpadded convs: fail with the reason, not a conv error
            raise ValueError(f"TDNN needs at least {self.MIN_FRAMES} frames, got {x.shape[1]}")
        out = x.transpose(1, 2)  # (B, F, T): conv over time
        for i in range(len(self.FRAME_LAYERS)):
            out = getattr(self, f"frame_{i + 1}")(out)
        return self.segment(stats_pool(out))


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


def tdnn(feat_dim: int = 80, embed_dim: int = 256, hid_dim: int = 512,
         stats_dim: int = 1500, two_emb_layer: bool = True) -> nn.Module:
    return XVector(feat_dim, embed_dim, hid_dim, stats_dim, two_emb_layer)


def resnet18(feat_dim: int = 80, embed_dim: int = 256, m_channels: int = 32,
             two_emb_layer: bool = False) -> nn.Module:
    return ResNet([2, 2, 2, 2], feat_dim, embed_dim, m_channels, two_emb_layer)


def resnet34(feat_dim: int = 80, embed_dim: int = 256, m_channels: int = 32,
             two_emb_layer: bool = False) -> nn.Module:
    return ResNet([3, 4, 6, 3], feat_dim, embed_dim, m_channels, two_emb_layer)


ENCODERS = {"tdnn": tdnn, "resnet18": resnet18, "resnet34": resnet34}


def build_encoder(name: str, feat_dim: int = 80, embed_dim: int = 256, **kwargs) -> nn.Module:
    """Encoder by config name; bad names/keys fail here, before any data is read."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of: {', '.join(sorted(ENCODERS))}")
    accepted = [p for p in inspect.signature(ENCODERS[name]).parameters
                if p not in ("feat_dim", "embed_dim")]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"encoder {name!r} got unknown argument {key!r}; "
                             f"accepted: {', '.join(accepted)}")
    if feat_dim <= 0 or embed_dim <= 0:
        raise ValueError(f"feat_dim and embed_dim must be positive, got {feat_dim}, {embed_dim}")
    return ENCODERS[name](feat_dim=feat_dim, embed_dim=embed_dim, **kwargs)
