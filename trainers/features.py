"""Speaker-verification front end, as WeSpeaker: 80-dim kaldi fbank, 200-frame crops, per-crop CMN.

WeSpeaker crops the *waveform* and then computes fbank; we compute fbank once per utterance and
crop the frames. With kaldi's default snip_edges=True every frame depends only on its own 400
samples, so a crop of the features equals the features of the matching waveform crop (only dither
would differ). Plain numpy/torch: the Ray data pipeline calls these from `map_batches`.
"""
from __future__ import annotations

import numpy as np
import torch
from torchaudio.compliance import kaldi

INT16_SCALE = 32768.0  # WeSpeaker multiplies float audio by 1 << 15 before kaldi fbank


def fbank(
    wave: np.ndarray | torch.Tensor,
    sample_rate: int = 16000,
    num_mel_bins: int = 80,
    frame_length: float = 25.0,
    frame_shift: float = 10.0,
    dither: float = 0.0,
) -> torch.Tensor:
    """Log-mel filterbank (T, num_mel_bins) of a mono float wave in [-1, 1]; no mean norm here.

    T = 1 + (N - win) // hop with win/hop in samples (400/160 at 16 kHz).
    """
    w = torch.as_tensor(wave, dtype=torch.float32)
    if w.dim() == 2 and w.shape[0] == 1:
        w = w[0]
    if w.dim() != 1:
        raise ValueError(f"fbank expects a mono 1-D wave, got shape {tuple(w.shape)}")
    win = int(sample_rate * frame_length / 1000)
    if w.numel() < win:
        # kaldi would silently return zero frames; fail here, where the cause is visible.
        raise ValueError(
            f"wave of {w.numel()} samples is shorter than one {frame_length} ms frame "
            f"({win} samples at {sample_rate} Hz)")
    return kaldi.fbank(
        (w * INT16_SCALE).unsqueeze(0),
        num_mel_bins=num_mel_bins,
        frame_length=frame_length,
        frame_shift=frame_shift,
        dither=dither,
        sample_frequency=sample_rate,
        window_type="hamming",
        energy_floor=0.0,
        use_energy=False,
    )


def mean_normalize(feats):
    """Cepstral mean normalisation: subtract the mean over time (axis -2) of (..., T, F)."""
    if isinstance(feats, torch.Tensor):
        return feats - feats.mean(dim=-2, keepdim=True)
    feats = np.asarray(feats)
    return feats - feats.mean(axis=-2, keepdims=True)


def random_crop(feats: np.ndarray, num_frames: int = 200,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """A random window of `num_frames` frames from (T, F).

    Shorter utterances are repeated from their start (wrap padding, as WeSpeaker's
    get_random_chunk and voxceleb_trainer's np.pad(mode="wrap")) rather than zero-padded, so
    the crop holds only speech statistics of that speaker.
    """
    feats = np.asarray(feats)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"random_crop expects (T, F) with T > 0, got shape {feats.shape}")
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    rng = np.random.default_rng() if rng is None else rng
    t = feats.shape[0]
    if t >= num_frames:
        start = int(rng.integers(0, t - num_frames + 1))
        return feats[start:start + num_frames].copy()
    reps = -(-num_frames // t)  # ceil
    return np.tile(feats, (reps, 1))[:num_frames]


def crop_batch(list_of_feats, num_frames: int = 200,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """(B, num_frames, F) float32 training batch: one random crop per utterance, CMN per crop."""
    if len(list_of_feats) == 0:
        raise ValueError("crop_batch got an empty list")
    rng = np.random.default_rng() if rng is None else rng
    crops = np.stack([random_crop(f, num_frames, rng) for f in list_of_feats])
    return mean_normalize(crops.astype(np.float32, copy=False))
