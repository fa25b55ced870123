"""The ONE training loop of the project, on Ray Train V2 (`TorchTrainer`).

A workflow supplies a `TrainTask`: how to build the model (which owns its loss, OpenSphere style),
how to turn its dataset shard into batches for an epoch, and what to do at each epoch start (e.g.
margin warm-up). Everything Ray-specific stays here: workers, device placement, DDP, per-epoch
`ray.train.report` with a checkpoint, resume from the latest checkpoint, `FailureConfig`.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from trainers.epoch_prefetch import prefetched_epochs
from trainers.loop_config import LoopConfig  # noqa: F401  (re-exported: the loop's settings)
from trainers.resources import ScaleConfig, auto_use_gpu, cpus_per_worker

CHECKPOINT_FILE = "state.pt"
HISTORY_FILE = "history.json"
# Ray Train's controller polls its workers every 2 s by default and notices a finished (or failed) run only at
# the next poll: ~3 s of every run's end on a small run (measured: a 1-worker no-op fit 14.2 s -> 11.4 s at
# 0.2 s). 0.5 s costs a few tiny RPCs per worker per second; an interval set in the environment wins.
HEALTH_CHECK_INTERVAL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
LOCAL_CHECKPOINT = "local_checkpoint_epoch_"
# Ray Train's local mode keeps its run state in one process-wide global: one local-mode run at a time
_LOCAL_MODE = threading.Lock()


class TrainTask(Protocol):
    """What a workflow plugs into the loop. Must be picklable (it travels to every worker)."""

    def build_model(self) -> nn.Module:
        """A module whose `forward(**batch)` returns (loss, number_correct, number_of_samples)."""

    def batches(self, shard: Any, epoch: int, rank: int) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of CPU batches from this worker's Ray Data shard."""

    def on_epoch_start(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Hook for schedules (margin warm-up...). Returns values to log."""

    # optional: on_lr_step(model) -> dict, called at each epoch in LoopConfig.lr_milestones
    # optional: evaluate(model, val_shard) -> dict, called on rank 0 after every epoch when `fit` is
    #   given a "val" dataset; its values join the epoch's reported metrics (Tune's ASHA reads them)


def lr_at(cfg: LoopConfig, epoch: int, history: list[dict] | None = None) -> float:
    if cfg.monitor and cfg.monitor_lr:
        return plateau_lr(cfg, [h[cfg.monitor] for h in (history or [])[:epoch]])
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / (cfg.warmup_epochs + 1)
    if cfg.lr_milestones:
        return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)
    span = max(cfg.epochs - cfg.warmup_epochs - 1, 1)
    progress = min((epoch - cfg.warmup_epochs) / span, 1.0)
    return cfg.lr * math.exp(progress * math.log(cfg.final_lr / cfg.lr))


def plateau_lr(cfg: LoopConfig, values: list[float]) -> float:
    """The lr after ReduceLROnPlateau has seen `values` (one per epoch), replayed from the history so
    that a resumed run continues with the same lr."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.plateau_factor,
                                                       patience=cfg.plateau_patience)
    for v in values:
        sched.step(v)
    return opt.param_groups[0]["lr"]


def _optimizer(cfg: LoopConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}'; choose adam or sgd")


def validate(cfg: LoopConfig) -> None:
    _optimizer(cfg, [torch.zeros(1, requires_grad=True)])
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"train.{name} must be >= 1, got {getattr(cfg, name)}")
    if not (cfg.lr > 0 and cfg.final_lr > 0):
        raise ValueError("train.lr and train.final_lr must be > 0")
    if not all(isinstance(m, int) and 0 < m < cfg.epochs for m in cfg.lr_milestones):
        raise ValueError(f"train.lr_milestones must be epochs in (0, train.epochs={cfg.epochs}), "
                         f"got {cfg.lr_milestones}")
    if not 0 < cfg.lr_gamma <= 1:
        raise ValueError(f"train.lr_gamma must be in (0, 1], got {cfg.lr_gamma}")
    if cfg.monitor and cfg.monitor_lr and (cfg.lr_milestones or cfg.warmup_epochs):
        raise ValueError("train.monitor (lr on plateau) excludes train.lr_milestones and train.warmup_epochs")
    if not (0 < cfg.plateau_factor < 1 and cfg.plateau_patience >= 0):
        raise ValueError("train.plateau_factor must be in (0, 1) and train.plateau_patience >= 0")


