"""ASHA + Optuna vs the same trials run to full budget: compute used and best metric found.

Two sweeps of the `arcface` space (head.m, head.s) on the generated demo speaker corpus, selected on
`val_eer` (EER over all pairs of the held-out validation speakers' utterances, scored after every
epoch): the same Optuna TPE seed, so both sweeps draw the same configurations (TPE samples its first
trials at random), one under ASHA (grace period 1 epoch, reduction factor 2), one under FIFO (every
trial runs every epoch). Compute = trial-epochs (epochs trained, summed over trials).
Target: ASHA finds the same best val_eer (within --noise) with <= 0.5x the trial-epochs.

    python benchmarks/bench_sweep.py [--trials 8] [--epochs 8] [--train-speakers 32] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 0.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-speakers", type=int, default=32)
    p.add_argument("--noise", type=float, default=0.02, help="best val_eer within this counts as the same")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 trials, 2 epochs, 12 speakers")
    p.add_argument("--out", type=Path, help="keep the sweeps here (default: a temporary folder)")
    args = p.parse_args()
    if args.quick:
        args.trials, args.epochs, args.train_speakers = 2, 2, 12

    from trainers import local_ray
    from tuning.report import trial_rows
    from tuning.spaces import load_space
    from tuning.tuner import SweepSettings, sweep

    # with the dashboard: Ray Train frees the resources of the trials ASHA stops through the state API
    local_ray.start(num_cpus=2, include_dashboard=True, log_to_driver=False)
    space = load_space("arcface")
    fixed = [f"train.epochs={args.epochs}", f"demo.n_train_speakers={args.train_speakers}", "demo.n_test_speakers=4",
             "margin.start_epoch=0", "margin.fix_epoch=1"]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_sweep"))
    measured = {}
    for scheduler in ("asha", "fifo"):
        settings = SweepSettings("speaker", space, args.trials, scheduler=scheduler, seed=0, set=fixed)
        grid, _ = sweep(settings, out / scheduler, log=lambda *a: None)
        rows = trial_rows(grid, list(space["params"]), "val_eer")
        measured[scheduler] = {"trial_epochs": sum(r["epochs"] for r in rows),
                               "best": min(r["metric"] for r in rows if r["metric"] is not None),
                               "configs": sorted((round(r["head.m"], 6), r["head.s"]) for r in rows)}
    local_ray.stop()
    asha, fifo = measured["asha"], measured["fifo"]
    ratio = asha["trial_epochs"] / fifo["trial_epochs"]
    same = abs(asha["best"] - fifo["best"]) <= args.noise
    print(json.dumps(measured, indent=1))
    print(f"same configurations drawn: {asha['configs'] == fifo['configs']}")
    print("| trials x epochs | trial-epochs ASHA | trial-epochs full | compute ratio | best val_eer ASHA | "
          "best val_eer full | target |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.trials} x {args.epochs} | {asha['trial_epochs']} | {fifo['trial_epochs']} | {ratio:.2f} | "
          f"{asha['best']:.4f} | {fifo['best']:.4f} | <= {TARGET} with best within {args.noise} |")
    if ratio <= TARGET and same:
        print(f"RESULT: target met (compute ratio {ratio:.2f} <= {TARGET}, best val_eer within {args.noise})")
    else:
        print(f"RESULT: target MISSED (compute ratio {ratio:.2f}, best val_eer differs by "
              f"{abs(asha['best'] - fifo['best']):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
