"""A small generated face corpus in the CASIA-WebFace and LFW layouts, for tests and demos.

    root/train/<identity>/<nnn>.png          training identities (CASIA-WebFace layout)
    root/lfw/<name>/<name>_<n:04d>.png       test identities (LFW layout), disjoint from train
    root/pairs.txt                           LFW pairs format: '<folds> <pairs>', then per fold
                                             <pairs> same and <pairs> different pairs

Why synthetic: CASIA-WebFace / LFW cannot be shipped or downloaded here. Each identity is a set
of drawing parameters (face ellipse, skin tone, hair band and colour, eye spacing/height/size,
eyebrows, nose length/width, mouth position/width/thickness, eye colour); each image of it adds
nuisance a face model must ignore: pose (rotation, shift, scale), a lighting gradient, a
background colour, sensor noise. As in LFW, folds are identity-disjoint: a fold's pairs only
use that fold's identities.

Deterministic: each identity / image draws from its own numpy Generator seeded by (seed, indices)
and PIL writes PNGs without timestamps, so the same parameters give byte-identical files.
`.complete` (written last) records the parameters; a rerun with the same parameters is a no-op.
"""
from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np

from datasets.atomic import write_bytes
from datasets.faces import FacePair, lfw_key, write_lfw_pairs
from datasets.synthetic.marker import already_generated, mark_complete, refuse_strays

FORMAT_VERSION = 1  # bump when the generated images change, so old markers stop matching
SUPERSAMPLE = 2     # draw at 2x and downsample: anti-aliased edges


def _identity(rng: np.random.Generator) -> dict:
    return {
        "face_w": rng.uniform(0.28, 0.40), "face_h": rng.uniform(0.36, 0.46),  # ellipse semi-axes
        # skin on a light-dark line of natural tones; hair dark, mostly brown/black
        "skin": rng.uniform() * np.array([-135.0, -135.0, -130.0])
        + np.array([245.0, 205.0, 180.0]) + rng.normal(0, 10, 3),
        "hair": rng.uniform(0, 1) * np.array([120.0, 90.0, 60.0]) + rng.uniform(0, 30, 3),
        "hair_h": rng.uniform(0.05, 0.22),
        "eye_y": rng.uniform(-0.12, 0.0), "eye_dx": rng.uniform(0.10, 0.18), "eye_r": rng.uniform(0.03, 0.06),
        "iris": rng.uniform(0, 150, size=3), "brow": rng.uniform(0.01, 0.03), "brow_dy": rng.uniform(0.05, 0.09),
        "nose_len": rng.uniform(0.08, 0.18), "nose_w": rng.uniform(0.03, 0.07),
        "mouth_y": rng.uniform(0.16, 0.26), "mouth_w": rng.uniform(0.08, 0.18), "mouth_t": rng.uniform(0.01, 0.04),
        "lips": rng.uniform([120, 30, 40], [220, 100, 110]),
    }


def _draw(ident: dict, rng: np.random.Generator, size: int) -> bytes:
    from PIL import Image, ImageDraw

    s = size * SUPERSAMPLE
    bg = tuple(int(v) for v in rng.uniform(30, 230, size=3))
    img = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(img)
    c = s / 2

    def box(cx, cy, rx, ry):  # face-relative units (fraction of the image) -> pixel box
        return [c + (cx - rx) * s, c + (cy - ry) * s, c + (cx + rx) * s, c + (cy + ry) * s]

    def col(v, jitter=8.0):
        return tuple(int(x) for x in np.clip(np.asarray(v) + rng.normal(0, jitter, 3), 0, 255))

    fw, fh = ident["face_w"], ident["face_h"]
    d.ellipse(box(0, -fh + ident["hair_h"], fw * 1.05, ident["hair_h"] * 1.6), fill=col(ident["hair"]))
    d.ellipse(box(0, 0, fw, fh), fill=col(ident["skin"]))
    d.rectangle(box(0, -fh + ident["hair_h"] * 0.5, fw * 0.9, ident["hair_h"] * 0.5), fill=col(ident["hair"]))
    for side in (-1, 1):
        ex, ey, er = side * ident["eye_dx"], ident["eye_y"], ident["eye_r"]
        d.ellipse(box(ex, ey, er * 1.4, er), fill=(240, 240, 240))
        d.ellipse(box(ex, ey, er * 0.7, er * 0.7), fill=col(ident["iris"]))
        d.rectangle(box(ex, ey - ident["brow_dy"], er * 1.6, ident["brow"]), fill=col(ident["hair"]))
    nose = [(c, c + (ident["eye_y"] + 0.02) * s),
            (c - ident["nose_w"] * s, c + (ident["eye_y"] + ident["nose_len"]) * s),
            (c + ident["nose_w"] * s, c + (ident["eye_y"] + ident["nose_len"]) * s)]
    d.polygon(nose, fill=col(np.asarray(ident["skin"]) * 0.8))
    d.ellipse(box(0, ident["mouth_y"], ident["mouth_w"], ident["mouth_t"]), fill=col(ident["lips"]))

    # pose: rotation about the centre, scale and shift (inverse affine map for Image.transform)
    angle = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.88, 1.12)
    tx, ty = rng.uniform(-0.06, 0.06, size=2) * s
    ca, sa = np.cos(angle) / scale, np.sin(angle) / scale
    coeffs = (ca, sa, c - ca * (c + tx) - sa * (c + ty), -sa, ca, c + sa * (c + tx) - ca * (c + ty))
    img = img.transform((s, s), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=bg)
    img = img.resize((size, size), Image.BILINEAR)

    # lighting: a linear gradient in a random direction, then sensor noise
    x = np.asarray(img, dtype=np.float64)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.1, 0.5) * (np.cos(theta) * xx + np.sin(theta) * yy) * 2 + rng.uniform(-0.15, 0.15)
    x = x * light[..., None] + rng.normal(0, rng.uniform(2, 10), x.shape)
    out = Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def lfw_name(j: int) -> str:
    """LFW-style person name of test identity j (letters and underscores, no dots)."""
    return f"Synth_Person{j + 1:04d}"


