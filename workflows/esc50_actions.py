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
extractor (--embedding-weights: a logmel_cnn model.pt of this project, or a pretrained state dict):
emb_mlp (embedding only) and fusion_emb (embedding + action vector, concatenated).
Annotations (--annotations, default: the real three-raters file shipped in data/esc50-actions): the
three-raters CSV, the summed CSV (only `--aggregator sum`) or the crowd format (task, worker, action,
label). Labels and folds come from --esc50's meta/esc50.csv; with action-vector models only and no
--esc50, from the shipped summed file (all 2000 clips). Without --esc50 the audio models run on a
generated corpus that reuses the real file names, folds and classes of a subset of ESC-50.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError, config_hash, load_config, to_dict  # noqa: E402
from trainers.loop import LoopConfig  # noqa: E402
from workflows import common  # noqa: E402

AV_MODELS = {"av_logreg": "logreg", "av_mlp": "mlp"}
EMBEDDING_MODELS = {"emb_mlp": "mlp", "fusion_emb": "mlp"}     # on audio embeddings (fusion_emb: + vector)
VECTOR_MODELS = {**AV_MODELS, **EMBEDDING_MODELS}             # classifiers of fixed-length vectors
AUDIO_MODELS = ("logmel_cnn", "fusion_early")
MODELS = (*AV_MODELS, *AUDIO_MODELS, "fusion_late", *EMBEDDING_MODELS)
DEFAULT_MODELS = (*AV_MODELS, *AUDIO_MODELS, "fusion_late")  # the embedding models need embedding.weights
NO_AV = "-"   # the aggregator column of models that do not use action vectors


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
    kind: str = "logmel_cnn"         # trainers.sound_classify.EXTRACTORS
    weights: str = ""                # a model.pt of this project's logmel_cnn runs, or a pretrained state dict


@dataclasses.dataclass
class DemoConfig:
    clips_per_fold: int = 2          # of each class (ESC-50 has 8): 500 clips
    seed: int = 0


@dataclasses.dataclass
class ESC50Config:
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
    scale: common.ScaleConfig = dataclasses.field(default_factory=common.ScaleConfig)


def validate(cfg: ESC50Config) -> None:
    """Fail on bad names and parameters before any data is read."""
    from datasets.action_vectors import AGGREGATORS
    from trainers.classify import VectorTask
    from trainers.loop import validate as validate_loop
    from trainers.sound_classify import SoundTask, load_extractor

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
    try:
        validate_loop(cfg.train)
        validate_loop(cfg.cnn_train)
        for model in cfg.models:
            if model in VECTOR_MODELS:
                VectorTask(VECTOR_MODELS[model], 20, 2, [0.0] * 20, [1.0] * 20, 8, cfg.model.hidden,
                           cfg.model.dropout).build_model()
        SoundTask(2, cfg.model.width, cfg.model.dropout, 8).build_model()
        if any(m in EMBEDDING_MODELS for m in cfg.models):
            if not cfg.embedding.weights:
                raise ConfigError(f"{', '.join(EMBEDDING_MODELS)} need embedding.weights: a model.pt of a logmel_cnn "
                                  "run (e.g. OUT/logmel_cnn/fold1/model.pt, trained without the folds you test) or "
                                  "a pretrained model's state dict")
            load_extractor(cfg.embedding.kind, cfg.embedding.weights)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def read_annotations(path: Path, meta):
    """(ratings frame or None, summed frame or None) by the file's header."""
    from datasets.esc50 import read_crowd, read_sum, read_three_raters

    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise FileNotFoundError(f"cannot read annotations {path}: {exc.strerror}") from None
    if "worker" in header:
        return read_crowd(path, meta), None
    if "fold" in header:
        return None, read_sum(path, meta)
    return read_three_raters(path, meta), None


def stem(filename: str) -> str:
    return filename.rsplit(".", 1)[0]


