"""What every head shares: validated hyper-parameters and the memory-saving cosine operations
(one autograd function for every head's cosine matrix, row-wise dots, target columns, safe acos)."""
from __future__ import annotations

import math

import torch


def number(name: str, value, low: float, high: float = math.inf, low_open=False) -> float:
    """Validate a scalar hyper-parameter and return it as float (configs may pass strings/ints)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not ((v > low if low_open else v >= low) and v <= high):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}")
    return v


def choice(name: str, value, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def acos_safe(cos: torch.Tensor) -> torch.Tensor:
    """θ = acos(cos). Where a gradient will flow, cos is first clamped to ±(1 − 1e-6) so that
    dθ/dcos = −1/sin θ stays finite at cos = ±1; under no_grad the exact angle is returned."""
    if torch.is_grad_enabled() and cos.requires_grad:
        return torch.acos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
    return torch.acos(cos.clamp(-1.0, 1.0))


def rowdot(a: torch.Tensor, b: torch.Tensor, rows: int = 256) -> torch.Tensor:
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
            xdot = rowdot(x, gx)
            if ctx.needs_input_grad[3]:
                gs = (xdot if inv_x is None else xdot * inv_x).sum()
            if inv_x is not None:
                gx.addcmul_(x, (-xdot * inv_x * inv_x)[:, None]).mul_(
                    inv_x[:, None] if s is None else (inv_x * s)[:, None])
            elif s is not None:
                gx.mul_(s)
        if ctx.needs_input_grad[1]:
            gw = torch.mm(g.t(), x if inv_x is None else x * inv_x[:, None])
            c = rowdot(w, gw) * inv_w * inv_w
            gw.addcmul_(w, -c[:, None]).mul_((inv_w if s is None else inv_w * s)[:, None])
        return (gx if ctx.needs_input_grad[0] else None), gw, None, gs


def cosine_matrix(x: torch.Tensor, w: torch.Tensor, unit_x: bool = True,
                  scale: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) cosines between the rows of x (B, D) and of w (K, D); with unit_x=False each row
    is scaled by ‖x_b‖ (SphereFace's un-normalized features); with `scale` (a 0-dim tensor)
    every entry is multiplied by it at no extra pass. See `_CosineMatrix`."""
    return _CosineMatrix.apply(x, w, unit_x, scale)


def target_column(cos: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """cos[b, y_b] as (B, 1). Indexing keeps only the index for backward (gather would keep the
    whole (B, K) `cos` alive until the backward pass)."""
    rows = torch.arange(cos.shape[0], device=cos.device)
    return cos[rows, idx.view(-1)].unsqueeze(1)
