"""Front ends. Speakers, as WeSpeaker: 80-dim kaldi fbank, 200-frame crops, per-crop CMN. Sound events
and scenes (SED, ESC-50): `LogMel`, a torchaudio mel spectrogram, by default with per-clip mean removal;
`LogMel(style="kong")` is the DCASE remix's official log-mel (Kong's features.py, which the SED paper's code
reads): Hamming-windowed magnitude spectrum, Slaney mel filters, no per-clip normalization.

WeSpeaker crops the *waveform* and then computes fbank; we compute fbank once per utterance and
crop the frames. With kaldi's default snip_edges=True every frame depends only on its own 400
samples, so a crop of the features equals the features of the matching waveform crop (only dither
would differ). Plain numpy/torch: the Ray data pipeline calls these from `map_batches`.
"""
from __future__ import annotations

import dataclasses
import functools

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


@dataclasses.dataclass(frozen=True)
class LogMel:
    """Log-mel front end for sound events and scenes; defaults are the DCASE remix protocol's."""

    sample_rate: int = 32000
    n_fft: int = 2048
    hop: int = 1024
    n_mels: int = 64
    style: str = "cmn"     # cmn | kong

    def __post_init__(self):
        if self.style not in LOGMEL_STYLES:
            raise ValueError(f"unknown log-mel style {self.style!r}; choose one of: {', '.join(LOGMEL_STYLES)}")

    def logmel(self, wave: np.ndarray) -> np.ndarray:
        """(T, n_mels) float32 of a mono wave at `sample_rate`, frames without centre padding
        (T = 1 + (N - n_fft) // hop), log(mel + 1e-8).
        cmn: power spectrum (Hann), HTK mel; each mel bin's mean over the clip removed (the background's
          stationary spectrum, as CMN for speakers).
        kong: as scipy.signal.spectrogram(window=np.hamming(n_fft), mode="magnitude", detrend=False)
          times librosa's (Slaney) mel filters from 50 Hz to sample_rate // 2; no per-clip normalization
          (the SED model z-scores with statistics of the training folds)."""
        w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if w.numel() < self.n_fft:
            raise ValueError(f"wave of {w.numel()} samples is shorter than one window ({self.n_fft})")
        if self.style == "kong":
            return _kong_logmel(self, w.double()).numpy().astype(np.float32)
        x = torch.log(_mel_transform(self)(w) + 1e-8).T
        return (x - x.mean(dim=0, keepdim=True)).numpy().astype(np.float32)

    def logmel_of_wav(self, key: str, wav: bytes) -> np.ndarray:
        """`logmel` of a shard sample's WAV bytes, which must be at `sample_rate`."""
        from datasets.audio import decode_wav

        samples, sr = decode_wav(wav)
        if sr != self.sample_rate:
            raise ValueError(f"{key}: shard audio is {sr} Hz but the front end expects {self.sample_rate}: "
                             "rebuild the shards or set the sample rate")
        return self.logmel(samples)


LOGMEL_STYLES = ("cmn", "kong")


def _kong_logmel(front: LogMel, w: torch.Tensor) -> torch.Tensor:
    import torchaudio

    window = torch.hamming_window(front.n_fft, periodic=False, dtype=torch.float64)   # = np.hamming
    frames = w.unfold(0, front.n_fft, front.hop)                                       # (T, n_fft)
    # scipy's "magnitude" mode keeps the density scaling of its one-sided STFT: 1 / sqrt(fs * sum(w^2))
    mag = torch.fft.rfft(frames * window).abs() / torch.sqrt(front.sample_rate * window.pow(2).sum())
    mel = torchaudio.functional.melscale_fbanks(front.n_fft // 2 + 1, 50.0, float(front.sample_rate // 2),
                                                front.n_mels, front.sample_rate, norm="slaney",
                                                mel_scale="slaney").double()
    return torch.log(mag @ mel + 1e-8)


@functools.lru_cache(maxsize=4)
def _mel_transform(front: LogMel):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=front.sample_rate, n_fft=front.n_fft, hop_length=front.hop, n_mels=front.n_mels,
        f_min=50.0, f_max=front.sample_rate / 2, center=False, power=2.0)
