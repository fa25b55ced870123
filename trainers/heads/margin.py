"""Additive margins (ArcFace / AAM, CosFace / AM-Softmax) and WeSpeaker's margin warm-up."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from trainers.heads.base import CosineMarginHead
from trainers.heads.ops import number


class ArcFaceHead(CosineMarginHead):
    """Additive angular margin: ψ = cos(θ + m) = cos θ·cos m − sin θ·sin m while θ ≤ π − m;
    beyond, where cos(θ + m) would turn back up, ψ = cos θ − (1 + cos(π − m)) (WeSpeaker's
    non-easy-margin fallback, continuous at θ = π − m where both equal −1). Defaults s=32,
    m=0.2 as WeSpeaker's VoxCeleb recipes. `set_margin` lets a MarginScheduler warm m up.
    """

    def __init__(self, embed_dim: int, num_classes: int, s: float = 32.0, m: float = 0.2,
                 detach_margin: bool = False):
        super().__init__(embed_dim, num_classes, s, detach_margin)
        self.set_margin(m)

    def set_margin(self, m: float) -> None:
        self._m = number("arcface margin m (radians)", m, 0.0, math.pi / 2)
        self._cos_m, self._sin_m = math.cos(self._m), math.sin(self._m)
        self._th = math.cos(math.pi - self._m)  # cos θ below this means θ > π − m
        self._mmm = 1.0 + math.cos(math.pi - self._m)

    def target_logit(self, cos_y):
        # clamp keeps sqrt's gradient finite at cos = ±1 (value error ≤ 1e-6).
        sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp(min=1e-12))
        phi = cos_y * self._cos_m - sin_y * self._sin_m
        return torch.where(cos_y > self._th, phi, cos_y - self._mmm)

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, s={self.s:g}, "
                f"m={self._m:g}, detach_margin={self.detach_margin}")


class MarginScheduler:
    """Margin warm-up as WeSpeaker's MarginScheduler, as a pure function of (fractional) epoch.

    Epochs here are 0-based epochs elapsed (epoch + step/steps_per_epoch). WeSpeaker counts from
    1: its `increase_start_epoch: 20, fix_start_epoch: 40` are 19 and 39 here.
      epoch <  increase_start_epoch: initial_m
      epoch >= fix_start_epoch:      final_m
      in between, p = (epoch − start)/(fix − start) and
        m = initial_m + (final_m − initial_m)·r, with r = p ("linear") or, for "exp",
        r = 1 − exp(p·ln(1e-3 / (1 + 1e-6)))  ≈ 1 − 1e-3**p
    — WeSpeaker's expression verbatim (its initial_val=1, final_val=1e-3, 1e-6 guard). Most of
    the margin arrives early (r(0.5) ≈ 0.968) and r jumps from 0.999 to 1 at fix_start_epoch.
    """

    TYPES = ("exp", "linear")

    def __init__(self, final_m: float, increase_start_epoch: float, fix_start_epoch: float,
                 increase_type: str = "exp", initial_m: float = 0.0):
        self.final_m = number("final_m", final_m, 0.0)
        self.initial_m = number("initial_m", initial_m, 0.0)
        self.start = number("increase_start_epoch", increase_start_epoch, 0.0)
        self.fix = number("fix_start_epoch", fix_start_epoch, self.start)
        if increase_type not in self.TYPES:
            raise ValueError(f"increase_type must be one of {self.TYPES}, got {increase_type!r}")
        self.increase_type = increase_type

    def margin_at(self, epoch: float) -> float:
        if epoch >= self.fix:
            return self.final_m
        if epoch < self.start:
            return self.initial_m
        p = (epoch - self.start) / (self.fix - self.start)
        if self.increase_type == "linear":
            r = p
        else:
            r = 1.0 - math.exp(p * math.log(1e-3 / (1.0 + 1e-6)))
        return self.initial_m + (self.final_m - self.initial_m) * r

    def apply(self, head: nn.Module, epoch: float) -> float:
        """Set the head's margin for this epoch (heads without set_margin are left alone)."""
        m = self.margin_at(epoch)
        if hasattr(head, "set_margin"):
            head.set_margin(m)
        return m

    def __repr__(self):
        return (f"MarginScheduler(final_m={self.final_m:g}, increase_start_epoch={self.start:g}, "
                f"fix_start_epoch={self.fix:g}, increase_type={self.increase_type!r}, "
                f"initial_m={self.initial_m:g})")


class CosFaceHead(CosineMarginHead):
    """Additive cosine margin (CosFace / AM-Softmax): ψ = cos θ − m, logits scaled by s.
    Defaults s=32, m=0.2 as WeSpeaker's VoxCeleb recipes. d_θ = −m is a constant, so
    detach_margin changes nothing here (kept for a uniform signature). `set_margin` lets a
    MarginScheduler warm m up."""

    def __init__(self, embed_dim: int, num_classes: int, s: float = 32.0, m: float = 0.2,
                 detach_margin: bool = False):
        super().__init__(embed_dim, num_classes, s, detach_margin)
        self.set_margin(m)

    def set_margin(self, m: float) -> None:
        self._m = number("cosface margin m", m, 0.0, 2.0)

    def target_logit(self, cos_y):
        return cos_y - self._m

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, s={self.s:g}, "
                f"m={self._m:g}")
