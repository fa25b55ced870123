"""A training worker is SIGKILLed mid-run from outside; the run finishes from its last checkpoint."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from trainers.config import load_config
from workflows.speaker import SpeakerConfig, run

pytestmark = pytest.mark.slow


def processes():
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue


def kill_a_train_worker_after_first_checkpoint(storage, stop, killed):
    while not stop.is_set():
        # two checkpoints on disk: the first is surely registered with Ray Train by now
        if len([p for p in storage.glob("*/checkpoint_*") if p.is_dir()]) >= 2:
            for pid, cmd in processes():
                if "RayTrainWorker" in cmd:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(cmd)
                    return
        time.sleep(0.2)


def test_worker_killed_run_resumes(ray_local, tmp_path):
    cfg = load_config(SpeakerConfig, None, ["train.epochs=8", "scale.workers=1", "train.max_failures=2",
                                            "demo.n_train_speakers=8", "demo.n_test_speakers=4",
                                            "model.encoder_args={hid_dim: 64}"])
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_a_train_worker_after_first_checkpoint,
                               args=(tmp_path / "checkpoints", stop, killed), daemon=True)
    watcher.start()
    try:
        report = run(cfg, None, tmp_path, log=print)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no training worker was found to kill"
    history = report["history"]
    assert [h["epoch"] for h in history] == list(range(1, 9))
    resumed = {h["resumed_from_epoch"] for h in history}
    assert max(resumed) >= 1, f"the run restarted from scratch: {history}"
