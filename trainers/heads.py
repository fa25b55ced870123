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


def _rowdot(a: torch.Tensor, b: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """Row-wise dot products of two (N, D) matrices, in blocks of `rows` rows: no (N, D)
    temporary, and ~3x faster than a batched (1, D) x (D, 1) product on CPU."""
    out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
    for i in range(0, a.shape[0], rows):
        torch.sum(a[i:i + rows] * b[i:i + rows], dim=1, out=out[i:i + rows])
    return out


class _CosineMatrix(torch.autograd.Function):
    """out[b, j] = s·<x̂_b, ŵ_j> (unit_x) or s·<x_b, ŵ_j> = s·‖x_b‖ cos θ_bj, saving only x, W,
    the inverse norms and s (a tensor, possibly learned, or None for 1).

    Autograd through F.normalize keeps a normalized copy of W and builds W's gradient from two
    K×D tensors; here it is one, built in place: ∂L/∂w_j = s·(M_j − c_j ŵ_j)/‖w_j‖ with
    M = Gᵀx̂ and c_j = Σ_b G_bj cos_bj = ŵ_j·M_j, so not even the (B, K) output is saved.
    s rides on the per-column 1/‖w_j‖ multiply (no pass of its own), and its gradient
    Σ_bj G_bj cos_bj = Σ_b x̂_b·(G Ŵ)_b comes from x's gradient path."""

    @staticmethod
    def forward(ctx, x, w, unit_x, s):
        inv_x = torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12).reciprocal() if unit_x else None
        inv_w = torch.linalg.vector_norm(w, dim=1).clamp_min(1e-12).reciprocal()
        ctx.save_for_backward(x, w, inv_x, inv_w, s)
        return torch.mm(x * inv_x[:, None] if unit_x else x, w.t()).mul_(
            inv_w if s is None else inv_w * s)

    @staticmethod
    def backward(ctx, g):
        x, w, inv_x, inv_w, s = ctx.saved_tensors
        gx = gw = gs = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[3]:
            # first: its (B, K) temporary is freed before W's gradient
            gx = torch.mm(g * inv_w, w)  # Σ_j G_bj ŵ_j
            xdot = _rowdot(x, gx)
            if ctx.needs_input_grad[3]:
                gs = (xdot if inv_x is None else xdot * inv_x).sum()
            if inv_x is not None:
                gx.addcmul_(x, (-xdot * inv_x * inv_x)[:, None]).mul_(
                    inv_x[:, None] if s is None else (inv_x * s)[:, None])
            elif s is not None:
                gx.mul_(s)
        if ctx.needs_input_grad[1]:
            gw = torch.mm(g.t(), x if inv_x is None else x * inv_x[:, None])
            c = _rowdot(w, gw) * inv_w * inv_w
            gw.addcmul_(w, -c[:, None]).mul_((inv_w if s is None else inv_w * s)[:, None])
        return (gx if ctx.needs_input_grad[0] else None), gw, None, gs


