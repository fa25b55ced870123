#!/usr/bin/env python
"""Weakly-supervised sound event detection on the DCASE remix: TAU 2019 scenes + FSDKaggle2018 events
-> mixtures at 0/10/20 dB as shards (Ray Data) -> CNN encoder + two-step attention (+ auxiliary
decoder) trained on weak labels (Ray Train, one run per held-out fold, folds in parallel) -> clip
AP / AUC and 1 s segment-based F1 / error rate per SNR x ablation, activity-map PNGs.

    python workflows/sed.py                                   # generated demo corpus, local Ray
    python workflows/sed.py --tau /data/TAU-urban-acoustic-scenes-2019-development \\
        --fsd /data/FSDKaggle2018 --out runs/sed --snr 0,10,20 --fold all --ablations all
    ray job submit --working-dir . -- python workflows/sed.py --out /tmp/sed-job

--tau ROOT: meta.csv (tab-separated: filename scene_label identifier source_label) and audio/;
--fsd ROOT: train.csv (fname,label,manually_verified) and audio_train/. Bad input fails with one
`error:` line naming the file and line (exit code 2).
Ablations: full (two-step attention + auxiliary decoder), no_aux, time_attention, average, max.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError, config_hash, load_config, to_dict  # noqa: E402
from trainers.loop import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig  # noqa: E402
from tuning.target import SweepTarget  # noqa: E402
from workflows import common  # noqa: E402

ABLATIONS = {
    "full": {},
    "no_aux": {"aux_decoder": False},
    "time_attention": {"pooling": "time_attention"},
    "average": {"pooling": "average"},
    "max": {"pooling": "max"},
}


@dataclasses.dataclass
class DataConfig:
    tau: str = ""                    # TAU Urban Acoustic Scenes 2019 dev root (--tau); empty (with fsd): the demo
    fsd: str = ""                    # FSDKaggle2018 root (--fsd)
    sample_rate: int = 32000         # the protocol's front end: 32 kHz, window 2048, hop 1024, 64 mels
    n_fft: int = 2048
    hop: int = 1024
    n_mels: int = 64
    folds: int = 4                   # event folds of the protocol
    per_fold: int = 2000             # mixtures per fold (the protocol's; the demo section sets its own)
    samples_per_shard: int = 64
    shuffle_buffer: int = 64
    skip_bad: bool = False           # skip mixtures whose audio is unreadable (listed in the manifest)


@dataclasses.dataclass
class ModelConfig:
    width: int = 4                   # encoder channels w, 2w, 4w, 8w; the paper's is 32 (sed_paper.yaml)
    pooling: str = "two_step"        # two_step | time_attention | average | max
    aux_decoder: bool = True
    alpha: float = 0.001             # loss = BCE + alpha * MSE(reconstructed log-mel)


@dataclasses.dataclass
class EvalConfig:
    threshold: float = 0.5           # frame probability -> active
    segment_s: float = 1.0           # sed_eval segment length
    plot_clips: int = 2              # activity-map PNGs per run


@dataclasses.dataclass
class DemoConfig:
    scenes_per_class: int = 6        # x 4 scene classes
    events_per_label: int = 12       # x 12 event labels (every tenth not verified)
    per_fold: int = 30
    seed: int = 0


@dataclasses.dataclass
class SEDConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # Adam at a constant 1e-3 as the paper; its batch is 24 (sed_paper.yaml): 8 gives the small demo
    # corpus ~135 steps in 12 epochs, where macro-AP is well above chance (measured)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(
        epochs=12, batch_size=8, lr=1e-3, final_lr=1e-3, weight_decay=0.0))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)
    snrs: list = dataclasses.field(default_factory=lambda: [20])
    test_folds: list = dataclasses.field(default_factory=lambda: [1])   # each: train on the others, test on it
    ablations: list = dataclasses.field(default_factory=lambda: ["full"])


def front_end(cfg: SEDConfig):
    from trainers.features import LogMel

    return LogMel(cfg.data.sample_rate, cfg.data.n_fft, cfg.data.hop, cfg.data.n_mels)


def make_task(cfg: SEDConfig, num_classes: int, ablation: str = "full"):
    from trainers.sed.task import SEDTask

    return SEDTask(num_classes=num_classes, n_mels=cfg.data.n_mels,
                   model={**to_dict(cfg.model), **ABLATIONS[ablation]}, batch_size=cfg.train.batch_size,
                   shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.train.seed)


def validate(cfg: SEDConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    from trainers.loop import validate as validate_loop

    unknown = [a for a in cfg.ablations if a not in ABLATIONS]
    if unknown or not cfg.ablations:
        raise ConfigError(f"unknown ablation(s) {unknown}; choose from {', '.join(ABLATIONS)}")
    bad_folds = [f for f in cfg.test_folds if not (isinstance(f, int) and 1 <= f <= cfg.data.folds)]
    if bad_folds or not cfg.test_folds:
        raise ConfigError(f"test folds must be in 1..{cfg.data.folds}, got {cfg.test_folds}")
    if cfg.data.folds < 2:
        raise ConfigError("data.folds must be >= 2 (one fold is held out for testing)")
    if not cfg.snrs or not all(isinstance(s, (int, float)) for s in cfg.snrs):
        raise ConfigError(f"snrs must be a list of numbers (dB), got {cfg.snrs}")
    if cfg.data.n_fft < cfg.data.hop or cfg.data.hop < 1 or cfg.data.n_mels < 1:
        raise ConfigError("need data.n_fft >= data.hop >= 1 and data.n_mels >= 1")
    if cfg.scale.workers < 1:
        raise ConfigError("scale.workers must be >= 1")
    if bool(cfg.data.tau) != bool(cfg.data.fsd):
        raise ConfigError("give both --tau and --fsd (data.tau and data.fsd: real corpora), or neither (the "
                          "generated demo)")

    def build_every_ablation():
        validate_loop(cfg.train)
        for ablation in cfg.ablations:
            make_task(cfg, num_classes=2, ablation=ablation).build_model()

    common.checked(build_every_ablation)


def demo_corpus(out: Path, demo: DemoConfig, sample_rate: int, log) -> tuple[Path, Path]:
    from datasets.synthetic.dcase import generate_dcase_corpus

    root = out / "data" / f"dcase-demo-{config_hash(demo)[:8]}-{sample_rate}"
    log(f"[data] demo corpus (TAU + FSDKaggle2018 layouts, generated once per demo section) in {root}")
    try:
        return generate_dcase_corpus(root, scenes_per_class=demo.scenes_per_class,
                                     events_per_label=demo.events_per_label, sample_rate=sample_rate,
                                     seed=demo.seed)
    except ValueError as exc:
        raise ConfigError(f"demo corpus: {exc}") from exc


def score_clips(rows: list[dict], classes: list[str], hop_s: float, ev: EvalConfig) -> dict:
    """Clip micro/macro-AP and AUC, segment-based F1 / error rate of thresholded frame outputs."""
    import json

    import numpy as np

    from trainers.sed.metrics import clip_metrics, frames_to_events, segment_metrics

    clip = clip_metrics(np.stack([r["weak"] for r in rows]), np.stack([r["clip"] for r in rows]))
    reference = {r["key"]: [{"onset": e["onset"], "offset": e["offset"], "label": e["label"]}
                            for e in json.loads(r["meta"])["events"]] for r in rows}
    estimated = {r["key"]: frames_to_events(r["frame"], hop_s, classes, threshold=ev.threshold) for r in rows}
    return {**clip, **{f"segment_{k}": v for k, v in segment_metrics(reference, estimated, classes,
                                                                       segment_s=ev.segment_s).items()},
            "n_clips": len(rows)}


def train_fold(cfg: SEDConfig, ablation: str, fold: int, paths: list[str], classes: list[str], digest: str,
               run_dir: Path, scale, log) -> dict:
    """Train on every fold but `fold` (or reuse the finished run); {state, history, train_time_s}."""
    from trainers.loop import train_or_reuse
    from trainers.sed.task import sed_dataset

    task = make_task(cfg, len(classes), ablation)
    train_folds = [f for f in range(1, cfg.data.folds + 1) if f != fold]
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in to_dict(cfg.data).items() if k not in ("tau", "fsd")}   # the shards' digest covers them
    run_name = f"sed-{config_hash([data, to_dict(cfg.train), task.model])}-{digest[:8]}-test{fold}"
    t0 = time.perf_counter()
    state, history = train_or_reuse(
        task, cfg.train, run_dir, run_name,
        lambda: sed_dataset(paths, front_end(cfg), classes, train_folds, shuffle_seed=cfg.train.seed), scale, log)
    return {"state": state["model"], "history": history, "train_time_s": time.perf_counter() - t0}


def evaluate_fold(cfg: SEDConfig, ablation: str, snr, fold: int, paths: list[str], classes: list[str], trained: dict,
                  run_dir: Path, log, untrained: bool) -> dict:
    """Metrics of the trained model (and, if `untrained`, of the same initial weights untrained) on
    fold `fold`; activity and training PNGs."""
    from trainers.plots import plot_activity, plot_training_curves
    from trainers.sed.task import predict, sed_dataset

    task = make_task(cfg, len(classes), ablation)
    test = sed_dataset(paths, front_end(cfg), classes, [fold])
    hop_s = cfg.data.hop / cfg.data.sample_rate
    results = {}
    for system, weights in (("trained", trained["state"]), ("untrained", None))[:2 if untrained else 1]:
        rows = predict(test, task, weights, num_blocks=len(paths), concurrency=cfg.scale.workers)
        if not rows:
            raise ConfigError(f"fold {fold} has no test mixtures in {paths[0]}...")
        results[system] = score_clips(rows, classes, hop_s, cfg.eval)
        if system == "trained":
            for r in rows[:cfg.eval.plot_clips]:
                plot_activity(r["logmel"], r["frames"], r["frame"], classes, hop_s,
                              run_dir / "plots" / f"activity_{r['key'].replace('/', '_')}.png",
                              title=f"{r['key']} ({ablation}, SNR {snr} dB)", threshold=cfg.eval.threshold)
    plot_training_curves(trained["history"], run_dir / "plots" / "training.png", keys=("loss", "acc", "lr"))
    log(f"[sed] SNR {snr} dB, {ablation}, test fold {fold}: macro-AP {results['trained']['macro_ap']:.3f}, "
        f"segment F1 {results['trained']['segment_f1']:.3f}"
        + (f" (untrained macro-AP {results['untrained']['macro_ap']:.3f})" if untrained else ""))
    return {**results, "train_time_s": trained["train_time_s"], "history": trained["history"]}


def mean_over_folds(per_fold: dict[int, dict], system: str) -> dict:
    import numpy as np

    keys = per_fold[next(iter(per_fold))][system]
    return {k: float(np.mean([r[system][k] for r in per_fold.values()])) for k in keys}


def results_table(table: dict) -> str:
    lines = ["| SNR (dB) | variant | micro-AP | macro-AP | AUC | segment F1 (1 s) | segment ER (1 s) | folds |",
             "|---|---|---|---|---|---|---|---|"]
    for snr, variants in table.items():
        for name, m in variants.items():
            lines.append(f"| {snr} | {name} | {m['micro_ap']:.3f} | {m['macro_ap']:.3f} | {m['auc']:.3f} | "
                         f"{m['segment_f1']:.3f} | {m['segment_error_rate']:.3f} | {m['folds']} |")
    return "\n".join(lines)


def run(cfg: SEDConfig, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; returns what it writes to metrics.json. (It reports once, at the end: no
    per-epoch callbacks are passed on.)"""
    from datasets.dcase import build_remix_shards, plan_mixtures, read_fsd, read_tau
    from datasets.shards import shard_paths
    from trainers.resources import in_parallel, init_ray, parallel_runs_scale

    validate(cfg)
    demo = not cfg.data.tau
    tau, fsd = demo_corpus(out, cfg.demo, cfg.data.sample_rate, log) if demo else (Path(cfg.data.tau),
                                                                                   Path(cfg.data.fsd))
    scenes, events = read_tau(tau), read_fsd(fsd)   # layout errors before any work
    classes = sorted({e.label for e in events})
    try:
        plan = plan_mixtures(scenes, events, per_fold=cfg.demo.per_fold if demo else cfg.data.per_fold,
                             folds=cfg.data.folds, seed=cfg.train.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    init_ray(log)

    t0 = time.perf_counter()
    shards = out / "shards"
    build_remix_shards(plan, shards, snrs=cfg.snrs, sample_rate=cfg.data.sample_rate, hop=cfg.data.hop,
                       labels=classes, samples_per_shard=cfg.data.samples_per_shard, seed=cfg.train.seed,
                       skip_bad=cfg.data.skip_bad)
    manifests, digests = common.verified_shards(shards, [f"snr{s}" for s in cfg.snrs])
    shard_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    scale = parallel_runs_scale(cfg.scale, len(cfg.test_folds), log)
    runs, table = {}, {}
    for snr in cfg.snrs:
        paths = shard_paths(shards / f"snr{snr}")
        for ablation in cfg.ablations:
            dirs = {f: out / f"snr{snr}" / ablation / f"fold{f}" for f in cfg.test_folds}
            trained = in_parallel(lambda f: train_fold(cfg, ablation, f, paths, classes, digests[f"snr{snr}"],
                                                              dirs[f], scale, log), cfg.test_folds)
            per_fold = {f: evaluate_fold(cfg, ablation, snr, f, paths, classes, trained[f], dirs[f], log,
                                         untrained=ablation == cfg.ablations[0])
                        for f in cfg.test_folds}
            runs[f"snr{snr}/{ablation}"] = per_fold
            table.setdefault(snr, {})[ablation] = {**mean_over_folds(per_fold, "trained"), "folds": len(per_fold)}
        table[snr][f"(untrained, {cfg.ablations[0]})"] = {
            **mean_over_folds(runs[f"snr{snr}/{cfg.ablations[0]}"], "untrained"), "folds": len(cfg.test_folds)}
    run_time = time.perf_counter() - t0

    report = {
        "workflow": "sed",
        "data": {"tau": str(tau), "fsd": str(fsd), "demo": demo},
        "classes": classes,
        "manifests": common.manifest_summary(manifests, digests),
        "results": {str(snr): variants for snr, variants in table.items()},
        "runs": {name: {str(f): {k: v for k, v in r.items() if k != "history"} for f, r in per_fold.items()}
                 for name, per_fold in runs.items()},
        "timing_s": {"shards": shard_time, "train_and_eval": run_time},
    }
    return common.write_report(out, cfg, report, results_table(table), f"{out}/snr*/<variant>/fold*/plots/", log)


def _int_list(text: str, name: str) -> list:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --{name} takes comma-separated integers, got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tau", type=Path, help="TAU Urban Acoustic Scenes 2019 development root (meta.csv, audio/)")
    p.add_argument("--fsd", type=Path, help="FSDKaggle2018 root (train.csv, audio_train/)")
    p.add_argument("--out", type=Path, default=Path("runs/sed-demo"), help="shards, checkpoints, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--snr", help="snrs: comma-separated dB values, e.g. 0,10,20")
    p.add_argument("--fold", help="test_folds: comma-separated held-out folds, or 'all'")
    p.add_argument("--ablations", help=f"comma-separated, or 'all': {', '.join(ABLATIONS)}")
    p.add_argument("--pooling", help="model.pooling: two_step | time_attention | average | max")
    p.add_argument("--no-aux", action="store_true", help="model.aux_decoder=false")
    p.add_argument("--alpha", type=float, help="model.alpha: weight of the reconstruction MSE")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip mixtures with unreadable audio (listed in the manifest)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shorthand = []
    if args.snr:
        shorthand.append(f"snrs={_int_list(args.snr, 'snr')}")
    if args.fold and args.fold != "all":
        shorthand.append(f"test_folds={_int_list(args.fold, 'fold')}")
    if args.ablations:
        shorthand.append(f"ablations=[{args.ablations}]" if args.ablations != "all"
                         else f"ablations=[{','.join(ABLATIONS)}]")
    if args.pooling:
        shorthand.append(f"model.pooling={args.pooling}")
    if args.no_aux:
        shorthand.append("model.aux_decoder=false")
    if args.alpha is not None:
        shorthand.append(f"model.alpha={args.alpha}")
    if args.skip_bad:
        shorthand.append("data.skip_bad=true")
    overrides = common.shorthand_overrides(args, common.root_overrides(**{"data.tau": args.tau, "data.fsd": args.fsd})
                                           + shorthand)

    def job():
        cfg = load_config(SEDConfig, args.config, overrides)
        if args.fold == "all":
            cfg.test_folds = list(range(1, cfg.data.folds + 1))
        run(cfg, args.out)

    return common.guarded(job)


def _final(report: dict) -> dict:
    r = next(iter(report["results"].values()))["full"]
    return {"macro_ap": r["macro_ap"], "micro_ap": r["micro_ap"], "segment_f1": r["segment_f1"]}


SWEEP = SweepTarget("sed", SEDConfig, run, validate, metric="macro_ap", mode="max", final=_final,
                    overrides=("ablations=[full]", "test_folds=[1]"))


if __name__ == "__main__":
    sys.exit(main())
