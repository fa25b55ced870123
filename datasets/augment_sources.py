"""Augmentation sources in their published layouts, as WeSpeaker's VoxCeleb recipe reads them:

- MUSAN (openslr.org/17): `musan/{noise,music,speech}/<subset>/*.wav`, e.g.
  `musan/noise/free-sound/noise-free-sound-0000.wav`; the top folder names the kind of noise, which sets
  its SNR range.
- RIRS_NOISES (openslr.org/28): `RIRS_NOISES/simulated_rirs/{small,medium,large}room/RoomNNN/RoomNNN-NNNNN.wav`;
  WeSpeaker (like voxceleb_trainer) convolves with the simulated room responses only.

Either root may be given as the folder itself or as its parent. Files are listed once (sorted, so a seeded
draw picks the same file everywhere) and read lazily: a MUSAN file can be minutes long and only a crop of
it is needed.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soundfile as sf

from datasets.audio import AudioError

MUSAN_KINDS = ("noise", "music", "speech")


class SourceLayoutError(ValueError):
    """An augmentation folder is missing or not in its published layout; the message says what was expected."""


@functools.lru_cache(maxsize=8)   # listed once per worker process, not once per epoch
def musan_files(root: str | Path) -> list[tuple[str, str]]:
    """[(kind, path)] of every wav under a MUSAN root, kind in MUSAN_KINDS."""
    base = _resolve(root, "musan")
    files = [(kind, str(p)) for kind in MUSAN_KINDS if (base / kind).is_dir()
             for p in sorted((base / kind).rglob("*.wav"))]
    if not files:
        raise SourceLayoutError(
            f"no MUSAN audio under {base}: expected {base}/noise/free-sound/*.wav, {base}/music/<subset>/*.wav and "
            f"{base}/speech/<subset>/*.wav (the layout of openslr.org/17); set augment.musan to that folder")
    return files


@functools.lru_cache(maxsize=8)
def rir_files(root: str | Path) -> list[str]:
    """Every simulated room impulse response (wav) under an RIRS_NOISES root."""
    base = _resolve(root, "RIRS_NOISES") / "simulated_rirs"
    files = [str(p) for p in sorted(base.rglob("*.wav"))] if base.is_dir() else []
    if not files:
        raise SourceLayoutError(
            f"no room impulse responses under {base}: expected {base}/smallroom/Room001/Room001-00001.wav (the "
            "layout of openslr.org/28); set augment.rirs to the RIRS_NOISES folder")
    return files


def _resolve(root: str | Path, name: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise SourceLayoutError(f"{name} folder not found: {root}")
    return root / name if root.name != name and (root / name).is_dir() else root


def read_chunk(path: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random `n`-sample chunk of a wav at `sample_rate` (float32 in [-1, 1]); a file shorter than that is
    repeated from its start (WeSpeaker's get_random_chunk). Only the chunk is read; other rates are resampled."""
    try:
        with sf.SoundFile(path) as f:
            sr, frames = f.samplerate, f.frames
            need = -(-n * sr // sample_rate)
            if frames >= need:
                f.seek(int(rng.integers(0, frames - need + 1)))
                x = f.read(need, dtype="float32", always_2d=True)
            else:
                x = f.read(dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for junk
        raise AudioError(f"unreadable augmentation audio {path}: {exc}; delete it or fix the folder") from None
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if x.size == 0:
        raise AudioError(f"augmentation audio {path} has no samples; delete it")
    if sr != sample_rate:
        x = _resample(x, sr, sample_rate)
    return np.resize(x, n).astype(np.float32, copy=False)   # np.resize repeats a short x from its start


@functools.lru_cache(maxsize=2048)   # RIRs are ~1 s; VoxCeleb recipes draw from ~60k of them
def read_rir(path: str, sample_rate: int) -> np.ndarray:
    """A whole impulse response at `sample_rate`, float32."""
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"unreadable impulse response {path}: {exc}; delete it or fix the folder") from None
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if not np.any(x):
        raise AudioError(f"impulse response {path} is silent or empty; delete it")
    return _resample(x, sr, sample_rate) if sr != sample_rate else x


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(x)), int(sr), int(target)).numpy()
