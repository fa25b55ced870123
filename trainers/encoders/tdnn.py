"""x-vector TDNN (Kaldi / WeSpeaker layer order): fbank (B, T, F) -> embedding (B, embed_dim).
Layer names echo WeSpeaker's (frame_1..5, seg_1/seg_2); the embedding layers sit under `segment.`."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.encoders.pooling import SegmentLayers, stats_pool


class TdnnLayer(nn.Module):
    """Conv1d -> ReLU -> BN without affine, the order and BN of Kaldi's / WeSpeaker's x-vector."""

    def __init__(self, in_dim: int, out_dim: int, context: int, dilation: int = 1):
        super().__init__()
        self.conv_1d = nn.Conv1d(in_dim, out_dim, context, dilation=dilation)
        self.bn = nn.BatchNorm1d(out_dim, affine=False)

    def forward(self, x):
        return self.bn(F.relu(self.conv_1d(x)))


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


def tdnn(feat_dim: int = 80, embed_dim: int = 256, hid_dim: int = 512,
         stats_dim: int = 1500, two_emb_layer: bool = True) -> nn.Module:
    return XVector(feat_dim, embed_dim, hid_dim, stats_dim, two_emb_layer)

