"""The ONE Tuner of the project: Ray Tune + Optuna (TPE, seeded, persisted in SQLite) + ASHA.

Each trial runs a workflow's own `run()` with the sampled config keys as overrides: its Ray Train
runs are Train V2 `TorchTrainer`s started from inside the trial (the trial is their driver), and
for per-epoch targets a `TuneReportCallback` forwards every epoch's validation metric to Tune, so
ASHA can stop weak trials early. The trial ends with one more report holding the final metrics.

Small-cluster trap (measured with Ray 2.60, trainers/resources.py): trials that reserve every CPU starve the Ray Data
tasks that feed them and the sweep hangs. `plan_concurrency` runs as many trials at once as fit while one CPU stays
free, and gives each trial its CPU budget (`scale.cpu_budget`), which its workers share.

An interrupted sweep resumes with `Tuner.restore` (finished trials are not rerun), and Optuna's
study lives in `OUT/optuna.db` (`optuna-dashboard sqlite:///OUT/optuna.db` or `optuna.load_study`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
from pathlib import Path

from datasets.atomic import write_json
from trainers.config import ConfigError, load_config
from trainers.resources import init_ray
from tuning.spaces import overrides, tune_domains
from tuning.target import SweepTarget

EXPERIMENT = "sweep"
STUDY_DB = "optuna.db"
SETTINGS = "sweep.json"


@dataclasses.dataclass
class SweepSettings:
    workflow: str
    space: dict                      # tuning.spaces.load_space()'s output
    trials: int
    scheduler: str = "asha"          # asha | fifo
    seed: int = 0
    max_concurrent: int = 0          # 0: as many as the cluster holds with one CPU left for Ray Data
    grace_period: int = 1            # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: int = 2        # ASHA: keep the best 1/reduction_factor at each rung
    config: str | None = None        # the workflow's YAML config the overrides apply to
    set: list = dataclasses.field(default_factory=list)   # the user's --set overrides (data roots included)


def plan_concurrency(cpus: float, gpus: float, workers: int, use_gpu: bool, trials: int,
                     requested: int = 0) -> tuple[int, float]:
    """(trials at once, CPUs each trial's training workers hold together: its `scale.cpu_budget`).
    CPU trials: each worker gets up to one CPU and one CPU stays free for Ray Data; `requested` can
    only lower that. GPU trials: one GPU per worker, as many trials as the GPUs up now hold, or
    `requested` (an autoscaling cluster starts with no GPU node: the trials' GPU requests are what
    make it add them). A workflow that runs several Ray Train runs at once (ESC-50's folds) splits
    its trial's budget among them."""
    usable = max(cpus - 1, 0.5)
    if use_gpu:
        concurrency = max(1, min(requested or int(gpus // workers), trials))
    else:
        fit = max(1, math.floor(usable / workers))
        concurrency = max(1, min(fit, trials, requested or fit))
    return concurrency, min(float(workers), usable / concurrency)


def trial_overrides(target: SweepTarget, settings: SweepSettings, sampled: dict, cpu_budget: float,
                    shared: list = ()) -> list:
    """Every override of one trial, weakest first: the target's, the space's fixed keys, the user's
    --set, what the target's `prepare` made for every trial, the concurrency plan's CPU budget, then
    the sampled values."""
    return [*target.overrides, *overrides(settings.space["fixed"], target.list_keys), *settings.set, *shared,
            f"scale.cpu_budget={cpu_budget:.4f}", *overrides(sampled, target.list_keys)]


def trial_config(target: SweepTarget, settings: SweepSettings, sampled: dict, cpu_budget: float,
                 shared: list = ()):
    return load_config(target.config_class, settings.config,
                       trial_overrides(target, settings, sampled, cpu_budget, shared))


def run_trial(config: dict, *, target: SweepTarget, settings: SweepSettings, cpu_budget: float, out: str,
              shared: list) -> None:
    """The Tune trainable: one workflow run into OUT/trials/<trial id>, final metrics reported last."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg = trial_config(target, settings, config, cpu_budget, shared)
    trial_out = Path(out) / "trials" / tune.get_context().get_trial_id()
    callbacks = [TuneReportCallback()] if target.per_epoch else None
    final = target.trial(cfg, trial_out, print, callbacks)
    tune.report({**final, "trial_out": str(trial_out), "final": True})


def _check_resumable(out: Path, settings: SweepSettings) -> bool:
    """True if OUT holds an interrupted sweep of the same settings; raises if of other settings."""
    saved = out / SETTINGS
    if not saved.is_file():
        return False
    old = json.loads(saved.read_text())
    if old != json.loads(json.dumps(dataclasses.asdict(settings))):
        raise ConfigError(f"{out} holds a sweep with other settings ({saved}): resume it with the same command, "
                          "or choose another --out")
    return True


def sweep(target: SweepTarget, settings: SweepSettings, out: Path, log=print):
    """Run (or resume) the sweep; returns (ResultGrid, concurrency). Stopped before every trial ended (Ctrl-C,
    SIGTERM): KeyboardInterrupt, after Tune saved the experiment state for a rerun to resume."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from trainers import tracking

    if settings.workflow != target.name:
        raise ConfigError(f"sweep settings are for workflow {settings.workflow!r}, the target is {target.name!r}")
    if settings.scheduler not in ("asha", "fifo"):
        raise ConfigError(f"scheduler must be asha or fifo, got {settings.scheduler!r}")
    if settings.scheduler == "asha" and not target.per_epoch:
        raise ConfigError(f"workflow {settings.workflow} reports its metric ({target.metric}) once, at the end: ASHA "
                          "has nothing to compare early; use --scheduler fifo")
    if settings.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {settings.trials}")
    if target.prepare and any(k.split(".")[0] in ("data", "demo") or k == "train.seed"
                              for k in settings.space["params"]):
        raise ConfigError(f"{settings.workflow} trials share one corpus and shard set, built before they start: "
                          "its data.*, demo.* and train.seed keys cannot be swept")
    # every key resolves before any trial starts: a misspelt key or bad value fails here, once
    probe = {k: _first_value(spec) for k, spec in settings.space["params"].items()}
    cfg = trial_config(target, settings, probe, 1.0)
    target.validate(cfg)

    out = out.resolve()
    resume = _check_resumable(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    init_ray(log)
    if settings.scheduler == "asha":
        _require_state_api()
    resources = ray.cluster_resources()
    use_gpu = cfg.scale.use_gpu if cfg.scale.use_gpu is not None else resources.get("GPU", 0) >= cfg.scale.workers
    concurrency, cpu_budget = plan_concurrency(resources.get("CPU", 1), resources.get("GPU", 0),
                                               cfg.scale.workers, use_gpu, settings.trials, settings.max_concurrent)
    log(f"[sweep] {settings.workflow}: {settings.trials} trials, {concurrency} at a time, each trial's "
        f"{cfg.scale.workers} worker(s) holding {cpu_budget:.2f} CPU in all; metric {target.metric} ({target.mode}), "
        f"scheduler {settings.scheduler}")
    shared = list(target.prepare(cfg, out, log)) if target.prepare else []
    trainable = tune.with_parameters(run_trial, target=target, settings=settings, cpu_budget=cpu_budget, out=str(out),
                                     shared=shared)
    # The trial only drives: its Ray Train workers and Ray Data tasks request their own CPUs. Even 0.01 CPU
    # here leaves 0.99 beside a 1-CPU worker on 2 CPUs, and a 1-CPU read task then never starts (measured:
    # a hang). A bundle cannot be empty, so the trial holds a little memory instead.
    trainable = tune.with_resources(trainable, {"cpu": 0, "memory": 64 * 1024**2})
    path = out / EXPERIMENT
    if resume and tune.Tuner.can_restore(str(path)):
        log(f"[sweep] resuming the interrupted sweep in {path} (finished trials are kept)")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        write_json(out / SETTINGS, dataclasses.asdict(settings))
        searcher = OptunaSearch(metric=target.metric, mode=target.mode,
                                sampler=optuna.samplers.TPESampler(seed=settings.seed), study_name=EXPERIMENT,
                                storage=optuna.storages.RDBStorage(f"sqlite:///{out / STUDY_DB}"))
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=target.budget(cfg) + 1,
                                  grace_period=settings.grace_period, reduction_factor=settings.reduction_factor) \
            if settings.scheduler == "asha" else FIFOScheduler()
        tuner = tune.Tuner(
            trainable, param_space=tune_domains(settings.space["params"]),
            tune_config=tune.TuneConfig(metric=target.metric, mode=target.mode, num_samples=settings.trials,
                                        search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
                                        scheduler=scheduler, max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out),
                                      callbacks=tracking.sweep_callbacks(out, settings.workflow, log) or None))
    sigint_before = signal.getsignal(signal.SIGINT)
    results = tuner.fit()
    if _interrupted(results, settings.trials, sigint_before):
        # Tune's SIGINT handler (SIGTERM comes through it too) saves the experiment and returns what it has:
        # an unfinished sweep must not be reported as a finished one
        raise KeyboardInterrupt
    return results, concurrency


def _interrupted(results, trials: int, sigint_before) -> bool:
    """Whether Tune's fit returned because of a stop signal. Tune stops the trials running at that moment as if
    they had ended (TERMINATED), so counting ended trials misses an interrupt during the last trial (measured: a
    2-trial sweep stopped during its second). Tune's SIGINT handler puts the previous handler back when a stop
    signal reaches it, and only then; it is installed only from the main thread."""
    if results.num_terminated + results.num_errors < trials:
        return True
    tune_catches = threading.current_thread() is threading.main_thread() and \
        not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    return tune_catches and signal.getsignal(signal.SIGINT) is sigint_before


def _require_state_api() -> None:
    """ASHA stops trials mid-run. Ray Train frees a stopped run's placement group from a watcher that
    asks the state API (the dashboard) whether the run's controller is alive; without it the CPUs stay
    reserved and the next trial waits forever (measured: a hang with include_dashboard=False)."""
    import ray
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    ours = {n["NodeID"] for n in ray.nodes()}
    try:
        # without a dashboard of its own the client falls back to 127.0.0.1:8265, which may be another Ray's
        answered = {n.node_id for n in list_nodes(address=ray.get_runtime_context().gcs_address, timeout=30)}
    except RayStateApiException:
        answered = set()
    if not answered & ours:
        raise ConfigError("ASHA needs Ray's state API (the dashboard) so that Ray Train can free the resources of "
                          "the trials it stops; this Ray instance has none. Start Ray with the dashboard "
                          "(ray.init(include_dashboard=True) / ray start --include-dashboard=true) or use "
                          "--scheduler fifo.")


def _first_value(spec: dict):
    kind, args = next(iter(spec.items()))
    return args[0] if kind in ("choice", "int") else float(args[0])
