"""What every workflow script shares: CLI flags, Ray start-up, train-or-reuse, reports, exit codes."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Optional

PACKAGES = ("torch", "torchaudio", "ray", "numpy", "pyarrow", "webdataset", "soundfile", "scikit-learn", "pillow")


@dataclasses.dataclass
class ScaleConfig:
    """The `scale` config section that cpus_per_worker / train_or_reuse read."""
    workers: int = 1
    cpus_per_worker: Optional[float] = None   # None: an equal share of cpu_budget, at most 1
    cpu_budget: Optional[float] = None        # CPUs all training workers of the run hold together; None: the
                                              # cluster's but one, left for Ray Data (a sweep sets each trial's)
    use_gpu: Optional[bool] = None            # None: use GPUs when the cluster has one per worker
    placement_strategy: str = "PACK"          # Ray Train's: PACK (fewest nodes) | SPREAD (one worker per node)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (sections as in the dataclasses of the workflow)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set train.lr=1e-3 --set head.m=0.3")
    p.add_argument("--workers", type=int, help="scale.workers: Ray Train workers")
    p.add_argument("--epochs", type=int, help="train.epochs")


def shorthand_overrides(args: argparse.Namespace, extra: list[str] = ()) -> list[str]:
    """Shorthand flags become dotted overrides; explicit --set comes last so it wins."""
    out = list(extra)
    if args.workers is not None:
        out.append(f"scale.workers={args.workers}")
    if args.epochs is not None:
        out.append(f"train.epochs={args.epochs}")
    return out + list(args.set)


def init_ray(log=print) -> None:
    import ray

    if ray.is_initialized():
        return
    # Under `ray job submit` RAY_ADDRESS points at the cluster; otherwise this starts a local one.
    ray.init(log_to_driver=True)
    where = os.environ.get("RAY_ADDRESS", "a local Ray instance")
    log(f"[ray] connected to {where}: {ray.cluster_resources().get('CPU', 0):.0f} CPUs, "
        f"{ray.cluster_resources().get('GPU', 0):.0f} GPUs")


def cpus_per_worker(scale, log=print) -> float:
    """Leave at least one CPU to Ray Data, or the data tasks that feed training starve (small-cluster trap)."""
    from trainers.loop import cpus_leaving_one_for_data

    if scale.cpus_per_worker is not None:
        return scale.cpus_per_worker
    per = cpus_leaving_one_for_data(scale.workers, scale.cpu_budget)
    if per < 1.0:
        log(f"[ray] {scale.workers} workers: {per:.2f} CPU each, leaving one for Ray Data")
    return per


def parallel_runs_scale(scale, runs: int, log=print):
    """`scale` for `runs` Ray Train runs submitted together: their workers share the CPU budget (the
    cluster's CPUs but one, which stays free for the Ray Data tasks that feed them all), unless
    cpus_per_worker is set."""
    if scale.cpus_per_worker:
        return scale
    together = dataclasses.replace(scale, workers=scale.workers * runs)
    return dataclasses.replace(scale, cpus_per_worker=cpus_per_worker(together, log))


def in_parallel(fn, folds: list) -> dict:
    """fn(fold) for every held-out fold at once (each one a Ray Train run); {fold: result}."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(folds)) as pool:
        futures = {f: pool.submit(fn, f) for f in folds}
        return {f: fut.result() for f, fut in futures.items()}


def train_or_reuse(task, loop_cfg, out: Path, run_name: str, train_ds_fn, scale, log=print, val_ds_fn=None,
                   callbacks=None):
    """Train through trainers.loop.fit, or reuse `out/model.pt` from a finished run of the same config
    and data. An interrupted run with the same name resumes from its latest checkpoint. `val_ds_fn`:
    a dataset `task.evaluate` scores after every epoch; `callbacks`: Ray Train callbacks (Tune's)."""
    import torch

    from trainers.loop import fit, load_checkpoint_state

    model_file = out / "model.pt"
    if model_file.is_file():
        saved = torch.load(model_file, map_location="cpu", weights_only=True)
        if saved.get("run_name") == run_name:
            log(f"[train] {model_file} is up to date (run {run_name}); skipping training")
            return saved["state"], saved["history"]
    datasets = {"train": train_ds_fn(), **({"val": val_ds_fn()} if val_ds_fn else {})}
    result = fit(task, datasets, loop_cfg, storage_path=str(out / "checkpoints"), name=run_name,
                 workers=scale.workers, use_gpu=scale.use_gpu, cpus_per_worker=cpus_per_worker(scale, log),
                 callbacks=callbacks, placement_strategy=scale.placement_strategy)
    if result.error is not None:
        raise result.error
    state, history = load_checkpoint_state(result.checkpoint)
    tmp = model_file.with_name(f".{model_file.name}.{uuid.uuid4().hex}.tmp")
    torch.save({"run_name": run_name, "state": state, "history": history}, tmp)
    os.replace(tmp, model_file)
    return state, history


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float) + "\n")
    os.replace(tmp, path)


def guarded(fn) -> int:
    """Run the job; bad input becomes one clear line on stderr and exit code 2."""
    from datasets.audio import AudioError
    from datasets.shards import ShardError
    from datasets.voxceleb import LayoutError
    from trainers.config import ConfigError

    try:
        fn()
    except (ConfigError, ShardError, LayoutError, AudioError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def manifest_summary(manifests: dict, digests: dict) -> dict:
    """Per split: what metrics.json records of its shard set."""
    return {s: {"sha256": digests[s], "num_samples": m["num_samples"], "shards": len(m["shards"]),
                "skipped": len(m["skipped"])} for s, m in manifests.items()}


def write_report(out: Path, report: dict, table: str, plots: str, log=print) -> None:
    """metrics.json, results.md (the table), and the closing lines with where to look (`plots`)."""
    write_json(out / "metrics.json", report)
    (out / "results.md").write_text(table + "\n")
    log("\n" + table + f"\n\n[done] metrics: {out / 'metrics.json'}\n[done] plots:   {plots}")


def validate_task_config(cfg, make_task, unit: str = "samples per class") -> None:
    """Fail on bad names and parameters before any data is read: build the model once on 2 classes."""
    from trainers.config import ConfigError
    from trainers.loop import validate as validate_loop

    if "name" not in cfg.head:
        raise ConfigError("config key 'head.name' is required (e.g. --head arcface)")
    if cfg.scale.workers < 1:
        raise ConfigError("scale.workers must be >= 1")
    try:
        validate_loop(cfg.train)
        task = make_task(cfg, num_classes=2)
        task.build_model()
    except ValueError as exc:  # unknown encoder/head names, bad head or model parameters
        raise ConfigError(str(exc)) from exc
    if task.pk is not None and cfg.train.batch_size < 2 * task.pk:
        raise ConfigError(f"head {cfg.head['name']!r} groups K={task.pk} {unit}: train.batch_size must hold at "
                          f"least 2 classes (>= {2 * task.pk}), got {cfg.train.batch_size}")
