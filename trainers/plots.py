"""PNG plots: DET curves on probit axes, per-epoch training curves, sound event activity maps and
confusion matrices.

Agg is selected at import so this works on headless Ray workers. Figures are built with
``matplotlib.figure.Figure`` rather than pyplot: no global figure state to leak or share between
threads in one actor. Files are written to ``<path>.tmp.png`` and moved into place with
``os.replace``, so a reader never sees a half-written PNG.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import norm  # noqa: E402

from datasets.atomic import atomic_path  # noqa: E402
from trainers.metrics import compute_eer, min_dcf_point  # noqa: E402

DET_TICKS_PCT = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40)
# Used when some system has EER > 25% (e.g. an untrained one), which would sit off the usual axes.
DET_TICKS_WIDE_PCT = (0.1, 0.5, 2, 5, 10, 20, 40, 60, 80, 90, 95, 98, 99.5)
DET_CLIP = 1e-4  # probit(0) is -inf; clip rates to [1e-4, 1 - 1e-4] before the transform
DET_LO = 0.0005  # visible range starts a little below the 0.1% tick
# What the training loop logs per epoch that is bookkeeping, not a training curve.
NOT_CURVES = frozenset({"epoch", "resumed_from_epoch", "samples_per_s", "epoch_time_s"})
# Panels first in this order, then every other logged key in the order logged.
CURVE_ORDER = ("loss", "acc", "lr", "margin", "head_m")
CURVE_LABELS = {"loss": "training loss", "acc": "training accuracy", "lr": "learning rate",
                "margin": "margin m (warm-up schedule)", "head_m": "head m (LR-step schedule)"}
_WORDS = {"eer": "EER", "acc": "accuracy", "map": "mAP", "fgsm": "FGSM", "mae": "MAE", "dcf": "DCF", "f1": "F1",
          "psds": "PSDS", "sdr": "SDR"}


def save_figure(fig: Figure, path: str | os.PathLike) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return os.fspath(path)


def _probit(rate) -> np.ndarray:
    return norm.ppf(np.clip(np.asarray(rate, dtype=np.float64), DET_CLIP, 1 - DET_CLIP))


def plot_det(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "DET curve",
    p_targets: Sequence[float] = (),
    note: str | None = None,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> str:
    """Plot {system name: (fnr, fpr)} (as from ``compute_det``) on one DET plot; returns path.

    x = false-alarm rate, y = miss rate, both on normal-deviate axes labelled in %. The dashed
    diagonal is FNR = FPR; each legend entry carries the system's EER. Axes span 0.05-60%, or
    0.05-99.8% when any EER exceeds 25%. Each p in `p_targets` marks every curve's minDCF operating
    point (one marker shape per p, in the curve's colour; points off the axes sit on their edge).
    `note` is printed in the plot's corner (e.g. that the corpus is generated, not the real one).
    """
    if not curves:
        raise ValueError("plot_det needs at least one curve")
    eers = {name: compute_eer(fnr, fpr)[0] for name, (fnr, fpr) in curves.items()}
    wide = max(eers.values()) > 0.25
    tick_pct = DET_TICKS_WIDE_PCT if wide else DET_TICKS_PCT
    lo, hi = _probit([DET_LO, 0.998 if wide else 0.6])
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    ax.plot([lo, hi], [lo, hi], color="0.6", ls="--", lw=0.8, label="EER line")
    markers = "osD^v"
    for name, (fnr, fpr) in curves.items():
        (line,) = ax.plot(_probit(fpr), _probit(fnr), lw=1.5, label=f"{name} (EER {100 * eers[name]:.2f}%)")
        for k, p in enumerate(p_targets):
            value, i = min_dcf_point(fnr, fpr, p, c_miss, c_fa)
            x, y = np.clip(_probit([fpr[i], fnr[i]]), lo, hi)
            ax.plot([x], [y], ls="none", marker=markers[k % len(markers)], ms=7, mfc="none", mew=1.5,
                    color=line.get_color(), label=f"{name} minDCF(p={p:g}) {value:.3f}")
    ticks = _probit(np.asarray(tick_pct) / 100)
    labels = [f"{t:g}" for t in tick_pct]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title(title)
    ax.grid(True, ls=":", lw=0.6)
    # Below the axes: inside, it would hide curves (a DET curve can pass through any corner).
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize="small", ncols=1 if len(p_targets) else 2)
    if note:
        ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize="small", va="bottom", ha="left",
                bbox={"boxstyle": "round", "fc": "lightyellow", "ec": "0.6"})
    return save_figure(fig, path)


def _numeric(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def curve_label(key: str) -> str:
    """A history key as an axis label: 'acc' -> 'training accuracy', 'val_eer' -> 'validation EER'."""
    if key in CURVE_LABELS:
        return CURVE_LABELS[key]
    val = key.startswith("val_")
    words = [_WORDS.get(w, w) for w in (key[4:] if val else key).split("_")]
    return ("validation " if val else "") + " ".join(words)


def curve_keys(entries: Sequence[Mapping], keys: Iterable[str] | None = None) -> list[str]:
    """The keys that get a panel: `keys` (None: every numeric logged key but bookkeeping) that some entry holds."""
    if keys is None:
        logged = [k for h in entries for k, v in h.items() if k not in NOT_CURVES and _numeric(v)]
        keys = [k for k in CURVE_ORDER if k in logged] + logged
    return [k for k in dict.fromkeys(keys) if any(_numeric(h.get(k)) for h in entries)]


def training_figure(
    history: Sequence[Mapping] | Mapping[str, Sequence[Mapping]],
    keys: Iterable[str] | None = None,
    title: str = "Training curves",
) -> Figure:
    """The figure `plot_training_curves` saves: one panel per key, x labelled 'epoch', y by `curve_label`."""
    runs = dict(history) if isinstance(history, Mapping) else {"": history}
    keys = curve_keys([h for run in runs.values() for h in run], keys)
    n = max(len(keys), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4 * ncols, 3 * nrows))
    fig.suptitle(title)
    if not keys:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no metrics recorded yet", ha="center", va="center")
        ax.set_axis_off()
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ys = []
        for name, run in runs.items():
            pts = [(h.get("epoch", j + 1), h[key]) for j, h in enumerate(run) if _numeric(h.get(key))]
            if pts:
                x, y = zip(*pts)
                ys += y
                ax.plot(x, y, marker="o", ms=3, label=name or None)
        if len(runs) > 1 and i == 0:
            ax.legend(fontsize=7)
        if key == "lr" and min(ys) > 0 and max(ys) > 10 * min(ys):   # an exponential decay reads as a line
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(curve_label(key))
        ax.set_title(curve_label(key), fontsize="medium")
        ax.grid(True, ls=":", lw=0.6)
    fig.tight_layout()
    return fig


def plot_training_curves(
    history: Sequence[Mapping] | Mapping[str, Sequence[Mapping]],
    path: str | os.PathLike,
    keys: Iterable[str] | None = None,
    title: str = "Training curves",
) -> str:
    """One subplot per metric vs epoch; returns path. `history` is one run's list of per-epoch
    entries, or {run name: list} to overlay several runs (with a legend).

    x is ``entry['epoch']`` when present, else the 1-based entry number. Keys missing from every
    entry are skipped; ``keys=None`` plots every numeric logged key but bookkeeping (NOT_CURVES): the
    loss, training accuracy, lr, schedules (the margin warm-up that explains a loss jump) and every
    validation metric. With nothing to plot the PNG says so instead of raising, so a training loop can
    call this after any epoch.
    """
    return save_figure(training_figure(history, keys, title), path)


def plot_activity(logmel: np.ndarray, truth: np.ndarray, predicted: np.ndarray, classes: Sequence[str],
                  hop_s: float, path: str | os.PathLike, title: str = "", threshold: float = 0.5) -> str:
    """Three panels on one time axis: the log-mel (T, F), the ground-truth frame activity (T, C) and
    the predicted frame probabilities (T, C); returns path. Only the classes active in the truth or
    predicted at or above `threshold` somewhere get a row."""
    rows = [i for i in range(len(classes)) if truth[:, i].any() or (predicted[:, i] >= threshold).any()] \
        or list(range(len(classes)))
    t_end = logmel.shape[0] * hop_s
    fig = Figure(figsize=(9, 2.2 + 0.5 * len(rows) * 2))
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[2, len(rows), len(rows)])
    axes[0].imshow(logmel.T, origin="lower", aspect="auto", extent=(0, t_end, 0, logmel.shape[1]), cmap="magma")
    axes[0].set_ylabel("mel bin")
    axes[0].set_title(title)
    for ax, data, name in ((axes[1], truth, "ground truth"), (axes[2], predicted, "predicted")):
        ax.imshow(data[:, rows].T, origin="lower", aspect="auto", extent=(0, t_end, -0.5, len(rows) - 0.5),
                  vmin=0, vmax=1, cmap="Greens", interpolation="nearest")
        ax.set_yticks(range(len(rows)), [classes[i] for i in rows], fontsize="small")
        ax.set_title(name, fontsize="small")
    axes[2].set_xlabel("time (s)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> str:
    """Row-normalized confusion matrix (true class down, predicted across) with the counts' accuracy in
    the title; returns path."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.18 * len(classes) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=90, fontsize=6 if len(classes) > 20 else "small")
    ax.set_yticks(ticks, classes, fontsize=6 if len(classes) > 20 else "small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (accuracy {100 * np.trace(m) / max(m.sum(), 1):.1f}%)")
    fig.tight_layout()
    return save_figure(fig, path)
