"""Time ``verification_metrics`` on synthetic trials and check it against a plain reference.

Targets ~ N(1, 1), non-targets ~ N(-1, 1), 1 target per 9 non-targets, fixed seed. The fast path
is timed on all trials (best of 3). The reference (one threshold at a time: O(n * thresholds))
is too slow for 1M trials, so both run on a 20k subsample and the absolute differences are shown.

    python benchmarks/bench_scoring.py [--n 1000000] [--ref-n 20000] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from trainers.metrics import P_TARGETS, verification_metrics  # noqa: E402


def synthetic_trials(n: int, seed: int, target_fraction: float = 0.1):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < target_fraction).astype(np.int8)
    scores = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    return scores, labels


def reference_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Accept if score >= t, for t in the distinct scores then +inf; counted per threshold."""
    tgt, non = scores[labels == 1], scores[labels == 0]
    fnr, fpr = [], []
    for t in [*np.unique(scores), np.inf]:
        fnr.append(np.count_nonzero(tgt < t) / tgt.size)
        fpr.append(np.count_nonzero(non >= t) / non.size)
    fnr, fpr = np.array(fnr), np.array(fpr)
    d = fnr - fpr
    i = int(np.argmax(d >= 0))  # first point at or past the crossing (d[0] = -1 < 0)
    a = d[i] / (d[i] - d[i - 1])
    out = {"eer": fnr[i] + a * (fnr[i - 1] - fnr[i])}
    for p in P_TARGETS:
        out[f"min_dcf_{p}"] = np.min(p * fnr + (1 - p) * fpr) / min(p, 1 - p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--ref-n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    scores, labels = synthetic_trials(args.n, args.seed)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        m = verification_metrics(scores, labels)
        times.append(time.perf_counter() - t0)
    best = min(times)
    print(f"verification_metrics on {args.n:,} trials ({m['n_target']:,} targets): "
          f"best of 3 = {best:.3f} s")
    # Equal-variance Gaussians 2 apart cross at 0: EER = Phi(-1) for any target ratio.
    print(f"EER {100 * m['eer']:.3f}% vs theory Phi(-1) = {50 * math.erfc(1 / math.sqrt(2)):.3f}%")

    rng = np.random.default_rng(args.seed + 1)
    sub = rng.choice(args.n, min(args.ref_n, args.n), replace=False)
    t0 = time.perf_counter()
    ref = reference_metrics(scores[sub], labels[sub])
    t_ref = time.perf_counter() - t0
    fast = verification_metrics(scores[sub], labels[sub])
    diff = {k: abs(fast[k] - ref[k]) for k in ref}
    print(f"reference on {sub.size:,}-trial subsample: {t_ref:.2f} s")
    print()
    print("| trials | best of 3 (s) | EER (%) | minDCF 0.01 | minDCF 0.05 "
          "| ref trials | abs diff EER | abs diff minDCF 0.01 | abs diff minDCF 0.05 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.n:,} | {best:.3f} | {100 * m['eer']:.3f} | {m['min_dcf_0.01']:.4f} "
          f"| {m['min_dcf_0.05']:.4f} | {sub.size:,} | {diff['eer']:.1e} "
          f"| {diff['min_dcf_0.01']:.1e} | {diff['min_dcf_0.05']:.1e} |")


if __name__ == "__main__":
    main()
