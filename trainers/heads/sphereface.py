"""Multiplicative angular margins: SphereFace (A-Softmax, arXiv 1704.08063), SphereFace-R
(arXiv 2109.05565) and the detached SphereFace preset, as OpenSphere (commit 310d889) and WeSpeaker."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainers.heads.base import HypersphereHead
from trainers.heads.ops import acos_safe, choice, number, target_column


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
        if isinstance(m, bool) or float(number("sphereface m", m, 1.0, 16.0)) != int(m):
            raise ValueError(f"sphereface m must be an integer in [1, 16], got {m!r}")
        self.m = int(m)
        self.base = number("base", base, 0.0)
        self.gamma = number("gamma", gamma, 0.0)
        self.power = number("power", power, 0.0)
        self.lambda_min = number("lambda_min", lambda_min, 0.0)
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
        cos_y = (target_column(xw, idx) / norm).clamp(-1.0, 1.0)
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
    Defaults: magnitude v2, fn hfn, cgd, s=30, m=1.5, lw=1 (our HFN default; OpenSphere's
    shipped config is s=60, m=1.4, v2, lw=50), t=0.01, dm=0.1. `logits(x)` without labels is the
    un-margined scaled cosine.
    """

    MAGNITUDES = ("v0", "v1", "v2")
    FNS = ("none", "hfn", "sfn")

    def __init__(self, embed_dim: int, num_classes: int, magnitude: str = "v2", fn: str = "hfn",
                 cgd: bool = True, s: float = 30.0, m: float = 1.5, lw: float = 1.0,
                 t: float = 0.01, dm: float = 0.1):
        super().__init__(embed_dim, num_classes)
        self.magnitude = choice("magnitude", magnitude, self.MAGNITUDES)
        self.fn = choice("fn", fn, self.FNS)
        self.cgd = bool(cgd)
        self.s = number("s", s, 0.0, low_open=True)
        self.m = number("spherefacer m (multiplicative, >= 1)", m, 1.0, 16.0)
        self.lw = number("lw", lw, 0.0, low_open=True)
        self.t = number("t", t, 0.0)
        self.dm = number("dm", dm, 0.0)

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
                d = (torch.cos(acos_safe(cos) / m) - cos).scatter(1, idx, 0.0)
            else:
                cos_y = cos
                m_theta = m * acos_safe(cos_y)
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
            d = self.margin_term(target_column(xw, idx) / norm, idx)
            return xw.scatter_add_(1, idx, norm * d)
        cos, scale = self.cosine(x), self._scale(x)
        if y is None:
            return scale * cos
        d = self.margin_term(cos if self.magnitude == "v2" else target_column(cos, idx), idx)
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


class SphereFaceDetachedHead(SphereFaceRHead):
    """The detached SphereFace (OpenSphere's SphereFace with CGD): a preset of SphereFace-R with
    magnitude v0, hard feature normalization, cgd, loss weight 1 — logits s·(cos θ + d_θ),
    loss = CE(logits)/s·lw. Defaults s=30, m=1.5 (the SphereFace-R paper, arXiv 2109.05565: m 1.5–1.7)."""

    def __init__(self, embed_dim: int, num_classes: int, s: float = 30.0, m: float = 1.5,
                 lw: float = 1.0):
        super().__init__(embed_dim, num_classes, magnitude="v0", fn="hfn", cgd=True, s=s, m=m,
                         lw=lw)