def cosine_matrix(x: torch.Tensor, w: torch.Tensor, unit_x: bool = True,
                  scale: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) cosines between the rows of x (B, D) and of w (K, D); with unit_x=False each row
    is scaled by ‖x_b‖ (SphereFace's un-normalized features); with `scale` (a 0-dim tensor)
    every entry is multiplied by it at no extra pass. See `_CosineMatrix`."""
    return _CosineMatrix.apply(x, w, unit_x, scale)


def _target(cos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """cos[b, y_b] as (B, 1). Indexing keeps only the index for backward (gather would keep the
    whole (B, K) `cos` alive until the backward pass)."""
    rows = torch.arange(cos.shape[0], device=cos.device)
    return cos[rows, idx.view(-1)].unsqueeze(1)


class HypersphereHead(Head):
    """Class weights w_j (K, D) and cos θ_j = <x/‖x‖, w_j/‖w_j‖>, computed in float32 even under
    autocast: fp16 cosines near ±1 would make θ, sin θ and the margins noisy.

    `cosine` (`cosine_matrix`: W is never normalized into a copy) is not clamped (a clamp is a
    B×K pass plus a mask in backward). Rounding can put it ~1e-7 outside [−1, 1]: every margin
    that takes acos, sqrt(1 − cos²) or a fractional power clamps its own input first."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__(embed_dim, num_classes)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embed_dim))
        nn.init.xavier_uniform_(self.weight)  # WeSpeaker's init for its margin products

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return cosine_matrix(x.float(), self.weight.float())

    def norm_cosine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(‖x‖·cos θ as x·ŵ (B, K), ‖x‖ (B, 1)): the product ‖x‖·cos θ would keep cos θ alive for
        ‖x‖'s gradient; x·ŵ is the same function of x and W without it."""
        with torch.autocast(x.device.type, enabled=False):
            return cosine_matrix(x.float(), self.weight.float(), unit_x=False), self.feature_norm(x)

    @staticmethod
    def feature_norm(x: torch.Tensor) -> torch.Tensor:
        """‖x‖ as a (B, 1) float32 column (it carries gradient: the norm is learned)."""
        with torch.autocast(x.device.type, enabled=False):
            return x.float().norm(dim=1, keepdim=True)


class CosineMarginHead(HypersphereHead):
    """cos θ_j = <x/‖x‖, w_j/‖w_j‖>; logits = s·(cos θ + onehot·d_θ), d_θ = ψ(cos θ_y) − cos θ_y.

    detach_margin=True computes d_θ under no_grad (OpenSphere's CGD: ψ's value, cos θ's gradient);
    False back-propagates through ψ, as WeSpeaker's AAM does. The cosine and margin arithmetic run
    in float32 even under autocast: fp16 cosines near ±1 would make sin θ and the margin noisy.
    """

    def __init__(self, embed_dim: int, num_classes: int, s: float, detach_margin: bool = False):
        super().__init__(embed_dim, num_classes)
        self.s = _number("s", s, 0.0, low_open=True)
        self.detach_margin = bool(detach_margin)

    def target_logit(self, cos_y: torch.Tensor) -> torch.Tensor:
        """ψ(cos θ_y) for the target column, shape (B, 1)."""
        raise NotImplementedError

    @property
    def margin(self) -> float:
        """The margin m of heads that define `set_margin` (what a MarginScheduler warms up)."""
        return self._m

    @margin.setter
    def margin(self, m: float) -> None:
        self.set_margin(m)

    def logits(self, x, y=None):
        cos = self.cosine(x)
        if y is None:
            return self.s * cos
        idx = y.view(-1, 1).long()
        cos_y = _target(cos, idx).clamp(-1.0, 1.0)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_margin):
            d_theta = self.target_logit(cos_y) - cos_y
        return (cos * self.s).scatter_add_(1, idx, self.s * d_theta)


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


# --------------------------------------------------------------------------------------------
# CosFace, SphereFace (A-Softmax), SphereFace-R and SphereFace2 (DESIGN 5)
# --------------------------------------------------------------------------------------------

def _choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _acos(cos: torch.Tensor) -> torch.Tensor:
    """θ = acos(cos). Where a gradient will flow, cos is first clamped to ±(1 − 1e-6) so that
    dθ/dcos = −1/sin θ stays finite at cos = ±1; under no_grad the exact angle is returned."""
    if torch.is_grad_enabled() and cos.requires_grad:
        return torch.acos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
    return torch.acos(cos.clamp(-1.0, 1.0))


def _sign_k(m_theta: torch.Tensor):
    """k = ⌊mθ/π⌋ and (−1)^k, both constants (no gradient), as float tensors."""
    with torch.no_grad():
        k = torch.floor(m_theta / math.pi)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return k, sign


def _chebyshev(cos: torch.Tensor, m: int) -> torch.Tensor:
    """cos(mθ) as the Chebyshev polynomial T_m(cos θ): exact gradient, finite at cos = ±1."""
    t_prev, t = torch.ones_like(cos), cos
    if m == 0:
        return t_prev
    for _ in range(m - 1):
        t_prev, t = t, 2.0 * cos * t - t_prev
    return t


