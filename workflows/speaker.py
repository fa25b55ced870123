#!/usr/bin/env python
"""Speaker verification on VoxCeleb: corpus -> shards (Ray Data) -> encoder + margin head (Ray Train)
-> embeddings of the trial utterances (Ray Data batch inference) -> cosine scores -> EER / minDCF.

    python workflows/speaker.py                       # generated demo corpus, local Ray
    python workflows/speaker.py --data /data/voxceleb1 --out runs/vox1 --workers 4 --encoder resnet34
    ray job submit --working-dir . -- python workflows/speaker.py --out /tmp/speaker-job
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError, config_hash, load_config, to_dict  # noqa: E402
from trainers.loop import LoopConfig  # noqa: E402
from workflows import common  # noqa: E402


@dataclasses.dataclass
class DataConfig:
    sample_rate: int = 16000
    num_mel_bins: int = 80
    num_frames: int = 200            # 2 s training crops at a 10 ms shift
    samples_per_shard: int = 128     # ~30 MB of 8 s utterances; one Ray task decodes one shard
    shuffle_buffer: int = 128        # shards already hold a seeded permutation; a bigger buffer delays each epoch's first batch
    skip_bad: bool = False           # skip unreadable audio (recorded in the manifest) instead of failing
    trials: list = dataclasses.field(default_factory=list)   # trial lists to score; empty = all found
    val_speakers: int = 0            # > 0: this many training speakers (seeded) are held out of training, and
                                     # the EER over all pairs of their utterances is scored after every epoch
                                     # (val_eer: what sweeps select on, never the test trials)


@dataclasses.dataclass
class ModelConfig:
    encoder: str = "tdnn"
    embed_dim: int = 192
    encoder_args: dict = dataclasses.field(default_factory=lambda: {"hid_dim": 256})


@dataclasses.dataclass
class MarginConfig:
    warmup: bool = True              # WeSpeaker's margin scheduler: 0 -> m between these epochs
    start_epoch: int = 2
    fix_epoch: int = 6


@dataclasses.dataclass
class DemoConfig:
    n_train_speakers: int = 64     # a trained encoder generalizes to unseen speakers only with enough of them
    n_test_speakers: int = 8
    sessions_per_speaker: int = 3
    utts_per_session: int = 3
    seed: int = 0


@dataclasses.dataclass
class SpeakerConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    head: dict = dataclasses.field(default_factory=lambda: {"name": "arcface"})
    margin: MarginConfig = dataclasses.field(default_factory=MarginConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(epochs=12, batch_size=32, lr=2e-3,
                                                                            final_lr=2e-4))
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    scale: common.ScaleConfig = dataclasses.field(default_factory=common.ScaleConfig)


def make_task(cfg: SpeakerConfig, num_classes: int):
    from trainers.heads import pk_group_size
    from trainers.speaker import FrontEnd, SpeakerTask

    return SpeakerTask(
        encoder=cfg.model.encoder, encoder_args=dict(cfg.model.encoder_args), embed_dim=cfg.model.embed_dim,
        head=dict(cfg.head), num_classes=num_classes,
        front=FrontEnd(cfg.data.sample_rate, cfg.data.num_mel_bins), batch_size=cfg.train.batch_size,
        num_frames=cfg.data.num_frames, shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.train.seed,
        margin_warmup=(cfg.margin.start_epoch, cfg.margin.fix_epoch) if cfg.margin.warmup else None,
        pk=pk_group_size(cfg.head))


def validate(cfg: SpeakerConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    common.validate_task_config(cfg, make_task, "utterances per speaker")


def demo_corpus(out: Path, demo: DemoConfig, log) -> Path:
    from datasets.synth_speakers import generate_corpus

    root = out / "data" / "voxceleb1-demo"
    log(f"[data] demo corpus (VoxCeleb1 layout, generated once per seed) in {root}")
    return generate_corpus(root, n_train_speakers=demo.n_train_speakers, n_test_speakers=demo.n_test_speakers,
                           sessions_per_speaker=demo.sessions_per_speaker, utts_per_session=demo.utts_per_session,
                           seed=demo.seed)


def shard_corpus(cfg: SpeakerConfig, layout, root: Path, shards: Path) -> None:
    """Build (or reuse, when its manifest matches) the train and test shard sets of a corpus."""
    from datasets.speaker_shards import build_speaker_shards

    build_speaker_shards(layout, root, shards, sample_rate=cfg.data.sample_rate,
                         samples_per_shard=cfg.data.samples_per_shard, seed=cfg.train.seed,
                         skip_bad=cfg.data.skip_bad)


def run(cfg: SpeakerConfig, data: Optional[Path], out: Path, log=print, shards_dir: Optional[Path] = None,
        callbacks=None, score_untrained: bool = True) -> dict:
    """The whole job; returns what it writes to metrics.json plus the DET curves ("det_curves").
    `shards_dir` (default OUT/shards) lets several runs share one shard set; `callbacks` go to the
    Ray Train run (a Tune sweep passes TuneReportCallback); `score_untrained` also scores the
    untrained encoder (the same weights for every head: the comparison scores it once)."""
    import numpy as np
    import torch

    from datasets.shards import manifest_digest, shard_paths, verify_shards
    from datasets.voxceleb import find_layout
    from trainers import metrics as M
    from trainers.plots import plot_det, plot_training_curves
    from trainers.embedding import encoder_state
    from trainers.speaker import extract_embeddings, feature_dataset

    validate(cfg)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data) if data is not None else demo_corpus(out, cfg.demo, log)
    layout = find_layout(root)
    log(f"[data] {root}: {len(layout.train)} training utterances of {len(layout.speakers)} speakers, "
        f"{len(layout.test)} test utterances, trial lists {sorted(layout.trials)}")
    wanted = cfg.data.trials or sorted(layout.trials)
    missing = sorted(set(wanted) - set(layout.trials))
    if missing:
        raise ConfigError(f"data.trials names {missing}, not found beside {root} (found {sorted(layout.trials)})")
    common.init_ray(log)

    t0 = time.perf_counter()
    shards = shards_dir or out / "shards"
    shard_corpus(cfg, layout, root, shards)
    manifests = {split: verify_shards(shards / split) for split in ("train", "test")}
    shard_time = time.perf_counter() - t0
    digests = {split: manifest_digest(shards / split) for split in manifests}

    task = make_task(cfg, num_classes=len(manifests["train"]["classes"]))
    run_name = f"speaker-{config_hash(cfg)}-{digests['train'][:8]}"
    t0 = time.perf_counter()
    train_paths = shard_paths(shards / "train")
    held_out, val = None, None
    if cfg.data.val_speakers:
        n = len(manifests["train"]["classes"])
        if not 2 <= cfg.data.val_speakers < n:
            raise ConfigError(f"data.val_speakers must be in [2, {n - 1}] ({n} training speakers), "
                              f"got {cfg.data.val_speakers}")
        held_out = frozenset(np.random.default_rng(cfg.train.seed).choice(n, cfg.data.val_speakers,
                                                                          replace=False).tolist())
        log(f"[data] {len(held_out)} training speakers held out for per-epoch validation (val_eer)")
        # scored every epoch: materialized once, and only when training runs (not when reused)
        val = lambda: feature_dataset(train_paths, task.front, speakers=held_out).materialize()  # noqa: E731
    state, history = common.train_or_reuse(
        task, cfg.train, out, run_name,
        lambda: feature_dataset(train_paths, task.front, shuffle_seed=cfg.train.seed, speakers=held_out,
                                exclude=True), cfg.scale, log, val, callbacks)
    train_time = time.perf_counter() - t0

    torch.manual_seed(cfg.train.seed)
    untrained = task.build_encoder().state_dict()
    test_paths = shard_paths(shards / "test")
    t0 = time.perf_counter()
    systems = {"trained": encoder_state(state["model"]), **({"untrained": untrained} if score_untrained else {})}
    embeddings = {name: extract_embeddings(test_paths, task, enc, concurrency=cfg.scale.workers)
                  for name, enc in systems.items()}
    results, curves = {}, {}
    for name in wanted:
        trials = layout.trials[name]
        labels = np.array([t.label for t in trials])
        results[name] = {}
        for system, emb in embeddings.items():
            scores = M.cosine_scores(emb, ([t.enroll for t in trials], [t.test for t in trials]))
            results[name][system] = M.verification_metrics(scores, labels)
            fnr, fpr, _ = M.compute_det(scores, labels)
            curves[f"{name} {system}"] = (fnr, fpr)
    eval_time = time.perf_counter() - t0

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_det(curves, plots / "det.png", title=f"DET: {cfg.model.encoder} + {cfg.head['name']}")
    plot_training_curves(history, plots / "training.png")
    report = {
        "workflow": "speaker",
        "config": to_dict(cfg),
        "data": str(root),
        "versions": common.versions(),
        "manifests": common.manifest_summary(manifests, digests),
        "trials": results,
        "history": history,
        "timing_s": {"shards": shard_time, "train": train_time, "eval": eval_time},
        "plots": {"det": str(plots / "det.png"), "training": str(plots / "training.png")},
    }
    table = results_table(results)
    common.write_report(out, report, table, f"{plots / 'det.png'}, {plots / 'training.png'}", log)
    return {**report, "det_curves": curves}


def comparable_heads() -> list[str]:
    """One name per registered head class (aliases dropped)."""
    from trainers.heads import HEADS

    names, seen = [], set()
    for name, cls in HEADS.items():
        if cls not in seen:
            seen.add(cls)
            names.append(name)
    return names


def compare_heads(cfg: SpeakerConfig, data: Optional[Path], out: Path, heads: list[str], log=print) -> dict:
    """Train every head with the same budget on the same shards; table (EER, minDCF, train time) + DET PNG."""
    from trainers.plots import plot_det

    root = Path(data) if data is not None else demo_corpus(out, cfg.demo, log)
    rows, curves = {}, {}
    for i, name in enumerate(heads):
        log(f"[compare] head {name}")
        report = run(dataclasses.replace(cfg, head={"name": name}), root, out / "heads" / name, log,
                     shards_dir=out / "shards", score_untrained=i == 0)
        trials = sorted(report["trials"])[0]
        rows[name] = {**report["trials"][trials]["trained"], "train_time_s": report["timing_s"]["train"]}
        curves[name] = report["det_curves"][f"{trials} trained"]
        if i == 0:
            untrained = report["trials"][trials]["untrained"], report["det_curves"][f"{trials} untrained"]
    rows["(untrained encoder)"] = {**untrained[0], "train_time_s": 0.0}
    curves["(untrained encoder)"] = untrained[1]
    (out / "plots").mkdir(exist_ok=True)
    plot_det(curves, out / "plots" / "det_heads.png", title=f"DET per head, {cfg.train.epochs} epochs each")
    lines = ["| head | EER (%) | minDCF (p=0.01) | minDCF (p=0.05) | train time (s) |", "|---|---|---|---|---|"]
    lines += [f"| {h} | {100 * r['eer']:.2f} | {r['min_dcf_0.01']:.3f} | {r['min_dcf_0.05']:.3f} | "
              f"{r['train_time_s']:.0f} |" for h, r in rows.items()]
    common.write_json(out / "compare_heads.json", {"config": to_dict(cfg), "heads": rows})
    (out / "compare_heads.md").write_text("\n".join(lines) + "\n")
    log("\n" + "\n".join(lines) + f"\n\n[done] {out / 'compare_heads.md'}, {out / 'plots' / 'det_heads.png'}")
    return rows


def results_table(results: dict) -> str:
    lines = ["| trials | system | EER (%) | minDCF (p=0.01) | minDCF (p=0.05) | trials |",
             "|---|---|---|---|---|---|"]
    for name, systems in results.items():
        for system, m in systems.items():
            lines.append(f"| {name} | {system} | {100 * m['eer']:.2f} | {m['min_dcf_0.01']:.3f} | "
                         f"{m['min_dcf_0.05']:.3f} | {m['n_trials']} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="VoxCeleb root (wav/ tree with trial lists, or dev/ and test/); "
                                              "omitted: a generated demo corpus")
    p.add_argument("--out", type=Path, default=Path("runs/speaker-demo"), help="shards, checkpoints, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--encoder", help="model.encoder (tdnn, resnet34, ...)")
    p.add_argument("--head", help="head.name (softmax, arcface, ...); its keyword arguments via --set head.m=0.2")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable audio files (listed in the manifest)")
    p.add_argument("--compare-heads", nargs="?", const="all", metavar="H1,H2",
                   help="train each head (default: every registered one) with the same budget; writes "
                        "compare_heads.md/.json and plots/det_heads.png")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shorthand = [f"head={{name: {args.head}}}"] if args.head else []   # a new head drops the old one's kwargs
    if args.encoder:
        shorthand.append(f"model.encoder={args.encoder}")
    if args.skip_bad:
        shorthand.append("data.skip_bad=true")
    overrides = common.shorthand_overrides(args, shorthand)
    if args.compare_heads:
        heads = comparable_heads() if args.compare_heads == "all" else args.compare_heads.split(",")
        return common.guarded(lambda: compare_heads(load_config(SpeakerConfig, args.config, overrides), args.data,
                                                    args.out, heads))
    return common.guarded(lambda: run(load_config(SpeakerConfig, args.config, overrides), args.data, args.out))


if __name__ == "__main__":
    sys.exit(main())
