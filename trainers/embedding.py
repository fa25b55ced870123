"""What the embedding tasks (speakers, faces) share: encoder + head as one model, the head-driven
parts of a `TrainTask` (model, P x K batches, margin schedules), and the check of a head config."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from trainers.heads import MarginScheduler, build_head
from trainers.heads.pk_sampler import pk_batches


class EmbeddingModel(nn.Module):
    """Encoder + head; `forward` returns (loss, correct, n) for the training loop."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, feats: torch.Tensor, label: torch.Tensor):
        emb = self.encoder(feats)
        loss = self.head(emb, label)
        with torch.no_grad():
            correct = (self.head.logits(emb.detach()).argmax(dim=1) == label).sum()
        return loss, correct, label.numel()


class HeadTask:
    """Mixin for a TrainTask dataclass with fields `head` (config dict with "name"), `embed_dim`,
    `num_classes`, `batch_size`, `shuffle_buffer`, `seed`, `pk` (K for P x K heads, else None),
    `margin_warmup` ((start, fix) epochs or None) and a `build_encoder()` method. `input_column` names the
    dataset column a training sample comes from."""

    input_column = "feats"

    def build_model(self) -> nn.Module:
        kwargs = {k: v for k, v in self.head.items() if k != "name"}
        head = build_head(self.head["name"], self.embed_dim, self.num_classes, **kwargs)
        model = EmbeddingModel(self.build_encoder(), head)
        model.final_margin = getattr(head, "margin", None)  # the warm-up's target, before any schedule
        return model

    def epoch_stream(self, shard, rng: np.random.Generator) -> Iterator[dict]:
        """This worker's shuffled numpy batches for one epoch; regrouped into batch_size // K classes x K
        samples for P x K heads. Each worker groups its own shard (a batch only needs K-grouping where
        its loss is computed); the loop stops all workers at the shortest worker's step count."""
        stream = shard.iter_batches(batch_size=self.batch_size, batch_format="numpy", drop_last=self.pk is None,
                                    local_shuffle_buffer_size=self.shuffle_buffer,
                                    local_shuffle_seed=int(rng.integers(2**31)))
        if self.pk is None:
            yield from stream
            return
        col = self.input_column
        rows = ((label, x) for b in stream for x, label in zip(b[col], b["label"]))
        for group in pk_batches(rows, self.batch_size // self.pk, self.pk, int(rng.integers(2**31))):
            yield {"label": np.array([label for label, _ in group]), col: [x for _, x in group]}

    def on_epoch_start(self, model: EmbeddingModel, epoch: int) -> dict[str, float]:
        if self.margin_warmup is None or model.final_margin is None:
            return {}
        start, fix = self.margin_warmup
        m = MarginScheduler(model.final_margin, start, fix).margin_at(epoch)
        model.head.set_margin(m)
        return {"margin": m}

    def on_lr_step(self, model: EmbeddingModel) -> dict[str, float]:
        """At each LR milestone: heads with an LR-step rule (SphereFace-R without FN) grow m."""
        step = getattr(model.head, "on_lr_step", None)
        return {"head_m": float(step())} if step else {}


def scored_systems(task, model_state: dict, seed: int, untrained: bool = True) -> dict[str, dict]:
    """{"trained": the trained encoder's weights, "untrained": the same encoder at its seeded
    initialization}: what verification scores, so that the untrained line is a fixed baseline."""
    systems = {"trained": encoder_state(model_state)}
    if untrained:
        torch.manual_seed(seed)
        systems["untrained"] = task.build_encoder().state_dict()
    return systems


def encoder_state(model_state: dict) -> dict:
    """The encoder's weights from an EmbeddingModel state dict."""
    return {k[len("encoder."):]: v for k, v in model_state.items() if k.startswith("encoder.")}


def validate_head_config(cfg, make_task, unit: str) -> None:
    """Fail on bad encoder/head names and parameters before any data is read (ValueError): build the
    model of `make_task(cfg, num_classes=2)` once; P x K heads need a batch of at least 2 classes.
    `cfg` has the `head`, `train` (LoopConfig) and `scale` sections of the embedding workflows."""
    from trainers.loop import validate as validate_loop

    if "name" not in cfg.head:
        raise ValueError("config key 'head.name' is required (e.g. --head arcface)")
    if cfg.scale.workers < 1:
        raise ValueError("scale.workers must be >= 1")
    validate_loop(cfg.train)
    task = make_task(cfg, num_classes=2)
    task.build_model()
    if task.pk is not None and cfg.train.batch_size < 2 * task.pk:
        raise ValueError(f"head {cfg.head['name']!r} groups K={task.pk} {unit}: train.batch_size must hold at "
                         f"least 2 classes (>= {2 * task.pk}), got {cfg.train.batch_size}")
