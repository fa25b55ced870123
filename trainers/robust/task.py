"""Vanilla, CRP and PGD adversarial training as one `TrainTask` for the one loop (trainers/loop.py).

    vanilla   cross-entropy on the clean examples (CRP with K = 0); with `repeats` = K + 1 (the workflow's
              budget "steps", ours) each epoch sees every clean example K + 1 times, so vanilla takes as many
              optimizer steps per epoch as CRP
    crp       the paper's: each epoch sees every example and its K constant perturbed copies (the dataset of
              length N(K+1)), cross-entropy, no inner loop. Copy k of example i is regenerated from
              (seed, i, k) (trainers/robust/perturb.py), so every epoch, worker and resumed run sees the same
              copies of the same example.
    pgd_at    Madry et al.'s baseline: each step trains on PGD (L-infinity, random start) examples crafted
              against the current model, in train mode as Madry's code does.

The N(K+1) dataset is shuffled as a stream: a worker reads `chunk` clean rows at a time (Ray Data's local
shuffle), expands them to their K+1 versions and permutes those (seeded by seed, epoch, rank and chunk number)
before cutting batches; a copy never meets examples of another chunk in a batch, the price of not storing
the expanded set.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from datasets.image_shards import rows_to_arrays
from trainers.robust import perturb
from trainers.robust.model import build_classifier

METHODS = ("vanilla", "crp", "pgd_at")


def pgd_linf(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
             random_start: bool = True) -> torch.Tensor:
    """PGD-k in the L-infinity box of radius eps around x, clipped to [0, 1] (for adversarial training; the
    evaluation uses the attack library, trainers/robust/attacks.py). Gradients reach x only."""
    x0 = x.detach()
    adv = x0 + torch.empty_like(x0).uniform_(-eps, eps) if random_start else x0.clone()
    adv = adv.clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(net(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + step * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return adv.detach()


class RobustLearner(nn.Module):
    """The classifier and its loss: forward(x, y) -> (loss, correct, n), what the loop expects."""

    def __init__(self, net: nn.Module, method: str, eps: float = 0.0, step: float = 0.0, steps: int = 0):
        super().__init__()
        self.net, self.method, self.eps, self.step, self.steps = net, method, eps, step, steps

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        if self.training and self.method == "pgd_at":
            x = pgd_linf(self.net, x, y, self.eps, self.step, self.steps)
        logits = self.net(x)
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).sum(), len(y)


@dataclasses.dataclass
class RobustTask:
    """The `TrainTask` (picklable). `copies` (K) and the neighbourhood matter for crp only."""

    method: str
    model: str
    normalization: str
    num_classes: int
    in_channels: int
    image_size: int
    batch_size: int
    width: float = 1.0
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    copies: int = 10
    noise: str = "linf_uniform"
    radius: float = 0.3
    pgd_eps: float = 0.3
    pgd_step: float = 0.01
    pgd_steps: int = 40
    chunk: int = 256
    seed: int = 0
    augment: str = "none"   # "crop_flip": the official code's SVHN / CIFAR-10 augmentation, frozen per example
    repeats: int = 1   # vanilla: each clean example this many times per epoch (budget "steps": K + 1)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        perturb.check(self.noise, self.radius, self.copies)
        if self.augment not in perturb.AUGMENTS:
            raise ValueError(f"unknown data.augment {self.augment!r}; choose from {', '.join(perturb.AUGMENTS)}")

    @property
    def k(self) -> int:
        return self.copies if self.method == "crp" else 0

    def build_model(self) -> RobustLearner:
        torch.manual_seed(self.seed)
        net = build_classifier(self.model, self.normalization, self.num_classes, self.in_channels, self.image_size,
                               self.width, **self.model_kwargs)
        return RobustLearner(net, self.method, self.pgd_eps, self.pgd_step, self.pgd_steps)

    def expanded(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray):
        """float32 N(K+1) x C x H x W inputs and labels of clean rows (K = 0 unless crp; vanilla repeats each
        clean row `repeats` times)."""
        x, y, _ = perturb.expand(images.transpose(0, 3, 1, 2), labels, indices, self.k, self.noise, self.radius,
                                 self.seed, self.augment)
        if self.method == "vanilla" and self.repeats > 1:
            x, y = np.repeat(x, self.repeats, axis=0), np.repeat(y, self.repeats)
        return x, y

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        local_seed = int(np.random.default_rng([self.seed, epoch, rank]).integers(2**31))
        for c, rows in enumerate(shard.iter_batches(batch_size=self.chunk, batch_format="numpy",
                                                    local_shuffle_buffer_size=self.chunk * 4,
                                                    local_shuffle_seed=local_seed)):
            x, y = self.expanded(*rows_to_arrays(rows))
            order = np.random.default_rng([self.seed, epoch, rank, c]).permutation(len(y))
            for i in range(0, len(order), self.batch_size):
                take = order[i:i + self.batch_size]
                yield {"x": torch.from_numpy(np.ascontiguousarray(x[take])), "y": torch.from_numpy(y[take])}

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}

    def evaluate(self, model: RobustLearner, val_shard) -> dict[str, float]:
        """After each epoch (rank 0): clean and FGSM accuracy (at pgd_eps) on the validation split. The official
        code keeps the epoch of best FGSM accuracy on the test set (a documented bug); here val_fgsm_acc on a
        split carved from training is what train.monitor selects on."""
        device = next(model.parameters()).device
        correct = robust = total = 0
        for rows in val_shard.iter_batches(batch_size=512, batch_format="numpy"):
            images, labels, _ = rows_to_arrays(rows)
            x = torch.from_numpy(images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0).to(device)
            y = torch.from_numpy(labels).to(device)
            with torch.enable_grad():   # the loop evaluates under no_grad; FGSM needs the input gradient
                adv = pgd_linf(model.net, x, y, self.pgd_eps, self.pgd_eps, 1, random_start=False)
            correct += int((model.net(x).argmax(1) == y).sum())
            robust += int((model.net(adv).argmax(1) == y).sum())
            total += len(labels)
        return {"val_acc": correct / max(total, 1), "val_fgsm_acc": robust / max(total, 1)}