@register_head("cosface", "am")
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
        self._m = _number("cosface margin m", m, 0.0, 2.0)

    def target_logit(self, cos_y):
        return cos_y - self._m

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, s={self.s:g}, "
                f"m={self._m:g}")


@register_head("sphereface", "asoftmax")
class SphereFaceHead(HypersphereHead):
    """A-Softmax with λ annealing, as WeSpeaker's SphereProduct (original SphereFace recipe).

    ψ(θ) = (−1)^k cos(mθ) − 2k, k = ⌊mθ/π⌋ (m a positive integer; cos(mθ) is evaluated as the
    Chebyshev polynomial T_m(cos θ), so its gradient is exact and finite; k is a constant).
    Target logit ‖x‖·(λ cos θ_y + ψ(θ_y))/(1 + λ), other logits ‖x‖·cos θ_j; loss = CE.
    λ = max(lambda_min, base·(1 + gamma·iter)^(−power)); `iter` counts training-mode forward
    calls (incremented before λ is computed, as WeSpeaker does) and is saved in the state dict.
    Defaults are the original SphereFace / WeSpeaker ones: m=4, base=1000, gamma=0.12, power=1,
    lambda_min=5. `logits(x)` without labels is ‖x‖·cos θ.
    """

    def __init__(self, embed_dim: int, num_classes: int, m: int = 4, base: float = 1000.0,
                 gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0):
        super().__init__(embed_dim, num_classes)
        if isinstance(m, bool) or float(_number("sphereface m", m, 1.0, 16.0)) != int(m):
            raise ValueError(f"sphereface m must be an integer in [1, 16], got {m!r}")
        self.m = int(m)
        self.base = _number("base", base, 0.0)
        self.gamma = _number("gamma", gamma, 0.0)
        self.power = _number("power", power, 0.0)
        self.lambda_min = _number("lambda_min", lambda_min, 0.0)
        self.iter = 0

    @property
    def lamb(self) -> float:
        return max(self.lambda_min, self.base * (1.0 + self.gamma * self.iter) ** (-self.power))

    def get_extra_state(self):
        return {"iter": self.iter}

    def set_extra_state(self, state):
        self.iter = int(state["iter"])

    def psi(self, cos_y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            theta = torch.acos(cos_y.clamp(-1.0, 1.0))
        k, sign = _sign_k(self.m * theta)
        return sign * _chebyshev(cos_y, self.m) - 2.0 * k

    def logits(self, x, y=None):
        xw, norm = self.norm_cosine(x)
        if y is None:
            return xw
        idx = y.view(-1, 1).long()
        cos_y = (_target(xw, idx) / norm).clamp(-1.0, 1.0)
        d = (self.psi(cos_y) - cos_y) / (1.0 + self.lamb)  # (λ cos + ψ)/(1 + λ) − cos
        return xw.scatter_add_(1, idx, norm * d)

    def forward(self, x, y):
        if self.training:
            self.iter += 1
        return F.cross_entropy(self.logits(x, y), y)

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, m={self.m}, "
                f"base={self.base:g}, gamma={self.gamma:g}, power={self.power:g}, "
                f"lambda_min={self.lambda_min:g}, iter={self.iter}")


