"""Semi-weak labels as `TrainTask`s for the one loop: bag batches from the shards, the count-exact
assignment of stage 2, pseudo-labelling and evaluation by Ray Data batch inference. The methods and
their losses are described in trainers/semiweak/model.py."""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.shards import json_member
from trainers.inference import InferenceActor, infer, map_with_actors
from trainers.semiweak.model import BagLearner, to_input

METHODS = ("two_stage", "llp", "mil", "supervised")


def bag_arrays(batch: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """(per-bag image arrays, bags x K counts) of a numpy batch of bag rows (fixed or ragged bag sizes)."""
    images = [np.asarray(a) for a in batch["npy"]]
    counts = np.stack([json_member(m)["counts"] for m in batch["json"]]).astype(np.float32)
    return images, counts


def instance_labels(batch: dict, column: str) -> np.ndarray:
    """The per-instance labels of a batch's bags, concatenated: `truth` (JSON text) or `pseudo` (arrays)."""
    values = batch[column]
    if column == "truth":
        values = [json.loads(bytes(v)) for v in values]
    return np.concatenate([np.asarray(v, dtype=np.int64) for v in values])


def to_batch(images: list[np.ndarray], counts: np.ndarray) -> dict[str, torch.Tensor]:
    sizes = [len(a) for a in images]
    return {"x": to_input(np.concatenate(images)),
            "bag": torch.from_numpy(np.repeat(np.arange(len(images)), sizes)),
            "counts": torch.from_numpy(counts)}


@dataclasses.dataclass
class BagTask:
    """The `TrainTask` for trainers.loop (picklable). batch_size is in bags. `init_state` starts the
    model from given weights (stage 2 from stage 1)."""

    kind: str
    in_channels: int
    num_classes: int
    batch_size: int
    width: int = 32
    loss: str = "poisson"
    reg_weight: float = 0.0
    shuffle_buffer: int = 256
    seed: int = 0
    init_state: dict | None = None

    @property
    def label_column(self) -> str | None:
        return {"supervised": "truth", "pseudo": "pseudo"}.get(self.kind)

    def build_model(self) -> BagLearner:
        torch.manual_seed(self.seed)
        model = BagLearner(self.kind, self.in_channels, self.num_classes, self.width, self.loss, self.reg_weight)
        if self.init_state is not None:
            model.load_state_dict(self.init_state)
        return model

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        local_seed = int(np.random.default_rng([self.seed, epoch, rank]).integers(2**31))
        for b in shard.iter_batches(batch_size=self.batch_size, batch_format="numpy",
                                    local_shuffle_buffer_size=self.shuffle_buffer, local_shuffle_seed=local_seed):
            batch = to_batch(*bag_arrays(b))
            if self.label_column:
                batch["target"] = torch.from_numpy(instance_labels(b, self.label_column))
            yield batch

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}

    def evaluate(self, model: BagLearner, val_shard) -> dict[str, float]:
        """After each epoch (rank 0): the validation bags' instance accuracy and count errors. Only
        the count scores stay within the weak-label setting (they need counts, not instance labels)."""
        summary = summarize([score_bags(model.net, b) for b in val_shard.iter_batches(batch_size=16,
                                                                                          batch_format="numpy")])
        return {"val_acc": summary["instance_accuracy"], "val_count_mae": summary["count_mae"],
                "val_count_error": summary["count_error"]}


