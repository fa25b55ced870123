"""Voice-guided face morphing (arXiv 2107.07988): a guided face autoencoder whose decoder a gating controller
modulates from a voice embedding, and the face CNNs that score it.

The paper gives the parts (guided autoencoder, gating controller driven by the voice) but not their layers: the
layers below are this project's design (docs/morph.md). Faces are 64 x 64 RGB in [-1, 1] as in the group's
earlier voice-to-face code.

    encoder   conv4x4/2 (3 -> c) - LReLU, then conv4x4/2 - BN - LReLU doubling the channels down to 4 x 4
    decoder   convT4x4/2 - BN - ReLU halving the channels, each block's output modulated, then convT4x4/2 -> tanh
    gates     per decoder block l:  h_l <- h_l * g_l(v),  g_l = sigmoid(W_l u + b_l) in (0, 1)^C_l,
              u = LReLU(W_0 v + b_0) (the controller's shared hidden layer), one gate per channel
    film      (option) h_l <- h_l * (1 + gamma_l(v)) + beta_l(v), gamma and beta linear in u
    no voice  gates fixed at 1 (film: gamma = beta = 0): the plain autoencoder, the evaluation's no-voice control
"""
from __future__ import annotations

import torch
from torch import nn

CONTROLLERS = ("gates", "film")


class GatingController(nn.Module):
    """Voice embedding -> per-channel modulation of each decoder block (see the module docstring)."""

    def __init__(self, voice_dim: int, channels: list[int], hidden: int = 128, kind: str = "gates"):
        super().__init__()
        if kind not in CONTROLLERS:
            raise ValueError(f"unknown morph controller {kind!r}; choose from {', '.join(CONTROLLERS)}")
        self.kind, self.channels = kind, list(channels)
        self.hidden = nn.Sequential(nn.Linear(voice_dim, hidden), nn.LeakyReLU(0.2))
        per = 2 if kind == "film" else 1
        self.out = nn.Linear(hidden, per * sum(channels))

    def forward(self, v: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """[(scale, shift)] per decoder block, each (B, C_l, 1, 1); shift is None for gates."""
        raw = self.out(self.hidden(v))
        if self.kind == "gates":
            parts = torch.sigmoid(raw).split(self.channels, dim=1)
            return [(g[..., None, None], None) for g in parts]
        gamma, beta = raw.chunk(2, dim=1)
        return [(1 + g[..., None, None], b[..., None, None])
                for g, b in zip(gamma.split(self.channels, dim=1), beta.split(self.channels, dim=1))]


class MorphAutoencoder(nn.Module):
    """The guided autoencoder: forward(x, v) -> morph of face x toward the owner of voice embedding v;
    v = None gives the no-voice control (gates at 1)."""

    def __init__(self, voice_dim: int, width: int = 32, image_size: int = 64, controller: str = "gates",
                 hidden: int = 128):
        super().__init__()
        if image_size < 16 or image_size & (image_size - 1):
            raise ValueError(f"model.image_size must be a power of 2 >= 16, got {image_size}")
        steps = image_size.bit_length() - 3          # halvings down to 4 x 4
        chans = [width * 2 ** i for i in range(steps)]
        enc = [nn.Conv2d(3, chans[0], 4, 2, 1), nn.LeakyReLU(0.2)]
        for a, b in zip(chans, chans[1:]):
            enc += [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        self.encoder = nn.Sequential(*enc)
        rev = chans[::-1]
        self.blocks = nn.ModuleList(nn.Sequential(nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU())
                                    for a, b in zip(rev, rev[1:]))
        self.to_rgb = nn.Sequential(nn.ConvTranspose2d(rev[-1], 3, 4, 2, 1), nn.Tanh())
        self.controller = GatingController(voice_dim, rev[1:], hidden, controller)

    def forward(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(x)
        mods = self.controller(v) if v is not None else [(None, None)] * len(self.blocks)
        for block, (scale, shift) in zip(self.blocks, mods):
            h = block(h)
            if scale is not None:
                h = h * scale
            if shift is not None:
                h = h + shift
        return self.to_rgb(h)


class FaceCNN(nn.Module):
    """Face classifier / embedder on 64 x 64 faces: four conv3x3-BN-ReLU-maxpool blocks (width, 2w, 4w, 8w),
    global average pooling, a linear embedding, a linear classifier. The identity loss's frozen classifier and
    the retrieval embedder are two of these, trained separately (other seed, other width)."""

    def __init__(self, num_classes: int, width: int = 32, embed_dim: int = 128):
        super().__init__()
        layers, c = [], 3
        for i in range(4):
            w = width * 2 ** i
            layers += [nn.Conv2d(c, w, 3, 1, 1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Linear(c, embed_dim)
        self.classify = nn.Linear(embed_dim, num_classes)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(torch.relu(self.embedding(x)))
