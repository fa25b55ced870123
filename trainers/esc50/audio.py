"""Sound event classification from audio (ESC-50): a log-mel CNN, optionally fused early with the
clip's action vector, its Ray Data pipeline and `TrainTask`, and class probabilities by Ray Data
batch inference.

Shard samples (datasets/esc50/shards.py) hold `wav`, `cls` (class index) and `json` with the fold
and one action vector per aggregator; `sound_dataset` turns them into {key, logmel, label, av}.
"""
from __future__ import annotations

import dataclasses
import functools
import pickle
from typing import Iterator

import numpy as np
import torch
from torch import nn

from datasets.shards import json_member
from trainers.esc50.cnn14 import SAMPLE_RATE as CNN14_RATE
from trainers.esc50.cnn14 import cnn14_from_state
from trainers.features import LogMel
from trainers.inference import InferenceActor, infer
from trainers.loop import tensor_batches


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.AvgPool2d(2))


class LogMelCNN(nn.Module):
    """4 blocks (two 3x3 conv + BN + ReLU, 2x2 average pooling; channels w, 2w, 4w, 8w), mean over
    frequency, mean + max over time -> a (8w) clip embedding -> dropout -> linear classifier.

    av_dim > 0 makes it the early-fusion model: the standardized action vector (mean/std of the
    training folds, stored as buffers) is concatenated to the embedding before the classifier."""

    def __init__(self, num_classes: int, width: int = 16, dropout: float = 0.3, av_dim: int = 0,
                 av_mean=None, av_std=None):
        super().__init__()
        if num_classes < 2 or width < 1 or not 0 <= dropout < 1 or av_dim < 0:
            raise ValueError(f"need num_classes >= 2, width >= 1, 0 <= dropout < 1, av_dim >= 0; got "
                             f"{num_classes}, {width}, {dropout}, {av_dim}")
        chans = [1, width, 2 * width, 4 * width, 8 * width]
        self.encoder = nn.Sequential(*(_block(a, b) for a, b in zip(chans, chans[1:])))
        self.embed_dim, self.av_dim = chans[-1], av_dim
        if av_dim:
            std = torch.as_tensor(np.asarray(av_std, dtype=np.float32))
            self.register_buffer("av_mean", torch.as_tensor(np.asarray(av_mean, dtype=np.float32)))
            self.register_buffer("av_inv_std", torch.where(std > 0, 1.0 / std.clamp_min(1e-12), torch.zeros_like(std)))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.embed_dim + av_dim, num_classes)

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        """(B, 8w) clip embeddings of (B, T, F) log-mels (the penultimate layer)."""
        h = self.encoder(logmel.unsqueeze(1)).mean(dim=3)          # (B, C, T')
        return h.mean(dim=2) + h.amax(dim=2)

    def logits(self, logmel: torch.Tensor, av: torch.Tensor | None = None) -> torch.Tensor:
        z = self.embed(logmel)
        if self.av_dim:
            z = torch.cat([z, (av.float() - self.av_mean) * self.av_inv_std], dim=1)
        return self.classifier(self.dropout(z))

    def forward(self, logmel: torch.Tensor, label: torch.Tensor, av: torch.Tensor | None = None):
        z = self.logits(logmel, av)
        return nn.functional.cross_entropy(z, label), (z.detach().argmax(1) == label).sum(), label.numel()


def to_model_input(batch: dict, front: LogMel, aggregator: str, folds: list[int] | None) -> dict:
    """Ray Data `map_batches` fn: shard rows of the wanted folds -> {key, logmel, label, av}."""
    rows = []
    for key, wav, cls, meta in zip(batch["__key__"], batch["wav"], batch["cls"], batch["json"]):
        meta = json_member(meta)
        if folds is not None and meta["fold"] not in folds:
            continue
        # an audio-only run's shards hold no action vectors (its models read none)
        rows.append((key, front.logmel_of_wav(key, wav), int(cls),
                     np.asarray(meta["av"].get(aggregator, []), dtype=np.float32)))
    if not rows:
        return {"key": np.array([], dtype=object), "logmel": np.zeros((0, 0, front.n_mels), np.float32),
                "label": np.zeros(0, np.int64), "av": np.zeros((0, 0), np.float32)}
    keys, feats, labels, avs = zip(*rows)
    return {"key": np.array(keys, dtype=object), "logmel": np.stack(feats), "label": np.array(labels, np.int64),
            "av": np.stack(avs)}


