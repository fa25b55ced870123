"""The local Ray instance a workflow starts when no cluster is named (RAY_ADDRESS unset).

It is this run's own, whatever else runs on the host (another user's Ray, a benchmark's):
- addressed explicitly: the driver starts it with address="local" (never "auto", which would join the
  latest `ray start` on the host), and every task and actor gets its address in RAY_ADDRESS. Ray Train's
  placement-group watcher asks the state API whether a run's controller is alive; without an address it
  guesses among every Ray on the host ("Found multiple active Ray instances") and may ask the wrong one.
- on 127.0.0.1 only: GCS, raylet, workers, dashboard and the metrics ports (Ray binds its Prometheus
  ports on every interface unless the node is local-only; Ray's switch for that is the one it uses on
  laptops, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0).
- in its own temp dir `<tmp>/openset-ray-<uid>/<pid>`: removed when the run ends well; kept after a
  failure for its logs, until the next local run on the host starts (so session logs never accumulate).
- with idle worker processes kept: Ray keeps num_cpus idle workers and ends the others after 1 s idle, and each
  Ray Train run's own processes (controller, workers, split coordinator) pushed out the Ray Data workers that had
  imported torch and torchaudio, so every run's first epoch started new ones. Kept: num_cpus + 8 (measured, 3
  speaker runs of 4 epochs on 2 CPUs: first epochs 6.7-7.3 s -> 4.2 s, 96.8 s -> 87.4 s in all).
- without Ray Train's preemption watcher: an actor per run that polls whether a node is being drained (a spot
  instance reclaimed); nothing drains this one node, and its process start cost ~2 CPU-seconds of every run's
  ~25 (measured per process from /proc with a 1-epoch run). Clusters keep it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Optional

LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NO_PREEMPTION_WATCHER = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}   # read by Ray Train's controller
IDLE_WORKERS_KEPT = 8   # beyond num_cpus (see above)


def temp_root() -> Path:
    return Path(tempfile.gettempdir()) / f"openset-ray-{os.getuid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_dirs() -> list[Path]:
    """The temp dirs of local runs whose driver is gone (a failed run's logs, kept until now)."""
    removed = []
    for d in sorted(temp_root().glob("*")):
        if d.name.isdigit() and not _alive(int(d.name)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _environ(**values: str):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start(env_vars: Optional[dict] = None, **init_options) -> str:
    """Start this process's own local Ray on 127.0.0.1; returns its GCS address. `env_vars` go to every
    task and actor (beside RAY_ADDRESS); `init_options` to ray.init (num_cpus, include_dashboard...)."""
    import ray
    from ray._private import ray_constants

    remove_stale_temp_dirs()
    temp_dir = temp_root() / str(os.getpid())
    temp_dir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    runtime_env = {"env_vars": {**NO_PREEMPTION_WATCHER, **(env_vars or {}), "RAY_ADDRESS": address}}
    cpus = init_options.get("num_cpus") or os.cpu_count() or 1
    system_config = {"num_workers_soft_limit": int(cpus) + IDLE_WORKERS_KEPT}
    # the raylet, GCS and dashboard read both variables from the environment they start with; this driver
    # read the local-only switch when it imported Ray, so it is set here too while the node starts
    local_only, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        with _environ(RAY_GCS_SERVER_PORT=address.rsplit(":", 1)[1], **{LOCAL_ONLY: "0"}):
            ray.init(address="local", _temp_dir=str(temp_dir), runtime_env=runtime_env, _system_config=system_config,
                     **init_options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = local_only
    return ray.get_runtime_context().gcs_address


def stop(failed: bool = False) -> Optional[Path]:
    """Shut down the Ray this process started (or only disconnect from a cluster). Returns the temp dir
    kept for its logs after a failure; None when there was nothing to keep."""
    import ray

    ray.shutdown()
    temp_dir = temp_root() / str(os.getpid())
    if not temp_dir.exists():
        return None
    if failed:
        return temp_dir
    shutil.rmtree(temp_dir, ignore_errors=True)
    return None
