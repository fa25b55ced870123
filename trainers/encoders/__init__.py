"""Encoders (backbones) built by name: the speaker encoders take fbank batches (B, T, F), the face
backbone images (B, 3, H, W); all return embeddings (B, embed_dim). The head that turns embeddings
into a loss is built separately (trainers.heads).

The registry is the explicit table below, so its contents never depend on import order. A new
encoder is a module of this package with a builder `(feat_dim, embed_dim, **kwargs) -> nn.Module`
plus its name here; its keyword arguments are the `model.encoder_args` config keys.
"""
from __future__ import annotations

import inspect

import torch.nn as nn

from trainers.encoders.resnet import resnet18, resnet34
from trainers.encoders.sfnet import sfnet20
from trainers.encoders.tdnn import tdnn

ENCODERS = {"tdnn": tdnn, "resnet18": resnet18, "resnet34": resnet34, "sfnet20": sfnet20}
IMAGE_ENCODERS = ("sfnet20",)   # the backbones that take images (and an input_size)


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