def clip_table(esc50: Optional[Path]):
    """(clips from meta/esc50.csv or None, {stem: (target, fold)}, class names by target)."""
    from datasets.esc50 import SUM_FILE, read_esc50, read_sum

    if esc50 is not None:
        clips = read_esc50(esc50)
        return clips, {stem(c.filename): (c.target, c.fold) for c in clips}, \
            [n for _, n in sorted({(c.target, c.category) for c in clips})]
    frame = read_sum(SUM_FILE)
    return None, {stem(r.filename): (int(r.target), int(r.fold)) for r in frame.itertuples()}, \
        [n for _, n in sorted(set(zip(frame["target"], frame["category"])))]


def action_vectors(aggregators, ratings, summed, threshold: int) -> dict[str, dict]:
    """{aggregator: {stem: vector}}."""
    from datasets.action_vectors import aggregate
    from datasets.esc50 import ACTIONS

    if summed is not None:
        return {"sum": {stem(f): v for f, v in zip(summed["filename"], summed[list(ACTIONS)].to_numpy(dtype=float))}}
    return {a: {stem(f): v for f, v in aggregate(ratings, a, threshold).items()} for a in aggregators}


def rows_digest(rows: list[dict]) -> str:
    """What the action-vector models train on, as a hash (decides whether a saved model is reused)."""
    import hashlib
    import json

    import numpy as np

    h = hashlib.sha256(np.stack([r["x"] for r in rows]).tobytes())
    h.update(json.dumps([(r["key"], r["label"], r["fold"]) for r in rows]).encode())
    return h.hexdigest()


def train_av_fold(cfg: ESC50Config, model: str, fold: int, rows: list[dict], num_classes: int, tag: list,
                  run_dir: Path, scale, log) -> dict:
    """Train a vector model on every fold but `fold`; {probs: {stem: (label, p)}, history}."""
    import numpy as np
    import ray

    from trainers.classify import VectorTask, predict_proba

    train = [r for r in rows if r["fold"] != fold]
    test = [r for r in rows if r["fold"] == fold]
    x = np.stack([r["x"] for r in train])
    task = VectorTask(VECTOR_MODELS[model], x.shape[1], num_classes, x.mean(0).tolist(), x.std(0).tolist(),
                      cfg.train.batch_size, cfg.model.hidden, cfg.model.dropout, seed=cfg.train.seed)
    run_name = f"esc50-{model}-{config_hash([to_dict(cfg.train), to_dict(cfg.model), tag])}-test{fold}"
    run_dir.mkdir(parents=True, exist_ok=True)
    state, history = common.train_or_reuse(task, cfg.train, run_dir, run_name,
                                           lambda: ray.data.from_items(train), scale, log)
    probs = predict_proba(task, state["model"], np.stack([r["x"] for r in test]))
    return {"probs": {r["key"]: (r["label"], p) for r, p in zip(test, probs)}, "history": history}


def train_audio_fold(cfg: ESC50Config, model: str, aggregator: str, fold: int, paths: dict[int, list[str]],
                     vectors: dict, truth: dict, num_classes: int, tag: list, run_dir: Path, scale, log) -> dict:
    """Train the log-mel CNN (fusion_early: with the action vector) on every fold but `fold`;
    {task, state, history, front, aggregator} for `predict_audio_fold`."""
    import numpy as np

    from trainers.features import LogMel
    from trainers.sound_classify import SoundTask, sound_dataset

    a = cfg.audio
    front = LogMel(a.sample_rate, a.n_fft, a.hop, a.n_mels)
    train_folds = [f for f in paths if f != fold]
    av_dim = mean = std = None
    if model == "fusion_early":
        x = np.stack([vectors[k] for k, (_, f) in sorted(truth.items()) if f != fold])
        av_dim, mean, std = x.shape[1], x.mean(0).tolist(), x.std(0).tolist()
    task = SoundTask(num_classes, cfg.model.width, cfg.model.dropout, cfg.cnn_train.batch_size, av_dim or 0, mean,
                     std, seed=cfg.cnn_train.seed)
    agg = aggregator if model == "fusion_early" else "sum"   # the CNN alone ignores the vector column
    run_name = f"esc50-{model}-{config_hash([to_dict(cfg.cnn_train), to_dict(cfg.model), to_dict(a), tag, agg])}-test{fold}"
    run_dir.mkdir(parents=True, exist_ok=True)
    train_paths = [p for f in train_folds for p in paths[f]]
    state, history = common.train_or_reuse(
        task, cfg.cnn_train, run_dir, run_name,
        lambda: sound_dataset(train_paths, front, agg, None, shuffle_seed=cfg.cnn_train.seed), scale, log)
    return {"task": task, "state": state["model"], "history": history, "front": front, "aggregator": agg}


