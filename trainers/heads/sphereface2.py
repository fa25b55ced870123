"""SphereFace2 (arXiv 2108.01513): binary one-vs-all classification on the hypersphere."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.heads.base import HypersphereHead
from trainers.heads.ops import acos_safe, choice, number, target_column


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


class SphereFace2Head(HypersphereHead):
    """SphereFace2: K binary one-vs-all problems on the hypersphere.

    g(z) = 2((z + 1)/2)^t − 1, margined target/non-target cosines by margin_type:
      C: g(cos θ_j) − m·(2·onehot − 1)   (target −m, non-targets +m)
      A: g(cos(min(θ_y + m, π))) on the target, g(cos θ_j) elsewhere
      M: g(cos(clamp(m·θ_y, 1e-5, π))) on the target, g(cos θ_j) elsewhere: a multiplicative
         angular margin on the target only (m ≥ 1), clamped at π so ψ stays monotone in θ, as
         OpenSphere's model/head/sphereface2m.py.
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
        self.margin_type = choice("margin_type", margin_type, self.MARGIN_TYPES)
        self.lam = number("lam (lambda)", lam, 0.0, 1.0, low_open=True)
        if self.lam >= 1.0:
            raise ValueError(f"lam (lambda) must be in (0, 1), got {lam!r}")
        self.r = number("r", r, 0.0, low_open=True)
        if m is None:
            m = 1.5 if self.margin_type == "M" else 0.4
        if self.margin_type == "M":
            self.m = number("sphereface2 M margin m (multiplicative)", m, 1.0, 16.0)
        else:
            self.m = number(f"sphereface2 {self.margin_type} margin m", m, 0.0, math.pi,
                             low_open=True)
        self.t = number("t", t, 1.0)
        self.lw = number("lw", lw, 0.0, low_open=True)
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
        theta_y = acos_safe(cos_y)
        if self.margin_type == "A":
            return self.g(torch.cos((theta_y + self.m).clamp(max=math.pi)))
        return self.g(torch.cos((self.m * theta_y).clamp(1e-5, math.pi)))

    def nontarget_shift(self) -> float:
        return self.m if self.margin_type == "C" else 0.0

    def margined(self, cos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """cos θ + d_θ (B, K), the margined g, built in place on one new tensor."""
        return self.g(cos).add_(self.nontarget_shift()).scatter_(
            1, idx, self.target_margined(target_column(cos, idx)))

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
        z_y, z_y_as_neg = self.target_logits(target_column(cos, y.view(-1, 1).long()))
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
