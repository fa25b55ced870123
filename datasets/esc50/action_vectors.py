"""Ratings frames (datasets.esc50.meta) -> one action vector per ESC-50 file, and inter-rater agreement.

Aggregators (AGGREGATORS), each giving {filename: float64 array of len(ACTIONS)}, files sorted:
  sum   the paper's vectors: ratings summed over raters (equals actionvector_one_per_audiofile_sum.csv)
  mean  ratings averaged over raters (the sum, free of the number of raters)
  mv, ds, glad  0/1 per action: each rating is binarized (rating >= threshold) and every action is
        aggregated on its own (binary relevance) by crowd-kit's MajorityVote, DawidSkene or GLAD
        over (task = file, worker = rater). MajorityVote breaks ties towards 0 (absent).
The default threshold 2 reads a rating of 1 on the 0-4 scale as "barely, if at all" and 2 or more
as present: a single weak vote does not make an action present.
crowd-kit 1.4.2 draws no random numbers in these three (DawidSkene starts from MajorityVote, GLAD
from constant parameters), so the vectors are deterministic without seeds.

The three-raters file has no worker ids; `pseudo_worker_notice` says so for the workflow to print.
"""
from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from crowdkit.aggregation import GLAD, DawidSkene, MajorityVote

from datasets.atomic import atomic_path
from datasets.esc50.meta import ACTIONS, PSEUDO_WORKERS, RATINGS, stem

THRESHOLD = 2
_CROWDKIT = {"mv": MajorityVote, "ds": DawidSkene, "glad": GLAD}
AGGREGATORS = ("sum", "mean", *_CROWDKIT)
PSEUDO_WORKER_NOTICE = (
    "note: the three-raters annotations have no worker ids; the three rows of each file are used as "
    "pseudo-workers r1, r2, r3 in row order, so worker models (DawidSkene, GLAD) take row position "
    "for a person across files, which the data does not guarantee")


def pseudo_worker_notice(ratings: pd.DataFrame) -> str | None:
    """PSEUDO_WORKER_NOTICE for a frame from `read_three_raters`, else None."""
    return PSEUDO_WORKER_NOTICE if ratings.attrs.get(PSEUDO_WORKERS) else None


def aggregate(ratings: pd.DataFrame, method: str, threshold: int = THRESHOLD,
              on_ray: bool = False) -> dict[str, np.ndarray]:
    """{filename: action vector} by `method` (one of AGGREGATORS; see the module docstring). `on_ray`: the
    crowd-kit methods' actions as Ray tasks, one per action, on the cluster `ray.init` connected to (the same
    numbers: each action is aggregated on its own)."""
    if method not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {method!r}; choose one of {', '.join(AGGREGATORS)}")
    if threshold not in RATINGS[1:]:
        raise ValueError(f"threshold must be {RATINGS[1]}-{RATINGS[-1]} (a rating >= threshold counts as "
                         f"present), got {threshold!r}")
    if method in ("sum", "mean"):
        table = ratings.groupby("filename")[list(ACTIONS)].agg(method)
        return dict(zip(table.index, table.to_numpy(dtype=np.float64)))
    files = sorted(ratings["filename"].unique())
    present = ratings[["filename", "rater"]].assign(**{a: (ratings[a] >= threshold).astype(int) for a in ACTIONS})
    if on_ray:
        import ray

        one, shared = ray.remote(num_cpus=1)(_one_action), ray.put((present, files))
        columns = ray.get([one.remote(shared, method, action) for action in ACTIONS])
    else:
        columns = [_one_action((present, files), method, action) for action in ACTIONS]
    return dict(zip(files, np.stack(columns, axis=1)))