def audio_runs(cfg: ESC50Config, train_one, paths: dict[int, list[str]]) -> dict[int, dict]:
    """Train every held-out fold's model together (train_one(fold)), then predict each held-out fold
    in turn: prediction actors started while other folds still train would take the CPUs their
    data tasks need."""
    from trainers.sound_classify import predict, sound_dataset

    trained = common.in_parallel(train_one, cfg.test_folds)
    return {f: {"probs": predict(sound_dataset(paths[f], t["front"], t["aggregator"], None), t["task"], t["state"],
                                 len(paths[f]), concurrency=cfg.scale.workers), "history": t["history"]}
            for f, t in trained.items()}


def vector_runs(cfg: ESC50Config, model: str, agg: str, x_of, truth: dict, num_classes: int, out: Path, scale,
                log) -> dict[int, dict]:
    """A vector model (x_of(stem, aggregator) -> input vector) on every held-out fold, in parallel."""
    import numpy as np

    rows = [{"key": k, "x": np.asarray(x_of(k, agg), dtype=np.float32), "label": t, "fold": fold}
            for k, (t, fold) in sorted(truth.items())]
    tag = [agg, rows_digest(rows)]
    return common.in_parallel(lambda f: train_av_fold(cfg, model, f, rows, num_classes, tag, out / agg / model / f"fold{f}",
                                               scale, log), cfg.test_folds)


def clip_embeddings(cfg: ESC50Config, paths: dict[int, list[str]]) -> dict:
    """{stem: embedding} of every clip by the pluggable extractor (Ray Data batch inference)."""
    from trainers.features import LogMel
    from trainers.loop import map_with_actors
    from trainers.sound_classify import ClipEmbeddings, sound_dataset

    a = cfg.audio
    every = [p for f in sorted(paths) for p in paths[f]]
    ds = map_with_actors(sound_dataset(every, LogMel(a.sample_rate, a.n_fft, a.hop, a.n_mels), "sum", None),
                         ClipEmbeddings, (cfg.embedding.kind, cfg.embedding.weights), len(every), cfg.scale.workers,
                         batch_size=32)
    return {k: e for b in ds.iter_batches(batch_size=256, batch_format="numpy")
            for k, e in zip(b["key"], b["embedding"])}


def summarize(per_fold: dict[int, dict], num_classes: int) -> tuple[dict, object]:
    """Accuracy per fold, mean and std, and the confusion matrix pooled over the folds."""
    import numpy as np

    from trainers.classify import confusion_matrix

    acc, matrix = {}, np.zeros((num_classes, num_classes), dtype=np.int64)
    for f, r in per_fold.items():
        labels = np.array([lab for lab, _ in r["probs"].values()])
        predicted = np.array([p.argmax() for _, p in r["probs"].values()])
        acc[str(f)] = float((labels == predicted).mean())
        matrix += confusion_matrix(labels, predicted, num_classes)
    values = np.array(list(acc.values()))
    return {"per_fold": acc, "mean": float(values.mean()), "std": float(values.std())}, matrix


