"""FoolHD's PNGs: original / adversarial / difference spectrograms of a few files, and success vs PESQ per method."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.plots import Figure, save_figure


def _spectrogram(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log power (dB) of a 32 ms Hann STFT with 8 ms hop, (freq, time)."""
    n, hop = int(0.032 * sample_rate), int(0.008 * sample_rate)
    window = np.hanning(n)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(wave, (n // 2, n // 2)), n)[::hop] * window
    return 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T ** 2 + 1e-10)


def plot_spectrograms(examples: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], sample_rate: int,
                      path: Path) -> str:
    """examples: (key, clean wave, {method: adversarial wave}); rows = files x methods, columns = original,
    adversarial, difference (same colour scale for the first two)."""
    rows = [(key, clean, m, adv) for key, clean, advs in examples for m, adv in advs.items()]
    fig = Figure(figsize=(12, 2.4 * max(len(rows), 1)))
    for r, (key, clean, method, adv) in enumerate(rows):
        specs = [_spectrogram(clean, sample_rate), _spectrogram(adv, sample_rate), _spectrogram(adv - clean,
                                                                                                sample_rate)]
        top = max(specs[0].max(), specs[1].max())
        for c, (spec, title) in enumerate(zip(specs, ("original", f"{method}", "difference"))):
            ax = fig.add_subplot(len(rows), 3, 3 * r + c + 1)
            ax.imshow(spec, origin="lower", aspect="auto", vmin=top - 80, vmax=top, cmap="magma",
                      extent=(0, len(clean) / sample_rate, 0, sample_rate / 2000))
            ax.set_title(f"{key}: {title}", fontsize=7)
            ax.set_xlabel("s", fontsize=7)
            ax.set_ylabel("kHz", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_success_pesq(points: dict[str, list[tuple[float, bool]]], path: Path) -> str:
    """points: {method: [(PESQ, success)]}: one panel per method, successes and failures marked."""
    fig = Figure(figsize=(3.2 * max(len(points), 1), 3))
    for i, (method, pts) in enumerate(points.items()):
        ax = fig.add_subplot(1, max(len(points), 1), i + 1)
        for ok, marker, colour in ((True, "o", "tab:red"), (False, "x", "tab:gray")):
            xs = [p for p, s in pts if s == ok and p is not None]
            ax.scatter(xs, [float(ok)] * len(xs), marker=marker, color=colour,
                       label=f"{'success' if ok else 'failure'} ({len(xs)})")
        ax.set_xlim(1.0, 4.6)
        ax.set_yticks([0, 1], ["failed", "fooled"])
        ax.set_xlabel("PESQ")
        ax.set_title(method, fontsize=9)
        ax.legend(fontsize=6, loc="center left")
    fig.tight_layout()
    return save_figure(fig, path)