@register_head("spherefacer", "sphereface_r")
class SphereFaceRHead(HypersphereHead):
    """SphereFace-R (SphereFace Revived): one class for magnitude × feature normalization × CGD.

    magnitude (the multiplicative margin m ≥ 1 as a function of θ):
      v0: target ψ = (−1)^k cos(mθ_y) − 2k, k = ⌊mθ_y/π⌋ (m may be fractional)
      v1: target ψ = cos(clamp(mθ_y, 1e-5, π))
      v2: target left at cos θ_y; every non-target j becomes cos(θ_j/m)
    The margined cosine is cos θ + d_θ with d_θ = ψ − cos θ, computed under no_grad when
    cgd=True (value of ψ, gradient of cos θ).
    fn (feature normalization):
      hfn:  logits = s·(cos θ + d_θ);   loss = lw·CE/s
      none: logits = ‖x‖·(cos θ + d_θ); loss = lw·CE (no s: the scale is the learned ‖x‖);
            `on_lr_step()` grows m by dm ("m grows at each LR step")
      sfn:  logits = ‖x‖·(cos θ + d_θ); loss = lw·CE/s + t·mean|‖x‖ − s|
    Defaults: magnitude v2, fn hfn, cgd, s=30, m=1.5, lw=1 (DESIGN's HFN default; OpenSphere's
    shipped config is s=60, m=1.4, v2, lw=50), t=0.01, dm=0.1. `logits(x)` without labels is the
    un-margined scaled cosine.
    """

    MAGNITUDES = ("v0", "v1", "v2")
    FNS = ("none", "hfn", "sfn")

    def __init__(self, embed_dim: int, num_classes: int, magnitude: str = "v2", fn: str = "hfn",
                 cgd: bool = True, s: float = 30.0, m: float = 1.5, lw: float = 1.0,
                 t: float = 0.01, dm: float = 0.1):
        super().__init__(embed_dim, num_classes)
        self.magnitude = _choice("magnitude", magnitude, self.MAGNITUDES)
        self.fn = _choice("fn", fn, self.FNS)
        self.cgd = bool(cgd)
        self.s = _number("s", s, 0.0, low_open=True)
        self.m = _number("spherefacer m (multiplicative, >= 1)", m, 1.0, 16.0)
        self.lw = _number("lw", lw, 0.0, low_open=True)
        self.t = _number("t", t, 0.0)
        self.dm = _number("dm", dm, 0.0)

    def get_extra_state(self):
        return {"m": self.m}  # m may have grown by on_lr_step

    def set_extra_state(self, state):
        self.m = float(state["m"])

    def on_lr_step(self) -> float:
        """Called by the trainer at each LR step; with fn='none' m grows by dm. Returns m."""
        if self.fn == "none":
            self.m = self.m + self.dm
        return self.m

    def margin_term(self, cos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """d_θ: for v2, (B, K) from all cosines with 0 on the target column `idx`; for v0 and v1,
        (B, 1) from the target cosines `cos` (B, 1)."""
        m = self.m
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cgd):
            if self.magnitude == "v2":  # non-targets only
                d = (torch.cos(_acos(cos) / m) - cos).scatter(1, idx, 0.0)
            else:
                cos_y = cos
                m_theta = m * _acos(cos_y)
                if self.magnitude == "v0":
                    k, sign = _sign_k(m_theta)
                    psi = sign * torch.cos(m_theta) - 2.0 * k
                else:
                    psi = torch.cos(m_theta.clamp(1e-5, math.pi))
                d = psi - cos_y
        return d

    def _scale(self, x):
        return self.s if self.fn == "hfn" else self.feature_norm(x)

    def logits(self, x, y=None):
        idx = None if y is None else y.view(-1, 1).long()
        if self.fn != "hfn" and (y is None or self.magnitude != "v2"):  # ‖x‖ scale, target margin
            xw, norm = self.norm_cosine(x)
            if y is None:
                return xw
            d = self.margin_term(_target(xw, idx) / norm, idx)
            return xw.scatter_add_(1, idx, norm * d)
        cos, scale = self.cosine(x), self._scale(x)
        if y is None:
            return scale * cos
        d = self.margin_term(cos if self.magnitude == "v2" else _target(cos, idx), idx)
        # added outside any no_grad: cos keeps its gradient
        if self.magnitude == "v2":
            return (cos + d).mul_(scale)
        return (scale * cos).scatter_add_(1, idx, scale * d)

    def forward(self, x, y):
        ce = F.cross_entropy(self.logits(x, y), y)
        if self.fn == "hfn":
            return self.lw * ce / self.s
        if self.fn == "none":
            return self.lw * ce
        return self.lw * ce / self.s + self.t * (self.feature_norm(x) - self.s).abs().mean()

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, "
                f"magnitude={self.magnitude}, fn={self.fn}, cgd={self.cgd}, s={self.s:g}, "
                f"m={self.m:g}, lw={self.lw:g}, t={self.t:g}, dm={self.dm:g}")


