"""Head base classes: `Head` (loss = CE of `logits(x, y)`), the plain softmax head, and the
hyperspherical bases: class weights on the sphere (`HypersphereHead`) and an additive target margin
cos θ + d_θ, optionally detached (`CosineMarginHead`, OpenSphere's CGD)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainers.heads.ops import cosine_matrix, number, target_column


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


class SoftmaxHead(Head):
    """Plain linear classifier with bias + cross-entropy (y is not used by the logits)."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__(embed_dim, num_classes)
        self.fc = nn.Linear(self.embed_dim, self.num_classes)

    def logits(self, x, y=None):
        return self.fc(x)

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_classes={self.num_classes}"


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
        self.s = number("s", s, 0.0, low_open=True)
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
        cos_y = target_column(cos, idx).clamp(-1.0, 1.0)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_margin):
            d_theta = self.target_logit(cos_y) - cos_y
        return (cos * self.s).scatter_add_(1, idx, self.s * d_theta)

