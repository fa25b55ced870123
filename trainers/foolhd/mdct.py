"""MDCT with a Kaiser-Bessel-derived window: the transform of FoolHD's official code (there a strided conv1d with the
windowed cosine basis, inverse the transposed conv1d scaled by 4/N), computed here with FFTs, same values.

For frame length N = 2M (hop M, 50 % overlap), window w and n0 = (M + 1) / 2:

    X_t[k] = sum_{n=0}^{N-1} w[n] x[tM + n] cos(2 pi / N (n + n0)(k + 1/2)),   k = 0 .. M-1
    y[tM + n] += (4 / N) w[n] sum_k X_t[k] cos(2 pi / N (n + n0)(k + 1/2))          (overlap-add)

Time-domain aliasing cancels between neighbouring frames when w[n]^2 + w[n + M]^2 = 1 (Princen-Bradley), which the
KBD window satisfies by construction: w[n] = sqrt(c[n] / c[M]) for n < M, c the cumulative sum of a Kaiser window of
length M + 1 and beta = pi * alpha, mirrored for the second half. Every sample must lie in two frames: the input is
padded by `pad` (the official loop sets 640, one frame) on the left and by `pad` plus whatever completes the last hop
on the right; the inverse trims both, so inverse(forward(x)) == x (tests/test_foolhd_model.py, to 1e-5).

Through an N-point FFT instead of the official N x M matrix product per frame (O(N log N), not O(N^2); the same
sums): with A[k] = exp(-i pi n0 (2k + 1) / N),

    X_t[k] = Re{ A[k] FFT_N(w[n] x[tM + n] exp(-i pi n / N))[k] }
    y_t[n] = (4 / N) w[n] Re{ exp(i pi n / N) N IFFT_N(Z)[n] },  Z[k] = X_t[k] conj(A[k]) for k < M, 0 above
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
        n0 = (self.hop + 1) / 2
        n, k = np.arange(frame_length), np.arange(self.hop)
        window, shift = kbd_window(frame_length, alpha), np.exp(-1j * np.pi * n / frame_length)   # half-bin shift
        for name, value in (("analysis", window * shift), ("synthesis", 4.0 * window * shift.conj()),
                            ("twiddle", np.exp(-1j * np.pi * n0 * (2 * k + 1) / frame_length))):   # A[k]
            self.register_buffer(name, torch.from_numpy(value), persistent=False)

    def right_pad(self, n: int) -> int:
        """Right padding: `pad`, plus what makes the padded length a whole number of hops."""
        return self.pad + (-(n + 2 * self.pad)) % self.hop

    def num_frames(self, n: int) -> int:
        return (n + self.pad + self.right_pad(n) - self.frame_length) // self.hop + 1

    def _buffers_as(self, dtype: torch.dtype):
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return (b.to(complex_dtype) for b in (self.analysis, self.synthesis, self.twiddle))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"MDCT expects (batch, samples), got shape {tuple(x.shape)}")
        analysis, _, twiddle = self._buffers_as(x.dtype)
        frames = F.pad(x, (self.pad, self.right_pad(x.shape[-1]))).unfold(-1, self.frame_length, self.hop)
        spectrum = torch.fft.fft(frames * analysis)[..., :self.hop]             # (B, frames, M)
        return (spectrum * twiddle).real.transpose(1, 2)

    def inverse(self, coeffs: torch.Tensor, length: int) -> torch.Tensor:
        """(B, M, frames) -> (B, length): the windowed frames overlap-added, scaled by 4 / N, padding trimmed."""
        _, synthesis, twiddle = self._buffers_as(coeffs.dtype)
        z = F.pad(coeffs.transpose(1, 2) * twiddle.conj(), (0, self.hop))       # (B, frames, N), zero above M
        frames = (torch.fft.ifft(z) * synthesis).real                           # ifft's 1/N cancels the N
        first, second = frames[..., :self.hop], frames[..., self.hop:]          # hop = N/2: two halves overlap
        y = (F.pad(first, (0, 0, 0, 1)) + F.pad(second, (0, 0, 1, 0))).flatten(1)
        return y[:, self.pad:self.pad + length]