@register_head("sphereface_detached")
class SphereFaceDetachedHead(SphereFaceRHead):
    """The detached SphereFace (OpenSphere's SphereFace with CGD): a preset of SphereFace-R with
    magnitude v0, hard feature normalization, cgd, loss weight 1 — logits s·(cos θ + d_θ),
    loss = CE(logits)/s·lw. Defaults s=30, m=1.5 (DESIGN 5: m 1.5–1.7)."""

    def __init__(self, embed_dim: int, num_classes: int, s: float = 30.0, m: float = 1.5,
                 lw: float = 1.0):
        super().__init__(embed_dim, num_classes, magnitude="v0", fn="hfn", cgd=True, s=s, m=m,
                         lw=lw)


def _power_map(z: torch.Tensor, t: float) -> torch.Tensor:
    """g(z) = 2((z + 1)/2)^t − 1 on a clamped copy of z (a fractional power of a rounding-negative
    base would be nan)."""
    return z.clamp(-1.0, 1.0).add_(1.0).mul_(0.5).pow_(t).mul_(2.0).sub_(1.0)


def _power_slope(z: torch.Tensor, t: float) -> torch.Tensor:
    """g'(z) = t((z + 1)/2)^(t−1), 0 outside [−1, 1] where `_power_map` clamps."""
    inside = (z >= -1.0) & (z <= 1.0)
    return z.clamp(-1.0, 1.0).add_(1.0).mul_(0.5).pow_(t - 1.0).mul_(t).mul_(inside)


class _PowerMap(torch.autograd.Function):
    """g(z) with its gradient g'(z), saving only z: autograd through clamp, add, pow and mul
    would keep three (B, K) tensors."""

    @staticmethod
    def forward(ctx, z, t):
        ctx.t = t
        ctx.save_for_backward(z)
        return _power_map(z, t)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return _power_slope(z, ctx.t).mul_(grad), None


class _SoftplusSum(torch.autograd.Function):
    """Σ_ij softplus(r·(g(cos_ij) + c) + b): SphereFace2's loss with every entry taken as a
    non-target, saving only cos (autograd would keep cos for g's gradient and the logits for the
    softplus's: two (B, K) tensors). Gradient σ(z)·r·g'(cos), or σ(z)·r with detach (CGD: the
    margined value, cos θ's gradient)."""

    @staticmethod
    def forward(ctx, cos, b, r, c, t, detach):
        ctx.consts = (r, c, t, detach)
        ctx.save_for_backward(cos, b)
        return F.softplus(_power_map(cos, t).add_(c).mul_(r).add_(b)).sum()

    @staticmethod
    def backward(ctx, grad):
        cos, b = ctx.saved_tensors
        r, c, t, detach = ctx.consts
        sig = _power_map(cos, t).add_(c).mul_(r).add_(b).sigmoid_()
        gb = (sig.sum() * grad).view_as(b)
        gcos = sig.mul_(grad * r)
        if not detach:  # in blocks of rows: g'(cos) needs a temporary the size of its input
            for i in range(0, cos.shape[0], 32):
                gcos[i:i + 32].mul_(_power_slope(cos[i:i + 32], t))
        return gcos, gb, None, None, None, None


