"""A generated 10-class image set in CIFAR-10's python layout, for the semi-weak demo and tests.

    root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}

Why synthetic: CIFAR-10 cannot be downloaded here. Each class is a shape (disk, square, ring, cross,
bar) in a colour family (warm or cool); every image adds what a classifier must ignore: position,
size, the colour's shade, a random background and pixel noise. Each image draws from its own numpy
Generator seeded by (seed, split, index), so the same parameters give byte-identical files; a
`.complete` marker (written last) makes a rerun with the same parameters a no-op.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from datasets.atomic import write_bytes
from datasets.images import CIFAR_BATCHES, CIFAR_DIR, write_cifar10_batch
from datasets.synthetic.marker import already_generated, mark_complete, refuse_strays

FORMAT_VERSION = 1
SHAPES = ("disk", "square", "ring", "cross", "bar")
FAMILIES = ("warm", "cool")
CLASSES = tuple(f"{family}_{shape}" for family in FAMILIES for shape in SHAPES)
SIZE = 32


def _mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    dist = np.hypot(dx, dy)
    if shape == "disk":
        return dist < r
    if shape == "square":
        return np.maximum(abs(dx), abs(dy)) < r * 0.85
    if shape == "ring":
        return (dist < r) & (dist > r * 0.55)
    if shape == "cross":
        return ((abs(dx) < r / 3) & (abs(dy) < r)) | ((abs(dy) < r / 3) & (abs(dx) < r))
    return (abs(dy) < r / 3) & (abs(dx) < r * 1.2)   # bar


def draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """One SIZE x SIZE x 3 uint8 image of class `label`."""
    family, shape = divmod(label, len(SHAPES))
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    r = rng.uniform(6, 11)
    cx, cy = rng.uniform(r, SIZE - r, size=2)
    warm = np.array([rng.uniform(170, 250), rng.uniform(40, 160), rng.uniform(10, 70)])
    colour = warm if family == 0 else warm[::-1]
    background = rng.uniform(40, 200) + rng.normal(0, 15, 3)
    image = np.broadcast_to(background, (SIZE, SIZE, 3)).copy()
    image[_mask(SHAPES[shape], x - cx, y - cy, r)] = colour
    image += rng.normal(0, 12, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate_image_corpus(root: str | Path, *, per_train_batch: int = 500, test_size: int = 1000,
                          seed: int = 0) -> Path:
    """Write the corpus under `root` (idempotent); returns `root`. Labels cycle through the classes
    in a seeded order, so every batch is balanced to within one image per class."""
    root = Path(root)
    params = {"format": FORMAT_VERSION, "per_train_batch": per_train_batch, "test_size": test_size, "seed": seed}
    last = f"{CIFAR_DIR}/batches.meta"
    if already_generated(root, params, last, "generated image corpus"):
        return root
    folder = root / CIFAR_DIR
    if folder.is_dir():
        refuse_strays(root, [p.name for p in folder.iterdir() if not p.name.startswith(".")],
                      CIFAR_BATCHES["train"] + CIFAR_BATCHES["test"] + ["batches.meta"])
    names = CIFAR_BATCHES["train"] + CIFAR_BATCHES["test"]
    for split_index, name in enumerate(names):
        n = test_size if name in CIFAR_BATCHES["test"] else per_train_batch
        order = np.random.default_rng([seed, split_index]).permutation(len(CLASSES))
        labels = order[np.arange(n) % len(CLASSES)]
        images = np.stack([draw(int(lab), np.random.default_rng([seed, split_index, i]))
                           for i, lab in enumerate(labels)])
        write_cifar10_batch(folder / name, images, labels, name)
    write_bytes(folder / "batches.meta", pickle.dumps(
        {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": per_train_batch,
         b"num_vis": SIZE * SIZE * 3}, protocol=2))
    mark_complete(root, params)
    return root
