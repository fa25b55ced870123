"""Main-speaker figures: frames with every face box drawn and the detected main speaker's highlighted, and the
T-F mask over the mixture's spectrogram next to the clean main voice's."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_frames(frames: np.ndarray, boxes: np.ndarray, prob: np.ndarray, truth: np.ndarray, valid: np.ndarray,
                times: list[float], path: Path, title: str = "") -> str:
    """frames (S', H, W) grayscale at `times`; boxes (N, S', 4) normalized, prob/truth (N, S') main-speaker
    probability and truth (1 = holds the turn) of the shown segments. The top track is drawn thick, in green if
    it is the true main speaker, red if not; the true main speaker's box is dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from trainers.plots import save_figure

    cols = len(frames)
    fig, axes = plt.subplots(1, cols, figsize=(2.6 * cols, 2.4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        h, w = frames[j].shape
        ax.imshow(frames[j], cmap="gray", vmin=0, vmax=255)
        top = int(np.where(valid, prob[:, j], -1).argmax())
        for k in np.flatnonzero(valid):
            x1, y1, x2, y2 = boxes[k, j] * [w, h, w, h]
            if x2 <= x1:
                continue
            chosen = k == top and prob[k, j] >= 0.5
            color = ("lime" if truth[k, j] else "red") if chosen else "yellow"
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, lw=3 if chosen else 1,
                                   ls="--" if truth[k, j] and not chosen else "-"))
            ax.text(x1, y1 - 2, f"{prob[k, j]:.2f}", color=color, fontsize=7)
        ax.set_title(f"t = {times[j]:.1f} s", fontsize=8)
        ax.axis("off")
    fig.suptitle(title or "main speaker (thick: detected; green = correct, dashed = missed truth)", fontsize=9)
    return save_figure(fig, path)


def plot_mask(mix: np.ndarray, main: np.ndarray, est: np.ndarray, mask: np.ndarray, sr: int, path: Path,
              title: str = "") -> str:
    """Log spectrograms of the mixture, the highlighted output and the clean main voice, and the mask."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from trainers.avspeaker.model import HOP, N_FFT
    from trainers.plots import save_figure

    def spec(x):
        s = torch.stft(torch.as_tensor(x, dtype=torch.float32), N_FFT, HOP, window=torch.hann_window(N_FFT),
                       return_complex=True).abs()
        return 20 * np.log10(s.numpy() + 1e-5)

    panels = [("mixture", spec(mix)), ("mask", mask), ("highlighted (mask x mixture)", spec(est)),
              ("main speaker, clean", spec(main))]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.4), constrained_layout=True)
    extent = (0, len(mix) / sr, 0, sr / 2000)
    for ax, (name, img) in zip(axes, panels):
        im = ax.imshow(img, origin="lower", aspect="auto", extent=extent, cmap="magma",
                       **({"vmin": 0, "vmax": 1} if name == "mask" else {"vmin": -60, "vmax": 30}))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("kHz")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_scores(results: dict, path: Path) -> str:
    """Bars per metric (mAP, accuracy, switch F1, SI-SDRi) per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainers.plots import save_figure

    metrics = [("map", "mAP"), ("accuracy", "segment accuracy"), ("switch_f1", "role-switch F1"),
               ("si_sdri", "SI-SDRi (dB)")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3))
    for ax, (key, name) in zip(axes, metrics):
        names = list(results)
        vals = [results[n].get(key, np.nan) for n in names]
        ax.bar(range(len(names)), vals, color=["C0", "C1", "C2", "C3"][:len(names)])
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)
