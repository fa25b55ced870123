"""The main-speaker model as one `TrainTask` for the one loop (trainers/loop.py), and batches from the shards."""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch

from datasets.avspeaker.shards import rows_to_arrays
from trainers.avspeaker.model import AVSpeakerNet


def tensors(rows: dict) -> dict[str, torch.Tensor]:
    """Model inputs of a numpy batch of shard rows (the keyword arguments of AVSpeakerNet.forward)."""
    a = rows_to_arrays(rows)
    label = a["label"].astype(np.int64)
    return {"faces": torch.from_numpy(a["faces"]), "mel": torch.from_numpy(a["mel"]),
            "mix": torch.from_numpy(a["mix"].astype(np.float32) / 32768.0),
            "main": torch.from_numpy(a["main"].astype(np.float32) / 32768.0),
            "roles": torch.from_numpy(label[:, 0]), "valid": torch.from_numpy(label[:, 2, :, 0] > 0),
            "main_id": torch.from_numpy(label[:, 3, 0]),
            "has_main": torch.tensor([bool(m["has_main"]) for m in a["meta"]])}


@dataclasses.dataclass
class AVSpeakerTask:
    """The `TrainTask` (picklable)."""

    variant: str = "transformer"
    dim: int = 64
    heads: int = 4
    layers: int = 2
    frames: int = 4
    dropout: float = 0.1
    mask_weight: float = 0.1
    batch_size: int = 8
    seed: int = 0

    def build_model(self) -> AVSpeakerNet:
        torch.manual_seed(self.seed)
        return AVSpeakerNet(self.variant, self.dim, self.heads, self.layers, self.frames, self.dropout,
                            self.mask_weight)

    def batches(self, shard, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        local_seed = int(np.random.default_rng([self.seed, epoch, rank]).integers(2**31))
        for rows in shard.iter_batches(batch_size=self.batch_size, batch_format="numpy",
                                       local_shuffle_buffer_size=4 * self.batch_size, local_shuffle_seed=local_seed):
            yield tensors(rows)

    def on_epoch_start(self, model, epoch: int) -> dict[str, float]:
        return {}

    def evaluate(self, model: AVSpeakerNet, val_shard) -> dict[str, float]:
        """After each epoch (rank 0): mAP and per-segment accuracy on the validation split."""
        from trainers.avspeaker.evaluate import predict, score

        return {f"val_{k}": v for k, v in score(predict(model, val_shard.iter_batches(
            batch_size=16, batch_format="numpy"), audio=False)).items() if k in ("map", "accuracy")}
