"""Multiplicative angular margins: SphereFace (A-Softmax, arXiv 1704.08063), SphereFace-R
(arXiv 2109.05565) and the detached SphereFace preset, as OpenSphere (commit 310d889) and WeSpeaker."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainers.heads.base import HypersphereHead
from trainers.heads.ops import choice, number, target_column


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


# OpenSphere (commit 310d889) per feature normalization: H from its shipped config
# (config/train/vggface2_sfnet20_spherefacer.yml), N and S from their head classes (no shipped config).
# s is unused without FN; dm is unused with HFN (m is fixed there).
_FN_DEFAULTS = {
    "hfn": dict(magnitude="v2", s=60.0, m=1.4, lw=50.0, dm=0.0),
    "none": dict(magnitude="v0", s=30.0, m=1.0, lw=1.0, dm=0.1),
    "sfn": dict(magnitude="v0", s=30.0, m=1.0, lw=50.0, dm=1.5),
}
_COS_CLAMP = 1.0 - 1e-5  # OpenSphere clamps cos θ to ±(1 − 1e-5) before acos
_V1_THETA_MAX = 3.14159  # and v1's mθ to [1e-5, 3.14159]


class SphereFaceRHead(HypersphereHead):
    """SphereFace-R (SphereFace Revived, arXiv 2109.05565) as OpenSphere's SphereFaceR_H/_N/_S:
    one class for magnitude × feature normalization × CGD.

    magnitude (the multiplicative margin m ≥ 1 as a function of θ, θ = acos of cos θ clamped to
    ±(1 − 1e-5)):
      v0: target ψ = (−1)^k cos(mθ_y) − 2k, k = ⌊mθ_y/π⌋ (m may be fractional)
      v1: target ψ = cos(clamp(mθ_y, 1e-5, 3.14159))
      v2: target left at cos θ_y; every non-target j becomes cos(θ_j/m)
    The margined cosine is cos θ + d_θ with d_θ = ψ − cos θ, computed under no_grad when
    cgd=True (value of ψ, gradient of cos θ).
    fn (feature normalization):
      hfn:  logits = s·(cos θ + d_θ);   loss = lw·CE/s
      none: logits = ‖x‖·(cos θ + d_θ); loss = lw·CE (s unused: the scale is the learned ‖x‖)
      sfn:  logits = ‖x‖·(cos θ + d_θ); loss = lw·CE/s + t·mean|‖x‖ − s|
    With none and sfn, m = m₀ + dm·n_step: `on_lr_step()` (the trainer calls it at each LR
    milestone) counts n_step. Arguments left None take OpenSphere's value for `fn`:
      hfn: v2, s=60, m=1.4, lw=50 (its shipped config; the class defaults are v0, s=30, m=1.5)
      none: v0, m₀=1, dm=0.1, lw=1;   sfn: v0, s=30, m₀=1, dm=1.5, lw=50, t=0.01.
    renorm=True is OpenSphere's class-weight handling: xavier_normal init, rows renormalized in
    place at each `forward`, whose cosine then uses W as it is (so W's gradient is not projected
    onto the sphere); False: xavier_uniform, W normalized inside the cosine. `logits(x)` without
    labels is the un-margined scaled cosine.
    """

    MAGNITUDES = ("v0", "v1", "v2")
    FNS = ("none", "hfn", "sfn")

    def __init__(self, embed_dim: int, num_classes: int, magnitude: str | None = None,
                 fn: str = "hfn", cgd: bool = True, s: float | None = None, m: float | None = None,
                 lw: float | None = None, t: float = 0.01, dm: float | None = None,
                 renorm: bool = True):
        super().__init__(embed_dim, num_classes)
        self.fn = choice("fn", fn, self.FNS)
        default = _FN_DEFAULTS[self.fn]
        self.magnitude = choice("magnitude", default["magnitude"] if magnitude is None else magnitude,
                                self.MAGNITUDES)
        self.cgd = bool(cgd)
        self.s = number("s", default["s"] if s is None else s, 0.0, low_open=True)
        self.m0 = number("spherefacer m (multiplicative, >= 1)", default["m"] if m is None else m,
                         1.0, 16.0)
        self.lw = number("lw", default["lw"] if lw is None else lw, 0.0, low_open=True)
        self.t = number("t", t, 0.0)
        self.dm = number("dm", default["dm"] if dm is None else dm, 0.0)
        self.renorm = bool(renorm)
        self.n_step = 0
        if self.renorm:
            nn.init.xavier_normal_(self.weight)

    @property
    def m(self) -> float:
        """The margin now: m₀ + dm·n_step (only none and sfn count LR steps)."""
        return self.m0 + self.dm * self.n_step

    def get_extra_state(self):
        return {"n_step": self.n_step}  # m grows with the LR steps taken

    def set_extra_state(self, state):
        self.n_step = int(state["n_step"])

    def on_lr_step(self) -> float:
        """Called by the trainer at each LR step; with fn 'none' or 'sfn' m grows by dm. Returns m."""
        if self.fn != "hfn":
            self.n_step += 1
        return self.m

    def margin_term(self, cos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """d_θ: for v2, (B, K) from all cosines; for v0 and v1, (B, 1) from the target cosines
        `cos` (B, 1). Non-target d_θ of v0/v1 is 0 (OpenSphere's is clamp(cos θ) − cos θ: it
        differs only where a non-target |cos θ| > 1 − 1e-5)."""
        m = self.m
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cgd):
            if self.magnitude == "v2":  # non-targets cos(θ/m); the target keeps its clamped cos
                c_y = target_column(cos, idx).clamp(-_COS_CLAMP, _COS_CLAMP)
                # in place: one (B, K) temporary fewer (none of these outputs is saved for backward)
                psi = torch.cos(torch.acos(cos.clamp(-_COS_CLAMP, _COS_CLAMP)) / m).scatter_(1, idx, c_y)
                return psi.sub_(cos)
            m_theta = m * torch.acos(cos.clamp(-_COS_CLAMP, _COS_CLAMP))
            if self.magnitude == "v0":
                k, sign = _sign_k(m_theta)
                psi = sign * torch.cos(m_theta) - 2.0 * k
            else:
                psi = torch.cos(m_theta.clamp(1e-5, _V1_THETA_MAX))
            return psi - cos

    def _cos(self, x, raw_w: bool):
        """cos θ (B, K), or with raw_w (W's rows unit already) x̂·Wᵀ by plain autograd."""
        if not raw_w:
            return self.cosine(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize(x.float(), dim=1) @ self.weight.float().t()

    def _norm_cos(self, x, raw_w: bool):
        if not raw_w:
            return self.norm_cosine(x)
        with torch.autocast(x.device.type, enabled=False):
            return x.float() @ self.weight.float().t(), self.feature_norm(x)

    def logits(self, x, y=None):
        return self._logits(x, y, raw_w=False)

    def _logits(self, x, y, raw_w: bool):
        idx = None if y is None else y.view(-1, 1).long()
        if self.fn != "hfn" and (y is None or self.magnitude != "v2"):  # ‖x‖ scale, target margin
            xw, norm = self._norm_cos(x, raw_w)
            if y is None:
                return xw
            d = self.margin_term(target_column(xw, idx) / norm, idx)
            return xw.scatter_add_(1, idx, norm * d)
        cos = self._cos(x, raw_w)
        scale = self.s if self.fn == "hfn" else self.feature_norm(x)
        if y is None:
            return scale * cos
        d = self.margin_term(cos if self.magnitude == "v2" else target_column(cos, idx), idx)
        # added outside any no_grad: cos keeps its gradient
        if self.magnitude == "v2":
            return (cos + d).mul_(scale)
        return (scale * cos).scatter_add_(1, idx, scale * d)

    def forward(self, x, y):
        if self.renorm:  # OpenSphere: w.data = normalize(w.data) before every loss
            with torch.no_grad():  # in place: no K×D temporary
                self.weight.div_(torch.linalg.vector_norm(self.weight, dim=1, keepdim=True)
                                 .clamp_min(1e-12))
        return self._loss(F.cross_entropy(self._logits(x, y, raw_w=self.renorm), y), x)

    def _loss(self, ce: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.fn == "hfn":
            return self.lw * ce / self.s
        if self.fn == "none":
            return self.lw * ce
        return self.lw * ce / self.s + self.t * (self.feature_norm(x) - self.s).abs().mean()

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, "
                f"magnitude={self.magnitude}, fn={self.fn}, cgd={self.cgd}, s={self.s:g}, "
                f"m={self.m:g}, lw={self.lw:g}, t={self.t:g}, dm={self.dm:g}, renorm={self.renorm}")


class SphereFaceDetachedHead(SphereFaceRHead):
    """The detached SphereFace, as OpenSphere's `SphereFace` head (A-Softmax's ψ with CGD):
    SphereFace-R's v0 magnitude with hard feature normalization, logits s·(cos θ + d_θ), and
    loss = plain CE of them (no lw/s). Defaults OpenSphere's: s=30, m=1.5, renorm=True."""

    def __init__(self, embed_dim: int, num_classes: int, s: float = 30.0, m: float = 1.5,
                 renorm: bool = True):
        super().__init__(embed_dim, num_classes, magnitude="v0", fn="hfn", cgd=True, s=s, m=m,
                         renorm=renorm)

    def _loss(self, ce, x):
        return ce

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, s={self.s:g}, "
                f"m={self.m:g}, renorm={self.renorm}")