def _all_reduce_sum(values: list[float], device) -> list[float]:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _in_lockstep(batches: Iterator[dict], device) -> Iterator[dict]:
    """Stop every worker at the step where the first one runs out of batches: DDP needs the same
    number of steps everywhere, and some tasks (P x K grouping) yield a data-dependent count."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        yield from batches
        return
    it = iter(batches)
    try:
        while True:
            batch = next(it, None)
            flag = torch.tensor([batch is not None], dtype=torch.int32, device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            if not flag.item():
                return
            yield batch
    finally:
        close = getattr(it, "close", None)
        if close:
            close()


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch
    task: TrainTask = config["task"]
    cfg: LoopConfig = config["loop"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()

    model = task.build_model()
    optimizer = _optimizer(cfg, model.parameters())
    start_epoch, history, best = 0, [], None   # best: {"value", "epoch", "model"} of train.monitor
    local_dir = config.get("local_checkpoints")   # local mode: Ray Train persists nothing, the loop keeps its own
    checkpoint = ray.train.get_checkpoint() if local_dir is None else _latest_local_checkpoint(local_dir)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
            history = json.loads((Path(d) / HISTORY_FILE).read_text())
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"], state.get("best")
        if rank == 0:
            _progress(f"[train] resuming from the checkpoint of epoch {start_epoch}")
    resumed_from = start_epoch
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model
    shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if config.get("validate") and rank == 0 else None

    run_t0 = time.perf_counter()   # this attempt's start: elapsed and ETA count the epochs it trained
    steps_per_epoch = 0            # known after one epoch: the step lines' total and ETA
    epochs = range(start_epoch, cfg.epochs)
    with prefetched_epochs(lambda e: task.batches(shard, e, rank), epochs, cfg.prefetch_batches) as epoch_batches:
        for epoch in epochs:
            lr = lr_at(cfg, epoch, history)
            for group in optimizer.param_groups:
                group["lr"] = lr
            extra = task.on_epoch_start(core, epoch) or {}
            if epoch in cfg.lr_milestones and hasattr(task, "on_lr_step"):
                extra.update(task.on_lr_step(core) or {})
            model.train()
            t0 = time.perf_counter()
            loss_sum = correct = count = 0.0
            step = 0
            for step, batch in enumerate(_in_lockstep(epoch_batches(epoch), device), 1):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                loss, n_correct, n = model(**batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                loss_sum += float(loss.detach()) * n
                correct += float(n_correct)
                count += n
                if rank == 0 and cfg.log_every_steps and step % cfg.log_every_steps == 0:
                    _progress(_step_line(epoch, cfg.epochs, step, steps_per_epoch, loss_sum / count, correct / count,
                                         count, time.perf_counter() - t0))
            elapsed = time.perf_counter() - t0
            steps_per_epoch = step if count else steps_per_epoch
            loss_sum, correct, count = _all_reduce_sum([loss_sum, correct, count], device)
            if count == 0:
                raise RuntimeError(f"epoch {epoch + 1}: no training batches (fewer samples than train.batch_size="
                                   f"{cfg.batch_size} per worker?)")
            metrics = {"epoch": epoch + 1, "loss": loss_sum / count, "acc": correct / count, "lr": lr,
                       "samples_per_s": count / elapsed, "epoch_time_s": elapsed, "resumed_from_epoch": resumed_from,
                       **{k: float(v) for k, v in extra.items()}}
            if val_shard is not None:
                core.eval()
                with torch.no_grad():
                    metrics.update({k: float(v) for k, v in task.evaluate(core, val_shard).items()})
            if cfg.monitor:
                if rank == 0 and cfg.monitor not in metrics:
                    raise RuntimeError(f"train.monitor={cfg.monitor!r} is not among the validation metrics "
                                       f"{sorted(metrics)}")
                # only rank 0 validates: every rank needs the value for the next epoch's lr
                metrics[cfg.monitor] = _all_reduce_sum([metrics.get(cfg.monitor, 0.0)], device)[0]
                value = metrics[cfg.monitor]
                if rank == 0 and (best is None or math.isnan(best["value"]) or value > best["value"]):
                    best = {"value": value, "epoch": epoch + 1,
                            "model": {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}}
            history.append(metrics)
            with tempfile.TemporaryDirectory() as d:
                ckpt = None
                if rank == 0:
                    torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                                **({"best": best} if best else {})}, Path(d) / CHECKPOINT_FILE)
                    (Path(d) / HISTORY_FILE).write_text(json.dumps(history))
                    kept = d if local_dir is None else _keep_local(d, local_dir, epoch + 1, cfg.checkpoints_to_keep)
                    ckpt = ray.train.Checkpoint.from_directory(kept)
                    done, left = epoch + 1 - start_epoch, cfg.epochs - epoch - 1
                    _progress(f"[train] epoch {epoch + 1}/{cfg.epochs} loss {metrics['loss']:.3f} "
                              f"acc {metrics['acc']:.3f} lr {lr:.2e} {metrics['samples_per_s']:.0f} samples/s "
                              f"({elapsed:.1f}s) " + _elapsed_eta(time.perf_counter() - run_t0, done, left))
                ray.train.report(metrics, checkpoint=ckpt)


def _local_checkpoints(local_dir: str) -> list[Path]:
    """Local mode's finished checkpoints, oldest first (a `.tmp` copy in progress is not one)."""
    return sorted(Path(local_dir).glob(f"{LOCAL_CHECKPOINT}*[0-9]"))