def assign_to_counts(log_probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The most probable labelling of a bag's B instances that has exactly the bag's counts.

    Maximizing sum_i log p_i(y_i) subject to #{i: y_i = k} = c_k is an assignment problem: give
    class k c_k slots, let instance i take a slot of class k at cost -log p_i(k), and find the
    minimum-cost perfect matching of the B instances to the B slots (Hungarian algorithm, exact)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.asarray(counts).round().astype(np.int64)
    if counts.sum() != len(log_probs) or (counts < 0).any():
        raise ValueError(f"counts {counts.tolist()} do not describe a bag of {len(log_probs)} instances")
    slot_class = np.repeat(np.arange(len(counts)), counts)
    rows, cols = linear_sum_assignment(-log_probs[:, slot_class])
    labels = np.empty(len(log_probs), dtype=np.int64)
    labels[rows] = slot_class[cols]
    return labels


def log_probs(net: nn.Module, images: list[np.ndarray]) -> list[np.ndarray]:
    """Per bag, its instances' log class probabilities (B x K) under the instance classifier `net` (on
    whichever device it is: a GPU actor's or worker's, or the CPU)."""
    x = to_input(np.concatenate(images)).to(next(net.parameters()).device)
    out = F.log_softmax(net(x), dim=1).cpu().numpy()
    return np.split(out, np.cumsum([len(a) for a in images])[:-1])


def score_bags(net: nn.Module, batch: dict) -> dict:
    """Per bag of a numpy batch read with `truth`: correct instances, instances, and the predicted
    counts (histogram of the argmax labels) beside the true counts."""
    images, counts = bag_arrays(batch)
    predicted = [lp.argmax(1) for lp in log_probs(net, images)]
    truth = [json.loads(bytes(v)) for v in batch["truth"]]
    return {"counts": counts,
            "correct": np.array([int((p == np.asarray(t)).sum()) for p, t in zip(predicted, truth)]),
            "instances": np.array([len(t) for t in truth]),
            "predicted_counts": np.stack([np.bincount(p, minlength=counts.shape[1]) for p in predicted])}


def summarize(scores: list[dict]) -> dict:
    """Of `score_bags` outputs: instance accuracy; bag count MAE (mean over bags and classes of
    |predicted count - count|); count error (per bag, sum_k |predicted - count| / 2B: the share of
    its instances the counts cannot account for, comparable across bag sizes); exact bags."""
    errors = np.concatenate([np.abs(s["predicted_counts"] - s["counts"]) for s in scores])
    sizes = np.concatenate([s["instances"] for s in scores])
    return {"instance_accuracy": sum(int(s["correct"].sum()) for s in scores) / int(sizes.sum()),
            "count_mae": float(errors.mean()), "count_error": float((errors.sum(1) / (2 * sizes)).mean()),
            "bag_exact": float((errors.sum(1) == 0).mean()), "bags": len(errors), "instances": int(sizes.sum())}


class _Model(InferenceActor):
    """A trained bag model on a Ray Data actor; its instance classifier does the work."""

    def __init__(self, task: BagTask, state: dict):
        super().__init__(task.build_model, state)


class PseudoLabel(_Model):
    """Stage 2's labelling: adds `pseudo`, each bag's count-exact labels."""

    def predict(self, batch: dict) -> dict:
        images, counts = bag_arrays(batch)
        pseudo = [assign_to_counts(lp, c) for lp, c in zip(log_probs(self.model.net, images), counts)]
        return {**batch, "pseudo": np.array(pseudo, dtype=object) if len({len(p) for p in pseudo}) > 1
                else np.stack(pseudo)}


class Evaluate(_Model):
    """Evaluation: `score_bags` of each batch."""

    def predict(self, batch: dict) -> dict:
        return score_bags(self.model.net, batch)


def pseudo_labelled(ds, task: BagTask, state: dict, num_blocks: int, concurrency: int, use_gpu: bool | None = None,
                    cpus: float | None = None):
    """The training bags with stage-1 count-exact pseudo-labels, materialized (stage 2 reads them
    every epoch; relabelling each epoch would waste the inference). `cpus`: per actor (`map_with_actors`)."""
    ds = map_with_actors(ds, PseudoLabel, (task, state), num_blocks, concurrency, batch_size=16, use_gpu=use_gpu,
                         cpus=cpus)
    # blocks in input order, not completion order: stage 2 then sees the same block order (and, with its
    # seeded shuffle, the same batches) every run
    ds.context.execution_options.preserve_order = True
    return ds.materialize()


def evaluate(ds, task: BagTask, state: dict, num_blocks: int, concurrency: int, use_gpu: bool | None = None) -> dict:
    """`summarize` of a model on bag shards read with `truth` (Ray Data batch inference)."""
    return summarize(list(infer(ds, Evaluate, (task, state), num_blocks, concurrency, batch_size=16, use_gpu=use_gpu)))
