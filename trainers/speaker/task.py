"""Speaker embedding training and extraction on shards: fbank in Ray Data, encoder + head in the loop.

Fbank is computed on the full utterance inside Ray Data (parallel CPU tasks, prefetched while the
trainer computes); the random 200-frame crop and per-crop mean normalization happen in the
training worker with a seeded RNG per (seed, epoch, rank). Cropping the fbank is equivalent to
taking the fbank of the cropped waveform (away from its edges), and keeps crops reproducible.
With waveform augmentation (speed, reverberation, noise: trainers/speaker/augment.py) Ray Data only
decodes, and the worker crops, augments and computes the crop's fbank.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from torch import nn

from trainers.embedding import HeadTask
from trainers.encoders import build_encoder
from trainers.features import crop_batch, fbank, mean_normalize
from trainers.inference import InferenceActor, embed_dataset
from trainers.speaker.augment import SPEEDS, AugmentConfig, CropAugmenter, spec_augment


@dataclasses.dataclass
class FrontEnd:
    sample_rate: int = 16000
    num_mel_bins: int = 80


class FbankBatch:
    """Ray Data `map_batches` UDF: wav bytes -> full-utterance fbank (T, num_mel_bins) float32 as "feats", or
    with `waveform` the decoded samples as "wave"."""

    def __init__(self, front: FrontEnd, waveform: bool = False):
        self.front, self.waveform = front, waveform

    def __call__(self, batch: dict) -> dict:
        from datasets.audio import decode_wav

        feats, labels, keys = [], [], []
        for key, wav, label in zip(batch["__key__"], batch["wav"], batch["cls"]):
            samples, sr = decode_wav(wav)
            if sr != self.front.sample_rate:
                raise ValueError(f"sample {key}: shard audio is {sr} Hz but the front end expects "
                                 f"{self.front.sample_rate} Hz; rebuild the shards or set data.sample_rate")
            feats.append(samples.astype(np.float32, copy=False) if self.waveform else
                         fbank(samples, sample_rate=sr, num_mel_bins=self.front.num_mel_bins).numpy())
            labels.append(int(label))
            keys.append(key)
        out = np.empty(len(feats), dtype=object)
        out[:] = feats
        return {"key": np.array(keys), "wave" if self.waveform else "feats": out,
                "label": np.array(labels, dtype=np.int64)}


def feature_dataset(paths: list[str], front: FrontEnd, shuffle_seed: int | None = None,
                    speakers: frozenset | None = None, exclude: bool = False, waveform: bool = False):
    """Shards -> Ray Dataset of {key, feats (T, F), label} (with `waveform`: {key, wave, label});
    `shuffle_seed` randomizes shard order. `speakers` (label indices) keeps only those, or with `exclude`
    all but those, before any fbank."""
    from datasets.shards import read_shards

    ds = read_shards(paths, shuffle_seed)
    if speakers is not None:
        ds = ds.filter(lambda row: (int(row["cls"]) in speakers) != exclude)
    return ds.map_batches(FbankBatch(front, waveform), batch_size=16, batch_format="numpy")


@dataclasses.dataclass
class SpeakerTask(HeadTask):
    """The speaker-verification `TrainTask` for trainers.loop (picklable). With speed perturbation
    `num_classes` is 3x the training speakers (trainers/speaker/augment.py)."""

    encoder: str
    encoder_args: dict
    embed_dim: int
    head: dict
    num_classes: int
    front: FrontEnd
    batch_size: int
    num_frames: int = 200
    shuffle_buffer: int = 1000
    seed: int = 0
    margin_warmup: tuple[int, int] | None = None   # (start_epoch, fix_epoch) of the margin schedule
    pk: int | None = None    # K: batches of batch_size // K speakers x K utterances (Mask Proxy heads)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)

    @property
    def input_column(self) -> str:
        return "wave" if self.augment.on_waveform else "feats"

    @property
    def num_speakers(self) -> int:
        return self.num_classes // len(SPEEDS) if self.augment.speed_perturb else self.num_classes

    def build_encoder(self) -> nn.Module:
        return build_encoder(self.encoder, feat_dim=self.front.num_mel_bins, embed_dim=self.embed_dim,
                             **self.encoder_args)

    def evaluate(self, model, val_shard) -> dict[str, float]:
        """After each epoch (rank 0): EER over every pair of the held-out validation speakers'
        utterances (full length, cosine), the open-set score sweeps select on."""
        from trainers.metrics import eer

        embs, labels = [], []
        device = next(model.parameters()).device    # a GPU run validates on its GPU
        for b in val_shard.iter_batches(batch_size=16, batch_format="numpy"):
            for feats, label in zip(b["feats"], b["label"]):
                x = torch.from_numpy(mean_normalize(np.asarray(feats, dtype=np.float32)))[None].to(device)
                embs.append(torch.nn.functional.normalize(model.encoder(x), dim=1)[0].cpu().numpy())
                labels.append(int(label))
        e, labels = np.stack(embs), np.array(labels)
        i, j = np.triu_indices(len(e), 1)
        return {"val_eer": eer((e[i] * e[j]).sum(1), (labels[i] == labels[j]).astype(int))}

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch, rank])
        aug = self.augment
        crops = (CropAugmenter(aug, self.front.sample_rate, self.front.num_mel_bins, self.num_frames)
                 if aug.on_waveform else None)
        for batch in self.epoch_stream(shard, rng):
            labels = np.array(batch["label"], dtype=np.int64)   # a copy: Ray hands read-only arrays
            if crops is None:
                feats = crop_batch(list(batch["feats"]), self.num_frames, rng)
                if aug.spec_aug:
                    feats = np.stack([spec_augment(f, aug, rng) for f in feats])
            else:
                speed = crops.speed_indices(labels, rng, per_label=self.pk is not None)
                feats = np.stack([crops.features(w, int(i), rng) for w, i in zip(batch["wave"], speed)])
                labels = labels + self.num_speakers * speed
            yield {"feats": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
                   "label": torch.from_numpy(labels)}


class EmbedBatch(InferenceActor):
    """Full-utterance fbank -> embedding, one utterance at a time so utterances of any length are
    embedded without padding."""

    def __init__(self, task: SpeakerTask, encoder_state: dict | None):
        super().__init__(task.build_encoder, encoder_state)

    def predict(self, batch: dict) -> dict:
        embs = []
        for feats in batch["feats"]:
            x = self.floats(mean_normalize(np.asarray(feats, dtype=np.float32)))[None]
            embs.append(self.model(x)[0].cpu().numpy())
        return {"key": batch["key"], "embedding": np.stack(embs)}


def extract_embeddings(paths: list[str], task: SpeakerTask, encoder_state: dict | None,
                       concurrency: int = 1, use_gpu: bool | None = None) -> dict[str, np.ndarray]:
    """Batch inference with Ray Data: {key: embedding} for every utterance in the shards."""
    return embed_dataset(feature_dataset(paths, task.front), EmbedBatch, (task, encoder_state), len(paths),
                         concurrency, batch_size=8, use_gpu=use_gpu)
