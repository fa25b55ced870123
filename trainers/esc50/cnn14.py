"""PANNs CNN14 (Kong et al. 2020, arXiv 1912.10211) as a frozen embedding extractor: the architecture of
qiuqiangkong/audioset_tagging_cnn's `Cnn14`, parameter names as in its published checkpoints
(`Cnn14_mAP=0.431.pth`: {"model": state dict, ...}), so such a file loads as it is.

Front end at 32 kHz: |STFT|^2 (1024-sample periodic Hann window, hop 320, centred with reflect padding),
64 mel bands 50-14000 Hz (librosa's Slaney mel), 10 log10(max(x, 1e-10)), no top_db. The reference computes
the STFT as a convolution with fixed DFT kernels; here torchaudio's FFT computes it, and the kernels a
checkpoint carries are checked to be exactly that DFT. The mel matrix is the checkpoint's own.
"""
from __future__ import annotations

import math

import torch
import torchaudio.functional as AF
from torch import nn

SAMPLE_RATE, N_FFT, HOP, N_MELS, F_MIN, F_MAX = 32000, 1024, 320, 64, 50.0, 14000.0
STFT_KEYS = ("spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight")


def dft_kernels(n_fft: int = N_FFT) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's STFT conv weights (n_fft // 2 + 1, 1, n_fft): Hann-windowed cos and -sin."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    angle = 2 * math.pi * k * n / n_fft
    return ((window * torch.cos(angle)).float()[:, None], (-window * torch.sin(angle)).float()[:, None])


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return nn.functional.avg_pool2d(x, pool)


class _LogMelBank(nn.Module):
    """Holds the mel matrix (n_fft // 2 + 1, n_mels) under the reference's key `logmel_extractor.melW`."""

    def __init__(self):
        super().__init__()
        self.register_buffer("melW", AF.melscale_fbanks(N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, SAMPLE_RATE,
                                                        norm="slaney", mel_scale="slaney"))


class Cnn14(nn.Module):
    """Six conv blocks (64 ... 2048 channels; 2x2 average pooling but after the last), mean over
    frequency, max + mean over time, fc1 + ReLU: the 2048-d `embedding` of the reference (in eval mode
    its dropouts are identity; SpecAugment and mixup act only in training, which never happens here)."""

    sample_rate = SAMPLE_RATE   # `embed` takes waveforms at this rate, not the workflow's log-mels

    def __init__(self, classes: int = 527):
        super().__init__()
        self.logmel_extractor = _LogMelBank()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.bn0 = nn.BatchNorm2d(N_MELS)
        chans = [1, 64, 128, 256, 512, 1024, 2048]
        for i, (a, b) in enumerate(zip(chans, chans[1:]), start=1):
            self.add_module(f"conv_block{i}", _ConvBlock(a, b))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes)   # AudioSet tagging head: loaded, unused for embeddings

    def logmel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, 64) log-mel in dB of (B, N) waveforms at 32 kHz."""
        spec = AF.spectrogram(wave, pad=0, window=self.window, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT,
                              power=2.0, normalized=False, center=True, pad_mode="reflect")    # (B, F, T)
        mel = torch.matmul(spec.transpose(1, 2), self.logmel_extractor.melW)
        return AF.amplitude_to_DB(mel, multiplier=10.0, amin=1e-10, db_multiplier=0.0, top_db=None)[:, None]

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 2048) embeddings of (B, N) waveforms at 32 kHz."""
        x = self.bn0(self.logmel(wave).transpose(1, 3)).transpose(1, 3)   # bn0 normalizes each mel band
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, 2 if i < 6 else 1)
        x = x.mean(dim=3)
        return torch.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))


def cnn14_from_state(state: dict) -> Cnn14:
    """A Cnn14 from a state dict with the reference's parameter names; ValueError naming what is missing,
    unexpected, or not the reference's front end."""
    model = Cnn14(classes=state["fc_audioset.weight"].shape[0]) if "fc_audioset.weight" in state else Cnn14()
    expected = set(model.state_dict()) | set(STFT_KEYS)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"missing keys {missing[:4]}{' ...' if len(missing) > 4 else ''}, unexpected keys "
                         f"{unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
    # the STFT kernels are fixed (frozen in the reference): they must be the DFT torchaudio computes
    for key, kernel in zip(STFT_KEYS, dft_kernels()):
        if state[key].shape != kernel.shape or not torch.allclose(state[key].float(), kernel, atol=1e-4):
            raise ValueError(f"{key} is not the 1024-point Hann-window DFT of the reference front end")
    model.load_state_dict({k: v for k, v in state.items() if k not in STFT_KEYS})
    return model
