"""SIGTERM (what schedulers and `timeout` send) stops a workflow as Ctrl-C does: one `error:` line, exit code
130, the local Ray it started shut down with every one of its processes (raylet, GCS, dashboard, agents,
workers), and a rerun of the same command resumes from the last checkpoint. While it runs, that local Ray
listens on 127.0.0.1 only (metrics ports included); its temp dir is kept for its logs after the interrupt
and removed when the rerun starts, and the rerun's own is removed when it ends well."""
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
from conftest import cmdline, kill_marked, listening_addresses, processes_with

from trainers.local_ray import temp_root

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_stops_the_run_and_its_ray_and_a_rerun_resumes(tmp_path):
    marker = f"OPENSET_INTERRUPT_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}   # its own local Ray
    env[marker.split("=")[0]] = marker.split("=")[1]
    cmd = [sys.executable, str(ROOT / "workflows" / "speaker.py"), "--out", str(tmp_path / "o"), "--epochs", "6",
           "--set", "demo.n_train_speakers=8", "--set", "demo.n_test_speakers=2", "--set", "train.batch_size=8",
           "--set", "model.encoder_args={hid_dim: 32, stats_dim: 64}", "--set", "eval.score_untrained=false"]
    run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(run.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 600   # two epochs after the first: its checkpoint is registered with Ray Train by then
    while time.time() < deadline and run.poll() is None and not any("[train] epoch 3/6" in x for x in lines):
        time.sleep(0.2)
    assert run.poll() is None, "".join(lines)[-3000:]
    ports = listening_addresses(processes_with(marker))
    # all of Ray's listen on loopback; torch.distributed's rendezvous store, which Ray Train's rank 0 opens for
    # DDP while training, binds every interface (torch has no bind address for it): one port, the only one
    wide = {a: cmdline(pid) for a, pid in ports.items() if not a.startswith("127.0.0.1:")}
    assert len(ports) > 5 and len(wide) <= 1 and all("RayTrainWorker" in c for c in wide.values()), wide
    run.send_signal(signal.SIGTERM)
    code = run.wait(timeout=300)
    reader.join(timeout=10)
    output = "".join(lines)
    try:
        assert code == 130, output[-3000:]
        assert "error: interrupted; rerun the same command to resume" in output and "Fatal Python error" not in output
        kept = temp_root() / str(run.pid)
        assert f"Ray's logs of this run: {kept}" in output and (kept / "session_latest" / "logs").is_dir()
        deadline = time.time() + 120   # Ray's own processes exit on their own once the driver shut them down
        while time.time() < deadline and processes_with(marker):
            time.sleep(1)
        assert not processes_with(marker), [cmdline(p) for p in processes_with(marker)]
    finally:
        kill_marked(marker)   # never leave them to the rest of the suite

    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert not kept.exists() and "Ray's logs" not in again.stderr
    assert not [d for d in temp_root().glob("*") if not Path("/proc", d.name).exists()], "a dead run's temp dir"
    history = json.loads((tmp_path / "o" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 7)) and max(h["resumed_from_epoch"] for h in history) >= 1
    # a clean run's console: the project's lines only (no Ray INFO, progress or error-level lines); the
    # detail, Ray's included, is in OUT/logs/run.log (both runs' lines: it is appended to)
    console = (again.stdout + again.stderr).splitlines()
    assert len(console) <= 60 and "[train] epoch 6/6" in again.stdout, again.stdout + again.stderr
    assert not [x for x in console if "INFO " in x or " E " in x or "Warning" in x], console   # Ray: "\tINFO "
    log = (tmp_path / "o" / "logs" / "run.log").read_text()
    assert "[train] epoch 6/6" in log and "\tINFO " in log and "Running Dataset" in log, log[-3000:]
    assert len(log.splitlines()) > 2 * len(console)
