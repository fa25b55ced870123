"""An `ImageSet` split -> one sample per image -> sharded WebDataset, through the one shard writer.

Shard members per image (key `img{index:07d}`: the image's position in the split, which also seeds its
constant random perturbations at training time; they are never stored):
    npy     H x W x C uint8
    json    {"label": y, "index": i}
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from datasets.images import ImageSet

MEMBERS = ("npy", "json")


def decode_image(item: dict, arrays) -> dict:
    """One shard sample; `arrays` is the (images, labels) pair in Ray's object store."""
    import ray

    images, labels = ray.get(arrays) if isinstance(arrays, ray.ObjectRef) else arrays
    i = item["index"]
    buf = io.BytesIO()
    np.save(buf, images[i], allow_pickle=False)
    return {"npy": buf.getvalue(), "json": {"label": int(labels[i]), "index": i}}


def images_digest(images: ImageSet) -> str:
    from datasets.bags import images_digest as digest

    return digest(images)


def build_image_shards(images: ImageSet, out_dir: str | Path, *, corpus: str, split: str, seed: int = 0,
                       samples_per_shard: int = 1024) -> dict:
    """`out_dir/{corpus}-{split}-NNNNNN.tar` + manifest (classes, image shape); returns the manifest."""
    import ray

    from datasets.shards import build_shards

    items = [{"key": f"img{i:07d}", "path": images.source, "index": i} for i in range(len(images))]
    arrays = ray.put((images.images, images.labels))
    return build_shards(
        items, out_dir, corpus=corpus, split=split, decode=functools.partial(decode_image, arrays=arrays),
        config={"images_sha256": images_digest(images)}, samples_per_shard=samples_per_shard, seed=seed,
        extra={"classes": list(images.classes), "image_shape": list(images.images.shape[1:])})


def rows_to_arrays(batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 N x H x W x C images, labels, indices) of a numpy batch of shard rows."""
    from datasets.shards import json_member

    meta = [json_member(m) for m in batch["json"]]
    images = np.stack([np.load(io.BytesIO(bytes(b)), allow_pickle=False) if isinstance(b, (bytes, np.bytes_))
                       else np.asarray(b) for b in batch["npy"]])
    return (images, np.array([m["label"] for m in meta], dtype=np.int64),
            np.array([m["index"] for m in meta], dtype=np.int64))
