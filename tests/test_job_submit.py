"""`ray job submit --working-dir . -- python workflows/<speaker|sed|esc50_actions>.py` against a local head with
token auth on."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_head(temp: str) -> None:
    """Stop only the head started here: `ray stop` would also kill every other Ray on the machine
    (the test session's own instance included). Its daemons all name `temp` on their command line;
    its workers exit when their raylet does."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and temp.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def local_head():
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
    # Ray's daemons inherit ray start's stdout/stderr: give them a file, not a pipe that closes
    # (a daemon writing to a closed pipe dies, and the job agent with it).
    with open(os.path.join(temp, "ray-start.log"), "w") as log:
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
                        # every port free-picked: another Ray on this machine may hold the defaults
                        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                        f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                        f"--temp-dir={temp}"], env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield env, f"http://127.0.0.1:{dash}"
    finally:
        stop_head(temp)
        if not os.environ.get("KEEP_RAY_TMP"): shutil.rmtree(temp, ignore_errors=True)


WORKFLOWS = {
    "speaker": (["--epochs", "2", "--set", "demo.n_train_speakers=8", "--set", "demo.n_test_speakers=4"],
                lambda report: "veri_test2" in report["trials"]),
    "esc50_actions": (["--epochs", "2", "--model", "av_logreg", "--fold", "1"],
                      lambda report: report["results"]["av_logreg"]["sum"]["per_fold"].keys() == {"1"}),
    "sed": (["--epochs", "1", "--set", "demo.per_fold=6", "--set", "demo.scenes_per_class=2"],
            lambda report: report["results"]["20"]["full"]["folds"] == 1),
}


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_job_submit_runs_the_workflow(local_head, tmp_path, workflow):
    env, address = local_head
    out = tmp_path / "job-out"
    args, check = WORKFLOWS[workflow]
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(ROOT), "--",
           "python", f"workflows/{workflow}.py", "--out", str(out), *args]
    for _ in range(int(os.environ.get("JOB_TRIES", 30))):  # a fresh head answers "No available agent" until its job agent is up
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if "No available agent" not in proc.stderr + proc.stdout:
            break
        time.sleep(2)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "succeeded" in proc.stdout
    assert check(json.loads((out / "metrics.json").read_text()))


def test_job_submit_without_token_is_refused(local_head):
    env, address = local_head
    env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run([str(BIN / "ray"), "job", "list", f"--address={address}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
