"""Speaker embedding training and extraction on shards: fbank in Ray Data, encoder + head in the loop.

Fbank is computed on the full utterance inside Ray Data (parallel CPU tasks, prefetched while the
trainer computes); the random 200-frame crop and per-crop mean normalization happen in the
training worker with a seeded RNG per (seed, epoch, rank). Cropping the fbank is equivalent to
taking the fbank of the cropped waveform (away from its edges), and keeps crops reproducible.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from torch import nn

from trainers.encoders import build_encoder
from trainers.features import crop_batch, fbank, mean_normalize
from trainers.heads import MarginScheduler, build_head
from trainers.loop import cpus_leaving_one_for_data
from trainers.pk_sampler import pk_batches


@dataclasses.dataclass
class FrontEnd:
    sample_rate: int = 16000
    num_mel_bins: int = 80


class FbankBatch:
    """Ray Data `map_batches` UDF: wav bytes -> full-utterance fbank (T, num_mel_bins) float32."""

    def __init__(self, front: FrontEnd):
        self.front = front

    def __call__(self, batch: dict) -> dict:
        from datasets.audio import decode_wav

        feats, labels, keys = [], [], []
        for key, wav, label in zip(batch["__key__"], batch["wav"], batch["cls"]):
            samples, sr = decode_wav(wav)
            if sr != self.front.sample_rate:
                raise ValueError(f"sample {key}: shard audio is {sr} Hz but the front end expects "
                                 f"{self.front.sample_rate} Hz; rebuild the shards or set data.sample_rate")
            feats.append(fbank(samples, sample_rate=sr, num_mel_bins=self.front.num_mel_bins).numpy())
            labels.append(int(label))
            keys.append(key)
        out = np.empty(len(feats), dtype=object)
        out[:] = feats
        return {"key": np.array(keys), "feats": out, "label": np.array(labels, dtype=np.int64)}


def feature_dataset(paths: list[str], front: FrontEnd, shuffle_seed: int | None = None):
    """Shards -> Ray Dataset of {key, feats (T, F), label}; `shuffle_seed` randomizes shard order."""
    import ray

    ds = ray.data.read_webdataset(paths, override_num_blocks=len(paths))
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(seed=shuffle_seed)
    return ds.map_batches(FbankBatch(front), batch_size=16, batch_format="numpy")


class SpeakerModel(nn.Module):
    """Encoder + margin head; `forward` returns (loss, correct, n) for the training loop."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, feats: torch.Tensor, label: torch.Tensor):
        emb = self.encoder(feats)
        loss = self.head(emb, label)
        with torch.no_grad():
            correct = (self.head.logits(emb.detach()).argmax(dim=1) == label).sum()
        return loss, correct, label.numel()


@dataclasses.dataclass
class SpeakerTask:
    """The speaker-verification `TrainTask` for trainers.loop (picklable)."""

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

    def build_encoder(self) -> nn.Module:
        return build_encoder(self.encoder, feat_dim=self.front.num_mel_bins, embed_dim=self.embed_dim,
                             **self.encoder_args)

    def build_model(self) -> nn.Module:
        kwargs = {k: v for k, v in self.head.items() if k != "name"}
        head = build_head(self.head["name"], self.embed_dim, self.num_classes, **kwargs)
        model = SpeakerModel(self.build_encoder(), head)
        model.final_margin = getattr(head, "margin", None)  # the warm-up's target, before any schedule
        return model

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch, rank])
        stream = shard.iter_batches(batch_size=self.batch_size, batch_format="numpy", drop_last=self.pk is None,
                                    local_shuffle_buffer_size=self.shuffle_buffer,
                                    local_shuffle_seed=int(rng.integers(2**31)))
        if self.pk is not None:
            stream = self._pk_batches(stream, int(rng.integers(2**31)))
        for batch in stream:
            feats = crop_batch(list(batch["feats"]), self.num_frames, rng)
            yield {"feats": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
                   "label": torch.from_numpy(np.asarray(batch["label"], dtype=np.int64))}

    def _pk_batches(self, stream, seed: int) -> Iterator[dict]:
        """Regroup this worker's shuffled stream into batch_size // K speakers x K utterances. Each
        worker groups its own shard (a batch only needs K-grouping where its loss is computed); the
        loop stops all workers at the shortest worker's step count."""
        rows = ((label, feats) for b in stream for feats, label in zip(b["feats"], b["label"]))
        for group in pk_batches(rows, self.batch_size // self.pk, self.pk, seed):
            yield {"label": [label for label, _ in group], "feats": [feats for _, feats in group]}

    def on_lr_step(self, model: SpeakerModel) -> dict[str, float]:
        """At each LR milestone: heads with an LR-step rule (SphereFace-R without FN) grow m."""
        step = getattr(model.head, "on_lr_step", None)
        return {"head_m": float(step())} if step else {}

    def on_epoch_start(self, model: SpeakerModel, epoch: int) -> dict[str, float]:
        if self.margin_warmup is None or model.final_margin is None:
            return {}
        start, fix = self.margin_warmup
        m = MarginScheduler(model.final_margin, start, fix).margin_at(epoch)
        model.head.set_margin(m)
        return {"margin": m}


class EmbedBatch:
    """Ray Data UDF (actor): full-utterance fbank -> L2-normalized embedding, one utterance at a time
    so utterances of any length are embedded without padding."""

    def __init__(self, task: SpeakerTask, encoder_state: dict | None):
        self.encoder = task.build_encoder()
        if encoder_state is not None:
            self.encoder.load_state_dict(encoder_state)
        self.encoder.eval()

    @torch.inference_mode()  # grad mode is thread-local and Ray calls UDFs from its own threads
    def __call__(self, batch: dict) -> dict:
        embs = []
        for feats in batch["feats"]:
            x = torch.from_numpy(mean_normalize(np.asarray(feats, dtype=np.float32)))[None]
            embs.append(self.encoder(x)[0].numpy())
        return {"key": batch["key"], "embedding": np.stack(embs)}


def extract_embeddings(paths: list[str], task: SpeakerTask, encoder_state: dict | None,
                       concurrency: int = 1) -> dict[str, np.ndarray]:
    """Batch inference with Ray Data: {key: embedding} for every utterance in the shards."""
    import ray

    concurrency = max(1, min(concurrency, len(paths)))  # one read block per shard: more actors would idle
    ds = feature_dataset(paths, task.front).map_batches(
        EmbedBatch, fn_constructor_args=(task, encoder_state), batch_size=8, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=cpus_leaving_one_for_data(concurrency))
    out = {}
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        out.update(zip(batch["key"].tolist(), batch["embedding"]))
    return out


def encoder_state(model_state: dict) -> dict:
    """The encoder's weights from a SpeakerModel state dict."""
    return {k[len("encoder."):]: v for k, v in model_state.items() if k.startswith("encoder.")}
