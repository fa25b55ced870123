"""Semi-weak labels (arXiv 2103.10608): the instance classifier and the bag losses of each method.

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

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

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
        return F.poisson_nll_loss(expected, counts, log_input=False, full=False, eps=1e-6,
                                  reduction="none").sum(1).mean()
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
