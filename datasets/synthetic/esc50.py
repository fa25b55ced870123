"""A generated corpus in exactly the ESC-50 layout that uses the REAL ESC-50 file names, folds and
categories (from the shipped annotation files), so the real action vectors attach to its clips.

    root/meta/esc50.csv   filename,fold,target,category,esc10,src_file,take (real rows)
    root/audio/<real filename>.wav   5 s, mono, 16-bit

`clips_per_fold` clips of each class in each fold are written (ESC-50 has 8): the first ones by
filename. The audio depends on the category: each class draws a recipe (tonal or noisy source,
pitch, band, temporal pattern: steady, pulsed or a few events, modulation rate) from its own seeded
RNG; each clip varies it (pitch, band, timing, level) and adds background noise. Deterministic;
`.complete` (written last) records the parameters, so a rerun is a no-op.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import signal

from datasets.atomic import write_bytes
from datasets.audio import encode_wav
from datasets.esc50.meta import ESC50_COLUMNS, SUM_FILE, read_sum
from datasets.synthetic.marker import already_generated, mark_complete, refuse_strays

FORMAT_VERSION = 1
CLIP_S = 5.0
ESC10 = {"dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "clock_tick",
         "helicopter", "chainsaw"}


def _recipe(target: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 7, target])
    return {"tonal": bool(rng.random() < 0.5), "f0": float(rng.uniform(120, 2000)),
            "band": sorted(rng.uniform(200, 7000, size=2)), "pattern": int(rng.integers(3)),
            "rate": float(rng.uniform(1.0, 8.0)), "harmonics": int(rng.integers(1, 6)),
            "decay": float(rng.uniform(0.03, 0.4))}


def _clip(recipe: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(CLIP_S * sr)
    t = np.arange(n) / sr
    if recipe["tonal"]:
        f0 = recipe["f0"] * rng.uniform(0.9, 1.1) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, recipe["harmonics"] + 1))
    else:
        lo, hi = recipe["band"]
        lo, hi = max(lo * rng.uniform(0.85, 1.15), 50.0), min(max(hi, lo + 300) * rng.uniform(0.85, 1.15), 0.45 * sr)
        x = signal.sosfilt(signal.butter(2, [min(lo, 0.8 * hi), hi], btype="band", fs=sr, output="sos"),
                           rng.standard_normal(n))
    rate = recipe["rate"] * rng.uniform(0.8, 1.25)
    if recipe["pattern"] == 0:      # steady, slowly modulated
        env = 1 + 0.3 * np.sin(2 * np.pi * rate / 4 * t + rng.uniform(0, 6.3))
    elif recipe["pattern"] == 1:    # pulsed at `rate`
        env = np.exp(-((t * rate) % 1.0) / (recipe["decay"] * rate))
    else:                           # a few events at random times
        env = np.zeros(n)
        for onset in rng.uniform(0, CLIP_S - 0.5, size=int(rng.integers(2, 5))):
            i = int(onset * sr)
            env[i:] += np.exp(-np.arange(n - i) / (recipe["decay"] * 3 * sr))
    x = x * env
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.8)
    return (x + rng.uniform(0.005, 0.03) * rng.standard_normal(n)).astype(np.float32)


def generate_esc50_corpus(root, *, clips_per_fold: int = 2, sample_rate: int = 16000, seed: int = 0) -> Path:
    """Write the ESC-50-layout corpus under `root`; returns `root`."""
    root = Path(root)
    if not 1 <= clips_per_fold <= 8 or sample_rate < 8000 or seed < 0:
        raise ValueError("need 1 <= clips_per_fold <= 8 (ESC-50 has 8 per class and fold), sample_rate >= 8000, "
                         "seed >= 0")
    params = {"format": FORMAT_VERSION, "clips_per_fold": clips_per_fold, "sample_rate": sample_rate, "seed": seed}
    if already_generated(root, params, "meta/esc50.csv", "generated ESC-50 corpus"):
        return root
    real = read_sum(SUM_FILE).sort_values("filename")
    chosen = real.groupby(["target", "fold"]).head(clips_per_fold).sort_values("filename")
    rows, written = [",".join(ESC50_COLUMNS)], []
    for i, r in enumerate(chosen.itertuples()):
        rng = np.random.default_rng([seed, int(r.target), i])
        path = root / "audio" / r.filename
        write_bytes(path, encode_wav(_clip(_recipe(int(r.target), seed), rng, sample_rate), sample_rate))
        written.append(path)
        _, src, take, _ = r.filename.split("-")
        rows.append(f"{r.filename},{r.fold},{r.target},{r.category},{r.category in ESC10},{src},{take}")
    refuse_strays(root, (root / "audio").glob("*.wav"), written)
    write_bytes(root / "meta" / "esc50.csv", ("\n".join(rows) + "\n").encode())
    mark_complete(root, params)
    return root