def _latest_local_checkpoint(local_dir: str):
    import ray.train

    found = _local_checkpoints(local_dir)
    return ray.train.Checkpoint.from_directory(str(found[-1])) if found else None


def _keep_local(d: str, local_dir: str, epoch: int, keep: int | None) -> str:
    """Local mode's checkpoint of `epoch`: `d` copied into local_dir under a temporary name, renamed last (an
    interrupted copy is never taken for a checkpoint); only the newest `keep` stay."""
    final = Path(local_dir) / f"{LOCAL_CHECKPOINT}{epoch:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(d, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in _local_checkpoints(local_dir)[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
    return str(final)


def tensor_batches(shard, columns: dict, batch_size: int, shuffle_buffer: int, seed: int, epoch: int,
                   rank: int) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of this worker's locally shuffled batches (seeded per seed, epoch and rank), with
    each column of `columns` ({name: numpy dtype}) as a CPU tensor."""
    import numpy as np
    local_seed = int(np.random.default_rng([seed, epoch, rank]).integers(2**31))
    for b in shard.iter_batches(batch_size=batch_size, batch_format="numpy",
                                local_shuffle_buffer_size=shuffle_buffer, local_shuffle_seed=local_seed):
        # writable: Ray may hand read-only arrays, which torch warns about (copied only then)
        yield {k: torch.from_numpy(np.require(b[k], dtype, ["C", "W"])) for k, dtype in columns.items()}


def _elapsed_eta(elapsed: float, done: int, left: int) -> str:
    """"elapsed 1m05s, ETA 2m10s": the time so far, and the epochs left at the mean time of those done."""
    return f"elapsed {_clock(elapsed)}, ETA {_clock(elapsed / max(done, 1) * left)}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _step_line(epoch: int, epochs: int, step: int, steps_per_epoch: int, loss: float, acc: float, samples: float,
               elapsed: float) -> str:
    """A progress line inside an epoch (rank 0's running means; the epoch line has all ranks')."""
    total, eta = "", ""
    if steps_per_epoch >= step:   # a previous epoch's step count: the total and the epoch's ETA
        total, eta = f"/{steps_per_epoch}", f", epoch ETA {_clock(elapsed / step * (steps_per_epoch - step))}"
    return (f"[train] epoch {epoch + 1}/{epochs} step {step}{total} loss {loss:.3f} acc {acc:.3f} "
            f"{samples / elapsed:.0f} samples/s{eta}")


def _progress(line: str) -> None:
    """A progress line from a training worker, shown once on the driver. Ray Train patches print()
    in its workers to log to its own logger and, since Ray wraps sys.stdout, to print as well: a plain
    print() reaches the driver twice (measured, Ray 2.60); a print to the real stdout is not patched."""
    print(line, file=sys.__stdout__, flush=True)


def fit(task: TrainTask, datasets: dict, loop: LoopConfig, *, storage_path: str, name: str, workers: int = 1,
        use_gpu: bool | None = None, cpus_per_worker: float = 1.0, callbacks: list | None = None,
        placement_strategy: str = "PACK"):
    """Train with `workers` Ray Train workers, or with 0 in Ray Train's local mode (the training function in this
    process). A rerun with the same (storage_path, name) resumes. `datasets` holds "train" (split among the
    workers) and optionally "val" (whole, evaluated by rank 0 after every epoch through `task.evaluate`)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from trainers.config import ConfigError

    if loop.monitor and "val" not in datasets:
        raise ValueError(f"train.monitor={loop.monitor!r} needs a validation dataset")
    local = workers == 0
    if local and callbacks:
        raise ConfigError("scale.local_mode runs no Ray Train callbacks: --tracker and Tune sweeps need "
                          "scale.local_mode=false")
    use_gpu = bool(use_gpu) if local else auto_use_gpu(workers) if use_gpu is None else use_gpu
    os.environ.setdefault(*HEALTH_CHECK_INTERVAL)   # read by the controller (Ray Train propagates it)
    # Blocks reach the workers in plan order, not in task-completion order: with the seeded shuffle
    # and crops, a 1-worker CPU run then gives the same metrics every time.
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True
    config = {"task": task, "loop": loop, "validate": "val" in datasets}
    if local:   # local mode applies no DataConfig and persists no checkpoint: both done here
        for ds in datasets.values():
            ds.context.execution_options.preserve_order = True
        config["local_checkpoints"] = os.path.join(storage_path, name)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, placement_strategy=placement_strategy,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(
            name=name,
            storage_path=os.path.abspath(storage_path) if "://" not in storage_path else storage_path,
            failure_config=FailureConfig(max_failures=loop.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=loop.checkpoints_to_keep),
            callbacks=callbacks or None,
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest),
    )
    if not local:
        return trainer.fit()
    from ray.train.v2._internal.execution.train_fn_utils import set_train_fn_utils

    with _LOCAL_MODE:
        try:
            return trainer.fit()
        finally:
            # local mode leaves its run state set, and this process then passes for a Ray Train worker (Ray Data's
            # iterators ask it for a device): Ray 2.60 has no public call that clears it
            set_train_fn_utils(None)


