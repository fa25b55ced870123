"""Learning an instance classifier from bags with class counts ("semi-weak" labels), and its baselines,
as `TrainTask`s for the one loop.

Methods (what each sees of a bag of B instances with count vector c):
    two_stage   c. Stage 1 (`count` loss) learns instance probabilities p_i whose sum over the bag,
                the expected count vector lambda = sum_i p_i, matches c. Stage 2 (`pseudo`) turns
                stage 1's predictions into instance labels that reproduce c exactly
                (`assign_to_counts`) and retrains on them with cross-entropy.
    llp         the proportions c / B (learning from label proportions): cross-entropy between c / B
                and the bag's mean prediction lambda / B.
    mil         the presence c > 0 (multiple-instance learning): per class, the bag is positive if
                any instance is (noisy-OR: 1 - prod_i (1 - p_ik)), binary cross-entropy.
    supervised  every instance's label (the upper bound): cross-entropy per instance.

Why a Poisson loss in stage 1 (the default `loss`): counts are non-negative integers, and the
Poisson likelihood is the natural one for them. Its gradient w.r.t. lambda_k is 1 - c_k / lambda_k:
it grows without bound as lambda_k -> 0 for a class the bag holds (a missed object costs a lot),
and for an absent class (c_k = 0) it is a constant push toward 0, whatever lambda_k is. MSE and L1
on the counts are the ablation's other variants. The entropy regularizer (`reg_weight`) pushes each
p_i toward one-hot, so lambda becomes a sum of near-indicator vectors: a discrete count, which is
what stage 2 then enforces exactly.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.shards import json_member

METHODS = ("two_stage", "llp", "mil", "supervised")
LOSSES = ("poisson", "mse", "l1")
KINDS = ("count", "llp", "mil", "supervised", "pseudo")   # what one training run optimizes


class InstanceCNN(nn.Module):
    """Three conv blocks (conv-BN-ReLU x2, max-pool), global average pooling, a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        if width < 1 or in_channels < 1 or num_classes < 2:
            raise ValueError(f"need width >= 1, in_channels >= 1 and num_classes >= 2, got {width}, {in_channels}, "
                             f"{num_classes}")
        layers, cin = [], in_channels
        for cout in (width, 2 * width, 4 * width):
            for c in (cin, cout):
                layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d(2))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def to_input(images: np.ndarray) -> torch.Tensor:
    """N x H x W x C uint8 -> N x C x H x W float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def count_loss(expected: torch.Tensor, counts: torch.Tensor, variant: str) -> torch.Tensor:
    """Mean over bags of the per-bag loss between expected counts (bags x K) and true counts."""
    if variant == "poisson":
        # full=False drops log(c!), which does not depend on the model
        return F.poisson_nll_loss(expected, counts, log_input=False, full=False, eps=1e-6, reduction="none").sum(1).mean()
    if variant == "mse":
        return (expected - counts).pow(2).sum(1).mean()
    if variant == "l1":
        return (expected - counts).abs().sum(1).mean()
    raise ValueError(f"unknown count loss {variant!r}; choose one of: {', '.join(LOSSES)}")


def count_consistent(predicted: torch.Tensor, bag: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Instances whose predicted class the bag's counts can account for: sum_k min(#predicted k, c_k).
    An upper bound on the correct instances, computable without instance labels."""
    hist = torch.zeros_like(counts).index_put_((bag, predicted), torch.ones_like(bag, dtype=counts.dtype),
                                               accumulate=True)
    return torch.minimum(hist, counts).sum()


