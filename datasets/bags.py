"""Images -> bags with class-count vectors ("semi-weak" labels) -> sharded WebDataset, through the one
shard writer (Ray Data cuts the bags in parallel).

A bag is B images drawn without replacement from a split (seeded permutation, cut in order); its
label is the count vector c (c_k = number of its images of class k; non-negative integers summing
to B). Presence (MIL) and proportions (LLP) are derived from c at training time, never stored.

Shard members per bag:
    npy     B x H x W x C uint8 images
    json    {"counts": c, "bag_size": B, "index": positions in the split}
    truth   the instance labels as JSON text: for evaluation and the fully supervised baseline only.
            The weak-label training path reads shards with `TRAIN_MEMBERS`, so this member never
            leaves the tar there (tests/test_semiweak_data.py proves the loss cannot see it).
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
from pathlib import Path

import numpy as np

from datasets.images import ImageSet

TRAIN_MEMBERS = ("npy", "json")                  # what weak-label training may read
SUPERVISED_MEMBERS = ("npy", "json", "truth")     # the fully supervised baseline and evaluation


class BagError(ValueError):
    """Bag parameters do not fit the split."""


def plan_bags(n: int, bag_size: int, bag_size_max: int = 0, seed: int = 0) -> list[np.ndarray]:
    """Index arrays of the bags of a split of n images: a seeded permutation cut into bags of
    `bag_size` images, or of sizes drawn uniformly from [bag_size, bag_size_max] when that is set.
    The remainder (fewer images than the next bag needs) is left out."""
    if bag_size < 1:
        raise BagError(f"bag size must be >= 1, got {bag_size}")
    if bag_size_max and bag_size_max < bag_size:
        raise BagError(f"bag size range [{bag_size}, {bag_size_max}] is empty")
    if bag_size > n:
        raise BagError(f"bag size {bag_size} is larger than the split ({n} images): choose a bag size <= {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    bags, start = [], 0
    while True:
        size = int(rng.integers(bag_size, bag_size_max + 1)) if bag_size_max else bag_size
        if start + size > n:
            return bags
        bags.append(order[start:start + size])
        start += size


def counts_of(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes)


def images_digest(images: ImageSet) -> str:
    """What the bags are cut from, as a hash (decides whether an existing shard set is reused)."""
    h = hashlib.sha256(images.images.tobytes())
    h.update(images.labels.tobytes())
    h.update(json.dumps(images.classes).encode())
    return h.hexdigest()


def decode_bag(item: dict, arrays) -> dict:
    """One shard sample; `arrays` is the (images, labels) pair in Ray's object store."""
    import ray

    images, labels = ray.get(arrays) if isinstance(arrays, ray.ObjectRef) else arrays
    index = np.asarray(item["index"])
    buf = io.BytesIO()
    np.save(buf, images[index], allow_pickle=False)
    truth = labels[index]
    return {"npy": buf.getvalue(),
            "json": {"counts": counts_of(truth, item["num_classes"]).tolist(), "bag_size": len(index),
                     "index": index.tolist()},
            "truth": json.dumps(truth.tolist()).encode()}


def build_bag_shards(images: ImageSet, out_dir: str | Path, *, corpus: str, split: str, bag_size: int,
                     bag_size_max: int = 0, seed: int = 0, bags_per_shard: int = 64) -> dict:
    """`out_dir/{corpus}-{split}-NNNNNN.tar` + manifest (classes, bag sizes in it); returns the manifest."""
    import ray

    from datasets.shards import build_shards

    bags = plan_bags(len(images), bag_size, bag_size_max, seed)
    items = [{"key": f"bag{i:06d}", "path": images.source, "index": idx.tolist(), "num_classes": len(images.classes)}
             for i, idx in enumerate(bags)]
    arrays = ray.put((images.images, images.labels))
    return build_shards(
        items, out_dir, corpus=corpus, split=split, decode=functools.partial(decode_bag, arrays=arrays),
        config={"images_sha256": images_digest(images), "bag_size": bag_size, "bag_size_max": bag_size_max},
        samples_per_shard=bags_per_shard, seed=seed,
        extra={"classes": list(images.classes), "image_shape": list(images.images.shape[1:]),
               "instances": int(sum(len(b) for b in bags))})
