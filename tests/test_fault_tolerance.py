"""A training worker is SIGKILLed mid-run from outside; the run finishes from its last checkpoint."""
import json
import os
import signal
import threading
import time

import pytest
from conftest import SMALL_TDNN

from trainers.config import load_config
from trainers.loop import HISTORY_FILE
from workflows.speaker import SpeakerConfig, run

pytestmark = pytest.mark.slow


def live_train_worker_pids(ray):
    # Ask this cluster's GCS (no dashboard needed): a process-name scan could hit another Ray's worker.
    from ray._private import state

    return [a["Pid"] for a in state.actors().values()
            if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]


def epochs_in(checkpoint) -> int:
    """Epochs a checkpoint holds (0 while Ray Train is still writing it)."""
    try:
        return len(json.loads((checkpoint / HISTORY_FILE).read_text()))
    except (OSError, ValueError):
        return 0


def registered_checkpoints(storage) -> int:
    """Checkpoints Ray Train's controller has registered (what a restarted worker group resumes from): its
    checkpoint manager writes them to a snapshot in the run folder. A checkpoint folder on disk may not
    be registered yet (measured: a kill two checkpoints in, 1.6 s epochs, restarted from scratch)."""
    count = 0
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            count += len(json.loads(snapshot.read_text()).get("checkpoint_results") or [])
        except (OSError, ValueError):
            continue
    return count


def kill_a_train_worker_after_checkpoints(ray, storage, stop, killed, last_epoch_to_kill_in=4):
    while not stop.is_set():
        # not near the end: a worker killed in the last epoch may go unnoticed by the controller before the run
        # completes
        done = sorted(epochs_in(p) for p in storage.glob("*/checkpoint_*") if p.is_dir())
        if done and done[-1] > last_epoch_to_kill_in:
            return
        if registered_checkpoints(storage) >= 1:
            for pid in live_train_worker_pids(ray):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        title = f.read().decode(errors="replace")
                except OSError:
                    continue
                if "RayTrainWorker" not in title:  # GCS lags: the process may host another actor by now
                    continue
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.1)


def test_worker_killed_run_resumes(ray_local, tmp_path):
    cfg = load_config(SpeakerConfig, None, ["train.epochs=7", "scale.workers=1", "train.max_failures=2",
                                            "demo.n_train_speakers=16", "demo.n_test_speakers=4",
                                            "eval.score_untrained=false", SMALL_TDNN])   # one extraction, not two
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_a_train_worker_after_checkpoints,
                               args=(ray_local, tmp_path / "checkpoints", stop, killed), daemon=True)
    watcher.start()
    try:
        report = run(cfg, tmp_path, log=print)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no training worker was found to kill"
    history = report["history"]
    assert [h["epoch"] for h in history] == list(range(1, 8))
    resumed = {h["resumed_from_epoch"] for h in history}
    assert max(resumed) >= 1, f"the run restarted from scratch: {history}"
