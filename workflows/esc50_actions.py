#!/usr/bin/env python
"""Sound event classification on ESC-50 with crowdsourced action vectors: ratings -> crowd-kit
aggregation -> action vectors; clips -> shards per fold (Ray Data); models trained in the one loop
with ESC-50's official folds as parallel Ray Train runs -> accuracy mean ± std per model x
aggregator, confusion-matrix PNGs, Fleiss' kappa of the raters.

    python workflows/esc50_actions.py                      # demo: generated audio under REAL ESC-50 names
    python workflows/esc50_actions.py --model av_logreg,av_mlp --aggregator all   # annotations only, no audio
    python workflows/esc50_actions.py --esc50 /data/ESC-50 --out runs/esc50 --workers 2
    ray job submit --working-dir . -- python workflows/esc50_actions.py --out /tmp/esc50-job

Models: av_logreg, av_mlp (the action vector only), logmel_cnn (audio only), fusion_early (the CNN
with the action vector concatenated to its clip embedding), fusion_late (the average of av_mlp's and
logmel_cnn's class probabilities; needs both in --model), and on audio embeddings from a pluggable
extractor (--embedding-weights: a logmel_cnn model.pt of this project, or a pretrained state dict; with
--embedding-kind cnn14 the PANNs checkpoint Cnn14_mAP=0.431.pth and 32 kHz shards):
emb_mlp (embedding only) and fusion_emb (embedding + action vector, concatenated).
Annotations (--annotations, default: the real three-raters file shipped in data/esc50-actions): the
three-raters CSV, the summed CSV (only `--aggregator sum`) or the crowd format (task, worker, action,
label). Labels and folds come from --esc50's meta/esc50.csv; with action-vector models only and no
--esc50, from the shipped summed file (all 2000 clips). Without --esc50 the audio models run on a
generated corpus that reuses the real file names, folds and classes of a subset of ESC-50.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError, config_hash, load_config  # noqa: E402
from trainers.esc50.models import AUDIO_MODELS, AV_MODELS, EMBEDDING_MODELS, MODELS, VECTOR_MODELS  # noqa: E402
from trainers.loop_config import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig  # noqa: E402
from tuning.target import SweepTarget  # noqa: E402
from workflows import common  # noqa: E402

DEFAULT_MODELS = (*AV_MODELS, *AUDIO_MODELS, "fusion_late")  # the embedding models need embedding.weights
AV_USERS = (*AV_MODELS, "fusion_early", "fusion_late", "fusion_emb")   # the models that read action vectors


@dataclasses.dataclass
class DataConfig:
    esc50: str = ""                  # ESC-50 root (--esc50; meta/esc50.csv, audio/); empty: the generated demo
                                     # corpus (audio models) or the shipped annotation files' labels
    annotations: str = ""            # annotation CSV (--annotations); empty: the shipped three-raters file


@dataclasses.dataclass
class ModelConfig:
    hidden: int = 128                # av_mlp
    dropout: float = 0.3
    width: int = 8                   # logmel_cnn / fusion_early channels w, 2w, 4w, 8w


@dataclasses.dataclass
class AudioConfig:
    sample_rate: int = 16000         # ESC-50 ships 44.1 kHz; shards hold this rate
    n_fft: int = 1024
    hop: int = 512                   # 5 s -> 155 frames
    n_mels: int = 64
    samples_per_shard: int = 128
    skip_bad: bool = False


@dataclasses.dataclass
class EmbeddingConfig:
    kind: str = "logmel_cnn"         # trainers.esc50.audio.EXTRACTORS: logmel_cnn, cnn14 (PANNs, 32 kHz audio)
    weights: str = ""                # a model.pt of this project's logmel_cnn runs, a pretrained state dict, or
                                     # (cnn14) PANNs' Cnn14_mAP=0.431.pth


@dataclasses.dataclass
class DemoConfig:
    clips_per_fold: int = 2          # of each class (ESC-50 has 8): 500 clips
    seed: int = 0


@dataclasses.dataclass
class ESC50Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    aggregators: list = dataclasses.field(default_factory=lambda: ["sum"])   # sum, mean, mv, ds, glad
    threshold: int = 2               # mv/ds/glad: a rating >= threshold marks the action present
    models: list = dataclasses.field(default_factory=lambda: list(DEFAULT_MODELS))
    test_folds: list = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5])
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    embedding: EmbeddingConfig = dataclasses.field(default_factory=EmbeddingConfig)
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(      # action-vector models
        epochs=30, batch_size=64, lr=1e-2, final_lr=1e-3, weight_decay=1e-4))
    cnn_train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(  # audio models
        epochs=12, batch_size=32, lr=2e-3, final_lr=2e-4, weight_decay=1e-4))
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def validate(cfg: ESC50Config) -> None:
    """Fail on bad names and parameters before any data is read."""
    from datasets.esc50.action_vectors import AGGREGATORS
    from trainers.esc50.audio import EXTRACTORS, WAVEFORM_EXTRACTORS, SoundTask, load_extractor
    from trainers.esc50.vectors import VectorTask
    from trainers.loop import validate as validate_loop

    for key, given, known in (("aggregators", cfg.aggregators, AGGREGATORS), ("models", cfg.models, MODELS)):
        unknown = [v for v in given if v not in known]
        if unknown or not given:
            raise ConfigError(f"unknown {key} {unknown or given}; choose from {', '.join(known)}")
    if "fusion_late" in cfg.models and not {"av_mlp", "logmel_cnn"} <= set(cfg.models):
        raise ConfigError("fusion_late averages av_mlp's and logmel_cnn's probabilities: add both to --model")
    if not cfg.test_folds or any(f not in range(1, 6) for f in cfg.test_folds):
        raise ConfigError(f"test_folds must be ESC-50 folds 1-5, got {cfg.test_folds}")
    if cfg.threshold not in range(1, 5):
        raise ConfigError(f"threshold must be a rating 1-4, got {cfg.threshold}")
    common.require_positive(cfg, "audio.sample_rate", "audio.n_fft", "audio.hop", "audio.n_mels",
                            "audio.samples_per_shard")
    embeds = any(m in EMBEDDING_MODELS for m in cfg.models)
    if embeds and not cfg.embedding.weights:
        raise ConfigError(f"{', '.join(EMBEDDING_MODELS)} need embedding.weights: a model.pt of a logmel_cnn "
                          "run (e.g. OUT/logmel_cnn/fold1/model.pt, trained without the folds you test), "
                          "a pretrained model's state dict, or (embedding.kind=cnn14) PANNs' Cnn14_mAP=0.431.pth")
    if cfg.embedding.kind not in EXTRACTORS:
        raise ConfigError(f"unknown embedding.kind {cfg.embedding.kind!r}; choose from {', '.join(EXTRACTORS)}")
    rate = WAVEFORM_EXTRACTORS.get(cfg.embedding.kind, 0)
    if embeds and cfg.audio.sample_rate < rate:
        raise ConfigError(f"embedding.kind={cfg.embedding.kind} takes {rate} Hz audio, but the shards would hold "
                          f"{cfg.audio.sample_rate} Hz (nothing above {cfg.audio.sample_rate // 2} Hz): add "
                          f"--set audio.sample_rate={rate}")

    def build_every_model():
        validate_loop(cfg.train)
        validate_loop(cfg.cnn_train)
        for model in cfg.models:
            if model in VECTOR_MODELS:
                VectorTask(VECTOR_MODELS[model], 20, 2, [0.0] * 20, [1.0] * 20, 8, cfg.model.hidden,
                           cfg.model.dropout).build_model()
        SoundTask(2, cfg.model.width, cfg.model.dropout, 8).build_model()

    common.checked(build_every_model)
    if embeds:
        try:
            trained_on = load_extractor(cfg.embedding.kind, cfg.embedding.weights).train_folds or []
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        leaked = sorted(set(trained_on) & set(cfg.test_folds))
        if leaked:   # its embeddings of a clip it was trained on would score that clip with its own label
            raise ConfigError(f"{cfg.embedding.weights} was trained on ESC-50 folds {trained_on}: it cannot embed "
                              f"test fold(s) {leaked}; test only folds it did not see (--fold), or use an "
                              "extractor trained without them")


def uses_action_vectors(cfg: ESC50Config) -> bool:
    return any(m in AV_USERS for m in cfg.models)


def results_table(results: dict) -> str:
    lines = ["| model | aggregator | accuracy mean ± std (%) | per fold (%) |", "|---|---|---|---|"]
    for model, by_agg in results.items():
        for agg, r in by_agg.items():
            folds = " / ".join(f"{100 * a:.1f}" for a in r["per_fold"].values())
            lines.append(f"| {model} | {agg} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {folds} |")
    return "\n".join(lines)


def run(cfg: ESC50Config, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; returns what it writes to metrics.json. (It reports once, at the end: no
    per-epoch callbacks are passed on.)"""
    from datasets.esc50.action_vectors import AGGREGATORS, action_vectors, agreement, pseudo_worker_notice
    from datasets.esc50.meta import OUTSIDE_META, THREE_RATERS_FILE, clip_table, read_annotations, stem
    from datasets.shards import manifest_digest, shard_paths
    from trainers.esc50.folds import train_and_summarize
    from trainers.resources import init_ray

    validate(cfg)
    common.clear_stale_results(out, cfg, log)
    esc50 = Path(cfg.data.esc50) if cfg.data.esc50 else None
    audio = any(m in AUDIO_MODELS or m in EMBEDDING_MODELS for m in cfg.models)
    demo = audio and esc50 is None
    if demo:
        from datasets.synthetic.esc50 import generate_esc50_corpus

        esc50 = out / "data" / f"esc50-demo-{config_hash(cfg.demo)[:8]}-{cfg.audio.sample_rate}"
        log(f"[data] demo corpus (ESC-50 layout, real names/folds/classes, generated audio) in {esc50}")
        generate_esc50_corpus(esc50, clips_per_fold=cfg.demo.clips_per_fold, sample_rate=cfg.audio.sample_rate,
                              seed=cfg.demo.seed)
    clips, truth, class_names = clip_table(esc50)
    annotations = Path(cfg.data.annotations) if cfg.data.annotations else THREE_RATERS_FILE
    # audio-only models (a user's own recordings in the ESC-50 layout, ESC-10...) need no annotations
    ratings, summed = read_annotations(annotations, None if demo else clips) if uses_action_vectors(cfg) \
        else (None, None)
    if demo and ratings is not None:  # the demo corpus is a subset of ESC-50: aggregate its clips only
        ratings = ratings[ratings["filename"].map(stem).isin(truth)]
    if summed is not None and cfg.aggregators != ["sum"]:
        raise ConfigError(f"the summed annotation file {annotations} only supports --aggregator sum, not "
                          f"{cfg.aggregators}: give per-rater annotations for the others")
    notice = pseudo_worker_notice(ratings) if ratings is not None else None
    kappa = None
    if ratings is not None:
        try:
            kappa = agreement(ratings)
        except ValueError as exc:   # Fleiss' kappa needs the same number of raters per clip
            log(f"[esc50] no Fleiss' kappa: {exc}")
    if notice:
        log(f"[esc50] {notice}")
    init_ray(log)
    # shards hold every aggregator's vector; action-vector-only runs compute just the asked ones (the crowd-kit
    # ones as Ray tasks, one per action, kept under OUT for a rerun)
    vectors = {}
    if uses_action_vectors(cfg):
        wanted = list(AGGREGATORS) if audio and summed is None else cfg.aggregators
        vectors = action_vectors(wanted, ratings, summed, cfg.threshold, cache=out / "action_vectors", on_ray=True)
        missing = sorted(set(truth) - set(vectors[cfg.aggregators[0]]))
        if missing:
            raise ConfigError(f"{annotations} has no annotation for {len(missing)} ESC-50 clip(s), e.g. "
                              f"{missing[0]}.wav: the models {', '.join(m for m in cfg.models if m in AV_USERS)} "
                              "need every clip's action vector")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths, digests = {}, {}
    if audio:
        from datasets.esc50.shards import build_esc50_shards

        manifests = build_esc50_shards(clips,
                                       {a: {f"{k}.wav": v for k, v in vec.items()} for a, vec in vectors.items()},
                                       out / "shards", sample_rate=cfg.audio.sample_rate,
                                       samples_per_shard=cfg.audio.samples_per_shard, seed=cfg.train.seed,
                                       skip_bad=cfg.audio.skip_bad)
        paths = {f: shard_paths(out / "shards" / f"fold{f}") for f in manifests}
        digests = {f: manifest_digest(out / "shards" / f"fold{f}") for f in manifests}
    shard_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = train_and_summarize(cfg, vectors, truth, paths, digests, class_names, out, log)
    report = {
        "workflow": "esc50_actions",
        "data": {"esc50": str(esc50) if esc50 else None, "demo": demo, "clips": len(truth),
                 "annotations": str(annotations) if uses_action_vectors(cfg) else None,
                 "annotated_clips_outside_meta": next((f.attrs.get(OUTSIDE_META, 0) for f in (ratings, summed)
                                                       if f is not None), 0)},
        "notice": notice,
        "fleiss_kappa": kappa,
        "results": results,
        "timing_s": {"shards": shard_time, "train_and_eval": time.perf_counter() - t0},
    }
    text = results_table(results)
    if kappa:
        text += (f"\n\nFleiss' kappa of the raters (0-4 ratings): overall {kappa['overall']:.3f}; per action: "
                 + ", ".join(f"{a} {k:.2f}" for a, k in kappa.items() if a != "overall"))
    if notice:
        text += f"\n\n{notice}"
    return common.write_report(out, cfg, report, text, f"{out / 'plots'}/confusion_*.png", log)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--esc50", type=Path, help="ESC-50 root (meta/esc50.csv, audio/); omitted: the generated demo "
                                               "corpus (audio models) or the shipped annotation files' labels")
    p.add_argument("--annotations", type=Path, help="annotation CSV (three-raters, summed or crowd format)")
    p.add_argument("--out", type=Path, default=Path("runs/esc50-actions"), help="shards, checkpoints, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--aggregator", help="aggregators: comma-separated or 'all' (sum, mean, mv, ds, glad)")
    p.add_argument("--model", help=f"models: comma-separated ({', '.join(MODELS)})")
    p.add_argument("--fusion", choices=("early", "late", "both"), help="add fusion_early / fusion_late (and what "
                                                                        "they need) to the models")
    p.add_argument("--fold", help="test_folds: comma-separated held-out folds (default all five)")
    p.add_argument("--embedding-weights", help="embedding.weights for emb_mlp / fusion_emb")
    p.add_argument("--embedding-kind", help="embedding.kind: logmel_cnn (default) or cnn14 (PANNs)")
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list:
    """The command line's flags as config overrides (shorthand flags literal, then --set)."""
    from datasets.esc50.action_vectors import AGGREGATORS

    aggregators = list(AGGREGATORS) if args.aggregator == "all" else args.aggregator.split(",") if args.aggregator \
        else None
    models = args.model.split(",") if args.model else None
    if args.fusion:
        fused = {"early": ["fusion_early"], "late": ["av_mlp", "logmel_cnn", "fusion_late"]}
        extra = fused["early"] + fused["late"] if args.fusion == "both" else fused[args.fusion]
        models = list(dict.fromkeys((models or []) + extra))
    return common.shorthand_overrides(args, common.literal_overrides(**{
        "data.esc50": args.esc50, "data.annotations": args.annotations, "aggregators": aggregators,
        "models": models or None, "test_folds": common.int_list(args.fold, "fold") if args.fold else None,
        "embedding.weights": args.embedding_weights, "embedding.kind": args.embedding_kind}))


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = overrides_of(args)
    return common.guarded(lambda: run(load_config(ESC50Config, args.config, overrides), args.out), args)


def _final(report: dict) -> dict:
    (model, by_agg), = report["results"].items()
    r = next(iter(by_agg.values()))
    return {"accuracy": r["mean"], "accuracy_std": r["std"]}


SWEEP = SweepTarget("esc50_actions", ESC50Config, run, validate, metric="accuracy", mode="max", final=_final,
                    list_keys=("aggregators", "models"), data_key="data.esc50")


if __name__ == "__main__":
    sys.exit(main())
