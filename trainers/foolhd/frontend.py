"""The x-vector front end of FoolHD's target, in torch so that gradients flow from the waveform:
Kaldi-style MFCC (torchaudio.compliance.kaldi.mfcc: 30 cepstra with the raw log-energy as C0, 30 mel bins over
20-4000 Hz at 8 kHz, 25 / 10 ms povey frames, pre-emphasis 0.97, snip_edges false, no dither), Kaldi's energy VAD and
sliding cepstral mean normalization.

    VAD (Kaldi's compute-vad): threshold = 5.5 + 0.5 * mean_t(C0); frame t is voiced when at least 12 % of the frames
        t-2 .. t+2 that exist have C0 above the threshold. The decision is a 0/1 mask (no gradient); the kept frames'
        values carry the gradient.
    Sliding CMN (Kaldi's apply-cmvn-sliding, --center=true, no variance norm): frame t minus the mean of the window
        [t - W//2, t - W//2 + W) shifted to lie inside the utterance (the whole utterance when it is shorter than W).
        W = 301 as the official code; it pads the window with zeros at the edges instead (documented difference).

Audio is float in [-1, 1] and scaled by 32768 before the MFCC, as Kaldi reads 16-bit samples: this is what gives the
VAD's absolute 5.5 its meaning (the official code feeds [-1, 1] floats; docs/faithfulness.md).
"""
from __future__ import annotations

import torch
from torchaudio.compliance import kaldi

from trainers.foolhd.config import FrontEndConfig  # noqa: F401  (re-exported: the front end's settings)

INT16_SCALE = 32768.0


def mfcc(wave: torch.Tensor, cfg: FrontEndConfig) -> torch.Tensor:
    """(n,) float wave in [-1, 1] -> (T, num_ceps) MFCC before VAD and CMN, T = round(n / shift) (snip_edges false)."""
    if wave.dim() != 1:
        raise ValueError(f"mfcc expects a mono 1-D wave, got shape {tuple(wave.shape)}")
    if wave.numel() < cfg.frame_samples:
        raise ValueError(f"wave of {wave.numel()} samples is shorter than one {cfg.frame_length} ms frame")
    return kaldi.mfcc((wave * INT16_SCALE).unsqueeze(0), num_ceps=cfg.num_ceps, num_mel_bins=cfg.num_mel_bins,
                      low_freq=cfg.low_freq, high_freq=cfg.high_freq, frame_length=cfg.frame_length,
                      frame_shift=cfg.frame_shift, sample_frequency=cfg.sample_rate, use_energy=True,
                      raw_energy=True, snip_edges=False, dither=0.0, energy_floor=0.0, window_type="povey",
                      preemphasis_coefficient=0.97, remove_dc_offset=True)


def vad_mask(feats: torch.Tensor, cfg: FrontEndConfig) -> torch.Tensor:
    """(T, D) MFCC with C0 = log-energy -> (T,) bool voiced mask (Kaldi's ComputeVadEnergy)."""
    energy = feats[:, 0].detach()
    threshold = cfg.vad_threshold + cfg.vad_mean_scale * energy.mean()
    above = torch.nn.functional.pad((energy > threshold).float()[None, None], (cfg.vad_context,) * 2)[0, 0]
    exists = torch.nn.functional.pad(torch.ones_like(energy)[None, None], (cfg.vad_context,) * 2)[0, 0]
    width = 2 * cfg.vad_context + 1
    num = above.unfold(0, width, 1).sum(1)
    den = exists.unfold(0, width, 1).sum(1)
    return num >= den * cfg.vad_proportion


def sliding_cmn(feats: torch.Tensor, window: int) -> torch.Tensor:
    """(T, D) -> (T, D) minus the centred sliding mean of `window` frames, the window kept inside the utterance."""
    T = feats.shape[0]
    if window == 0 or T == 0:
        return feats
    w = min(window, T)
    t = torch.arange(T, device=feats.device)
    start = (t - window // 2).clamp(min=0).clamp(max=T - w)
    cum = torch.cat([feats.new_zeros(1, feats.shape[1]), feats.cumsum(0)])
    return feats - (cum[start + w] - cum[start]) / w


def features(wave: torch.Tensor, cfg: FrontEndConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) wave -> (voiced frames after sliding CMN (T', D), MFCC before VAD (T, D)). When the VAD keeps no frame
    (silence), every frame is kept: Kaldi would drop such an utterance, an attack cannot."""
    raw = mfcc(wave, cfg)
    keep = vad_mask(raw, cfg)
    voiced = raw[keep] if bool(keep.any()) else raw
    return sliding_cmn(voiced, cfg.cmn_window), raw
