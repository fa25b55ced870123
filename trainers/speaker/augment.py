"""On-the-fly augmentation of training crops, as WeSpeaker's VoxCeleb recipe (wespeaker/dataset/processor.py):

1. speed perturbation: speed 1.0, 0.9 or 1.1 with equal chance (sox `speed`: tempo and pitch together); a
   perturbed utterance is a new speaker, label + n_speakers * speed_index, so the head has 3x the classes;
2. with probability `aug_prob`, either reverberation or additive noise (equal chance between the sources
   given): reverberation convolves with an RIR scaled to unit energy and keeps the first len(x) samples;
   noise is a random MUSAN chunk at an SNR drawn uniformly from its kind's range (noise 0-15 dB, music
   5-15, speech 10-30), energies as 10 log10(mean(x^2) + 1e-4); the result is then scaled to peak 1;
3. fbank, per-crop mean normalization, then (`spec_aug`) with probability `spec_aug_prob` one time mask of
   1..max_t frames and one frequency mask of 1..max_f bins set to 0 (the mean).

Where we differ, and why: WeSpeaker speed-perturbs the whole utterance and then crops; we crop
ceil(len * speed) samples and resample only that crop (the same signal away from the utterance's edges, a
fraction of the cost). Every draw comes from the worker's seeded generator, not Python's global one, so an
epoch's augmentation is reproducible. Mask Proxy groups K utterances per speaker, so a P x K batch draws one
speed per speaker (every utterance of a group stays one class). Only numpy at import: the workflow's config
section lives here.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SPEEDS = (1.0, 0.9, 1.1)
SNR_DB = {"noise": (0.0, 15.0), "music": (5.0, 15.0), "speech": (10.0, 30.0)}


@dataclasses.dataclass
class AugmentConfig:
    speed_perturb: bool = False
    musan: str = ""                  # MUSAN root: additive noise (empty: none)
    rirs: str = ""                   # RIRS_NOISES root: reverberation (empty: none)
    aug_prob: float = 0.6            # chance that a crop gets reverberation or noise
    spec_aug: bool = False           # WeSpeaker's VoxCeleb recipes leave it off
    spec_aug_prob: float = 0.6
    max_t: int = 10
    max_f: int = 8

    @property
    def on_waveform(self) -> bool:
        """Whether training needs the waveform (else the precomputed fbank is cropped)."""
        return bool(self.speed_perturb or self.musan or self.rirs)

    @property
    def enabled(self) -> bool:
        return self.on_waveform or self.spec_aug

    def validate(self) -> None:
        """Bad values and folders fail before any data is read (ValueError naming the key)."""
        from datasets.augment_sources import musan_files, rir_files

        if not 0.0 <= self.aug_prob <= 1.0 or not 0.0 <= self.spec_aug_prob <= 1.0:
            raise ValueError(f"augment.aug_prob and augment.spec_aug_prob must be in [0, 1], got {self.aug_prob}, "
                             f"{self.spec_aug_prob}")
        if self.max_t < 1 or self.max_f < 1:
            raise ValueError(f"augment.max_t and augment.max_f must be >= 1, got {self.max_t}, {self.max_f}")
        if self.musan:
            musan_files(self.musan)
        if self.rirs:
            rir_files(self.rirs)


class CropAugmenter:
    """Turns utterance waveforms into augmented, mean-normalized fbank crops (one per training worker)."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int, num_mel_bins: int, num_frames: int):
        from datasets.augment_sources import musan_files, rir_files

        self.cfg, self.sample_rate, self.num_mel_bins = cfg, sample_rate, num_mel_bins
        # kaldi framing (25 ms / 10 ms, snip edges): num_frames frames need this many samples
        self.crop_len = (num_frames - 1) * sample_rate // 100 + sample_rate * 25 // 1000
        self.noises = musan_files(cfg.musan) if cfg.musan else []
        self.rirs = rir_files(cfg.rirs) if cfg.rirs else []
        self._resamplers = {}   # speed -> torchaudio Resample

    def speed_indices(self, labels: np.ndarray, rng: np.random.Generator, per_label: bool) -> np.ndarray:
        """Index into SPEEDS per utterance (all 0 without speed perturbation); `per_label`: one per speaker."""
        if not self.cfg.speed_perturb:
            return np.zeros(len(labels), dtype=np.int64)
        if not per_label:
            return rng.integers(0, len(SPEEDS), len(labels))
        drawn = {}
        for label in labels:
            drawn.setdefault(int(label), int(rng.integers(0, len(SPEEDS))))
        return np.array([drawn[int(label)] for label in labels], dtype=np.int64)

    def crop(self, wave: np.ndarray, speed_index: int, rng: np.random.Generator) -> np.ndarray:
        """A random crop of `crop_len` samples at the chosen speed; short utterances repeat from the start."""
        speed = SPEEDS[speed_index]
        need = int(np.ceil(self.crop_len * speed))
        wave = np.asarray(wave, dtype=np.float32)
        if len(wave) >= need:
            start = int(rng.integers(0, len(wave) - need + 1))
            chunk = wave[start:start + need]
        else:
            chunk = np.resize(wave, need)
        if speed != 1.0:
            import torch

            chunk = self._resampler(speed)(torch.from_numpy(np.ascontiguousarray(chunk))).numpy()
        return chunk[:self.crop_len]

    def _resampler(self, speed: float):
        # played `speed` times faster: the samples are read as if recorded at sample_rate * speed
        if speed not in self._resamplers:
            import torchaudio

            self._resamplers[speed] = torchaudio.transforms.Resample(int(round(self.sample_rate * speed)),
                                                                     self.sample_rate)
        return self._resamplers[speed]

    def reverb_or_noise(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kinds = [k for k, files in (("reverb", self.rirs), ("noise", self.noises)) if files]
        if not kinds or rng.random() >= self.cfg.aug_prob:
            return x
        if kinds[int(rng.integers(0, len(kinds)))] == "reverb":
            out = add_reverb(x, self._rir(rng))
        else:
            from datasets.augment_sources import read_chunk

            kind, path = self.noises[int(rng.integers(0, len(self.noises)))]
            lo, hi = SNR_DB[kind]
            out = add_noise(x, read_chunk(path, len(x), self.sample_rate, rng), float(rng.uniform(lo, hi)))
        return out / (np.abs(out).max() + 1e-4)

    def _rir(self, rng: np.random.Generator) -> np.ndarray:
        from datasets.augment_sources import read_rir

        return read_rir(self.rirs[int(rng.integers(0, len(self.rirs)))], self.sample_rate)

    def features(self, wave: np.ndarray, speed_index: int, rng: np.random.Generator) -> np.ndarray:
        """(num_frames, num_mel_bins) float32: crop, reverb/noise, fbank, mean normalization, SpecAugment."""
        from trainers.features import fbank, mean_normalize

        x = self.reverb_or_noise(self.crop(wave, speed_index, rng), rng)
        feats = mean_normalize(fbank(x, self.sample_rate, self.num_mel_bins).numpy())
        return spec_augment(feats, self.cfg, rng) if self.cfg.spec_aug else feats


def add_reverb(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """x convolved with the unit-energy RIR, cut to len(x) (the direct path's delay is kept, as WeSpeaker)."""
    from scipy.signal import fftconvolve

    rir = rir / np.sqrt(np.sum(rir.astype(np.float64) ** 2))
    return fftconvolve(x, rir, mode="full")[:len(x)].astype(np.float32)


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that the energy ratio in WeSpeaker's dB (10 log10(mean^2 + 1e-4)) is `snr_db`."""
    def db(v):
        return 10 * np.log10(np.mean(v.astype(np.float64) ** 2) + 1e-4)

    return (x + np.sqrt(10 ** ((db(x) - db(noise) - snr_db) / 10)) * noise).astype(np.float32)


def spec_augment(feats: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """With probability spec_aug_prob: one time mask (1..max_t frames) and one frequency mask (1..max_f bins)
    starting anywhere, cut at the edge, set to 0."""
    if rng.random() >= cfg.spec_aug_prob:
        return feats
    out = feats.copy()
    t, f = out.shape
    start, width = int(rng.integers(0, t)), int(rng.integers(1, cfg.max_t + 1))
    out[start:start + width] = 0.0
    start, width = int(rng.integers(0, f)), int(rng.integers(1, cfg.max_f + 1))
    out[:, start:start + width] = 0.0
    return out
