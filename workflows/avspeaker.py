#!/usr/bin/env python
"""Main-speaker detection with an audio-visual transformer (arXiv 2108.03256): AVA-ActiveSpeaker-layout videos
(CSV rows + videos) -> turn-taking roles per (track, segment) (main speaker / interrupter, role switches) ->
one shard set per split (Ray Data decodes the videos with PyAV, crops the face tracks, computes log-mel) ->
the audio-visual transformer and its ablations (direct AV concatenation; no temporal attention) through the
one Ray Train loop, in parallel -> mAP over (track, segment) pairs, per-segment main-speaker accuracy,
role-switch F1, SI-SDR improvement of the highlighted audio -> results.md, metrics.json, plots/*.png.

    python workflows/avspeaker.py --out runs/avspeaker-demo          # demo: generated conversations (flite voices)
    python workflows/avspeaker.py --ava /data/ava-activespeaker --out runs/ava
    ray job submit --working-dir . -- python workflows/avspeaker.py --out /tmp/avspeaker-job

--ava ROOT: ava_activespeaker_train_v1.0/*.csv, ava_activespeaker_val_v1.0/*.csv (the test split), videos/
(datasets/avspeaker/layout.py). Keys (also Tune's): variants (transformer | no_temporal | concat), model.dim /
heads / layers / mask_weight, roles.pause_s / take_s (the turn-taking rules), window.window_s / segment_s.
The first variant is the paper's; the demo trains all three for the comparison table (docs/avspeaker.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError  # noqa: E402
from trainers.loop_config import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig  # noqa: E402
from workflows import common  # noqa: E402

MEMBERS_TRAIN = ("faces.npy", "mel.npy", "mix.npy", "main.npy", "label.npy", "json")


@dataclasses.dataclass
class DataConfig:
    kind: str = "demo"           # demo (generated conversations in the AVA layout, under OUT/data) | ava
    root: str = ""               # the AVA-ActiveSpeaker root (kind ava)
    videos: int = 96             # demo: conversations (a quarter of them the test split)
    seconds: float = 10.0        # demo: length of each
    val_fraction: float = 0.2    # of the training videos, held out for model selection (by video)
    samples_per_shard: int = 32


@dataclasses.dataclass
class WindowConfig:
    window_s: float = 4.0        # one sample = one window of one video
    segment_s: float = 0.5       # one token per (track, segment)
    grid_s: float = 0.1          # the speaking timeline's step
    max_tracks: int = 3
    frames_per_segment: int = 4  # face crops per (track, segment)
    crop: int = 32
    n_mels: int = 40


@dataclasses.dataclass
class RolesConfig:
    """The turn-taking rules (datasets/avspeaker/roles.py): this project's reading of the paper's definition."""
    pause_s: float = 0.5
    take_s: float = 1.0
    min_interrupt_s: float = 0.0


@dataclasses.dataclass
class ModelConfig:
    dim: int = 64
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    mask_weight: float = 0.1     # weight of -SI-SDR of the highlighted audio in the loss (0: no mask training)


@dataclasses.dataclass
class EvalConfig:
    switch_tolerance: int = 1    # segments a predicted role switch may be off by
    examples: int = 1            # test windows drawn in plots/frames_*.png


@dataclasses.dataclass
class AVSpeakerConfig:
    variants: list = dataclasses.field(default_factory=lambda: ["transformer", "no_temporal", "concat"])
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    window: WindowConfig = dataclasses.field(default_factory=WindowConfig)
    roles: RolesConfig = dataclasses.field(default_factory=RolesConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(
        epochs=25, batch_size=8, optimizer="adam", lr=2e-3, final_lr=2e-4, weight_decay=1e-4,
        monitor="val_map", monitor_lr=False))
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def parts(cfg: AVSpeakerConfig):
    """(Windowing, Decoding, RoleRules) of the config."""
    from datasets.avspeaker.layout import Windowing
    from datasets.avspeaker.roles import RoleRules
    from datasets.avspeaker.shards import Decoding

    w = cfg.window
    return (Windowing(w.window_s, w.segment_s, w.grid_s, w.max_tracks),
            Decoding(16000, w.n_mels, w.crop, w.frames_per_segment),
            RoleRules(cfg.roles.pause_s, cfg.roles.take_s, cfg.roles.min_interrupt_s))


def validate(cfg: AVSpeakerConfig) -> None:
    """Bad names and parameters fail here, before any data is read."""
    from trainers.avspeaker.model import VARIANTS
    from trainers.loop import validate as validate_loop

    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad or not cfg.variants or len(set(cfg.variants)) != len(cfg.variants):
        raise ConfigError(f"unknown or repeated variants {bad or cfg.variants}; choose from {', '.join(VARIANTS)}")
    if cfg.data.kind not in ("demo", "ava"):
        raise ConfigError(f"unknown data.kind {cfg.data.kind!r}; choose demo or ava")
    if cfg.data.kind == "ava" and not cfg.data.root:
        raise ConfigError("data.kind ava needs data.root (--ava PATH)")
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    common.require_positive(cfg, "data.videos", "data.seconds", "data.samples_per_shard", "window.crop",
                            "window.n_mels", "window.frames_per_segment", "model.dim", "model.heads", "model.layers")
    if cfg.eval.switch_tolerance < 0:
        raise ConfigError("eval.switch_tolerance must be >= 0")

    def check():
        from trainers.avspeaker.model import AVSpeakerNet

        w, _, rules = parts(cfg)
        w.check()
        rules.check()
        validate_loop(cfg.train)
        AVSpeakerNet(cfg.variants[0], cfg.model.dim, cfg.model.heads, cfg.model.layers, cfg.window.frames_per_segment)

    common.checked(check)


def load_videos(cfg: AVSpeakerConfig, out: Path, log) -> tuple[Path, dict]:
    """(corpus root, {train, val, test: [Video]}); the demo corpus is generated under OUT/data first."""
    import numpy as np

    from datasets.avspeaker.layout import find_videos
    from datasets.avspeaker.shards import frame_shape
    from datasets.synthetic.avspeaker import generate

    _, _, rules = parts(cfg)
    if cfg.data.kind == "demo":
        try:
            root = generate(out / "data", videos=cfg.data.videos, seconds=cfg.data.seconds, seed=cfg.train.seed,
                            rules=rules, log=log)
        except ValueError as exc:   # OUT/data holds something else
            raise ConfigError(str(exc)) from None
    else:
        root = Path(cfg.data.root)
    train, test = find_videos(root, "train"), find_videos(root, "test")
    for v in train + test:   # an undecodable video is named before Ray starts
        frame_shape(v.video)
    n_val = max(1, int(round(len(train) * cfg.data.val_fraction)))
    if len(train) <= n_val:
        raise ConfigError(f"{root}: {len(train)} training video(s) cannot give a validation split of {n_val}: "
                          "add videos or lower data.val_fraction")
    is_val = np.zeros(len(train), bool)
    is_val[np.random.default_rng([cfg.train.seed, 7]).permutation(len(train))[:n_val]] = True
    splits = {"train": [v for v, m in zip(train, is_val) if not m], "val": [v for v, m in zip(train, is_val) if m],
              "test": test}
    for split, videos in splits.items():
        log(f"[data] {split}: {len(videos)} videos, {sum(len(v.rows) for v in videos)} CSV rows")
    return root, splits


def results_table(results: dict) -> str:
    lines = ["| variant | mAP | segment accuracy | role-switch F1 | SI-SDRi (dB) |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {100 * r['map']:.1f} | {100 * r['accuracy']:.1f} | {100 * r['switch_f1']:.1f} | "
                     f"{r.get('si_sdri', float('nan')):.2f} |")
    return "\n".join(lines)


def train_variants(cfg: AVSpeakerConfig, paths: dict, tag: list, out: Path, log, callbacks=None) -> dict:
    """{variant: (task, state dict, history)}: every variant's Ray Train run at once, through the one loop."""
    from datasets.shards import read_shards
    from trainers.avspeaker.task import AVSpeakerTask
    from trainers.config import config_hash, to_dict
    from trainers.loop import train_or_reuse
    from trainers.resources import in_parallel, parallel_runs_scale

    scale = parallel_runs_scale(cfg.scale, len(cfg.variants), log)
    m = cfg.model

    def train(variant: str):
        task = AVSpeakerTask(variant, m.dim, m.heads, m.layers, cfg.window.frames_per_segment, m.dropout,
                             m.mask_weight, cfg.train.batch_size, cfg.train.seed)
        key = [to_dict(cfg.train), dataclasses.asdict(task), tag]
        run_dir = out / "models" / variant
        run_dir.mkdir(parents=True, exist_ok=True)
        state, history = train_or_reuse(
            task, cfg.train, run_dir, f"avspeaker-{variant}-{config_hash(key)}",
            lambda: read_shards(paths["train"], cfg.train.seed, MEMBERS_TRAIN), scale, log,
            lambda: read_shards(paths["val"], None, MEMBERS_TRAIN), callbacks)
        return task, state["model"], history

    return in_parallel(train, list(cfg.variants))


