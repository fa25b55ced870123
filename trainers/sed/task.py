"""Weakly-supervised SED on remix shards: the Ray Data pipeline, the `TrainTask` for the one loop,
and clip + frame predictions by Ray Data batch inference.

Front end: `trainers.features.LogMel` (the remix protocol: 10 s at 32 kHz, window 2048, hop 1024 -> 311 frames),
z-scored inside the model with per-bin statistics of the training folds (`feature_stats`).
Validation: a fixed share of the training folds' mixtures (by a hash of the key) is held out of
training for the lr plateau and the best epoch; the test fold is never looked at before scoring.
Targets: the weak label vector (clip level) for training; frame targets (which labels are active
in each frame) for the activity plots; the strong events for segment-based scores.
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Iterator

import numpy as np
import torch

from datasets.shards import json_member
from trainers.features import LogMel
from trainers.inference import InferenceActor, infer
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


def in_val_split(key: str, val_fraction: float) -> bool:
    """Whether a training-fold mixture is held out for validation: a stable hash of its key, so the
    split is the same in every epoch, process and rerun."""
    return zlib.crc32(key.encode()) % 10_000 < val_fraction * 10_000


def to_model_input(batch: dict, front: LogMel, classes: list[str], folds: list[int] | None,
                   part: str | None = None, val_fraction: float = 0.0) -> dict:
    """Ray Data `map_batches` fn: shard rows (of the wanted folds; part "train" / "val": without / only
    the validation share) -> log-mel, weak and frame targets."""
    index = {c: i for i, c in enumerate(classes)}
    rows = {"key": [], "logmel": [], "weak": [], "frames": [], "meta": []}
    for key, wav, meta in zip(batch["__key__"], batch["wav"], batch["json"]):
        meta = json_member(meta)
        if folds is not None and meta["fold"] not in folds:
            continue
        if part is not None and in_val_split(key, val_fraction) != (part == "val"):
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
                shuffle_seed: int | None = None, part: str | None = None, val_fraction: float = 0.0):
    """Remix shards -> Ray Dataset of {key, logmel (T, F), weak (C,), frames (T, C), meta} for `folds`
    (and `part`, see `to_model_input`)."""
    from datasets.shards import read_shards

    return read_shards(paths, shuffle_seed).map_batches(
        to_model_input, fn_kwargs={"front": front, "classes": list(classes), "folds": folds, "part": part,
                                   "val_fraction": val_fraction},
        batch_size=16, batch_format="numpy")


def clip_sums(batch: dict, front: LogMel, val_fraction: float) -> dict:
    """Ray Data `map_batches` fn: per mixture its fold, frame count, whether it is in the validation
    share, and the per-bin sums of its log-mel and of its square (float64)."""
    out = {"key": [], "fold": [], "n_frames": [], "val": [], "sum": [], "sumsq": []}
    for key, wav, meta in zip(batch["__key__"], batch["wav"], batch["json"]):
        x = front.logmel_of_wav(key, wav).astype(np.float64)
        for name, value in (("key", key), ("fold", json_member(meta)["fold"]), ("n_frames", len(x)),
                            ("val", in_val_split(key, val_fraction)), ("sum", x.sum(0)),
                            ("sumsq", (x * x).sum(0))):
            out[name].append(value)
    return {k: np.array(v, dtype=object) if k == "key" else np.array(v) for k, v in out.items()}


def feature_stats(paths: list[str], front: LogMel, test_folds: list[int], folds: int, val_fraction: float,
                  fixed_length: bool) -> dict[int, dict]:
    """One pass over every mixture -> per test fold {mean, std (per mel bin, over all frames of the
    other folds, as the official z-score), n_frames, n_val (validation mixtures)}. `fixed_length`:
    every mixture must have the same number of frames (the official time attention is Linear(T, T));
    the first that differs is named."""
    from datasets.shards import read_shards

    sums = {f: np.zeros((2, front.n_mels)) for f in range(1, folds + 1)}
    frames = {f: 0 for f in sums}
    n_val = {f: 0 for f in sums}
    first = None                                                     # (key, frames) of the first mixture
    for b in read_shards(paths).map_batches(clip_sums, fn_kwargs={"front": front, "val_fraction": val_fraction},
                                            batch_size=16, batch_format="numpy").iter_batches(
                                                batch_size=256, batch_format="numpy"):
        for key, fold, n, val, s, sq in zip(b["key"], b["fold"], b["n_frames"], b["val"], b["sum"], b["sumsq"]):
            first = first or (key, int(n))
            if fixed_length and n != first[1]:
                raise ValueError(f"mixture {key} has {n} frames but {first[0]} has {first[1]}: the two_step time "
                                 "attention (Linear(T, T)) needs one clip length (model.pooling=two_step_scalar "
                                 "works for any)")
            sums[int(fold)] += (s, sq)
            frames[int(fold)] += int(n)
            n_val[int(fold)] += bool(val)
    out = {}
    for test in test_folds:
        train = [f for f in sums if f != test]
        count = sum(frames[f] for f in train)
        if count == 0:
            raise ValueError(f"no training mixtures for test fold {test} in {paths[0]}...")
        s, sq = sum(sums[f] for f in train) / count
        out[test] = {"mean": s.tolist(), "std": np.sqrt(np.maximum(sq - s * s, 1e-12)).tolist(),
                     "n_frames": first[1], "n_val": sum(n_val[f] for f in train)}
    return out


@dataclasses.dataclass
class SEDTask:
    """The SED `TrainTask` for trainers.loop (picklable)."""

    num_classes: int
    n_mels: int
    model: dict                  # SEDModel keyword arguments: width, pooling, aux_decoder, alpha
    batch_size: int
    shuffle_buffer: int = 64
    seed: int = 0
    n_frames: int = 1            # frames per clip (the two_step time attention's size)
    feature_mean: list | None = None   # per-bin z-score statistics of the training folds
    feature_std: list | None = None

    def build_model(self) -> torch.nn.Module:
        from trainers.sed.model import SEDModel

        torch.manual_seed(self.seed)  # the same initial weights for the trained and untrained rows
        return SEDModel(self.num_classes, n_mels=self.n_mels, n_frames=self.n_frames,
                        feature_mean=self.feature_mean, feature_std=self.feature_std, **self.model)

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        return tensor_batches(shard, {"logmel": np.float32, "weak": np.float32}, self.batch_size,
                              self.shuffle_buffer, self.seed, epoch, rank)

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}

    def evaluate(self, model, val_shard) -> dict[str, float]:
        """Clip micro/macro-AP of the validation share (the official code's model selection metric is
        micro-AP, there taken on the test fold)."""
        from trainers.sed.metrics import clip_metrics

        device = next(model.parameters()).device
        weak, clip = [], []
        for b in val_shard.iter_batches(batch_size=64, batch_format="numpy"):
            logmel = torch.from_numpy(np.ascontiguousarray(b["logmel"], dtype=np.float32)).to(device)
            clip.append(model.predict(logmel)[0].float().cpu().numpy())
            weak.append(b["weak"])
        m = clip_metrics(np.concatenate(weak), np.concatenate(clip))
        return {"val_micro_ap": m["micro_ap"], "val_macro_ap": m["macro_ap"]}


class PredictClips(InferenceActor):
    """Log-mel -> clip probabilities (C,) and frame probabilities (T, C)."""

    def __init__(self, task: SEDTask, state: dict | None):
        super().__init__(task.build_model, state)

    def predict(self, batch: dict) -> dict:
        clip, frame = self.model.predict(self.floats(batch["logmel"]))
        return {**batch, "clip": clip.cpu().numpy(), "frame": frame.cpu().numpy()}


def predict(ds, task: SEDTask, state: dict | None, num_blocks: int, concurrency: int = 1,
            use_gpu: bool | None = None) -> list[dict]:
    """Batch inference over a `sed_dataset`: one dict per clip (key, logmel, weak, frames, meta, clip,
    frame), sorted by key."""
    batches = infer(ds, PredictClips, (task, state), num_blocks, concurrency, batch_size=16, use_gpu=use_gpu)
    rows = [dict(zip(b, values)) for b in batches for values in zip(*b.values())]
    return sorted(rows, key=lambda r: r["key"])
