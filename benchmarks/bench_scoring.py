"""Time EER + minDCF (``verification_metrics``) against the same numbers derived from scikit-learn's
``roc_curve``, on the same trials in the same run, and check the values are identical.

Trials: targets ~ N(1, 1), non-targets ~ N(-1, 1), 1 target per 9 non-targets, fixed seed; scores
rounded to 4 decimals, so there are many ties (target/non-target ties included) as with real
cosine scores written to text. Issue 20 target: ours >= 2x faster than the scikit-learn path.

The scikit-learn path: ``roc_curve(labels, scores, drop_intermediate=False)`` gives one point per
distinct score (plus the accept-none point), exactly our operating points in reverse order; then
the same EER interpolation and minDCF as ours (``compute_eer``, ``min_dcf``). Its TPR is
``tps / n_tgt``; ``rint(tpr * n_tgt)`` recovers the integer count, so FNR = (n_tgt - tps) / n_tgt is
the same correctly rounded number as ours (``1 - tpr`` would differ by up to one rounding). Both
variants are alternated, best of `--repeats` each.

    python benchmarks/bench_scoring.py [--n 1000000] [--repeats 5] [--seed 0] [--decimals 4] [--quick]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from trainers.metrics import P_TARGETS, compute_eer, min_dcf, verification_metrics  # noqa: E402

TARGET = 2.0  # speed-up of ours over the roc_curve path
KEYS = ("eer", *(f"min_dcf_{p}" for p in P_TARGETS))


def synthetic_trials(n: int, seed: int, target_fraction: float = 0.1, decimals: int | None = 4):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < target_fraction).astype(np.int8)
    scores = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    if decimals is not None:
        scores = np.round(scores, decimals)
    return scores, labels


def sklearn_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """EER and minDCF from scikit-learn's ROC points (see the module doc)."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    n_tgt = int(np.count_nonzero(labels == 1))
    fnr = (n_tgt - np.rint(tpr * n_tgt)) / n_tgt
    fnr, fpr = fnr[::-1], fpr[::-1]  # ascending thresholds: accept-all first, as compute_det
    out = {"eer": compute_eer(fnr, fpr)[0]}
    for p in P_TARGETS:
        out[f"min_dcf_{p}"] = min_dcf(fnr, fpr, p)
    return out


def ours(scores: np.ndarray, labels: np.ndarray) -> dict:
    m = verification_metrics(scores, labels)
    return {k: m[k] for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--decimals", type=int, default=4, help="round scores (ties); -1: keep all digits")
    ap.add_argument("--quick", action="store_true", help="100k trials, 3 repeats (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = 100_000, 3

    scores, labels = synthetic_trials(args.n, args.seed, decimals=None if args.decimals < 0 else args.decimals)
    n_distinct = np.unique(scores).size
    times = {"sklearn": [], "ours": []}
    results = {}
    for _ in range(args.repeats):  # alternated: both see the same machine load
        for name, fn in (("sklearn", sklearn_metrics), ("ours", ours)):
            t0 = time.perf_counter()
            results[name] = fn(scores, labels)
            times[name].append(time.perf_counter() - t0)
    t_ref, t_ours = min(times["sklearn"]), min(times["ours"])
    speedup = t_ref / t_ours
    identical = all(results["ours"][k] == results["sklearn"][k] for k in KEYS)
    m = results["ours"]
    print(f"{args.n:,} trials ({int(labels.sum()):,} targets, {n_distinct:,} distinct scores), "
          f"best of {args.repeats}, alternated")
    # Equal-variance Gaussians 2 apart cross at 0: EER = Phi(-1) for any target ratio.
    print(f"EER {100 * m['eer']:.3f}% vs theory Phi(-1) = {50 * math.erfc(1 / math.sqrt(2)):.3f}%")
    print()
    print("| trials | sklearn roc_curve path (s) | ours (s) | speed-up | target | ratio vs target "
          "| EER (%) | minDCF 0.01 | minDCF 0.05 | identical values |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {args.n:,} | {t_ref:.3f} | {t_ours:.3f} | {speedup:.2f}x | >= {TARGET}x | {speedup / TARGET:.2f} "
          f"| {100 * m['eer']:.3f} | {m['min_dcf_0.01']:.4f} | {m['min_dcf_0.05']:.4f} "
          f"| {'yes' if identical else 'NO'} |")
    print()
    if not identical:
        diff = {k: results["ours"][k] - results["sklearn"][k] for k in KEYS}
        print(f"RESULT: values DIFFER from the roc_curve path: {diff}")
        sys.exit(1)
    if speedup >= TARGET:
        print(f"RESULT: target met (speed-up {speedup:.2f}x >= {TARGET}x, identical values)")
    else:
        print(f"RESULT: target MISSED (speed-up {speedup:.2f}x < {TARGET}x, identical values)")


if __name__ == "__main__":
    main()
