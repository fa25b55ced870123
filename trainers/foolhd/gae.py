"""FoolHD's attack model: a gated convolutional autoencoder on the MDCT of the utterance.

    x (B, n) -> X = MDCT(x) (B, 320, T) -> Z = (X - mean(X)) / std(X)  (one scalar mean and std of the utterance)
    encoder: 3 gated layers 1 -> 64 -> 64 -> 64; concat Z (65 channels); decoder: 4 gated layers 65 -> 64 -> 64
    -> 64 -> 1
    gated layer: Conv3x3(h) * sigmoid(Conv3x3_gate(h)), then BatchNorm2d and dropout (0.001), after every layer
    Y = iMDCT(out * std(X) + mean(X)), rescaled to the input's peak: y = max|x| * Y / max|Y|

With 64 channels that is 373,636 parameters (tests/test_foolhd_model.py derives it by hand).
"""
from __future__ import annotations

import torch
from torch import nn

from trainers.foolhd.mdct import MDCT


class GatedConv2d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.gate = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(h) * torch.sigmoid(self.gate(h))


def _stack(channels: list[int], dropout: float, batch_norm: bool) -> nn.Sequential:
    layers = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        layers.append(GatedConv2d(cin, cout))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        if dropout:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class GatedAutoEncoder(nn.Module):
    def __init__(self, channels: int = 64, encoder_layers: int = 3, decoder_layers: int = 4, dropout: float = 0.001,
                 batch_norm: bool = True, frame_length: int = 640, alpha: float = 4.0):
        super().__init__()
        if channels < 1 or encoder_layers < 1 or decoder_layers < 1 or not 0 <= dropout < 1:
            raise ValueError(f"autoencoder: channels and layers >= 1, dropout in [0, 1); got {channels}, "
                             f"{encoder_layers}/{decoder_layers}, {dropout}")
        self.mdct = MDCT(frame_length, alpha)
        self.encoder = _stack([1] + [channels] * encoder_layers, dropout, batch_norm)
        self.decoder = _stack([channels + 1] + [channels] * (decoder_layers - 1) + [1], dropout, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coeffs = self.mdct(x)                                   # (B, M, T)
        mean, std = coeffs.mean(), coeffs.std()
        z = ((coeffs - mean) / std).unsqueeze(1)                # (B, 1, M, T)
        out = self.decoder(torch.cat([z, self.encoder(z)], dim=1)).squeeze(1)
        y = self.mdct.inverse(out * std + mean, x.shape[-1])
        return x.abs().amax(-1, keepdim=True) * y / y.abs().amax(-1, keepdim=True).clamp_min(1e-12)