def sound_dataset(paths: list[str], front: LogMel, aggregator: str, folds: list[int] | None,
                  shuffle_seed: int | None = None):
    """ESC-50 shards -> Ray Dataset of {key, logmel, label, av} for `folds`."""
    from datasets.shards import read_shards

    return read_shards(paths, shuffle_seed).map_batches(
        to_model_input, fn_kwargs={"front": front, "aggregator": aggregator, "folds": folds},
        batch_size=32, batch_format="numpy")


@dataclasses.dataclass
class SoundTask:
    """The `TrainTask` for trainers.loop (picklable); `av_dim` > 0 trains the early-fusion model."""

    num_classes: int
    width: int
    dropout: float
    batch_size: int
    av_dim: int = 0
    av_mean: list | None = None
    av_std: list | None = None
    shuffle_buffer: int = 256
    seed: int = 0

    def build_model(self) -> LogMelCNN:
        torch.manual_seed(self.seed)
        return LogMelCNN(self.num_classes, self.width, self.dropout, self.av_dim, self.av_mean, self.av_std)

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        columns = {"logmel": np.float32, "label": np.int64, **({"av": np.float32} if self.av_dim else {})}
        return tensor_batches(shard, columns, self.batch_size, self.shuffle_buffer, self.seed, epoch, rank)

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}


class ClassProbabilities(InferenceActor):
    """{key, logmel, av} -> {key, label, probs (C,)}."""

    def __init__(self, task: SoundTask, state: dict):
        super().__init__(task.build_model, state)

    def predict(self, batch: dict) -> dict:
        av = self.floats(batch["av"]) if self.model.av_dim else None
        z = self.model.logits(self.floats(batch["logmel"]), av)
        return {"key": batch["key"], "label": batch["label"], "probs": torch.softmax(z, dim=1).cpu().numpy()}


def predict(ds, task: SoundTask, state: dict, num_blocks: int, concurrency: int = 1,
            use_gpu: bool | None = None) -> dict[str, tuple]:
    """{key: (label, probabilities)} for every clip of a `sound_dataset`."""
    batches = infer(ds, ClassProbabilities, (task, state), num_blocks, concurrency, batch_size=32, use_gpu=use_gpu)
    return {k: (int(lab), p) for b in batches for k, lab, p in zip(b["key"], b["label"], b["probs"])}


# ----------------------------------------------------------------------------- pluggable embedding extractors

def _logmel_cnn_from_state(state: dict) -> LogMelCNN:
    """A LogMelCNN shaped after its saved weights (width, classes, fused vector size)."""
    width = state["encoder.0.0.weight"].shape[0]
    num_classes, in_features = state["classifier.weight"].shape
    av_dim = in_features - 8 * width   # > 0: an early-fusion model (its vector buffers load below)
    model = LogMelCNN(num_classes, width, av_dim=av_dim, av_mean=[0.0] * av_dim, av_std=[1.0] * av_dim)
    model.load_state_dict(state)
    return model


# kind -> builds a module with `.embed(...) -> (B, D)` from a weights file's state dict: of the workflow's
# log-mels (B, T, F), or, for a module with a `sample_rate`, of waveforms (B, N) at that rate
EXTRACTORS = {"logmel_cnn": _logmel_cnn_from_state, "cnn14": cnn14_from_state}
WAVEFORM_EXTRACTORS = {"cnn14": CNN14_RATE}   # kind -> the sample rate its waveforms must have


