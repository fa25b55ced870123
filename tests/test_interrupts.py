"""SIGTERM (what schedulers and `timeout` send) stops a workflow as Ctrl-C does: one `error:` line, exit code
130, the local Ray it started shut down with every one of its processes (raylet, GCS, dashboard, agents,
workers), and a rerun of the same command resumes from the last checkpoint."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]

ROOT = Path(__file__).resolve().parents[1]


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment holds `marker` (every descendant inherits it, whatever its session)."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:   # gone, or not ours to read
            continue
    return found


def test_sigterm_stops_the_run_and_its_ray_and_a_rerun_resumes(tmp_path):
    marker = f"OPENSET_INTERRUPT_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}   # its own local Ray
    env[marker.split("=")[0]] = marker.split("=")[1]
    cmd = [sys.executable, str(ROOT / "workflows" / "speaker.py"), "--out", str(tmp_path / "o"), "--epochs", "20",
           "--set", "demo.n_train_speakers=8", "--set", "demo.n_test_speakers=2", "--set", "train.batch_size=8",
           "--set", "model.encoder_args={hid_dim: 32}"]
    run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 600   # two epochs after the first: its checkpoint is registered with Ray Train by then
    while time.time() < deadline and run.poll() is None and not any("[train] epoch 3/20" in x for x in lines):
        time.sleep(0.2)
    assert run.poll() is None, "".join(lines)[-3000:]
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=300)
    reader.join(timeout=10)
    output = "".join(lines)
    try:
        assert code == 130, output[-3000:]
        assert "error: interrupted; rerun the same command to resume" in output and "Fatal Python error" not in output
        deadline = time.time() + 60   # Ray's own processes exit on their own once the driver shut them down
        while time.time() < deadline and processes_with(marker):
            time.sleep(1)
        assert not processes_with(marker), [open(f"/proc/{p}/cmdline").read() for p in processes_with(marker)]
    finally:
        for pid in processes_with(marker):   # never leave them to the rest of the suite
            os.kill(pid, signal.SIGKILL)

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    history = json.loads((tmp_path / "o" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 21)) and max(h["resumed_from_epoch"] for h in history) >= 1