def _one_action(present_files: tuple, method: str, action: str) -> np.ndarray:
    """One action's 0/1 per file (binary relevance) by a crowd-kit method, over (ratings binarized, files)."""
    present, files = present_files
    labels = present[action]
    if labels.nunique() == 1:  # one label everywhere: nothing to infer (and GLAD needs two labels)
        return np.full(len(files), float(labels.iloc[0]))
    data = pd.DataFrame({"task": present["filename"], "worker": present["rater"], "label": labels})
    return _CROWDKIT[method]().fit_predict(data).reindex(files).to_numpy(dtype=np.float64)


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa of a (subjects x categories) table of how many raters chose each category;
    every subject has the same number n >= 2 of raters. NaN when all ratings fall in one category."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1) if counts.ndim == 2 else np.zeros(0)
    if not len(n) or np.any(n != n[0]) or n[0] < 2:
        raise ValueError("fleiss_kappa needs a non-empty (subjects x categories) table with the same "
                         f"number (>= 2) of ratings per subject; row sums are {np.unique(n)}")
    n = n[0]
    agreement = ((np.square(counts).sum(axis=1) - n) / (n * (n - 1))).mean()
    chance = np.square(counts.sum(axis=0) / counts.sum()).sum()
    return float((agreement - chance) / (1 - chance)) if chance < 1 else float("nan")


def agreement(ratings: pd.DataFrame) -> dict[str, float]:
    """Fleiss' kappa on the 0-4 ratings, as the paper: {action: kappa over files, "overall": kappa
    with every (file, action) pair as a subject}. Every file needs the same number of raters."""
    codes, files = pd.factorize(ratings["filename"])
    per_file = np.bincount(codes, minlength=len(files))
    if np.any(per_file != per_file[0]):
        raise ValueError(f"Fleiss' kappa needs the same number of raters for every file; {files[0]} has "
                         f"{per_file[0]}, {files[np.argmax(per_file != per_file[0])]} has "
                         f"{per_file[per_file != per_file[0]][0]}")
    onehot = ratings[list(ACTIONS)].to_numpy()[..., None] == np.arange(len(RATINGS))  # (rows, actions, 5)
    counts = np.zeros((len(files), len(ACTIONS), len(RATINGS)))
    np.add.at(counts, codes, onehot)
    kappas = {a: fleiss_kappa(counts[:, j]) for j, a in enumerate(ACTIONS)}
    kappas["overall"] = fleiss_kappa(counts.reshape(-1, len(RATINGS)))
    return kappas


def action_vectors(aggregators, ratings, summed, threshold: int, cache: Path | None = None,
                   on_ray: bool = False) -> dict[str, dict]:
    """{aggregator: {stem: vector}}. `cache`: a folder keeping each crowd-kit aggregation (`cached_aggregate`);
    `on_ray`: their actions aggregated as Ray tasks (`aggregate`)."""
    if summed is not None:
        return {"sum": {stem(f): v for f, v in zip(summed["filename"], summed[list(ACTIONS)].to_numpy(dtype=float))}}
    return {a: {stem(f): v for f, v in cached_aggregate(ratings, a, threshold, cache, on_ray).items()}
            for a in aggregators}


def cached_aggregate(ratings: pd.DataFrame, method: str, threshold: int, cache: Path | None,
                     on_ray: bool = False) -> dict[str, np.ndarray]:
    """`aggregate`, kept in `cache` for the crowd-kit methods (GLAD takes ~25 s on the demo's 500 clips on one
    CPU, ~60 s on ESC-50's 2000; DawidSkene ~5 s / 10 s): a file per method, threshold, crowd-kit version and
    ratings (their rows hashed), read back by a rerun on the same annotations instead of aggregating again.
    Written under a temp name, renamed last."""
    if cache is None or method not in _CROWDKIT:
        return aggregate(ratings, method, threshold, on_ray)
    rows = pd.util.hash_pandas_object(ratings, index=False).to_numpy().tobytes()
    key = hashlib.sha256(rows + f"{method} {threshold} {version('crowd-kit')}".encode()).hexdigest()[:16]
    path = Path(cache) / f"{method}-threshold{threshold}-{key}.npz"
    if path.is_file():
        saved = np.load(path)
        return dict(zip(saved["files"].tolist(), saved["vectors"]))
    vectors = aggregate(ratings, method, threshold, on_ray)
    with atomic_path(path) as tmp:
        np.savez(tmp, files=np.array(list(vectors)), vectors=np.stack(list(vectors.values())))
    return vectors