@register_head("sphereface2")
class SphereFace2Head(HypersphereHead):
    """SphereFace2: K binary one-vs-all problems on the hypersphere.

    g(z) = 2((z + 1)/2)^t − 1, margined target/non-target cosines by margin_type:
      C: g(cos θ_j) − m·(2·onehot − 1)   (target −m, non-targets +m)
      A: g(cos(min(θ_y + m, π))) on the target, g(cos θ_j) elsewhere
      M: g(cos(clamp(m·θ_y, 1e-5, π))) on the target, g(cos θ_j) elsewhere — our reading: a
         multiplicative angular margin on the target only (m ≥ 1), clamped at π so ψ stays
         monotone in θ, as SphereFace-R v1.
    logits = r·(cos θ + d_θ) + b, d_θ = (margined g) − cos θ, detached when detach=True (CGD).
    loss = BCEWithLogits(logits, onehot, weight = lw·K/r·(λ·onehot + (1−λ)(1−onehot))), mean
    over the B×K entries, written with softplus: (lw/r)/B·Σ_i [λ·softplus(−z_iy) +
    (1−λ)·Σ_{j≠y} softplus(z_ij)] (no B×K one-hot or weight matrix).
    Bias init (closed form): with all cosines 0 at init (θ = π/2), a_y/a_i are the margined
    target / non-target logits without b, z = λ/((1−λ)(K−1)) and
    b = log(2z) − a_i − log(1 − z + sqrt((1−z)² + 4z·exp(a_y − a_i))): the root of
    λ·σ(−(a_y + b)) = (1−λ)(K−1)·σ(a_i + b), i.e. the b where the weighted positive and negative
    terms' gradients balance (the minimiser of the initial loss in b). C: a_y = r(g(0) − m),
    a_i = r(g(0) + m); A: a_y = r·g(cos(min(π/2 + m, π))); M: a_y = r·g(cos(min(m·π/2, π)));
    a_i = r·g(0) for A and M. Evaluated in float64 in log space (no overflow for large r).
    Defaults λ=0.7, r=40, t=3, lw=50 (OpenSphere); m=None means 0.4 for C and A, 1.5 for M.
    `logits(x)` without labels is cos θ (the paper scores with the cosine).
    """

    MARGIN_TYPES = ("C", "A", "M")

    def __init__(self, embed_dim: int, num_classes: int, margin_type: str = "C", lam: float = 0.7,
                 r: float = 40.0, m: float | None = None, t: float = 3.0, lw: float = 50.0,
                 detach: bool = True):
        super().__init__(embed_dim, num_classes)
        self.margin_type = _choice("margin_type", margin_type, self.MARGIN_TYPES)
        self.lam = _number("lam (lambda)", lam, 0.0, 1.0, low_open=True)
        if self.lam >= 1.0:
            raise ValueError(f"lam (lambda) must be in (0, 1), got {lam!r}")
        self.r = _number("r", r, 0.0, low_open=True)
        if m is None:
            m = 1.5 if self.margin_type == "M" else 0.4
        if self.margin_type == "M":
            self.m = _number("sphereface2 M margin m (multiplicative)", m, 1.0, 16.0)
        else:
            self.m = _number(f"sphereface2 {self.margin_type} margin m", m, 0.0, math.pi,
                             low_open=True)
        self.t = _number("t", t, 1.0)
        self.lw = _number("lw", lw, 0.0, low_open=True)
        self.detach = bool(detach)
        self.bias = nn.Parameter(torch.tensor([self.init_bias()]))

    def g(self, z):
        if not isinstance(z, torch.Tensor):
            return 2.0 * ((z + 1.0) / 2.0) ** self.t - 1.0
        if torch.is_grad_enabled() and z.requires_grad:
            return _PowerMap.apply(z, self.t)
        return _power_map(z, self.t)

    def init_bias(self) -> float:
        r, m, K, lam = self.r, self.m, self.num_classes, self.lam
        g0 = 2.0 * 0.5 ** self.t - 1.0
        if self.margin_type == "C":
            a_y, a_i = r * (g0 - m), r * (g0 + m)
        else:
            theta_y = min(math.pi / 2 + m, math.pi) if self.margin_type == "A" \
                else min(m * math.pi / 2, math.pi)
            a_y, a_i = r * self.g(math.cos(theta_y)), r * g0
        z = lam / ((1.0 - lam) * (K - 1))
        delta = a_y - a_i
        # log sqrt(S), S = (1−z)² + 4z·e^Δ, in log space (e^Δ may overflow for large r)
        log_s = [math.log(4 * z) + delta]
        if z != 1.0:
            log_s.append(2 * math.log(abs(1.0 - z)))
        hi = max(log_s)
        log_sqrt = 0.5 * (hi + math.log(sum(math.exp(v - hi) for v in log_s)))
        if z <= 1.0:  # log(1 − z + sqrt S): a sum of non-negative terms
            log_term = log_sqrt + math.log1p((1.0 - z) * math.exp(-log_sqrt))
        else:  # 1 − z < 0 nearly cancels sqrt S (λ large, K small): use the conjugate,
            # 1 − z + sqrt S = 4z·e^Δ / (sqrt S + z − 1)
            log_term = (math.log(4 * z) + delta
                        - (log_sqrt + math.log1p((z - 1.0) * math.exp(-log_sqrt))))
        return math.log(2 * z) - a_i - log_term

    def target_margined(self, cos_y: torch.Tensor) -> torch.Tensor:
        """The margined g of the target cosines (B, 1)."""
        if self.margin_type == "C":
            return self.g(cos_y) - self.m
        theta_y = _acos(cos_y)
        if self.margin_type == "A":
            return self.g(torch.cos((theta_y + self.m).clamp(max=math.pi)))
        return self.g(torch.cos((self.m * theta_y).clamp(1e-5, math.pi)))

    def nontarget_shift(self) -> float:
        return self.m if self.margin_type == "C" else 0.0

    def margined(self, cos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """cos θ + d_θ (B, K), the margined g, built in place on one new tensor."""
        return self.g(cos).add_(self.nontarget_shift()).scatter_(
            1, idx, self.target_margined(_target(cos, idx)))

    def logits(self, x, y=None):
        cos = self.cosine(x)
        if y is None:
            return cos
        idx = y.view(-1, 1).long()
        if self.detach:  # d_θ's value, cos θ's gradient; in place: one B×K tensor
            with torch.no_grad():
                d = self.margined(cos, idx).sub_(cos)
            z = d.add_(cos)
        else:
            z = self.margined(cos, idx)
        return z.mul_(self.r).add_(self.bias.float())

    def target_logits(self, cos_y: torch.Tensor):
        """(margined target logits, the target entries' logits in the non-target form), (B, 1)
        each; with detach the values carry the margin and the gradient is r·∂cos θ_y."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach):
            pos = self.target_margined(cos_y)
            neg = self.g(cos_y) + self.nontarget_shift()
        if self.detach:
            pos, neg = (cos_y + (v - cos_y).detach() for v in (pos, neg))
        b = self.bias.float()
        return pos * self.r + b, neg * self.r + b

    def forward(self, x, y):
        cos = self.cosine(x)
        z_y, z_y_as_neg = self.target_logits(_target(cos, y.view(-1, 1).long()))
        # Σ_{j≠y} softplus(z_j): every entry in the non-target form, minus the targets'
        everything = _SoftplusSum.apply(cos, self.bias.float(), self.r, self.nontarget_shift(),
                                        self.t, self.detach)
        neg = everything - F.softplus(z_y_as_neg).sum()
        pos = F.softplus(-z_y).sum()
        return self.lw / self.r * (self.lam * pos + (1.0 - self.lam) * neg) / cos.shape[0]

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, "
                f"margin_type={self.margin_type}, lam={self.lam:g}, r={self.r:g}, m={self.m:g}, "
                f"t={self.t:g}, lw={self.lw:g}, detach={self.detach}")


def pk_group_size(head_cfg: dict) -> int | None:
    """K (utterances per class in every batch) for heads that need P x K batches, else None."""
    cls = HEADS.get(head_cfg.get("name"))
    if cls is None or not getattr(cls, "needs_pk_batches", False):
        return None
    return int(head_cfg.get("k", inspect.signature(cls.__init__).parameters["k"].default))


from trainers import proxy_heads  # noqa: E402,F401  (registers mask_proxy / mmp; it imports this module)
