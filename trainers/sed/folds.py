"""Weakly-supervised SED runs (arXiv 2106.06858): one Ray Train run per held-out fold (folds in
parallel), per SNR and ablation; clip AP / AUC and 1 s segment F1 / error rate of each held-out fold;
activity-map and training PNGs.

`cfg` below is the sed workflow's config (sections data, model, train, eval, scale and the lists snrs,
test_folds, ablations), read by attribute: trainers never import workflows.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from trainers.config import ConfigError, config_hash, to_dict
from trainers.features import LogMel
from trainers.loop import train_or_reuse
from trainers.plots import plot_activity, plot_training_curves
from trainers.resources import in_parallel, inference_actors, parallel_runs_scale
from trainers.sed.ablations import ABLATIONS
from trainers.sed.metrics import clip_metrics, frames_to_events, segment_metrics
from trainers.sed.task import SEDTask, feature_stats, predict, sed_dataset

# name -> what the variant changes in the model section (`full` is the paper's system)


def front_end(cfg):
    return LogMel(cfg.data.sample_rate, cfg.data.n_fft, cfg.data.hop, cfg.data.n_mels, cfg.data.front_end)


def make_task(cfg, num_classes: int, ablation: str = "full", stats: dict | None = None):
    """The task of one ablation; `stats` (of `feature_stats`, for one test fold) gives the clip length
    and the z-score statistics; without it (config validation) a 1-frame placeholder."""
    stats = stats or {"n_frames": 1, "mean": None, "std": None}
    return SEDTask(num_classes=num_classes, n_mels=cfg.data.n_mels,
                   model={**to_dict(cfg.model), **ABLATIONS[ablation]}, batch_size=cfg.train.batch_size,
                   shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.train.seed, n_frames=stats["n_frames"],
                   feature_mean=stats["mean"], feature_std=stats["std"])


def fold_stats(cfg, paths: list[str]) -> dict[int, dict]:
    """`feature_stats` of every test fold, checked before any training starts."""
    fixed = any({**to_dict(cfg.model), **ABLATIONS[a]}["pooling"] == "two_step" for a in cfg.ablations)
    try:
        stats = feature_stats(paths, front_end(cfg), cfg.test_folds, cfg.data.folds, cfg.data.val_fraction, fixed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for fold, s in stats.items():
        if s["n_val"] == 0:
            raise ConfigError(f"data.val_fraction={cfg.data.val_fraction} leaves no validation mixtures in the "
                              f"training folds of test fold {fold}: raise it")
    return stats


def score_clips(rows: list[dict], classes: list[str], hop_s: float, ev) -> dict:
    """Clip micro/macro-AP and AUC, segment-based F1 / error rate of thresholded frame outputs."""
    clip = clip_metrics(np.stack([r["weak"] for r in rows]), np.stack([r["clip"] for r in rows]))
    reference = {r["key"]: [{"onset": e["onset"], "offset": e["offset"], "label": e["label"]}
                            for e in json.loads(r["meta"])["events"]] for r in rows}
    estimated = {r["key"]: frames_to_events(r["frame"], hop_s, classes, threshold=ev.threshold) for r in rows}
    return {**clip, **{f"segment_{k}": v for k, v in segment_metrics(reference, estimated, classes,
                                                                       segment_s=ev.segment_s).items()},
            "n_clips": len(rows)}


def train_fold(cfg, ablation: str, fold: int, paths: list[str], classes: list[str], digest: str,
               run_dir: Path, scale, log, stats: dict) -> dict:
    """Train on every fold but `fold` (or reuse the finished run), lr on plateau and best epoch by the
    validation share of those folds; {state, history, train_time_s}."""
    task = make_task(cfg, len(classes), ablation, stats)
    train_folds = [f for f in range(1, cfg.data.folds + 1) if f != fold]
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in ("tau", "fsd")}   # the shards' digest covers them
    run_name = f"sed-{config_hash([data, to_dict(cfg.train), task.model])}-{digest[:8]}-test{fold}"
    t0 = time.perf_counter()
    state, history = train_or_reuse(
        task, cfg.train, run_dir, run_name,
        lambda: sed_dataset(paths, front_end(cfg), classes, train_folds, shuffle_seed=cfg.train.seed,
                            part="train", val_fraction=cfg.data.val_fraction), scale, log,
        val_ds_fn=lambda: sed_dataset(paths, front_end(cfg), classes, train_folds, part="val",
                                      val_fraction=cfg.data.val_fraction))
    return {"state": state["model"], "best_epoch": state.get("best_epoch"), "history": history,
            "train_time_s": time.perf_counter() - t0}


def evaluate_fold(cfg, ablation: str, snr, fold: int, paths: list[str], classes: list[str], trained: dict,
                  run_dir: Path, log, untrained: bool, stats: dict) -> dict:
    """Metrics of the trained model (and, if `untrained`, of the same initial weights untrained) on
    fold `fold`; activity and training PNGs."""
    task = make_task(cfg, len(classes), ablation, stats)
    test = sed_dataset(paths, front_end(cfg), classes, [fold])
    hop_s = cfg.data.hop / cfg.data.sample_rate
    results = {}
    for system, weights in (("trained", trained["state"]), ("untrained", None))[:2 if untrained else 1]:
        rows = predict(test, task, weights, num_blocks=len(paths), concurrency=inference_actors(cfg.scale),
                       use_gpu=cfg.scale.use_gpu)
        if not rows:
            raise ConfigError(f"fold {fold} has no test mixtures in {paths[0]}...")
        results[system] = score_clips(rows, classes, hop_s, cfg.eval)
        if system == "trained":
            for r in rows[:cfg.eval.plot_clips]:
                plot_activity(r["logmel"], r["frames"], r["frame"], classes, hop_s,
                              run_dir / "plots" / f"activity_{r['key'].replace('/', '_')}.png",
                              title=f"{r['key']} ({ablation}, SNR {snr} dB)", threshold=cfg.eval.threshold)
    plot_training_curves(trained["history"], run_dir / "plots" / "training.png")
    log(f"[sed] SNR {snr} dB, {ablation}, test fold {fold}: macro-AP {results['trained']['macro_ap']:.3f}, "
        f"segment F1 {results['trained']['segment_f1']:.3f}"
        + (f" (untrained macro-AP {results['untrained']['macro_ap']:.3f})" if untrained else ""))
    return {**results, "best_epoch": trained["best_epoch"], "train_time_s": trained["train_time_s"],
            "history": trained["history"]}


def mean_over_folds(per_fold: dict[int, dict], system: str) -> dict:
    keys = per_fold[next(iter(per_fold))][system]
    return {k: float(np.mean([r[system][k] for r in per_fold.values()])) for k in keys}


def train_and_evaluate(cfg, shards: Path, classes: list[str], digests: dict, out: Path, log) -> tuple[dict, dict]:
    """Every SNR x ablation: its held-out folds trained together (parallel Ray Train runs), then
    evaluated in turn (prediction actors beside training runs would starve their data tasks). Returns
    ({"snr<S>/<ablation>": {fold: metrics}}, {snr: {variant: metrics averaged over the folds}}); the
    first ablation is also scored untrained (the same initial weights)."""
    from datasets.shards import shard_paths

    scale = parallel_runs_scale(cfg.scale, len(cfg.test_folds), log)
    runs, table = {}, {}
    for snr in cfg.snrs:
        paths = shard_paths(shards / f"snr{snr}")
        stats = fold_stats(cfg, paths)
        for ablation in cfg.ablations:
            dirs = {f: out / f"snr{snr}" / ablation / f"fold{f}" for f in cfg.test_folds}
            trained = in_parallel(lambda f: train_fold(cfg, ablation, f, paths, classes, digests[f"snr{snr}"],
                                                              dirs[f], scale, log, stats[f]), cfg.test_folds)
            per_fold = {f: evaluate_fold(cfg, ablation, snr, f, paths, classes, trained[f], dirs[f], log,
                                         untrained=ablation == cfg.ablations[0], stats=stats[f])
                        for f in cfg.test_folds}
            runs[f"snr{snr}/{ablation}"] = per_fold
            table.setdefault(snr, {})[ablation] = {**mean_over_folds(per_fold, "trained"), "folds": len(per_fold)}
        table[snr][f"(untrained, {cfg.ablations[0]})"] = {
            **mean_over_folds(runs[f"snr{snr}/{cfg.ablations[0]}"], "untrained"), "folds": len(cfg.test_folds)}
    return runs, table
