"""Weakly-supervised SED on remix shards: the Ray Data pipeline, the `TrainTask` for the one loop,
and clip + frame predictions by Ray Data batch inference.

Front end: `trainers.features.LogMel` (the remix protocol: 10 s at 32 kHz, window 2048, hop 1024 -> 311 frames).
Targets: the weak label vector (clip level) for training; frame targets (which labels are active
in each frame) for the activity plots; the strong events for segment-based scores.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import numpy as np
import torch

from datasets.shards import json_member
from trainers.features import LogMel
from trainers.inference import InferenceActor, map_with_actors
from trainers.loop import tensor_batches


def frame_targets(events: list[dict], classes: list[str], n_frames: int, hop_s: float) -> np.ndarray:
    """(T, C) 0/1: frame i (covering [i·hop, (i+1)·hop)) is active for a label when it overlaps
    one of that label's events."""
    out = np.zeros((n_frames, len(classes)), dtype=np.float32)
    index = {c: i for i, c in enumerate(classes)}
    for e in events:
        first = int(np.floor(e["onset"] / hop_s))
        last = int(np.ceil(e["offset"] / hop_s))
        out[max(first, 0):min(last, n_frames), index[e["label"]]] = 1.0
    return out


def to_model_input(batch: dict, front: LogMel, classes: list[str], folds: list[int] | None) -> dict:
    """Ray Data `map_batches` fn: shard rows (of the wanted folds) -> log-mel, weak and frame targets."""
    index = {c: i for i, c in enumerate(classes)}
    rows = {"key": [], "logmel": [], "weak": [], "frames": [], "meta": []}
    for key, wav, meta in zip(batch["__key__"], batch["wav"], batch["json"]):
        meta = json_member(meta)
        if folds is not None and meta["fold"] not in folds:
            continue
        feats = front.logmel_of_wav(key, wav)
        weak = np.zeros(len(classes), dtype=np.float32)
        weak[[index[label] for label in meta["labels"]]] = 1.0
        rows["key"].append(key)
        rows["logmel"].append(feats)
        rows["weak"].append(weak)
        rows["frames"].append(frame_targets(meta["events"], classes, len(feats), front.hop / front.sample_rate))
        rows["meta"].append(json.dumps(meta))
    if not rows["key"]:
        return {"key": np.array([], dtype=object), "logmel": np.zeros((0, 0, front.n_mels), np.float32),
                "weak": np.zeros((0, len(classes)), np.float32),
                "frames": np.zeros((0, 0, len(classes)), np.float32), "meta": np.array([], dtype=object)}
    return {"key": np.array(rows["key"], dtype=object), "logmel": np.stack(rows["logmel"]),
            "weak": np.stack(rows["weak"]), "frames": np.stack(rows["frames"]),
            "meta": np.array(rows["meta"], dtype=object)}


def sed_dataset(paths: list[str], front: LogMel, classes: list[str], folds: list[int] | None,
                shuffle_seed: int | None = None):
    """Remix shards -> Ray Dataset of {key, logmel (T, F), weak (C,), frames (T, C), meta} for `folds`."""
    from datasets.shards import read_shards

    return read_shards(paths, shuffle_seed).map_batches(
        to_model_input, fn_kwargs={"front": front, "classes": list(classes), "folds": folds},
        batch_size=16, batch_format="numpy")


@dataclasses.dataclass
class SEDTask:
    """The SED `TrainTask` for trainers.loop (picklable)."""

    num_classes: int
    n_mels: int
    model: dict                  # SEDModel keyword arguments: width, pooling, aux_decoder, alpha
    batch_size: int
    shuffle_buffer: int = 64
    seed: int = 0

    def build_model(self) -> torch.nn.Module:
        from trainers.sed.model import SEDModel

        torch.manual_seed(self.seed)  # the same initial weights for the trained and untrained rows
        return SEDModel(self.num_classes, n_mels=self.n_mels, **self.model)

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        return tensor_batches(shard, {"logmel": np.float32, "weak": np.float32}, self.batch_size,
                              self.shuffle_buffer, self.seed, epoch, rank)

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}


class PredictClips(InferenceActor):
    """Log-mel -> clip probabilities (C,) and frame probabilities (T, C)."""

    def __init__(self, task: SEDTask, state: dict | None):
        super().__init__(task.build_model, state)

    def predict(self, batch: dict) -> dict:
        clip, frame = self.model.predict(torch.from_numpy(np.ascontiguousarray(batch["logmel"], dtype=np.float32)))
        return {**batch, "clip": clip.numpy(), "frame": frame.numpy()}


def predict(ds, task: SEDTask, state: dict | None, num_blocks: int, concurrency: int = 1) -> list[dict]:
    """Batch inference over a `sed_dataset`: one dict per clip (key, logmel, weak, frames, meta, clip,
    frame), sorted by key."""
    ds = map_with_actors(ds, PredictClips, (task, state), num_blocks, concurrency, batch_size=16)
    rows = [dict(zip(b, values)) for b in ds.iter_batches(batch_size=64, batch_format="numpy")
            for values in zip(*b.values())]
    return sorted(rows, key=lambda r: r["key"])
