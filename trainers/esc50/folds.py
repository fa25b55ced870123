"""ESC-50 models trained on every held-out fold (official folds as parallel Ray Train runs), their
predictions, the late fusion of two models' probabilities, and the per-fold accuracy summaries.

`cfg` below is the esc50_actions workflow's config (sections train, cnn_train, model, audio,
embedding, scale and test_folds), read by attribute: trainers never import workflows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from trainers.config import config_hash, to_dict
from trainers.esc50.audio import WAVEFORM_EXTRACTORS, ClipEmbeddings, SoundTask, predict, sound_dataset, wave_dataset
from trainers.esc50.models import EMBEDDING_MODELS, VECTOR_MODELS
from trainers.esc50.vectors import VectorTask, confusion_matrix, predict_proba
from trainers.features import LogMel
from trainers.inference import embed_dataset
from trainers.loop import train_or_reuse
from trainers.plots import plot_confusion
from trainers.resources import in_parallel, inference_actors, parallel_runs_scale

NO_AV = "-"   # the aggregator column of models that do not use action vectors


def rows_digest(rows: list[dict]) -> str:
    """What the action-vector models train on, as a hash (decides whether a saved model is reused)."""
    h = hashlib.sha256(np.stack([r["x"] for r in rows]).tobytes())
    h.update(json.dumps([(r["key"], r["label"], r["fold"]) for r in rows]).encode())
    return h.hexdigest()


def train_av_fold(cfg, model: str, fold: int, rows: list[dict], num_classes: int, tag: list,
                  run_dir: Path, scale, log) -> dict:
    """Train a vector model on every fold but `fold`; {probs: {stem: (label, p)}, history}."""
    import ray

    train = [r for r in rows if r["fold"] != fold]
    test = [r for r in rows if r["fold"] == fold]
    x = np.stack([r["x"] for r in train])
    task = VectorTask(VECTOR_MODELS[model], x.shape[1], num_classes, x.mean(0).tolist(), x.std(0).tolist(),
                      cfg.train.batch_size, cfg.model.hidden, cfg.model.dropout, seed=cfg.train.seed)
    run_name = f"esc50-{model}-{config_hash([to_dict(cfg.train), to_dict(cfg.model), tag])}-test{fold}"
    run_dir.mkdir(parents=True, exist_ok=True)
    state, history = train_or_reuse(task, cfg.train, run_dir, run_name, lambda: ray.data.from_items(train), scale,
                                    log)
    probs = predict_proba(task, state["model"], np.stack([r["x"] for r in test]))
    return {"probs": {r["key"]: (r["label"], p) for r, p in zip(test, probs)}, "history": history}


def train_audio_fold(cfg, model: str, aggregator: str, fold: int, paths: dict[int, list[str]],
                     vectors: dict, truth: dict, num_classes: int, tag: list, run_dir: Path, scale, log) -> dict:
    """Train the log-mel CNN (fusion_early: with the action vector) on every fold but `fold`;
    {task, state, history, front, aggregator} for `audio_runs`."""
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
    run_name = (f"esc50-{model}-"
                f"{config_hash([to_dict(cfg.cnn_train), to_dict(cfg.model), to_dict(a), tag, agg])}-test{fold}")
    run_dir.mkdir(parents=True, exist_ok=True)
    train_paths = [p for f in train_folds for p in paths[f]]
    state, history = train_or_reuse(
        task, cfg.cnn_train, run_dir, run_name,
        lambda: sound_dataset(train_paths, front, agg, None, shuffle_seed=cfg.cnn_train.seed), scale, log)
    record_train_folds(run_dir / "model.pt", train_folds)
    return {"task": task, "state": state["model"], "history": history, "front": front, "aggregator": agg}


def record_train_folds(model_file: Path, folds: list[int]) -> None:
    """Add the folds a model was trained on to its model.pt (also to one saved before folds were
    recorded): used as an embedding extractor, it is refused for these test folds."""
    import torch

    from datasets.atomic import atomic_path

    saved = torch.load(model_file, map_location="cpu", weights_only=True)
    if saved.get("train_folds") != sorted(folds):
        saved["train_folds"] = sorted(folds)
        with atomic_path(model_file) as tmp:
            torch.save(saved, tmp)


def audio_runs(cfg, train_one, paths: dict[int, list[str]]) -> dict[int, dict]:
    """Train every held-out fold's model together (train_one(fold)), then predict each held-out fold
    in turn: prediction actors started while other folds still train would take the CPUs their
    data tasks need."""
    trained = in_parallel(train_one, cfg.test_folds)
    return {f: {"probs": predict(sound_dataset(paths[f], t["front"], t["aggregator"], None), t["task"], t["state"],
                                 len(paths[f]), concurrency=inference_actors(cfg.scale), use_gpu=cfg.scale.use_gpu),
                 "history": t["history"]}
            for f, t in trained.items()}


def vector_runs(cfg, model: str, agg: str, x_of, truth: dict, num_classes: int, out: Path, scale,
                log) -> dict[int, dict]:
    """A vector model (x_of(stem, aggregator) -> input vector) on every held-out fold, in parallel."""
    rows = [{"key": k, "x": np.asarray(x_of(k, agg), dtype=np.float32), "label": t, "fold": fold}
            for k, (t, fold) in sorted(truth.items())]
    tag = [agg, rows_digest(rows)]
    return in_parallel(lambda f: train_av_fold(cfg, model, f, rows, num_classes, tag, out / agg / model / f"fold{f}",
                                               scale, log), cfg.test_folds)


def summarize(per_fold: dict[int, dict], num_classes: int) -> tuple[dict, object]:
    """Accuracy per fold, mean and std, and the confusion matrix pooled over the folds."""
    acc, matrix = {}, np.zeros((num_classes, num_classes), dtype=np.int64)
    for f, r in per_fold.items():
        labels = np.array([lab for lab, _ in r["probs"].values()])
        predicted = np.array([p.argmax() for _, p in r["probs"].values()])
        acc[str(f)] = float((labels == predicted).mean())
        matrix += confusion_matrix(labels, predicted, num_classes)
    values = np.array(list(acc.values()))
    return {"per_fold": acc, "mean": float(values.mean()), "std": float(values.std())}, matrix


def clip_embeddings(cfg, paths: dict[int, list[str]]) -> dict:
    """{stem: embedding} of every clip by the pluggable extractor (Ray Data batch inference)."""
    a = cfg.audio
    every = [p for f in sorted(paths) for p in paths[f]]
    ds = wave_dataset(every) if cfg.embedding.kind in WAVEFORM_EXTRACTORS \
        else sound_dataset(every, LogMel(a.sample_rate, a.n_fft, a.hop, a.n_mels), "sum", None)
    return embed_dataset(ds, ClipEmbeddings, (cfg.embedding.kind, cfg.embedding.weights), len(every),
                         inference_actors(cfg.scale), batch_size=32, use_gpu=cfg.scale.use_gpu)


def late_fusion(first: dict[int, dict], second: dict[int, dict]) -> dict[int, dict]:
    """Per held-out fold, the average of two models' class probabilities ({fold: {"probs": {stem:
    (label, p)}}} each): the paper's late fusion of the action-vector MLP and the log-mel CNN."""
    return {f: {"probs": {k: (lab, (p + second[f]["probs"][k][1]) / 2) for k, (lab, p) in r["probs"].items()}}
            for f, r in first.items()}