def results_table(results: dict) -> str:
    lines = ["| model | aggregator | accuracy mean ± std (%) | per fold (%) |", "|---|---|---|---|"]
    for model, by_agg in results.items():
        for agg, r in by_agg.items():
            folds = " / ".join(f"{100 * a:.1f}" for a in r["per_fold"].values())
            lines.append(f"| {model} | {agg} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {folds} |")
    return "\n".join(lines)


def run(cfg: ESC50Config, esc50: Optional[Path], annotations: Optional[Path], out: Path, log=print) -> dict:
    import numpy as np

    from datasets.action_vectors import AGGREGATORS, agreement, pseudo_worker_notice
    from datasets.esc50 import THREE_RATERS_FILE
    from datasets.shards import manifest_digest, shard_paths
    from trainers.plots import plot_confusion

    validate(cfg)
    audio = any(m in AUDIO_MODELS or m in EMBEDDING_MODELS for m in cfg.models)
    demo = audio and esc50 is None
    if demo:
        from datasets.synth_esc50 import generate_esc50_corpus

        esc50 = out / "data" / f"esc50-demo-{config_hash(cfg.demo)[:8]}-{cfg.audio.sample_rate}"
        log(f"[data] demo corpus (ESC-50 layout, real names/folds/classes, generated audio) in {esc50}")
        generate_esc50_corpus(esc50, clips_per_fold=cfg.demo.clips_per_fold, sample_rate=cfg.audio.sample_rate,
                              seed=cfg.demo.seed)
    clips, truth, class_names = clip_table(esc50)
    annotations = annotations or THREE_RATERS_FILE
    ratings, summed = read_annotations(annotations, None if demo else clips)
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
    # shards hold every aggregator's vector; action-vector-only runs compute just the asked ones
    wanted = list(AGGREGATORS) if audio and summed is None else cfg.aggregators
    vectors = action_vectors(wanted, ratings, summed, cfg.threshold)
    missing = sorted(set(truth) - set(vectors[cfg.aggregators[0]]))
    if missing:
        raise ConfigError(f"{annotations} has no annotation for {len(missing)} ESC-50 clip(s), e.g. {missing[0]}.wav: "
                          "every clip needs one")
    common.init_ray(log)
    out.mkdir(parents=True, exist_ok=True)
    scale = common.parallel_runs_scale(cfg.scale, len(cfg.test_folds), log)
    t0 = time.perf_counter()
    paths, digests = {}, {}
    if audio:
        from datasets.esc50_shards import build_esc50_shards

        manifests = build_esc50_shards(clips, {a: {f"{k}.wav": v for k, v in vec.items()} for a, vec in vectors.items()},
                                       out / "shards", sample_rate=cfg.audio.sample_rate,
                                       samples_per_shard=cfg.audio.samples_per_shard, seed=cfg.train.seed,
                                       skip_bad=cfg.audio.skip_bad)
        paths = {f: shard_paths(out / "shards" / f"fold{f}") for f in manifests}
        digests = {f: manifest_digest(out / "shards" / f"fold{f}") for f in manifests}
    shard_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    n = len(class_names)
    runs: dict[tuple[str, str], dict] = {}
    tag = sorted(digests.items())   # the shards decide the audio models' data
    if "logmel_cnn" in cfg.models:
        runs["logmel_cnn", NO_AV] = audio_runs(cfg, lambda f: train_audio_fold(
            cfg, "logmel_cnn", NO_AV, f, paths, {}, truth, n, tag, out / "logmel_cnn" / f"fold{f}", scale, log),
            paths)
    embeddings = clip_embeddings(cfg, paths) if any(m in EMBEDDING_MODELS for m in cfg.models) else {}
    inputs = {"av_logreg": lambda k, agg: vectors[agg][k], "av_mlp": lambda k, agg: vectors[agg][k],
              "emb_mlp": lambda k, agg: embeddings[k],
              "fusion_emb": lambda k, agg: np.concatenate([embeddings[k], vectors[agg][k]])}
    if "emb_mlp" in cfg.models:
        runs["emb_mlp", NO_AV] = vector_runs(cfg, "emb_mlp", NO_AV, inputs["emb_mlp"], truth, n, out, scale, log)
    for agg in cfg.aggregators:
        for model in (m for m in cfg.models if m in VECTOR_MODELS and m != "emb_mlp"):
            runs[model, agg] = vector_runs(cfg, model, agg, inputs[model], truth, n, out, scale, log)
        if "fusion_early" in cfg.models:
            runs["fusion_early", agg] = audio_runs(cfg, lambda f: train_audio_fold(
                cfg, "fusion_early", agg, f, paths, vectors[agg], truth, n, tag,
                out / agg / "fusion_early" / f"fold{f}", scale, log), paths)
        if "fusion_late" in cfg.models:
            runs["fusion_late", agg] = {f: {"probs": {k: (lab, (p + runs["logmel_cnn", NO_AV][f]["probs"][k][1]) / 2)
                                                      for k, (lab, p) in runs["av_mlp", agg][f]["probs"].items()}}
                                        for f in cfg.test_folds}
    results = {}
    for (model, agg), per_fold in runs.items():
        summary, matrix = summarize(per_fold, n)
        summary["confusion_png"] = plot_confusion(matrix, class_names, out / "plots" / f"confusion_{model}_{agg}.png",
                                                  title=f"{model} ({agg})")
        summary["history"] = {str(f): r.get("history") for f, r in per_fold.items()}
        results.setdefault(model, {})[agg] = summary
        log(f"[esc50] {model} ({agg}): {100 * summary['mean']:.2f} ± {100 * summary['std']:.2f} % over folds "
            f"{cfg.test_folds}")
    report = {
        "workflow": "esc50_actions",
        "config": to_dict(cfg),
        "data": {"esc50": str(esc50) if esc50 else None, "annotations": str(annotations), "demo": demo,
                 "clips": len(truth)},
        "notice": notice,
        "fleiss_kappa": kappa,
        "versions": common.versions(),
        "results": results,
        "timing_s": {"shards": shard_time, "train_and_eval": time.perf_counter() - t0},
    }
    text = results_table(results)
    if kappa:
        text += (f"\n\nFleiss' kappa of the raters (0-4 ratings): overall {kappa['overall']:.3f}; per action: "
                 + ", ".join(f"{a} {k:.2f}" for a, k in kappa.items() if a != "overall"))
    if notice:
        text += f"\n\n{notice}"
    common.write_report(out, report, text, f"{out / 'plots'}/confusion_*.png", log)
    return report


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
    return p.parse_args(argv)


def main(argv=None) -> int:
    from datasets.action_vectors import AGGREGATORS

    args = parse_args(argv)
    shorthand = []
    if args.aggregator:
        shorthand.append(f"aggregators=[{','.join(AGGREGATORS) if args.aggregator == 'all' else args.aggregator}]")
    models = args.model.split(",") if args.model else None
    if args.fusion:
        fused = {"early": ["fusion_early"], "late": ["av_mlp", "logmel_cnn", "fusion_late"]}
        extra = fused["early"] + fused["late"] if args.fusion == "both" else fused[args.fusion]
        models = list(dict.fromkeys((models or []) + extra))
    if models:
        shorthand.append(f"models=[{','.join(models)}]")
    if args.fold:
        shorthand.append(f"test_folds=[{args.fold}]")
    if args.embedding_weights:
        shorthand.append(f"embedding.weights={args.embedding_weights}")
    overrides = common.shorthand_overrides(args, shorthand)
    return common.guarded(lambda: run(load_config(ESC50Config, args.config, overrides), args.esc50,
                                      args.annotations, args.out))


if __name__ == "__main__":
    sys.exit(main())