def run(cfg: AVSpeakerConfig, out: Path, *, log=print, callbacks=None) -> dict:
    import numpy as np

    from datasets.avspeaker.shards import MEMBERS, build_av_shards, read_frames, rows_to_arrays
    from datasets.shards import manifest_digest, read_shards, shard_paths
    from trainers.avspeaker.evaluate import predict, score
    from trainers.avspeaker.figures import plot_frames, plot_mask, plot_scores
    from trainers.plots import plot_training_curves
    from trainers.resources import init_ray

    validate(cfg)
    common.clear_stale_results(out, cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    w, d, rules = parts(cfg)
    t0 = time.perf_counter()
    root, splits = load_videos(cfg, out, log)
    init_ray(log)
    paths, digests, manifests = {}, {}, {}
    for split, videos in splits.items():
        shard_dir = out / "shards" / split
        manifests[split] = build_av_shards(videos, shard_dir, split=split, w=w, d=d, rules=rules, seed=cfg.train.seed,
                                           samples_per_shard=cfg.data.samples_per_shard, log=log)
        paths[split], digests[split] = shard_paths(shard_dir), manifest_digest(shard_dir)
    data_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    trained = train_variants(cfg, paths, sorted(digests.items()), out, log, callbacks)
    train_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    results, preds = {}, {}
    for variant, (task, state, _) in trained.items():
        model = task.build_model()
        model.load_state_dict(state)
        preds[variant] = predict(model, read_shards(paths["test"], None, MEMBERS).iter_batches(
            batch_size=16, batch_format="numpy"))
        results[variant] = score(preds[variant], cfg.eval.switch_tolerance)
        r = results[variant]
        log(f"[avspeaker] {variant}: mAP {100 * r['map']:.1f} %, accuracy {100 * r['accuracy']:.1f} %, "
            f"switch F1 {100 * r['switch_f1']:.1f} %, SI-SDRi {r.get('si_sdri', float('nan')):.2f} dB")
    eval_time = time.perf_counter() - t0

    # figures: the first test batch's first window, as each variant sees it
    first = next(iter(read_shards(paths["test"], None, MEMBERS).iter_batches(batch_size=16, batch_format="numpy")))
    a = rows_to_arrays(first)
    meta, video = a["meta"][0], next(v for s in splits.values() for v in s if v.video_id == a["meta"][0]["video_id"])
    shown = list(range(0, w.segments, max(1, w.segments // 4)))[:4]
    times = [meta["start"] + (s + 0.5) * w.segment_s for s in shown]
    frames = read_frames(video.video, np.array(times))
    valid = a["label"][0, 2, :, 0] > 0
    plots = {}
    for variant, p in preds.items():
        plots[f"frames_{variant}"] = plot_frames(
            frames, a["box"][0][:, shown], p["prob"][0][:, shown], (a["label"][0, 0] == 1)[:, shown], valid, times,
            out / "plots" / f"frames_{variant}.png", f"{variant}: {meta['video_id']} (thick = detected main speaker)")
    best = cfg.variants[0]
    if preds[best]["mask"] is not None:
        plots["mask"] = plot_mask(a["mix"][0] / 32768.0, a["main"][0] / 32768.0, preds[best]["est"][0],
                                  preds[best]["mask"][0], d.sample_rate, out / "plots" / "mask.png",
                                  f"{best}: T-F mask highlighting the main speaker ({meta['video_id']})")
    plots["scores"] = plot_scores(results, out / "plots" / "scores.png")
    plots["learning_curves"] = plot_training_curves({v: trained[v][2] for v in trained},
                                                    out / "plots" / "learning_curves.png",
                                                    title="main-speaker detection: training loss/accuracy, val mAP")
    report = {
        "workflow": "avspeaker",
        "data": {"root": str(root), **{s: len(v) for s, v in splits.items()}},
        "shards": common.manifest_summary(manifests, digests),
        "results": results,
        "selected_epoch": {v: max(trained[v][2], key=lambda h: h.get("val_map", 0))["epoch"] for v in trained},
        "history": {v: trained[v][2] for v in trained},
        "plots": {k: str(v) for k, v in plots.items()},
        "timing_s": {"data": data_time, "train": train_time, "evaluate": eval_time},
    }
    return common.write_report(out, cfg, report, results_table(results), ", ".join(map(str, plots.values())), log)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ava", help="AVA-ActiveSpeaker root (annotation folders + videos/)")
    p.add_argument("--out", type=Path, default=Path("runs/avspeaker"), help="data, shards, models, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--variant", help="variants: comma-separated (transformer, no_temporal, concat)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from trainers.config import load_config

    args = parse_args(argv)
    overrides = common.shorthand_overrides(args, common.literal_overrides(**{
        "data.kind": "ava" if args.ava else None, "data.root": args.ava,
        "variants": args.variant.split(",") if args.variant else None}))
    return common.guarded(lambda: run(load_config(AVSpeakerConfig, args.config, overrides), args.out), args)


if __name__ == "__main__":
    sys.exit(main())