def _numpy_data_globals() -> list:
    """numpy's array, dtype and scalar reconstructors: data only, no code. The reference's training
    checkpoints keep its sampler state (numpy arrays) beside the weights; torch's weights-only
    unpickler refuses them unless allowed, under the numpy 1 and numpy 2 module names."""
    from numpy._core.multiarray import _reconstruct, scalar

    named = [(f, f"{mod}.{f.__name__}") for f in (_reconstruct, scalar)
             for mod in ("numpy.core.multiarray", "numpy._core.multiarray")]
    return [np.ndarray, np.dtype, *named, *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGSUVOMm"}]


def load_extractor(kind: str, weights: str) -> nn.Module:
    """An embedding extractor from a weights file: a `model.pt` written by this project's runs
    ({"state": ..., "train_folds": ...}), a PANNs checkpoint ({"model": state dict, ...}) or a plain
    state dict saved with torch.save. The module's `train_folds` lists the ESC-50 folds it was trained
    on (None: not recorded, e.g. a pretrained model)."""
    if kind not in EXTRACTORS:
        raise ValueError(f"unknown embedding extractor {kind!r}; choose one of: {', '.join(EXTRACTORS)}")
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            saved = torch.load(weights, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ValueError(f"cannot load embedding weights {weights}: {exc.strerror or exc}") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError):
        # torch's own message suggests weights_only=False, which would run code from the file: never
        raise ValueError(f"cannot load embedding weights {weights}: it is not a plain state dict (tensors only, "
                         "as torch.save of a state dict or a model.pt of this project writes); nothing in it was "
                         "run") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{weights} holds a {type(saved).__name__}, not a state dict; nothing in it was run")
    state = saved["state"]["model"] if "state" in saved \
        else saved["model"] if isinstance(saved.get("model"), dict) else saved
    try:
        model = EXTRACTORS[kind](state).eval()
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
        raise ValueError(f"{weights} does not hold {kind} weights ({type(exc).__name__}: {exc}); nothing in it "
                         "was run") from None
    model.train_folds = saved.get("train_folds")
    return model


def _keys_and_wavs(batch: dict) -> dict:
    return {"key": batch["__key__"], "wav": batch["wav"]}


def wave_dataset(paths: list[str]):
    """ESC-50 shards -> Ray Dataset of {key, wav (WAV bytes)} for the waveform extractors."""
    from datasets.shards import read_shards

    return read_shards(paths, None).map_batches(_keys_and_wavs, batch_size=32, batch_format="numpy")


class ClipEmbeddings(InferenceActor):
    """{key, logmel} (waveform extractors: {key, wav}) -> {key, embedding} by a pluggable extractor (its
    weights come with it)."""

    def __init__(self, kind: str, weights: str):
        super().__init__(functools.partial(load_extractor, kind, weights), None)

    def predict(self, batch: dict) -> dict:
        rate = getattr(self.model, "sample_rate", None)
        if rate is None:
            emb = self.model.embed(self.floats(batch["logmel"]))
        else:   # clip by clip: clips of unequal length are embedded whole, never padded
            emb = torch.cat([self.model.embed(_wave_at(key, wav, rate)[None].to(self.device))
                             for key, wav in zip(batch["key"], batch["wav"])])
        return {"key": batch["key"], "embedding": emb.cpu().numpy()}


def _wave_at(key: str, wav: bytes, rate: int) -> torch.Tensor:
    """A shard sample's WAV bytes as a waveform at `rate` (torchaudio's band-limited resampling)."""
    import torchaudio.functional as AF

    from datasets.audio import decode_wav

    samples, sr = decode_wav(wav)
    if samples.ndim != 1:
        raise ValueError(f"{key}: shard audio is not mono")
    w = torch.from_numpy(samples)
    return w if sr == rate else AF.resample(w, sr, rate)
