#!/usr/bin/env python
"""Ray Tune sweep of any workflow's config keys: Optuna (TPE, seeded, SQLite study) under a
concurrency limit derived from the cluster, ASHA on the per-epoch validation metric (or FIFO for
workflows that score once at the end), resumable.

    python workflows/sweep.py semiweak --space semiweak --trials 8 --out runs/sweep-semiweak
    python workflows/sweep.py speaker --space arcface --trials 16 --out runs/sweep-arcface --scheduler asha
    python workflows/sweep.py speaker --space sphereface2 --trials 32 --data /data/voxceleb1 --out runs/sweep-sf2
    python workflows/sweep.py robust --space crp --trials 8 --out runs/sweep-crp
    python workflows/sweep.py morph --space lambda --trials 8 --out runs/sweep-lambda
    python workflows/sweep.py sed --space sed --trials 6 --out runs/sweep-sed --scheduler fifo
    python workflows/sweep.py speaker --space my_space.yaml --trials 20 --out runs/sweep-mine --set train.epochs=20
    ray job submit --working-dir . -- python workflows/sweep.py semiweak --space semiweak --trials 8 --out /shared/sweep

Rerunning the same command after an interruption resumes the sweep (finished trials are kept).
Output in --out: results.md / results.csv (trials, best first), best_config.yaml (pass it to the
workflow with --config), optimization_history.png, param_importances.png, metric_vs_params.png,
optuna.db (the Optuna study), sweep/ (Tune's experiment), trials/<id>/ (each trial's workflow output).
Spaces: tuning/spaces.py (arcface, cosface, spherefacer, spherefacer_fn, sphereface2, sphereface2_m, mask_proxy, mmp,
face_sphereface2, sed, esc50, semiweak, crp) or a YAML file of the same shape.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError  # noqa: E402
from workflows import common, esc50_actions, face, morph, robust, sed, semiweak, speaker  # noqa: E402

# every workflow a sweep can run: each declares its own target next to its config
TARGETS = {wf.SWEEP.name: wf.SWEEP for wf in (speaker, face, sed, esc50_actions, semiweak, robust, morph)}


def run(settings, out: Path, log=print) -> dict:
    from datasets.atomic import write_json
    from tuning import report as R
    from tuning.tuner import EXPERIMENT, STUDY_DB, sweep

    target = TARGETS[settings.workflow]
    results, concurrency = sweep(target, settings, out, log)
    params = list(settings.space["params"])
    rows = R.ranked(R.trial_rows(results, params, target.metric, target.per_epoch), target.mode)
    table = R.write_tables(rows, target.metric, out)
    finished = [r for r in rows if r["status"] == "finished"]
    best_yaml = R.write_best_config(finished[0], out) if finished else None
    log_params = [k for k, spec in settings.space["params"].items() if "loguniform" in spec]
    plots = R.plot_sweep(rows, params, target.metric, target.mode, *R.study_results(out / STUDY_DB, EXPERIMENT), out,
                         log_params)
    summary = {"workflow": settings.workflow, "metric": target.metric, "mode": target.mode,
               "trials": len(rows), "concurrency": concurrency,
               "trial_epochs": sum(r["epochs"] for r in rows) if target.per_epoch else None,
               "best": finished[0] if finished else None,
               "best_config": str(best_yaml) if best_yaml else None, "plots": plots,
               "errors": sum(r["status"] == "error" for r in rows), "versions": common.versions()}
    write_json(out / "sweep_summary.json", summary)
    epochs = f", {summary['trial_epochs']} trial-epochs" if target.per_epoch else ""
    log("\n" + table + f"\n\n[done] {len(rows)} trials ({summary['errors']} failed){epochs}; "
        f"best {target.metric} = {finished[0]['metric'] if finished else None}\n"
        f"[done] best config: {best_yaml}\n"
        f"[done] plots: {', '.join(plots)}")
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("workflow", choices=sorted(TARGETS))
    p.add_argument("--space", required=True, help="a named space (tuning/spaces.py) or a YAML file")
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--scheduler", choices=("asha", "fifo"), help="default: asha where the workflow reports a "
                                                                 "per-epoch metric, fifo otherwise")
    p.add_argument("--seed", type=int, default=0, help="Optuna's TPE seed")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once: a cap on CPU clusters; on GPU "
                   "clusters the number of GPU trials the autoscaler may run at once (default: what fits now)")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--data", help="the corpus root, as the workflow's own --data (its data_key: data.root for speaker, "
                                  "face and semiweak, data.esc50 for esc50_actions); default: its demo corpus. SED "
                                  "takes --set data.tau=... --set data.fsd=...")
    p.add_argument("--config", help="the workflow's YAML config the sampled keys override")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed overrides of every trial")
    common.add_verbose_arg(p)
    common.add_tracking_args(p)
    return p.parse_args(argv)


def settings_of(args: argparse.Namespace):
    """The sweep's settings from its command line (the space loaded and matched to the workflow)."""
    from tuning.spaces import load_space
    from tuning.tuner import SweepSettings

    space = load_space(args.space)
    if space["workflow"] != args.workflow:
        raise ConfigError(f"search space {args.space} is for workflow {space['workflow']}, not {args.workflow}")
    target = TARGETS[args.workflow]
    scheduler = args.scheduler or ("asha" if target.per_epoch else "fifo")
    roots = []
    if args.data:
        if target.data_key is None:
            raise ConfigError(f"{args.workflow} reads several data roots: give them with --set (e.g. --set "
                              "data.tau=... --set data.fsd=...)")
        roots = [(target.data_key, str(Path(args.data).resolve()))]   # a path, never YAML
    return SweepSettings(args.workflow, space, args.trials, scheduler=scheduler, seed=args.seed,
                         max_concurrent=args.max_concurrent, grace_period=args.grace_period, config=args.config,
                         set=roots + list(args.set))


def main(argv=None) -> int:
    args = parse_args(argv)
    return common.guarded(lambda: run(settings_of(args), args.out), args)


if __name__ == "__main__":
    sys.exit(main())