def load_checkpoint_state(checkpoint) -> tuple[dict, list[dict]]:
    """(state dict with 'model', training history) from a Ray Train checkpoint."""
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        history = json.loads((Path(d) / HISTORY_FILE).read_text())
    return state, history


def check_batches(num_samples: int, loop: LoopConfig, workers: int, what: str = "training samples") -> None:
    """Before training starts: every worker must get at least one full batch (the embedding tasks drop
    a last partial one), or the first epoch fails inside Ray Train, after its start-up, and retries."""
    from trainers.config import ConfigError

    per_worker = num_samples // max(workers, 1)
    if per_worker < loop.batch_size:
        raise ConfigError(f"train.batch_size={loop.batch_size} is larger than the {per_worker} {what} each of the "
                          f"{workers} training worker(s) gets ({num_samples} in all): lower train.batch_size or "
                          "scale.workers")


def train_or_reuse(task: TrainTask, loop: LoopConfig, out: Path, run_name: str, train_ds_fn, scale: ScaleConfig,
                   log=print, val_ds_fn=None, callbacks=None) -> tuple[dict, list[dict]]:
    """Train through `fit`, or reuse `out/model.pt` from a finished run of the same name (the name
    hashes the config and the data). An interrupted run with the same name resumes from its latest
    checkpoint. `train_ds_fn` / `val_ds_fn` build the datasets only when training runs; `val_ds_fn`:
    a dataset `task.evaluate` scores after every epoch; `callbacks`: Ray Train callbacks (Tune's); the job's
    tracking session (`--tracker`) adds its own, which logs every epoch.
    Returns ({"model": state dict, "epoch": epochs trained}, training history); with train.monitor the
    model is the best epoch's, and "best_epoch" says which."""
    from datasets.atomic import atomic_path
    from trainers import tracking

    model_file = Path(out) / "model.pt"
    if model_file.is_file():
        saved = torch.load(model_file, map_location="cpu", weights_only=True)
        if saved.get("run_name") == run_name:
            log(f"[train] {model_file} is up to date (run {run_name}); skipping training")
            return saved["state"], saved["history"]
    storage = Path(out) / "checkpoints"
    others = [d for d in storage.glob("*") if d.is_dir() and d.name != run_name]
    if others:
        size = sum(f.stat().st_size for d in others for f in d.rglob("*") if f.is_file()) / 2**20
        log(f"[train] {storage} also holds {len(others)} unfinished run(s) of other configs ({size:.0f} MB), kept "
            "so that a rerun of that config resumes: delete them to free the space")
    datasets = {"train": train_ds_fn(), **({"val": val_ds_fn()} if val_ds_fn else {})}
    where = "in this process (Ray Train local mode)" if scale.local_mode else f"on {scale.workers} worker(s)"
    log(f"[train] run {run_name}: {loop.epochs} epochs {where}, checkpoints in {storage}")
    t0 = time.perf_counter()
    result = fit(task, datasets, loop, storage_path=str(storage), name=run_name,
                 workers=0 if scale.local_mode else scale.workers, use_gpu=scale.use_gpu,
                 cpus_per_worker=cpus_per_worker(scale, log),
                 callbacks=[*(callbacks or []), *tracking.epoch_callbacks(out)],
                 placement_strategy=scale.placement_strategy)
    if result.error is not None:
        raise result.error
    state, history = load_checkpoint_state(result.checkpoint)
    best = state.get("best")
    state = {"model": best["model"] if best else state["model"], "epoch": state["epoch"],   # the optimizer stays
             **({"best_epoch": best["epoch"]} if best else {})}                             # in the checkpoints only
    with atomic_path(model_file) as tmp:
        torch.save({"run_name": run_name, "state": state, "history": history}, tmp)
    best_note = f", best epoch {best['epoch']}" if best else ""
    log(f"[train] run {run_name} done in {_clock(time.perf_counter() - t0)}{best_note}: {model_file}")
    # model.pt now holds the finished run: its checkpoints only ever served to resume it
    shutil.rmtree(storage / run_name, ignore_errors=True)
    return state, history
