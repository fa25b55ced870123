"""Constant random perturbations (CRP, arXiv 2103.08265), regenerated instead of stored.

Every training example i gets K perturbed copies x_{i,k} = clip(x_i + delta_{i,k}, 0, 1), k = 1..K, same
label; they never change during training and do not depend on the model. The paper draws them once and keeps
them (N*K*3072 floats: ~6 GB for CIFAR-10 at K = 10). Here delta_{i,k} is the k-th block of noise drawn by a
generator seeded with (seed, i) (numpy's SeedSequence, PCG64: the same bits on every platform, process and
worker), a function of (seed, i, k) alone, so copy k of example i is the same array in every epoch, on every
worker and after a resume, and costs neither disk nor memory. Copy 0 is the clean example (the paper's dataset
is the clean set plus the N*K copies).

Neighbourhoods (pixel space [0, 1], d = number of pixel values of the example):
    linf_uniform   delta ~ U[-r, r]^d                      (the paper's: uniform in the L-infinity box)
    gaussian       delta ~ N(0, r^2 I_d)                   (named option; r is the standard deviation)
    sign           delta ~ r * U{-1, +1}^d                 (named option; the box's corners)
    l2_ball        delta = r * u^(1/d) * g / ||g||_2,      (named option; uniform in the L2 ball of radius r:
                   g ~ N(0, I_d), u ~ U[0, 1]               the direction uniform on the sphere, the radius
                                                            with density proportional to rho^(d-1))
"""
from __future__ import annotations

import numpy as np

NOISES = ("linf_uniform", "gaussian", "sign", "l2_ball")
AUGMENTS = ("none", "crop_flip")
_AUGMENT_STREAM = 1   # the frozen augmentation's generator: (seed, index, 1), apart from the noise's (seed, index)


def check(noise: str, radius: float, copies: int) -> None:
    """Bad neighbourhood parameters, refused with the key named (before any data is read)."""
    if noise not in NOISES:
        raise ValueError(f"unknown crp.noise {noise!r}; choose from {', '.join(NOISES)}")
    if not radius > 0:
        raise ValueError(f"crp.radius must be > 0, got {radius}")
    if not (isinstance(copies, int) and copies >= 0):
        raise ValueError(f"crp.copies (K) must be an integer >= 0, got {copies}")


def deltas(shape: tuple, noise: str, radius: float, seed: int, index: int, copies: int) -> np.ndarray:
    """delta_{index, 1..copies} (float32, copies x `shape`): one generator per example, seeded by (seed, index),
    draws its copies' noise one block after another, so block k depends on (seed, index, k) only, never on how many
    copies are drawn (tests/test_robust_model.py checks it); one seeding per example, not per copy, is what keeps
    regeneration cheap beside a training step."""
    rng = np.random.default_rng([int(seed), int(index)])
    size = (copies,) + tuple(shape)
    if noise == "linf_uniform":
        return (rng.random(size, dtype=np.float32) * np.float32(2 * radius) - np.float32(radius))
    if noise == "gaussian":
        return rng.standard_normal(size, dtype=np.float32) * np.float32(radius)
    if noise == "sign":
        return (rng.integers(0, 2, size, dtype=np.int8) * 2 - 1).astype(np.float32) * np.float32(radius)
    if noise == "l2_ball":
        out = np.empty(size, dtype=np.float32)
        for k in range(copies):
            g = rng.standard_normal(shape, dtype=np.float32)
            out[k] = g * np.float32(radius * rng.random() ** (1.0 / g.size) / np.linalg.norm(g))
        return out
    raise ValueError(f"unknown crp.noise {noise!r}; choose from {', '.join(NOISES)}")


def delta(shape: tuple, noise: str, radius: float, seed: int, index: int, copy: int) -> np.ndarray:
    """delta_{index, copy} (float32, `shape`), a pure function of its arguments."""
    if copy < 1:
        raise ValueError(f"copy must be >= 1 (copy 0 is the clean example), got {copy}")
    return deltas(shape, noise, radius, seed, index, copy)[copy - 1]


def perturbed(x: np.ndarray, noise: str, radius: float, seed: int, index: int, copy: int) -> np.ndarray:
    """Copy `copy` of example `index`: x (float in [0, 1]) itself for copy 0, else clip(x + delta, 0, 1)."""
    x = np.asarray(x, dtype=np.float32)
    if copy == 0:
        return x
    return np.clip(x + delta(x.shape, noise, radius, seed, index, copy), 0.0, 1.0)


def frozen_crop_flip(x: np.ndarray, seed: int, index: int, pad: int = 4) -> np.ndarray:
    """The official code's SVHN / CIFAR-10 augmentation drawn ONCE per example and frozen with its copies
    (torchvision's RandomCrop(size, padding=pad) with zero fill, then RandomHorizontalFlip(0.5), applied to every
    training image when the dataset is built): a function of (seed, index) alone. x: C x H x W."""
    rng = np.random.default_rng([int(seed), int(index), _AUGMENT_STREAM])
    _, h, w = x.shape
    top, left = rng.integers(0, 2 * pad + 1, 2)
    out = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))[:, top:top + h, left:left + w]
    return np.ascontiguousarray(out[:, :, ::-1] if rng.random() < 0.5 else out)


def expand(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, copies: int, noise: str, radius: float,
           seed: int, augment: str = "none") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A batch of clean examples (uint8 N x C x H x W, their labels and dataset indices) -> all K+1 versions of
    each: (float32 N(K+1) x C x H x W in [0, 1], labels, copy numbers), example-major. `augment` "crop_flip"
    replaces each clean example by its frozen crop + flip first (the copies perturb that image, as the official
    code's do)."""
    x = images.astype(np.float32) / np.float32(255)
    if augment == "crop_flip":
        x = np.stack([frozen_crop_flip(image, seed, int(i)) for image, i in zip(x, indices)])
    elif augment != "none":
        raise ValueError(f"unknown augmentation {augment!r}; choose from {', '.join(AUGMENTS)}")
    out = np.empty((len(x), copies + 1) + x.shape[1:], dtype=np.float32)
    out[:, 0] = x
    if copies:
        for j, index in enumerate(indices):
            out[j, 1:] = deltas(x.shape[1:], noise, radius, seed, int(index), copies)
        out[:, 1:] += x[:, None]
        np.clip(out[:, 1:], 0.0, 1.0, out=out[:, 1:])
    return (out.reshape((-1,) + x.shape[1:]), np.repeat(labels, copies + 1),
            np.tile(np.arange(copies + 1), len(x)))
