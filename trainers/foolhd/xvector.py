"""FoolHD's target: the x-vector TDNN speaker-identification network with its front end inside.

    waveform (8 kHz) -> Kaldi MFCC 30 -> energy VAD -> sliding CMN          (trainers/foolhd/frontend.py)
    -> input BN -> 5 TDNN layers, each conv - BN - ReLU - dropout 0.4:
       512 with context [-2..2] (kernel 5), 512 {-2,0,2} (kernel 3, dilation 2), 512 {-3,0,3} (kernel 3, dilation 3),
       512 {0}, 1500 {0}                                                      (15 frames seen, no padding, as Kaldi)
    -> attentive statistics pooling (a = softmax_t(tanh(v . h_t + b)); mean = sum a h, std = sqrt(sum a h^2 - mean^2
       + 1e-8)), 3000-d
    -> FC 512 (the x-vector) - BN - ReLU - dropout -> FC 512 - BN - ReLU - dropout -> FC N speakers (logits)

The front end runs per utterance (VAD keeps a different number of frames in each); in a training batch every item is
cut to the batch's fewest voiced frames so the TDNN runs once on the stack.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from trainers.foolhd.frontend import FrontEndConfig, features

# (kernel, dilation) per frame layer: contexts [-2..2], {-2,0,2}, {-3,0,3}, {0}, {0}
FRAME_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))
MIN_FRAMES = 1 + sum((k - 1) * d for k, d in FRAME_LAYERS)   # 15


class AttentiveStatsPool(nn.Module):
    def __init__(self, dim: int, attentive: bool = True):
        super().__init__()
        self.attention = nn.Linear(dim, 1) if attentive else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, 2D): attention-weighted mean and standard deviation (plain ones without attention)."""
        if self.attention is None:
            return torch.cat([h.mean(1), h.std(1)], dim=1)
        a = F.softmax(torch.tanh(self.attention(h)), dim=1)
        mean = (a * h).sum(1)
        std = torch.sqrt((a * h * h).sum(1) - mean * mean + 1e-8)
        return torch.cat([mean, std], dim=1)


class XVectorSID(nn.Module):
    """forward(wave (B, n)) -> logits (B, num_classes); `classify(feats)` from front-end features (B, T, D)."""

    def __init__(self, num_classes: int, front: FrontEndConfig | None = None, width: int = 512,
                 stats_width: int = 1500, embed_dim: int = 512, hidden: int = 512, dropout: float = 0.4,
                 attentive: bool = True):
        super().__init__()
        if num_classes < 2 or min(width, stats_width, embed_dim, hidden) < 1 or not 0 <= dropout < 1:
            raise ValueError(f"x-vector: need >= 2 classes, positive widths and dropout in [0, 1), got "
                             f"{num_classes} classes, widths {width}/{stats_width}/{embed_dim}/{hidden}, {dropout}")
        self.front = front or FrontEndConfig()
        self.num_classes = num_classes
        dims = [self.front.num_ceps] + [width] * 4 + [stats_width]
        self.input_bn = nn.BatchNorm1d(self.front.num_ceps)
        self.frames = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dims[i], dims[i + 1], k, dilation=d), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(),
                          nn.Dropout(dropout)) for i, (k, d) in enumerate(FRAME_LAYERS))
        self.pool = AttentiveStatsPool(stats_width, attentive)
        self.xvector = nn.Linear(2 * stats_width, embed_dim)
        self.after_xvector = nn.Sequential(nn.BatchNorm1d(embed_dim), nn.ReLU(), nn.Dropout(dropout))
        self.hidden = nn.Sequential(nn.Linear(embed_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                    nn.Dropout(dropout))
        self.output = nn.Linear(hidden, num_classes)

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, n) -> (B, T, D): per item MFCC, VAD, CMN; cut to the fewest voiced frames of the batch."""
        feats = [features(w, self.front)[0] for w in waves]
        t = min(f.shape[0] for f in feats)
        if t < MIN_FRAMES:
            raise ValueError(f"x-vector needs >= {MIN_FRAMES} voiced frames, an utterance has {t}")
        return torch.stack([f[:t] for f in feats])

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        h = self.input_bn(feats.transpose(1, 2))          # (B, D, T)
        for layer in self.frames:
            h = layer(h)
        return self.output(self.hidden(self.after_xvector(self.xvector(self.pool(h.transpose(1, 2))))))

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        """The 512-d x-vectors (before the BN-ReLU that follows them)."""
        h = self.input_bn(self.features(waves).transpose(1, 2))
        for layer in self.frames:
            h = layer(h)
        return self.xvector(self.pool(h.transpose(1, 2)))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(waves))


class IdentificationLearner(nn.Module):
    """What the one loop trains: forward(wave, label) -> (cross-entropy, correct, n)."""

    def __init__(self, net: XVectorSID):
        super().__init__()
        self.net = net

    def forward(self, wave: torch.Tensor, label: torch.Tensor):
        logits = self.net(wave)
        return F.cross_entropy(logits, label), (logits.argmax(1) == label).sum(), len(label)


def build_xvector(num_classes: int, front: FrontEndConfig | None = None, **kwargs) -> XVectorSID:
    return XVectorSID(num_classes, front, **kwargs)
