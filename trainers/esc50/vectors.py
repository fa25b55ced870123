"""Clip classification from fixed-length vectors (ESC-50 action vectors, or audio embeddings): a
logistic regression and a small MLP, as a `TrainTask` for the one loop.

Inputs are standardized with the training folds' mean and std, stored in the model as buffers so a
saved model carries its own normalization.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from torch import nn

from trainers.loop import tensor_batches

KINDS = ("logreg", "mlp")


class VectorClassifier(nn.Module):
    """logreg: one linear layer; mlp: Linear-ReLU-Dropout-Linear. forward -> (CE loss, correct, n)."""

    def __init__(self, kind: str, in_dim: int, num_classes: int, mean, std, hidden: int = 128,
                 dropout: float = 0.3):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown vector model {kind!r}; choose one of: {', '.join(KINDS)}")
        if in_dim < 1 or num_classes < 2 or hidden < 1 or not 0 <= dropout < 1:
            raise ValueError(f"need in_dim >= 1, num_classes >= 2, hidden >= 1 and 0 <= dropout < 1, got "
                             f"{in_dim}, {num_classes}, {hidden}, {dropout}")
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(in_dim))
        # constant features (std 0) stay 0 instead of dividing by zero
        std = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(in_dim)
        self.register_buffer("inv_std", torch.where(std > 0, 1.0 / std.clamp_min(1e-12), torch.zeros_like(std)))
        self.net = nn.Linear(in_dim, num_classes) if kind == "logreg" else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.float() - self.mean) * self.inv_std)

    def forward(self, x: torch.Tensor, label: torch.Tensor):
        z = self.logits(x)
        loss = nn.functional.cross_entropy(z, label)
        return loss, (z.detach().argmax(1) == label).sum(), label.numel()


@dataclasses.dataclass
class VectorTask:
    """The `TrainTask` for trainers.loop (picklable): rows {x (D,), label} from the Ray Data shard."""

    kind: str
    in_dim: int
    num_classes: int
    mean: list
    std: list
    batch_size: int
    hidden: int = 128
    dropout: float = 0.3
    shuffle_buffer: int = 2000
    seed: int = 0

    def build_model(self) -> VectorClassifier:
        torch.manual_seed(self.seed)
        return VectorClassifier(self.kind, self.in_dim, self.num_classes, self.mean, self.std, self.hidden,
                                self.dropout)

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        return tensor_batches(shard, {"x": np.float32, "label": np.int64}, self.batch_size, self.shuffle_buffer,
                              self.seed, epoch, rank)

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}


def predict_proba(task: VectorTask, state: dict, x: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities of a trained model (a few thousand vectors: on the driver)."""
    model = task.build_model()
    model.load_state_dict(state)
    model.eval()
    with torch.inference_mode():
        return torch.softmax(model.logits(torch.from_numpy(np.asarray(x, dtype=np.float32))), dim=1).numpy()


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(labels), np.asarray(predicted)), 1)
    return out
