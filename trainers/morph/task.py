"""The two `TrainTask`s of voice-guided face morphing for the one loop (trainers/loop.py).

    FaceClassifierTask   a FaceCNN trained by cross-entropy on the training identities' faces (random horizontal
                         flips); twice: the identity loss's frozen classifier, and (other seed and width) the
                         retrieval embedder the evaluation ranks with, so the morphs are never scored by the
                         network they were trained against.
    MorphTask            the guided autoencoder. Each training face x (identity a) gets a voice: with probability
                         p_same one of a's own utterances, else an utterance of another training identity b,
                         drawn in the worker from a generator seeded by (seed, epoch, rank). The voice encoder is
                         frozen, so its embeddings arrive precomputed in the task (`voices`, `voice_labels`).

Loss of a batch (weights are config keys; this project's design, the paper's losses were not retrieved):

    y    = AE(x, v_b)
    L    = w_rec * mean_{a = b} |y - x|_1  +  w_id * CE(C(y), b)  +  lambda * mean_{a != b} |y - x|_1

C is the frozen face classifier; |.|_1 is the mean absolute error per image; lambda (the keep-close weight) is
"how much the target face must change": large lambda keeps the morph near the target, small lets the identity
loss pull it toward the voice's owner. The loop's "acc" is the share of morphs C assigns to the voice's owner.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainers.morph.model import FaceCNN, MorphAutoencoder


def face_rows(rows: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded face-shard rows -> (images (N, 3, H, W) float32 in [-1, 1], labels int64, keys)."""
    images = np.asarray(rows["png"], dtype=np.float32)
    x = np.ascontiguousarray((images / 127.5 - 1.0).transpose(0, 3, 1, 2))
    labels = np.array([int(c.decode() if isinstance(c, bytes) else c) for c in rows["cls"]], dtype=np.int64)
    return x, labels, np.asarray(rows["__key__"])


def _flipped(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(x)) < 0.5
    return np.ascontiguousarray(np.where(flip[:, None, None, None], x[..., ::-1], x))


class Classifier(nn.Module):
    def __init__(self, net: FaceCNN):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        logits = self.net(x)
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).sum(), len(y)


@dataclasses.dataclass
class FaceClassifierTask:
    num_classes: int
    batch_size: int
    width: int = 32
    embed_dim: int = 128
    shuffle_buffer: int = 512
    seed: int = 0

    def build_net(self) -> FaceCNN:
        torch.manual_seed(self.seed)
        return FaceCNN(self.num_classes, self.width, self.embed_dim)

    def build_model(self) -> Classifier:
        return Classifier(self.build_net())

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch, rank])
        for rows in shard.iter_batches(batch_size=self.batch_size, batch_format="numpy", drop_last=True,
                                       local_shuffle_buffer_size=self.shuffle_buffer,
                                       local_shuffle_seed=int(rng.integers(2**31))):
            x, y, _ = face_rows(rows)
            yield {"x": torch.from_numpy(_flipped(x, rng)), "y": torch.from_numpy(y)}

    def on_epoch_start(self, model, epoch: int) -> dict:
        return {}


def morph_losses(y: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                 w_rec: float, w_id: float, lam: float) -> dict[str, torch.Tensor]:
    """The terms of the loss in the module docstring, and their weighted sum ("loss")."""
    l1 = (y - x).abs().flatten(1).mean(1)
    same = (a == b).to(l1.dtype)
    rec = (l1 * same).sum() / same.sum().clamp(min=1)
    keep = (l1 * (1 - same)).sum() / (1 - same).sum().clamp(min=1)
    ident = F.cross_entropy(logits, b)
    return {"loss": w_rec * rec + w_id * ident + lam * keep, "rec": rec, "id": ident, "keep": keep}


class MorphLearner(nn.Module):
    """The autoencoder and the frozen classifier: forward(x, a, v, b) -> (loss, correct, n), what the loop expects."""

    def __init__(self, ae: MorphAutoencoder, classifier: FaceCNN, w_rec: float, w_id: float, lam: float):
        super().__init__()
        self.ae, self.classifier = ae, classifier
        self.w_rec, self.w_id, self.lam = w_rec, w_id, lam
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.classifier.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.classifier.eval()   # frozen: its batch-norm statistics stay the trained ones
        return self

    def forward(self, x: torch.Tensor, a: torch.Tensor, v: torch.Tensor, b: torch.Tensor):
        y = self.ae(x, v)
        logits = self.classifier(y)
        terms = morph_losses(y, x, logits, a, b, self.w_rec, self.w_id, self.lam)
        return terms["loss"], (logits.argmax(1) == b).sum(), len(b)


@dataclasses.dataclass
class MorphTask:
    num_classes: int
    voices: np.ndarray            # (U, D) float32: frozen voice embeddings of the training utterances
    voice_labels: np.ndarray      # (U,) int64: their identities (the face shards' label space)
    classifier_state: dict        # the frozen FaceCNN's weights
    batch_size: int
    width: int = 32
    hidden: int = 128
    controller: str = "gates"
    image_size: int = 64
    classifier_width: int = 32
    classifier_embed_dim: int = 128
    w_rec: float = 1.0
    w_id: float = 0.1
    lam: float = 1.0
    p_same: float = 0.5
    shuffle_buffer: int = 512
    seed: int = 0

    def build_autoencoder(self) -> MorphAutoencoder:
        torch.manual_seed(self.seed)
        return MorphAutoencoder(self.voices.shape[1], self.width, self.image_size, self.controller, self.hidden)

    def build_model(self) -> MorphLearner:
        ae = self.build_autoencoder()
        clf = FaceCNN(self.num_classes, self.classifier_width, self.classifier_embed_dim)
        clf.load_state_dict(self.classifier_state)
        return MorphLearner(ae, clf, self.w_rec, self.w_id, self.lam)

    def pick_voices(self, a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(voice owner b, utterance index) per face of identity a: own voice with probability p_same, else a
        uniformly drawn other identity; then one of b's utterances uniformly."""
        by_id = [np.flatnonzero(self.voice_labels == c) for c in range(self.num_classes)]
        other = (a + rng.integers(1, self.num_classes, size=len(a))) % self.num_classes
        b = np.where(rng.random(len(a)) < self.p_same, a, other)
        utt = np.array([by_id[c][rng.integers(len(by_id[c]))] for c in b])
        return b, utt

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch, rank])
        for rows in shard.iter_batches(batch_size=self.batch_size, batch_format="numpy", drop_last=True,
                                       local_shuffle_buffer_size=self.shuffle_buffer,
                                       local_shuffle_seed=int(rng.integers(2**31))):
            x, a, _ = face_rows(rows)
            b, utt = self.pick_voices(a, rng)
            yield {"x": torch.from_numpy(x), "a": torch.from_numpy(a),
                   "v": torch.from_numpy(np.ascontiguousarray(self.voices[utt], dtype=np.float32)),
                   "b": torch.from_numpy(b.astype(np.int64))}

    def on_epoch_start(self, model, epoch: int) -> dict:
        return {}
