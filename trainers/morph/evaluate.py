"""Face retrieval of morphs on the test identities (never seen in training).

Queries: for each test identity a, `targets` of its faces (seeded); for each other test identity b, `voices` of
b's utterances. Gallery: every real test face except the query's own target image. Ranking: cosine similarity
in the embedding of the retrieval embedder (a FaceCNN trained separately from the identity-loss classifier).
Hit@k of identity c: an image of c among the k most similar gallery images (recall@k).

Conditions (rows of the table):
    voice          morph(x_a, v_b)                       -> rate of retrieving b (the voice's owner) and a
    no_voice       the autoencoder with gates fixed at 1  -> b (a control: no voice information) and a
    random_voice   morph(x_a, v_c), c != a, b random      -> b (a control: a voice, but not b's) and a
    unmorphed      x_a itself                             -> b and a
    chance         the expected hit rate of a random ranking (exact, from the gallery's counts)
"""
from __future__ import annotations

from math import comb

import numpy as np
import torch
from torch.nn import functional as F

from trainers.morph.model import FaceCNN, MorphAutoencoder

CONDITIONS = ("voice", "no_voice", "random_voice", "unmorphed")


def embed(net: FaceCNN, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """L2-normalized embeddings of (N, 3, H, W) images in [-1, 1]."""
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(F.normalize(net.embedding(torch.from_numpy(images[i:i + batch])), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, net.embed.out_features), np.float32)


def morph(ae: MorphAutoencoder, images: np.ndarray, voices: np.ndarray | None, batch: int = 256) -> np.ndarray:
    """AE(x, v) for paired rows (voices None: the no-voice control, gates at 1)."""
    ae.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            v = None if voices is None else torch.from_numpy(np.ascontiguousarray(voices[i:i + batch]))
            out.append(ae(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])), v).numpy())
    return np.concatenate(out)


def first_hit_ranks(query: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, wanted: np.ndarray,
                    exclude: np.ndarray) -> np.ndarray:
    """1-based rank of the first gallery image of identity wanted[i] for query i (cosine of normalized
    embeddings), the gallery image exclude[i] left out (-1: none)."""
    sims = query @ gallery.T
    rows = np.arange(len(query))
    sims[rows[exclude >= 0], exclude[exclude >= 0]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")
    hits = gallery_labels[order] == wanted[:, None]
    return hits.argmax(1) + 1


def chance_rate(gallery_labels: np.ndarray, wanted: np.ndarray, exclude: np.ndarray, k: int) -> float:
    """Mean over queries of P(an image of wanted[i] in the top k of a uniformly random ranking): 1 - C(G - m, k) /
    C(G, k), G gallery images (after the exclusion), m of them of the wanted identity."""
    rates = []
    for w, e in zip(wanted, exclude):
        m = int((gallery_labels == w).sum()) - int(e >= 0 and gallery_labels[e] == w)
        g = len(gallery_labels) - int(e >= 0)
        rates.append(1.0 - comb(g - m, k) / comb(g, k) if k <= g else 1.0)
    return float(np.mean(rates))


def queries(face_labels: np.ndarray, voice_labels: np.ndarray, targets: int, voices: int, seed: int) -> dict:
    """The query plan: arrays target (face index), a, b, utt (voice index of b) and rand_utt (voice of a random
    c not in {a, b}), one row per (a, target image, b != a, voice of b)."""
    rng = np.random.default_rng([seed, 7])
    ids = np.unique(face_labels)
    cols = {k: [] for k in ("target", "a", "b", "utt", "rand_utt")}
    by_voice = {c: np.flatnonzero(voice_labels == c) for c in ids}
    for a in ids:
        faces = np.flatnonzero(face_labels == a)
        for t in rng.choice(faces, min(targets, len(faces)), replace=False):
            for b in ids[ids != a]:
                for u in rng.choice(by_voice[b], min(voices, len(by_voice[b])), replace=False):
                    others = ids[(ids != a) & (ids != b)]
                    c = rng.choice(others) if len(others) else b
                    cols["target"].append(t)
                    cols["a"].append(a)
                    cols["b"].append(b)
                    cols["utt"].append(u)
                    cols["rand_utt"].append(rng.choice(by_voice[c]))
    return {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}


def retrieval(ae: MorphAutoencoder, embedder: FaceCNN, faces: np.ndarray, face_labels: np.ndarray,
              voices: np.ndarray, voice_labels: np.ndarray, plan: dict, topk=(1, 5, 10)) -> dict:
    """{condition: {"b@k": rate, "a@k": rate}} for the conditions of the module docstring (rates in [0, 1])."""
    gallery = embed(embedder, faces)
    x = faces[plan["target"]]
    inputs = {"voice": morph(ae, x, voices[plan["utt"]]), "no_voice": morph(ae, x, None),
              "random_voice": morph(ae, x, voices[plan["rand_utt"]]), "unmorphed": x}
    results = {}
    for cond, images in inputs.items():
        q = embed(embedder, images)
        rank_b = first_hit_ranks(q, gallery, face_labels, plan["b"], plan["target"])
        rank_a = first_hit_ranks(q, gallery, face_labels, plan["a"], plan["target"])
        results[cond] = {**{f"b@{k}": float((rank_b <= k).mean()) for k in topk},
                         **{f"a@{k}": float((rank_a <= k).mean()) for k in topk},
                         "b_mean_rank": float(rank_b.mean())}
    results["chance"] = {**{f"b@{k}": chance_rate(face_labels, plan["b"], plan["target"], k) for k in topk},
                         **{f"a@{k}": chance_rate(face_labels, plan["a"], plan["target"], k) for k in topk}}
    return results
