"""Classification heads (losses) built by name, OpenSphere style: a head owns its class weights
and `forward(x, y)` returns the scalar loss; `logits(x, y)` gives the logits for accuracy.

The registry is the explicit table below: every head is listed here, so its contents never depend
on which other module happened to be imported. A new head is a module of this package (margin
heads subclass `CosineMarginHead` and only define `target_logit(cos_y)`) plus its names here.
Its keyword arguments are the `head.*` config keys (`--set head.m=0.3`), which Tune sweeps.
"""
from __future__ import annotations

import inspect

from torch import nn

from trainers.heads.base import Head, SoftmaxHead
from trainers.heads.margin import ArcFaceHead, CosFaceHead, MarginScheduler
from trainers.heads.mask_proxy import (
    LeaveOneOutMaskProxyHead,
    LeaveOneOutMMPHead,
    MaskProxyHead,
    MultinomialMaskProxyHead,
)
from trainers.heads.sphereface import SphereFaceDetachedHead, SphereFaceHead, SphereFaceRHead
from trainers.heads.sphereface2 import SphereFace2Head

__all__ = ["HEADS", "Head", "MarginScheduler", "build_head", "canonical_heads", "head_defaults", "pk_group_size"]

# name -> class; the first name of a class is its canonical one (aliases follow it)
HEADS: dict[str, type[Head]] = {
    "softmax": SoftmaxHead,
    "arcface": ArcFaceHead, "aam": ArcFaceHead,
    "cosface": CosFaceHead, "am": CosFaceHead,
    "sphereface": SphereFaceHead, "asoftmax": SphereFaceHead,
    "spherefacer": SphereFaceRHead, "sphereface_r": SphereFaceRHead,
    "sphereface_detached": SphereFaceDetachedHead,
    "sphereface2": SphereFace2Head,
    "mask_proxy": MaskProxyHead, "mp": MaskProxyHead,
    "mmp": MultinomialMaskProxyHead, "multinomial_mask_proxy": MultinomialMaskProxyHead,
    # this project's own leave-one-out variants, not the published losses (see mask_proxy.py)
    "mask_proxy_loo": LeaveOneOutMaskProxyHead, "mmp_loo": LeaveOneOutMMPHead,
}


def canonical_heads() -> list[str]:
    """One name per head class (aliases dropped), in table order."""
    names, seen = [], set()
    for name, cls in HEADS.items():
        if cls not in seen:
            seen.add(cls)
            names.append(name)
    return names


def _head_class(name) -> type[Head]:
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of: {', '.join(sorted(HEADS))}")
    return HEADS[name]


def _keywords(cls: type[Head]) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "embed_dim", "num_classes")}


def build_head(name: str, embed_dim: int, num_classes: int, **kwargs) -> nn.Module:
    """Head by config name. Unknown names and keys fail here, before any data is read."""
    cls = _head_class(name)
    accepted = _keywords(cls)
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"head {name!r} got unknown argument {key!r}; "
                             f"accepted: {', '.join(accepted) or '(none)'}")
    return cls(embed_dim, num_classes, **kwargs)


def head_defaults(head_cfg: dict) -> dict:
    """The head config with every keyword argument of its class, given or default: what a run's
    resolved config records (`{name: arcface}` -> `{name: arcface, s: 32.0, m: 0.2, ...}`). A default
    of None that the head resolves itself (SphereFace2's m depends on the margin type) is read back
    from a head built with these arguments."""
    cls = _head_class(head_cfg.get("name"))
    given = {k: v for k, v in head_cfg.items() if k != "name"}
    resolved = {k: p.default for k, p in _keywords(cls).items() if p.default is not inspect.Parameter.empty}
    resolved.update(given)
    if any(v is None for v in resolved.values()):
        head = build_head(head_cfg["name"], 2, 2, **given)
        resolved = {k: getattr(head, k, None) if v is None else v for k, v in resolved.items()}
    return {"name": head_cfg["name"], **resolved}


def pk_group_size(head_cfg: dict) -> int | None:
    """K (utterances per class in every batch) for heads that need P x K batches, else None."""
    cls = HEADS.get(head_cfg.get("name"))
    if cls is None or not getattr(cls, "needs_pk_batches", False):
        return None
    return int(head_cfg.get("k", _keywords(cls)["k"].default))
