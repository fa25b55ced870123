"""Face embedding training and extraction on face shards: backbone + head in the one loop.

Shard PNGs are decoded by Ray Data's WebDataset reader and scaled to SphereFace's
(x - 127.5) / 128, channels first, in Ray Data tasks; random horizontal flips (the usual face
augmentation) happen in the training worker with a seeded RNG per (seed, epoch, rank). Test
embeddings are f(x) + f(flip(x)) (with `flip=True`), by Ray Data batch inference.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch
from torch import nn

from trainers.embedding import HeadTask
from trainers.encoders import IMAGE_ENCODERS, build_encoder
from trainers.inference import InferenceActor, embed_dataset


def to_model_input(batch: dict) -> dict:
    """Ray Data `map_batches` fn: decoded shard rows -> {key, feats (N, 3, H, W) float32, label}."""
    images = np.asarray(batch["png"], dtype=np.float32)
    feats = np.ascontiguousarray(((images - 127.5) / 128.0).transpose(0, 3, 1, 2))
    return {"key": np.asarray(batch["__key__"]), "feats": feats, "label": np.asarray(batch["cls"], dtype=np.int64)}


def face_dataset(paths: list[str], shuffle_seed: int | None = None):
    """Face shards -> Ray Dataset of {key, feats, label}; `shuffle_seed` randomizes shard order."""
    from datasets.shards import read_shards

    return read_shards(paths, shuffle_seed).map_batches(to_model_input, batch_size=64, batch_format="numpy")


@dataclasses.dataclass
class FaceTask(HeadTask):
    """The face-recognition `TrainTask` for trainers.loop (picklable)."""

    backbone: str
    backbone_args: dict
    embed_dim: int
    image_size: int
    head: dict
    num_classes: int
    batch_size: int
    shuffle_buffer: int = 1000
    seed: int = 0
    pk: int | None = None    # K: batches of batch_size // K identities x K images (Mask Proxy heads)
    margin_warmup = None     # OpenSphere's face recipes train at the full margin from the start

    def build_encoder(self) -> nn.Module:
        if self.backbone not in IMAGE_ENCODERS:
            raise ValueError(f"encoder {self.backbone!r} is not an image backbone; choose one of: "
                             f"{', '.join(IMAGE_ENCODERS)}")
        return build_encoder(self.backbone, embed_dim=self.embed_dim, input_size=self.image_size,
                             **self.backbone_args)

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch, rank])
        for batch in self.epoch_stream(shard, rng):
            x = np.asarray(batch["feats"], dtype=np.float32)
            flip = rng.random(len(x)) < 0.5
            x = np.where(flip[:, None, None, None], x[..., ::-1], x)
            yield {"feats": torch.from_numpy(np.ascontiguousarray(x)),
                   "label": torch.from_numpy(np.asarray(batch["label"], dtype=np.int64))}


class EmbedImages(InferenceActor):
    """Images -> embeddings, f(x) + f(flip(x)) when `flip`."""

    def __init__(self, task: FaceTask, encoder_state: dict | None, flip: bool = True):
        super().__init__(task.build_encoder, encoder_state)
        self.flip = flip

    def predict(self, batch: dict) -> dict:
        x = self.floats(batch["feats"])
        emb = self.model(x)
        if self.flip:
            emb = emb + self.model(x.flip(3))
        return {"key": batch["key"], "embedding": emb.cpu().numpy()}


def extract_embeddings(paths: list[str], task: FaceTask, encoder_state: dict | None, concurrency: int = 1,
                       flip: bool = True, use_gpu: bool | None = None) -> dict[str, np.ndarray]:
    """Batch inference with Ray Data: {key: embedding} for every image in the shards."""
    return embed_dataset(face_dataset(paths), EmbedImages, (task, encoder_state, flip), len(paths), concurrency,
                         batch_size=64, use_gpu=use_gpu)
