"""Classification heads (losses) built by name, OpenSphere style: a head owns its class weights
and `forward(x, y)` returns the scalar loss; `logits(x, y)` gives the logits for accuracy.

New heads register with `@register_head("name")`. Margin heads subclass `CosineMarginHead` and
only define `target_logit(cos_y)` (ψ of the target cosine); the base class applies it as
cos + d_θ with d_θ = ψ − cos on the target column, optionally detached (CGD, DESIGN 5).
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS: dict[str, type] = {}


def register_head(*names: str):
    """Class decorator: register a head under one or more names (aliases)."""
    def deco(cls):
        for name in names:
            if name in HEADS and HEADS[name] is not cls:
                raise ValueError(f"head name {name!r} already registered to {HEADS[name].__name__}")
            HEADS[name] = cls
        return cls
    return deco


def build_head(name: str, embed_dim: int, num_classes: int, **kwargs) -> nn.Module:
    """Head by config name. Unknown names and keys fail here, before any data is read."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of: {', '.join(sorted(HEADS))}")
    cls = HEADS[name]
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [p for p in params if p not in ("self", "embed_dim", "num_classes")]
        for key in kwargs:
            if key not in accepted:
                raise ValueError(f"head {name!r} got unknown argument {key!r}; "
                                 f"accepted: {', '.join(accepted) or '(none)'}")
    return cls(embed_dim, num_classes, **kwargs)


def _number(name: str, value, low: float, high: float = math.inf, low_open=False) -> float:
    """Validate a scalar hyper-parameter and return it as float (configs may pass strings/ints)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = (v > low if low_open else v >= low) and v <= high and math.isfinite(v)
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}")
    return v


class Head(nn.Module):
    """Base: loss = cross-entropy of `logits(x, y)` (margins, if any, applied on the targets)."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        if int(embed_dim) != embed_dim or embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive integer, got {embed_dim!r}")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.embed_dim, self.num_classes = int(embed_dim), int(num_classes)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(x, y), y)


@register_head("softmax")
class SoftmaxHead(Head):
    """Plain linear classifier with bias + cross-entropy (y is not used by the logits)."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__(embed_dim, num_classes)
        self.fc = nn.Linear(self.embed_dim, self.num_classes)

    def logits(self, x, y=None):
        return self.fc(x)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_classes={self.num_classes}"


class CosineMarginHead(Head):
    """cos θ_j = <x/‖x‖, w_j/‖w_j‖>; logits = s·(cos θ + onehot·d_θ), d_θ = ψ(cos θ_y) − cos θ_y.

    detach_margin=True computes d_θ under no_grad (OpenSphere's CGD: ψ's value, cos θ's gradient);
    False back-propagates through ψ, as WeSpeaker's AAM does. The cosine and margin arithmetic run
    in float32 even under autocast: fp16 cosines near ±1 would make sin θ and the margin noisy.
    """

    def __init__(self, embed_dim: int, num_classes: int, s: float, detach_margin: bool = False):
        super().__init__(embed_dim, num_classes)
        self.s = _number("s", s, 0.0, low_open=True)
        self.detach_margin = bool(detach_margin)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embed_dim))
        nn.init.xavier_uniform_(self.weight)  # WeSpeaker's init for its margin products

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            cos = F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        return cos.clamp(-1.0, 1.0)

    def target_logit(self, cos_y: torch.Tensor) -> torch.Tensor:
        """ψ(cos θ_y) for the target column, shape (B, 1)."""
        raise NotImplementedError

    def logits(self, x, y=None):
        cos = self.cosine(x)
        if y is None:
            return self.s * cos
        idx = y.view(-1, 1).long()
        cos_y = cos.gather(1, idx)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_margin):
            d_theta = self.target_logit(cos_y) - cos_y
        return self.s * cos.scatter_add(1, idx, d_theta)


@register_head("arcface", "aam")
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
        self._m = _number("arcface margin m (radians)", m, 0.0, math.pi / 2)
        self._cos_m, self._sin_m = math.cos(self._m), math.sin(self._m)
        self._th = math.cos(math.pi - self._m)  # cos θ below this means θ > π − m
        self._mmm = 1.0 + math.cos(math.pi - self._m)

    @property
    def margin(self) -> float:
        return self._m

    @margin.setter
    def margin(self, m: float) -> None:
        self.set_margin(m)

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
        self.final_m = _number("final_m", final_m, 0.0)
        self.initial_m = _number("initial_m", initial_m, 0.0)
        self.start = _number("increase_start_epoch", increase_start_epoch, 0.0)
        self.fix = _number("fix_start_epoch", fix_start_epoch, self.start)
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
