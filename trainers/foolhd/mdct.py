"""MDCT with a Kaiser-Bessel-derived window, as FoolHD's official code builds it: forward as a strided
conv1d with the windowed cosine basis, inverse as the transposed conv1d scaled by 4/N.

For frame length N = 2M (hop M, 50 % overlap), window w and n0 = (M + 1) / 2:

    X_t[k] = sum_{n=0}^{N-1} w[n] x[tM + n] cos(2 pi / N (n + n0)(k + 1/2)),   k = 0 .. M-1
    y[tM + n] += (4 / N) w[n] sum_k X_t[k] cos(2 pi / N (n + n0)(k + 1/2))          (overlap-add)

Time-domain aliasing cancels between neighbouring frames when w[n]^2 + w[n + M]^2 = 1 (Princen-Bradley), which the
KBD window satisfies by construction: w[n] = sqrt(c[n] / c[M]) for n < M, c the cumulative sum of a Kaiser window of
length M + 1 and beta = pi * alpha, mirrored for the second half. Every sample must lie in two frames: the input is
padded by `pad` (the official loop sets 640, one frame) on the left and by `pad` plus whatever completes the last hop
on the right; the inverse trims both, so inverse(forward(x)) == x (tests/test_foolhd_model.py, to 1e-5).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def kbd_window(length: int, alpha: float = 4.0) -> np.ndarray:
    """The Kaiser-Bessel-derived window of even `length` (float64)."""
    if length < 2 or length % 2:
        raise ValueError(f"a KBD window needs an even length >= 2, got {length}")
    half = length // 2
    cum = np.cumsum(np.kaiser(half + 1, np.pi * alpha))
    rise = np.sqrt(cum[:-1] / cum[-1])
    return np.concatenate([rise, rise[::-1]])


def mdct_basis(length: int) -> np.ndarray:
    """(M, N) cosine basis cos(2 pi / N (n + n0)(k + 1/2)), N = length, M = N / 2, n0 = (M + 1) / 2 (float64)."""
    half = length // 2
    n0 = (half + 1) / 2
    n = np.arange(length)[None, :]
    k = np.arange(half)[:, None]
    return np.cos(2 * np.pi / length * (n + n0) * (k + 0.5))


class MDCT(nn.Module):
    """x (B, n) -> coefficients (B, N/2, frames) and back; both differentiable (the attack's gradients pass)."""

    def __init__(self, frame_length: int = 640, alpha: float = 4.0, pad: int | None = None):
        super().__init__()
        if frame_length < 4 or frame_length % 2:
            raise ValueError(f"MDCT frame_length must be even and >= 4, got {frame_length}")
        self.frame_length, self.hop = frame_length, frame_length // 2
        self.pad = frame_length if pad is None else pad
        if self.pad < self.hop:
            raise ValueError(f"MDCT pad must be >= hop ({self.hop}) for perfect reconstruction, got {self.pad}")
        basis = mdct_basis(frame_length) * kbd_window(frame_length, alpha)[None, :]
        self.register_buffer("basis", torch.from_numpy(basis).float().unsqueeze(1), persistent=False)  # (M, 1, N)

    def right_pad(self, n: int) -> int:
        """Right padding: `pad`, plus what makes the padded length a whole number of hops."""
        return self.pad + (-(n + 2 * self.pad)) % self.hop

    def num_frames(self, n: int) -> int:
        return (n + self.pad + self.right_pad(n) - self.frame_length) // self.hop + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"MDCT expects (batch, samples), got shape {tuple(x.shape)}")
        padded = F.pad(x.unsqueeze(1), (self.pad, self.right_pad(x.shape[-1])))
        return F.conv1d(padded, self.basis.to(x.dtype), stride=self.hop)

    def inverse(self, coeffs: torch.Tensor, length: int) -> torch.Tensor:
        """(B, M, frames) -> (B, length): overlap-add of the windowed basis, scaled by 4 / N, padding trimmed."""
        y = F.conv_transpose1d(coeffs, self.basis.to(coeffs.dtype), stride=self.hop).squeeze(1)
        return y[:, self.pad:self.pad + length] * (4.0 / self.frame_length)
