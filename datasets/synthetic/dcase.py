"""A small generated corpus in exactly the TAU Urban Acoustic Scenes 2019 and FSDKaggle2018
layouts, for the SED demo and tests (the real corpora cannot be downloaded here).

    TAU  root/tau/meta.csv  (tab-separated)   root/tau/audio/<scene>-<city>-<n>-<seg>-a.wav  10 s
    FSD  root/fsd/train.csv (comma-separated) root/fsd/audio_train/<8 digits>.wav

Scenes are noise textures with scene-specific spectra and slow modulations (traffic swells, a
metro hum, babble-like park and airport beds). Events use real FSDKaggle2018 label names and
distinct spectro-temporal shapes: harmonic bursts (Bark), gliding harmonics (Meow), impulse trains
(Knock), noise bursts (Cough), short high-passed ticks (Hi-hat), a falling low sine (Bass_drum), a
gated two-tone ring (Telephone), a vibrato tone (Flute), dense clicks (Applause), inharmonic
decaying partials (Chime), a broadband bang (Gunshot_or_gunfire) and a narrow high glide (Squeak).
Every tenth event is marked not manually verified (the protocol drops them). Deterministic per
seed; `.complete` (written last) records the parameters, so a rerun is a no-op.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import signal

from datasets.atomic import write_bytes
from datasets.audio import encode_wav
from datasets.synthetic.marker import already_generated, mark_complete, refuse_strays

FORMAT_VERSION = 1
SCENES = ("airport", "park", "street_traffic", "metro_station")
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon")
EVENT_LABELS = ("Applause", "Bark", "Bass_drum", "Chime", "Cough", "Flute", "Gunshot_or_gunfire",
                "Hi-hat", "Knock", "Meow", "Squeak", "Telephone")


def _bandpass(x, sr, lo, hi, order=2):
    """Band-pass with the band clipped to what `sr` can hold (the corpus may be made at 16 kHz)."""
    hi = min(hi, 0.45 * sr)
    sos = signal.butter(order, [min(lo, 0.6 * hi), hi], btype="band", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _filtered_noise(rng, n, sr, lo, hi, order=2):
    return _bandpass(rng.standard_normal(n), sr, lo, hi, order)


def _scene(kind: str, rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    n = int(seconds * sr)
    t = np.arange(n) / sr
    if kind == "street_traffic":
        x = _filtered_noise(rng, n, sr, 40, 1500)
        x *= 1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.08, 0.25) * t + rng.uniform(0, 6.3)) ** 2
    elif kind == "metro_station":
        hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        x = 0.6 * _filtered_noise(rng, n, sr, 100, 3000) + 0.4 * hum * np.std(_filtered_noise(rng, 1000, sr, 100, 3000))
    elif kind == "park":
        x = _filtered_noise(rng, n, sr, 300, 6000) * (1.0 + 0.3 * np.sin(2 * np.pi * 0.3 * t))
    else:  # airport: babble-like bed, noise modulated at a syllable rate
        env = signal.sosfilt(signal.butter(2, 6, fs=sr, output="sos"), np.abs(rng.standard_normal(n)))
        x = _filtered_noise(rng, n, sr, 200, 4000) * (0.5 + env / (np.abs(env).max() + 1e-9))
    return x / (np.abs(x).max() + 1e-9) * rng.uniform(0.2, 0.5)


def _decay(n, sr, tau):
    return np.exp(-np.arange(n) / (tau * sr))


def _event(label: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    def t_(sec):
        return np.arange(int(sec * sr)) / sr

    def place(parts, gap):
        out = []
        for p in parts:
            out += [p, np.zeros(int(gap * sr))]
        return np.concatenate(out[:-1])

    if label == "Bark":
        f0 = rng.uniform(350, 600)
        def bark():
            return (sum(np.sin(2 * np.pi * f0 * k * t_(0.15)) / k for k in range(1, 6))
                    * _decay(int(0.15 * sr), sr, 0.05))
        x = place([bark() for _ in range(rng.integers(2, 4))], rng.uniform(0.1, 0.2))
    elif label == "Meow":
        t = t_(rng.uniform(0.6, 1.0))
        f = rng.uniform(500, 700) + 300 * np.sin(np.pi * t / t[-1])
        ph = 2 * np.pi * np.cumsum(f) / sr
        x = sum(np.sin(k * ph) / k for k in range(1, 4)) * np.sin(np.pi * t / t[-1])
    elif label == "Knock":
        click = _filtered_noise(rng, int(0.03 * sr), sr, 200, 2000) * _decay(int(0.03 * sr), sr, 0.006)
        x = place([click] * int(rng.integers(3, 6)), rng.uniform(0.12, 0.2))
    elif label == "Cough":
        def burst():
            return _filtered_noise(rng, int(0.25 * sr), sr, 300, 5000) * _decay(int(0.25 * sr), sr, 0.07)
        x = place([burst() for _ in range(rng.integers(1, 3))], 0.15)
    elif label == "Hi-hat":
        def tick():
            return _filtered_noise(rng, int(0.06 * sr), sr, 7000, 15000, 4) * _decay(int(0.06 * sr), sr, 0.015)
        x = place([tick() for _ in range(rng.integers(4, 8))], rng.uniform(0.08, 0.15))
    elif label == "Bass_drum":
        t = t_(0.5)
        f = rng.uniform(50, 70) + 80 * np.exp(-t / 0.03)
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.15)
    elif label == "Telephone":
        t = t_(rng.uniform(1.5, 2.5))
        x = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 1250 * t)) * (np.sin(2 * np.pi * 20 * t) > 0)
    elif label == "Flute":
        t = t_(rng.uniform(1.0, 2.5))
        f = rng.uniform(600, 1200) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.minimum(1, np.minimum(t, t[-1] - t) / 0.1)
    elif label == "Applause":
        n = int(rng.uniform(1.2, 2.5) * sr)
        x = _bandpass((rng.random(n) < 0.02) * rng.standard_normal(n), sr, 800, 8000)
    elif label == "Chime":
        t = t_(rng.uniform(1.2, 2.2))
        f0 = rng.uniform(800, 1500)
        x = sum(np.sin(2 * np.pi * f0 * r * t) * np.exp(-t / (0.8 / r)) for r in (1.0, 2.76, 5.4))
    elif label == "Gunshot_or_gunfire":
        n = int(0.6 * sr)
        x = _filtered_noise(rng, n, sr, 60, 12000) * _decay(n, sr, 0.08)
    elif label == "Squeak":
        t = t_(rng.uniform(0.3, 0.7))
        f = rng.uniform(2500, 3500) + 1500 * t / t[-1]
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.sin(np.pi * t / t[-1])
    else:
        raise ValueError(f"no generator for event label {label!r}")
    return x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)


def generate_dcase_corpus(root, *, scenes_per_class: int = 6, events_per_label: int = 12,
                          sample_rate: int = 32000, seed: int = 0) -> tuple[Path, Path]:
    """Write the TAU- and FSD-layout folders under `root`; returns (tau_root, fsd_root)."""
    root = Path(root)
    tau, fsd = root / "tau", root / "fsd"
    if scenes_per_class < 1 or events_per_label < 1 or sample_rate < 8000 or seed < 0:
        raise ValueError("need scenes_per_class >= 1, events_per_label >= 1, sample_rate >= 8000, seed >= 0")
    params = {"format": FORMAT_VERSION, "scenes_per_class": scenes_per_class,
              "events_per_label": events_per_label, "sample_rate": sample_rate, "seed": seed}
    if already_generated(root, params, "fsd/train.csv", "generated DCASE corpus"):
        return tau, fsd

    written, meta = [], ["\t".join(("filename", "scene_label", "identifier", "source_label"))]
    for si, scene in enumerate(SCENES):
        for j in range(scenes_per_class):
            rng = np.random.default_rng([seed, 0, si, j])
            city = CITIES[j % len(CITIES)]
            rel = f"audio/{scene}-{city}-{j}-{si}-a.wav"
            write_bytes(tau / rel, encode_wav(_scene(scene, rng, sample_rate, 10.0).astype(np.float32), sample_rate))
            written.append(tau / rel)
            meta.append("\t".join((rel, scene, f"{city}-{j}", "a")))
    write_bytes(tau / "meta.csv", ("\n".join(meta) + "\n").encode())

    rows, n = ["fname,label,manually_verified"], 0
    for li, label in enumerate(EVENT_LABELS):
        for j in range(events_per_label):
            rng = np.random.default_rng([seed, 1, li, j])
            fname = f"{10000000 + 7919 * n % 89999999:08d}.wav"
            write_bytes(fsd / "audio_train" / fname,
                         encode_wav(_event(label, rng, sample_rate).astype(np.float32), sample_rate))
            written.append(fsd / "audio_train" / fname)
            rows.append(f"{fname},{label},{0 if n % 10 == 9 else 1}")
            n += 1
    refuse_strays(root, [*tau.rglob("*.wav"), *fsd.rglob("*.wav")], written)
    write_bytes(fsd / "train.csv", ("\n".join(rows) + "\n").encode())
    mark_complete(root, params)
    return tau, fsd
