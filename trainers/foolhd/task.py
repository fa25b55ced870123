"""The x-vector identification `TrainTask` for the one loop (trainers/loop.py), and reading the test shards back.

Batches are random waveform crops (`crop_seconds`, seeded per (seed, epoch, rank); shorter utterances repeat from
their start, as WeSpeaker pads); the front end (MFCC, VAD, CMN) runs inside the model, so what trains is exactly what
the attacks differentiate through.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch

from datasets.audio import decode_wav
from trainers.foolhd.frontend import FrontEndConfig
from trainers.foolhd.xvector import IdentificationLearner, build_xvector


def crop(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    if len(wave) < length:
        wave = np.tile(wave, -(-length // len(wave)))
    start = int(rng.integers(len(wave) - length + 1))
    return wave[start:start + length]


@dataclasses.dataclass
class XVectorTask:
    num_classes: int
    front: FrontEndConfig
    model_kwargs: dict
    batch_size: int
    crop_seconds: float = 3.0
    shuffle_buffer: int = 64
    seed: int = 0

    def build_model(self) -> IdentificationLearner:
        torch.manual_seed(self.seed)
        return IdentificationLearner(build_xvector(self.num_classes, self.front, **self.model_kwargs))

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch, rank])
        length = int(round(self.crop_seconds * self.front.sample_rate))
        local_seed = int(rng.integers(2**31))
        for rows in shard.iter_batches(batch_size=self.batch_size, batch_format="numpy",
                                       local_shuffle_buffer_size=self.shuffle_buffer, local_shuffle_seed=local_seed):
            waves = [crop(decode_wav(w)[0].astype(np.float32), length, rng) for w in rows["wav"]]
            yield {"wave": torch.from_numpy(np.stack(waves)),
                   "label": torch.from_numpy(np.array([int(c) for c in rows["cls"]], dtype=np.int64))}

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}


def read_utterances(paths: list[str]) -> list[dict]:
    """The shards' utterances as [{"key", "wave" float32, "label", "sample_rate"}], sorted by key."""
    from datasets.shards import read_shards

    out = []
    for rows in read_shards(paths, None, ("wav", "cls")).iter_batches(batch_size=64, batch_format="numpy"):
        for key, wav, cls in zip(rows["__key__"], rows["wav"], rows["cls"]):
            wave, sr = decode_wav(wav)
            out.append({"key": str(key), "wave": wave.astype(np.float32), "label": int(cls), "sample_rate": sr})
    return sorted(out, key=lambda u: u["key"])


class ReconstructionLearner(torch.nn.Module):
    """The autoencoder's pretraining objective: forward(wave, label) -> (||g(x) - x||^2 / ||x||^2 averaged over the
    batch, 0, n). The official attack starts from a pretrained autoencoder (compile_gae's MSE loss); its checkpoint is
    not published, so this project pretrains one on the training utterances through the same loop."""

    def __init__(self, gae: torch.nn.Module):
        super().__init__()
        self.gae = gae

    def forward(self, wave: torch.Tensor, label: torch.Tensor):
        err = ((self.gae(wave) - wave) ** 2).sum(-1) / (wave ** 2).sum(-1).clamp_min(1e-8)
        return err.mean(), torch.zeros(()), len(wave)


@dataclasses.dataclass
class AutoencoderTask(XVectorTask):
    """Pretraining of the gated autoencoder on waveform crops (same batches as the x-vector's)."""

    channels: int = 64
    dropout: float = 0.001

    def build_model(self) -> ReconstructionLearner:
        from trainers.foolhd.gae import GatedAutoEncoder

        torch.manual_seed(self.seed)
        return ReconstructionLearner(GatedAutoEncoder(self.channels, dropout=self.dropout))