class BagLearner(nn.Module):
    """The instance classifier plus the loss of one `kind`; forward -> (loss, correct, instances).

    `correct` is the instance accuracy for supervised / pseudo (against the labels trained on) and
    the count-consistent instances (`count_consistent`) for the weak kinds."""

    def __init__(self, kind: str, in_channels: int, num_classes: int, width: int = 32, loss: str = "poisson",
                 reg_weight: float = 0.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown training kind {kind!r}; choose one of: {', '.join(KINDS)}")
        if loss not in LOSSES:
            raise ValueError(f"unknown count loss {loss!r}; choose one of: {', '.join(LOSSES)}")
        if reg_weight < 0:
            raise ValueError(f"reg_weight must be >= 0, got {reg_weight}")
        self.kind, self.loss, self.reg_weight = kind, loss, reg_weight
        self.net = InstanceCNN(in_channels, num_classes, width)

    def forward(self, x: torch.Tensor, bag: torch.Tensor, counts: torch.Tensor, target: torch.Tensor | None = None):
        logits = self.net(x)
        predicted = logits.detach().argmax(1)
        if self.kind in ("supervised", "pseudo"):
            return F.cross_entropy(logits, target), (predicted == target).sum(), len(x)
        log_p = F.log_softmax(logits, dim=1)
        p = log_p.exp()
        expected = torch.zeros_like(counts).index_add(0, bag, p)   # lambda: the bag's expected counts
        if self.kind == "count":
            loss = count_loss(expected, counts, self.loss)
        elif self.kind == "llp":
            sizes = counts.sum(1, keepdim=True)
            loss = -(counts / sizes * torch.log((expected / sizes).clamp_min(1e-8))).sum(1).mean()
        else:  # mil: log P(no instance is class k) = sum_i log(1 - p_ik), summed in log space for stability
            log_absent = torch.zeros_like(counts).index_add(0, bag, torch.log1p(-p.clamp(max=1 - 1e-6)))
            present = (counts > 0).float()
            log_present = torch.log((-torch.expm1(log_absent)).clamp_min(1e-8))   # log(1 - P(absent))
            loss = -(present * log_present + (1 - present) * log_absent).sum(1).mean()
        if self.reg_weight:
            loss = loss + self.reg_weight * -(p * log_p).sum(1).mean()   # mean instance entropy
        return loss, count_consistent(predicted, bag, counts), len(x)


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
    """Per bag, its instances' log class probabilities (B x K) under the instance classifier `net`."""
    out = F.log_softmax(net(to_input(np.concatenate(images))), dim=1).numpy()
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


class _Model:
    """A trained instance classifier on a Ray Data actor (inference only)."""

    def __init__(self, task: BagTask, state: dict):
        model = task.build_model()
        model.load_state_dict(state)
        self.net = model.net.eval()


class PseudoLabel(_Model):
    """Stage 2's labelling (actor UDF): adds `pseudo`, each bag's count-exact labels."""

    @torch.inference_mode()  # grad mode is thread-local and Ray calls UDFs from its own threads
    def __call__(self, batch: dict) -> dict:
        images, counts = bag_arrays(batch)
        pseudo = [assign_to_counts(lp, c) for lp, c in zip(log_probs(self.net, images), counts)]
        return {**batch, "pseudo": np.array(pseudo, dtype=object) if len({len(p) for p in pseudo}) > 1
                else np.stack(pseudo)}


class Evaluate(_Model):
    """Evaluation (actor UDF): `score_bags` of each batch."""

    @torch.inference_mode()
    def __call__(self, batch: dict) -> dict:
        return score_bags(self.net, batch)


def pseudo_labelled(ds, task: BagTask, state: dict, num_blocks: int, concurrency: int):
    """The training bags with stage-1 count-exact pseudo-labels, materialized (stage 2 reads them
    every epoch; relabelling each epoch would waste the inference)."""
    from trainers.loop import map_with_actors

    ds = map_with_actors(ds, PseudoLabel, (task, state), num_blocks, concurrency, batch_size=16)
    # blocks in input order, not completion order: stage 2 then sees the same block order (and, with its
    # seeded shuffle, the same batches) every run
    ds.context.execution_options.preserve_order = True
    return ds.materialize()


def evaluate(ds, task: BagTask, state: dict, num_blocks: int, concurrency: int) -> dict:
    """`summarize` of a model on bag shards read with `truth` (Ray Data batch inference)."""
    from trainers.loop import map_with_actors

    return summarize(list(map_with_actors(ds, Evaluate, (task, state), num_blocks, concurrency,
                                          batch_size=16).iter_batches(batch_size=256, batch_format="numpy")))