def train_and_summarize(cfg, vectors: dict, truth: dict, paths: dict[int, list[str]], digests: dict,
                        class_names: list[str], out: Path, log) -> dict:
    """Every model of cfg.models (x every aggregator for those that use action vectors) on every
    held-out fold; {model: {aggregator: summary with per-fold accuracy, mean, std, confusion PNG}}.
    `vectors`: {aggregator: {stem: vector}}; `truth`: {stem: (target, fold)}; `paths`: audio shards
    per fold (empty without audio models); `digests`: their manifests' digests."""
    scale = parallel_runs_scale(cfg.scale, len(cfg.test_folds), log)
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
            runs["fusion_late", agg] = late_fusion(runs["av_mlp", agg], runs["logmel_cnn", NO_AV])
    results = {}
    for (model, agg), per_fold in runs.items():
        summary, matrix = summarize(per_fold, n)
        summary["confusion_png"] = plot_confusion(matrix, class_names, out / "plots" / f"confusion_{model}_{agg}.png",
                                                  title=f"{model} ({agg})")
        summary["history"] = {str(f): r.get("history") for f, r in per_fold.items()}
        results.setdefault(model, {})[agg] = summary
        log(f"[esc50] {model} ({agg}): {100 * summary['mean']:.2f} ± {100 * summary['std']:.2f} % over folds "
            f"{cfg.test_folds}")
    return results