def _make_pairs(n_test_ids: int, images_per_id: int, n_folds: int, pairs_per_fold: int,
                rng: np.random.Generator) -> list[FacePair]:
    """Identity-disjoint folds (identity j in fold j % n_folds); per fold `pairs_per_fold` distinct
    same pairs and as many distinct different pairs, each class sorted as in LFW's file."""
    pairs: list[FacePair] = []
    imgs = range(1, images_per_id + 1)
    for fold in range(n_folds):
        ids = [lfw_name(j) for j in range(fold, n_test_ids, n_folds)]
        same = [(a, na, a, nb) for a in ids for na, nb in itertools.combinations(imgs, 2)]
        diff = [(a, na, b, nb) for a, b in itertools.combinations(ids, 2) for na in imgs for nb in imgs]
        if len(same) < pairs_per_fold or len(diff) < pairs_per_fold:
            raise ValueError(f"fold {fold} has {len(ids)} identities x {images_per_id} images: only {len(same)} same "
                             f"and {len(diff)} different pairs, fewer than pairs_per_fold={pairs_per_fold}")
        for label, cands in ((1, same), (0, diff)):
            chosen = sorted(cands[i] for i in rng.choice(len(cands), size=pairs_per_fold, replace=False))
            pairs += [FacePair(fold, label, lfw_key(a, na), lfw_key(b, nb)) for a, na, b, nb in chosen]
    return pairs


def generate_face_corpus(root, *, n_train_ids: int = 40, n_test_ids: int = 10, images_per_id: int = 8,
                         size: int = 64, seed: int = 0, n_folds: int = 2, pairs_per_fold: int = 50) -> Path:
    """Write the corpus under `root` (layout in the module docstring); return `root`."""
    root = Path(root)
    params = {"format_version": FORMAT_VERSION, "n_train_ids": n_train_ids, "n_test_ids": n_test_ids,
              "images_per_id": images_per_id, "size": size, "seed": seed, "n_folds": n_folds,
              "pairs_per_fold": pairs_per_fold}
    if n_train_ids < 1 or images_per_id < 2 or size < 16 or seed < 0 or n_folds < 1 or pairs_per_fold < 1:
        raise ValueError("need n_train_ids >= 1, images_per_id >= 2, size >= 16, seed >= 0, "
                         "n_folds >= 1 and pairs_per_fold >= 1")
    if n_test_ids < 2 * n_folds:
        raise ValueError(f"need >= 2 test identities per fold for different-person pairs: "
                         f"n_test_ids={n_test_ids} < 2 * n_folds={2 * n_folds}")
    if already_generated(root, params, "pairs.txt", "synthetic face corpus"):
        return root

    # pairs first: an infeasible pairs_per_fold fails before anything is written
    pairs = _make_pairs(n_test_ids, images_per_id, n_folds, pairs_per_fold, np.random.default_rng([seed, 1 << 20]))
    written: set[Path] = set()
    n_ids = n_train_ids + n_test_ids
    for i in range(n_ids):
        ident = _identity(np.random.default_rng([seed, i]))
        for k in range(images_per_id):
            png = _draw(ident, np.random.default_rng([seed, i, k]), size)
            if i < n_train_ids:
                path = root / "train" / f"{i + 1:07d}" / f"{k + 1:03d}.png"
            else:
                name = lfw_name(i - n_train_ids)
                path = root / "lfw" / name / f"{name}_{k + 1:04d}.png"
            write_bytes(path, png)
            written.add(path)
    refuse_strays(root, (p for sub in ("train", "lfw") for p in (root / sub).rglob("*") if p.is_file()), written)
    write_lfw_pairs(root / "pairs.txt", pairs, n_folds, pairs_per_fold)
    mark_complete(root, params)
    return root
