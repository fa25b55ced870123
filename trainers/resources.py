"""Ray start-up and CPU budgets: how many CPUs each training worker or inference actor may hold.

Small-cluster trap (Ray 2.60 measured here): workers or actors that reserve every CPU starve the
Ray Data read tasks that feed them, and the run hangs instead of failing. Every budget below
therefore leaves one CPU to Ray Data unless the user sets one explicitly.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import threading
from typing import Callable, Optional


@dataclasses.dataclass
class ScaleConfig:
    """The `scale` config section of every workflow."""
    workers: int = 1
    cpus_per_worker: Optional[float] = None   # None: an equal share of cpu_budget, at most 1
    cpu_budget: Optional[float] = None        # CPUs all training workers of the run hold together; None: the
                                              # cluster's but one, left for Ray Data (a sweep sets each trial's)
    use_gpu: Optional[bool] = None            # None: use GPUs when the cluster has one per worker
    placement_strategy: str = "PACK"          # Ray Train's: PACK (fewest nodes) | SPREAD (one worker per node)
    local_mode: bool = False                  # Ray Train's local mode: each training run in this process (no
                                              # worker actors; ~15 s less a run on 2 CPUs) and its evaluation (no
                                              # inference actors); Ray Data and attacks stay on the cluster. No
                                              # fault tolerance, callbacks (--tracker, Tune) or DDP; runs one at
                                              # a time (trainers/loop.py)


def init_ray(log=print) -> None:
    """Connect to the cluster RAY_ADDRESS names (`ray job submit` sets it), or start this run's own local
    instance (trainers/local_ray.py: on 127.0.0.1, addressed explicitly, in its own temp dir)."""
    import ray

    from trainers import local_ray

    if ray.is_initialized():
        return
    # ray.init installs its own SIGTERM handler (sys.exit, which skips Tune's save of a sweep's state):
    # keep the one in force, the workflows' (it stops the run as Ctrl-C does)
    in_main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if in_main else None
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        address = local_ray.start(log_to_driver=True)
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)
    where = os.environ.get("RAY_ADDRESS") or f"its own local Ray instance at {address}"
    log(f"[ray] connected to {where}: {ray.cluster_resources().get('CPU', 0):.0f} CPUs, "
        f"{ray.cluster_resources().get('GPU', 0):.0f} GPUs")


def cpus_leaving_one_for_data(n: int, budget: float | None = None) -> float:
    """CPUs for each of `n` long-lived workers or actors so that at least one CPU stays free for the
    Ray Data read tasks that feed them: on a small cluster, n actors of 1 CPU each would take every
    CPU and the read task would wait forever (a deadlock, not an error). `budget`: the CPUs the n may
    hold together (default: the cluster's but one)."""
    import ray

    if budget is None:
        budget = max(ray.cluster_resources().get("CPU", 1) - 1, 0.5)
    return min(1.0, budget / max(n, 1))


def inference_actors(scale: ScaleConfig) -> int:
    """Inference actors for a run's evaluation: one per training worker; none in local mode, where the
    model runs in this process too (`inference.infer`)."""
    return 0 if scale.local_mode else scale.workers


def auto_use_gpu(workers: int) -> bool:
    """Use GPUs when the cluster has one per worker (a GPU cluster); CPU otherwise."""
    import ray

    return ray.cluster_resources().get("GPU", 0) >= workers


def gpus_per_actor(n: int, use_gpu: bool | None) -> float:
    """GPUs each of `n` inference actors requests: 0 without GPUs; else the cluster's GPUs shared evenly,
    1/k each with k = ceil(n / GPUs) actors per GPU (a fraction that packs whole on each GPU; inference
    alone rarely fills one), at most one each. `use_gpu` None: when the cluster has a GPU. No GPU up yet
    (an autoscaling cluster at 0 GPU pods, use_gpu forced): one whole GPU each, which the autoscaler can
    satisfy by starting GPU nodes."""
    import math

    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if not (gpus > 0 if use_gpu is None else use_gpu):
        return 0.0
    if gpus <= 0:
        return 1.0
    # Ray keeps resource amounts to 4 decimals: rounding down keeps k of them within one GPU
    return math.floor(1e4 / math.ceil(max(n, 1) / gpus)) / 1e4


def cpus_per_worker(scale: ScaleConfig, log=print) -> float:
    """Leave at least one CPU to Ray Data, or the data tasks that feed training starve."""
    if scale.cpus_per_worker is not None:
        return scale.cpus_per_worker
    per = cpus_leaving_one_for_data(scale.workers, scale.cpu_budget)
    if per < 1.0:
        log(f"[ray] {scale.workers} workers: {per:.2f} CPU each, leaving one for Ray Data")
    return per


def parallel_runs_scale(scale: ScaleConfig, runs: int, log=print) -> ScaleConfig:
    """`scale` for `runs` Ray Train runs submitted together: their workers share the CPU budget (the
    cluster's CPUs but one, which stays free for the Ray Data tasks that feed them all), unless
    cpus_per_worker is set."""
    if scale.cpus_per_worker:
        return scale
    together = dataclasses.replace(scale, workers=scale.workers * runs)
    return dataclasses.replace(scale, cpus_per_worker=cpus_per_worker(together, log))


def in_parallel(fn: Callable, items: list) -> dict:
    """fn(item) for every item at once (e.g. each held-out fold's Ray Train run); {item: result}."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = {item: pool.submit(fn, item) for item in items}
        return {item: fut.result() for item, fut in futures.items()}
