#!/usr/bin/env python
"""Speaker verification on VoxCeleb: corpus -> shards (Ray Data) -> encoder + margin head (Ray Train)
-> embeddings of the trial utterances (Ray Data batch inference) -> cosine scores -> EER / minDCF.

    python workflows/speaker.py                       # generated demo corpus, local Ray
    python workflows/speaker.py --data /data/voxceleb1 --out runs/vox1 --workers 4 \
        --config workflows/configs/speaker_voxceleb_resnet34_arcface.yaml
    ray job submit --working-dir . -- python workflows/speaker.py --out /tmp/speaker-job

Method: WeSpeaker's front end (80-dim kaldi fbank, 200-frame crops) and encoders, the margin heads of
trainers/heads (SphereFace arXiv 1704.08063, SphereFace-R arXiv 2109.05565, SphereFace2 arXiv
2108.01513, Mask Proxy arXiv 2011.04491, ArcFace / CosFace), cosine scoring, EER / minDCF.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError, config_hash, load_config  # noqa: E402
from trainers.loop_config import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig, inference_actors  # noqa: E402
from trainers.speaker.augment import AugmentConfig  # noqa: E402
from tuning.target import SweepTarget  # noqa: E402
from workflows import common  # noqa: E402


@dataclasses.dataclass
class DataConfig:
    root: str = ""                   # VoxCeleb root (--data); empty: the generated demo corpus in OUT/data
    shards: str = ""                 # shard folder; empty: OUT/shards (several runs may share one)
    sample_rate: int = 16000
    num_mel_bins: int = 80
    num_frames: int = 200            # 2 s training crops at a 10 ms shift
    samples_per_shard: int = 128     # ~30 MB of 8 s utterances; one Ray task decodes one shard
    # shards already hold a seeded permutation; a bigger buffer delays each epoch's first batch
    shuffle_buffer: int = 128
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
class EvalConfig:
    score_untrained: bool = True     # also score the untrained encoder (a head comparison scores it once)


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
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)   # off in the demo; on in recipes
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(epochs=12, batch_size=32, lr=2e-3,
                                                                            final_lr=2e-4))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def make_task(cfg: SpeakerConfig, num_classes: int):
    """The training task for `num_classes` training speakers (3x as many classes with speed perturbation)."""
    from trainers.heads import pk_group_size
    from trainers.speaker.augment import SPEEDS
    from trainers.speaker.task import FrontEnd, SpeakerTask

    return SpeakerTask(
        encoder=cfg.model.encoder, encoder_args=dict(cfg.model.encoder_args), embed_dim=cfg.model.embed_dim,
        head=dict(cfg.head), num_classes=num_classes * (len(SPEEDS) if cfg.augment.speed_perturb else 1),
        front=FrontEnd(cfg.data.sample_rate, cfg.data.num_mel_bins), batch_size=cfg.train.batch_size,
        num_frames=cfg.data.num_frames, shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.train.seed,
        margin_warmup=(cfg.margin.start_epoch, cfg.margin.fix_epoch) if cfg.margin.warmup else None,
        pk=pk_group_size(cfg.head), augment=cfg.augment)


def validate(cfg: SpeakerConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    from trainers.embedding import validate_head_config

    common.require_positive(cfg, "data.sample_rate", "data.num_mel_bins", "data.num_frames", "data.samples_per_shard",
                            "data.shuffle_buffer", "model.embed_dim")
    common.checked(lambda: validate_head_config(cfg, make_task, "utterances per speaker"))
    common.checked(cfg.augment.validate)


def corpus_root(cfg: SpeakerConfig, out: Path, log) -> Path:
    """data.root, or the demo corpus (generated once per demo section, in a folder named by its hash, so
    another demo section never meets this one's files) when it is empty."""
    from datasets.synthetic.speakers import generate_corpus

    if cfg.data.root:
        return Path(cfg.data.root)
    demo = cfg.demo
    root = out / "data" / f"voxceleb1-demo-{config_hash(demo)[:8]}"
    log(f"[data] demo corpus (VoxCeleb1 layout, generated once per demo section) in {root}")
    try:
        return generate_corpus(root, n_train_speakers=demo.n_train_speakers, n_test_speakers=demo.n_test_speakers,
                               sessions_per_speaker=demo.sessions_per_speaker,
                               utts_per_session=demo.utts_per_session, seed=demo.seed)
    except ValueError as exc:  # infeasible demo.* parameters
        raise ConfigError(f"demo corpus: {exc}") from exc


def shard_corpus(cfg: SpeakerConfig, layout, root: Path, shards: Path) -> None:
    """Build (or reuse, when its manifest matches) the train and test shard sets of a corpus."""
    from datasets.voxceleb.shards import build_speaker_shards

    build_speaker_shards(layout, root, shards, sample_rate=cfg.data.sample_rate,
                         samples_per_shard=cfg.data.samples_per_shard, seed=cfg.train.seed,
                         skip_bad=cfg.data.skip_bad)


def run(cfg: SpeakerConfig, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; returns what it writes to metrics.json plus the DET curves ("det_curves").
    `callbacks` go to the Ray Train run (a Tune sweep passes TuneReportCallback)."""
    import numpy as np

    from datasets.shards import shard_paths
    from datasets.voxceleb.layout import find_layout
    from trainers.embedding import scored_systems
    from trainers.loop import check_batches, train_or_reuse
    from trainers.resources import init_ray
    from trainers.speaker.task import extract_embeddings, feature_dataset
    from trainers.verification import evaluate

    validate(cfg)
    common.clear_stale_results(out, cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    root = corpus_root(cfg, out, log)
    layout = find_layout(root)
    log(f"[data] {root}: {len(layout.train)} training utterances of {len(layout.speakers)} speakers, "
        f"{len(layout.test)} test utterances, trial lists {sorted(layout.trials)}")
    wanted = cfg.data.trials or sorted(layout.trials)
    missing = sorted(set(wanted) - set(layout.trials))
    if missing:
        raise ConfigError(f"data.trials names {missing}, not found beside {root} (found {sorted(layout.trials)})")
    if cfg.augment.enabled:
        a = cfg.augment
        log(f"[augment] speed perturbation {'on' if a.speed_perturb else 'off'}, noise from {a.musan or '(none)'}, "
            f"reverberation from {a.rirs or '(none)'}, SpecAugment {'on' if a.spec_aug else 'off'}")
    init_ray(log)

    t0 = time.perf_counter()
    shards = Path(cfg.data.shards) if cfg.data.shards else out / "shards"
    shard_corpus(cfg, layout, root, shards)
    manifests, digests = common.verified_shards(shards, ("train", "test"))
    shard_time = time.perf_counter() - t0
    lists, dropped = trial_lists(layout, wanted, {s["key"] for s in manifests["test"]["skipped"]}, log)

    task = make_task(cfg, num_classes=len(manifests["train"]["classes"]))
    run_name = f"speaker-{config_hash(cfg)}-{digests['train'][:8]}"
    t0 = time.perf_counter()
    train_paths = shard_paths(shards / "train")
    held_out, val, n_train = None, None, manifests["train"]["num_samples"]
    if cfg.data.val_speakers:
        n = len(manifests["train"]["classes"])
        if not 2 <= cfg.data.val_speakers < n:
            raise ConfigError(f"data.val_speakers must be in [2, {n - 1}] ({n} training speakers), "
                              f"got {cfg.data.val_speakers}")
        held_out = frozenset(np.random.default_rng(cfg.train.seed).choice(n, cfg.data.val_speakers,
                                                                          replace=False).tolist())
        log(f"[data] {len(held_out)} training speakers held out for per-epoch validation (val_eer)")
        names = {manifests["train"]["classes"][i] for i in held_out}
        n_train -= sum(u.speaker in names for u in layout.train)
        # scored every epoch: materialized once, and only when training runs (not when reused)
        val = lambda: feature_dataset(train_paths, task.front, speakers=held_out).materialize()  # noqa: E731
    check_batches(n_train, cfg.train, cfg.scale.workers, "training utterances")
    state, history = train_or_reuse(
        task, cfg.train, out, run_name,
        lambda: feature_dataset(train_paths, task.front, shuffle_seed=cfg.train.seed, speakers=held_out,
                                exclude=True, waveform=cfg.augment.on_waveform), cfg.scale, log, val, callbacks)
    train_time = time.perf_counter() - t0

    systems = scored_systems(task, state["model"], cfg.train.seed, untrained=cfg.eval.score_untrained)
    test_paths = shard_paths(shards / "test")
    t0 = time.perf_counter()
    results, curves = evaluate(systems, lambda enc: extract_embeddings(test_paths, task, enc,
                                                                       concurrency=inference_actors(cfg.scale),
                                                                       use_gpu=cfg.scale.use_gpu), lists)
    eval_time = time.perf_counter() - t0

    return common.verification_report(out, cfg, "speaker", root, (manifests, digests), results, curves, history,
                                      {"shards": shard_time, "train": train_time, "eval": eval_time},
                                      f"DET: {cfg.model.encoder} + {cfg.head['name']}", log,
                                      extra={"dropped_trials": dropped},
                                      note=None if cfg.data.root else "generated demo corpus, not VoxCeleb")


def trial_lists(layout, wanted: list[str], skipped: set[str], log) -> tuple[list, dict]:
    """The trial lists to score, decided before training: trials naming a test utterance that the shard
    build skipped (`--skip-bad`) are dropped and counted ({list: dropped}); a list left without both
    target and non-target trials is refused, naming the skipped files."""
    import numpy as np

    from trainers.verification import TrialList

    lists, dropped = [], {}
    for name in wanted:
        kept = [t for t in layout.trials[name] if t.enroll not in skipped and t.test not in skipped]
        dropped[name] = len(layout.trials[name]) - len(kept)
        if dropped[name]:
            log(f"[data] {name}: {dropped[name]} of {len(layout.trials[name])} trials dropped: they name test "
                f"utterances the shard build skipped ({', '.join(sorted(skipped))})")
        if len({t.label for t in kept}) < 2:
            raise ConfigError(f"{name}: no target and non-target trials left once the trials naming skipped test "
                              f"utterances ({', '.join(sorted(skipped))}) are dropped; fix or remove those files")
        lists.append(TrialList(name, [t.enroll for t in kept], [t.test for t in kept],
                               np.array([t.label for t in kept])))
    return lists, dropped


def compare_heads(cfg: SpeakerConfig, out: Path, heads: list[str], log=print) -> dict:
    """Train every head with the same budget on the same shards; table (EER, minDCF, train time) + DET PNG."""
    from datasets.atomic import write_json, write_text
    from trainers.plots import plot_det

    data = dataclasses.replace(cfg.data, root=str(corpus_root(cfg, out, log)), shards=str(out / "shards"))
    rows, curves = {}, {}
    for i, name in enumerate(heads):
        log(f"[compare] head {name}")
        report = run(dataclasses.replace(cfg, head={"name": name}, data=data, eval=EvalConfig(score_untrained=i == 0)),
                     out / "heads" / name, log=log)
        trials = sorted(report["verification"])[0]
        rows[name] = {**report["verification"][trials]["trained"], "train_time_s": report["timing_s"]["train"]}
        curves[name] = report["det_curves"][f"{trials} trained"]
        if i == 0:
            untrained = report["verification"][trials]["untrained"], report["det_curves"][f"{trials} untrained"]
    rows["(untrained encoder)"] = {**untrained[0], "train_time_s": 0.0}
    curves["(untrained encoder)"] = untrained[1]
    plot_det(curves, out / "plots" / "det_heads.png", title=f"DET per head, {cfg.train.epochs} epochs each",
             note=None if cfg.data.root else "generated demo corpus, not VoxCeleb")
    lines = ["| head | EER (%) | minDCF (p=0.01) | minDCF (p=0.05) | train time (s) |", "|---|---|---|---|---|"]
    lines += [f"| {h} | {100 * r['eer']:.2f} | {r['min_dcf_0.01']:.3f} | {r['min_dcf_0.05']:.3f} | "
              f"{r['train_time_s']:.0f} |" for h, r in rows.items()]
    write_json(out / "compare_heads.json", {"config": common.write_config(out, cfg), "heads": rows})
    write_text(out / "compare_heads.md", "\n".join(lines) + "\n")
    log("\n" + "\n".join(lines) + f"\n\n[done] {out / 'compare_heads.md'}, {out / 'plots' / 'det_heads.png'}")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="VoxCeleb root (wav/ tree with trial lists, or dev/ and test/); "
                                              "omitted: a generated demo corpus")
    p.add_argument("--out", type=Path, default=Path("runs/speaker-demo"), help="shards, checkpoints, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--encoder", help="model.encoder (tdnn, resnet34, ...)")
    p.add_argument("--head", help="head.name (softmax, arcface, ...); its keyword arguments via --set head.m=0.2")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable audio files (listed in the manifest)")
    p.add_argument("--musan", type=Path, help="augment.musan: MUSAN root, additive noise for training crops")
    p.add_argument("--rirs", type=Path, help="augment.rirs: RIRS_NOISES root, reverberation for training crops")
    p.add_argument("--compare-heads", nargs="?", const="all", metavar="H1,H2",
                   help="train each head (default: every registered one) with the same budget; writes "
                        "compare_heads.md/.json and plots/det_heads.png")
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list:
    """The command line's flags as config overrides (shorthand flags literal, then --set)."""
    return common.shorthand_overrides(args, common.literal_overrides(**{
        "data.root": args.data, "model.encoder": args.encoder,
        "head": {"name": args.head} if args.head else None,   # a new head drops the old one's keywords
        "data.skip_bad": args.skip_bad or None, "augment.musan": args.musan, "augment.rirs": args.rirs}))


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = overrides_of(args)
    if args.compare_heads:
        from trainers.heads import canonical_heads

        heads = canonical_heads() if args.compare_heads == "all" else args.compare_heads.split(",")
        return common.guarded(lambda: compare_heads(load_config(SpeakerConfig, args.config, overrides), args.out,
                                                    heads), args)
    return common.guarded(lambda: run(load_config(SpeakerConfig, args.config, overrides), args.out), args)


def _final(report: dict) -> dict:
    """What a sweep trial reports: the last epoch's val_eer, and the first trial list's test scores."""
    from datasets.voxceleb.layout import TRIAL_LISTS

    lists = report["verification"]
    trained = lists[next(n for n in (*TRIAL_LISTS, *sorted(lists)) if n in lists)]["trained"]  # Vox1-O first
    return {"val_eer": report["history"][-1]["val_eer"], "test_eer": trained["eer"],
            "test_min_dcf_0.01": trained["min_dcf_0.01"]}


def _shared_shards(cfg: SpeakerConfig, out: Path, log) -> list[tuple]:
    """The corpus (the demo one, generated, when data.root is empty) and its shards, once for every
    trial: trials that built them each would race on the same files."""
    from datasets.voxceleb.layout import find_layout

    root = corpus_root(cfg, out, log)
    shard_corpus(cfg, find_layout(root), root, out / "shards")
    return [("data.root", str(root)), ("data.shards", str(out / "shards")), ("eval.score_untrained", False)]


def _epochs(cfg: SpeakerConfig) -> int:
    return cfg.train.epochs


SWEEP = SweepTarget("speaker", SpeakerConfig, run, validate, metric="val_eer", mode="min", final=_final,
                    per_epoch=True, overrides=("data.val_speakers=8",), budget=_epochs, data_key="data.root",
                    prepare=_shared_shards)


if __name__ == "__main__":
    sys.exit(main())
