"""Shared fixtures: a real local Ray instance shared by the modules (started here, not mocked), and an
unrelated Ray instance beside a test's own (what another user's run on the same host is)."""
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("RAY_ACCEPT_CALLABLE_ON_FUNCTION", "1")
# a stalled Ray Data pipeline fails the test in 10 minutes instead of Ray's default 30
os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "600")
# Every Ray the suite starts (the shared one, the workflows' own, the job heads) inherits these. No usage stats:
# nothing here reaches the internet, and each cluster otherwise starts a Ray Data usage-collection actor (an
# import of ray.data, ~6 CPU-seconds). The dashboard agent's per-process resource report every 60 s instead of 5
# (only the dashboard's metrics read it): on the job test's two heads the agents took 50 of 925 CPU-seconds
# (`scripts/profile_train_run.py --command "<pytest tests/test_job_submit.py -k runs_the_workflow>"`).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("REPORTER_UPDATE_INTERVAL_MS", "60000")
# `make test` runs two pytest passes at once on 2 cores: a Ray starting then (its dashboard imports and starts its
# modules) once missed Ray's 60 s dashboard start-up limit (ray.init failed after 71 s). Five minutes here.
os.environ.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "300")

# The speaker tests' TDNN: hid_dim 64 and 256 statistics channels instead of the demo's 512 / 1500. One thread, a
# 32 x 200-frame step: 0.06 s, vs 0.4 s (hid_dim 64, 1500 channels) and 1.2 s (the demo's); the loop, DDP, the
# heads and the scoring are the same code.
SMALL_TDNN = "model.encoder_args={hid_dim: 64, stats_dim: 256}"
# Ray Train's local mode for the end-to-end tests that check what a workflow learns and writes: each training run in
# the test process instead of ~7 new processes (controller, worker, data coordinators: ~15 s and ~25 CPU-seconds a
# run on 2 cores, scripts/profile_train_run.py). Ray Data, inference and attacks still run on the shared Ray; every
# workflow still trains through real Ray Train workers in its `ray job submit` test (test_job_submit.py), and the
# speaker, face, reproducibility, fault-tolerance, interrupt, tracking and sweep tests use workers.
LOCAL_MODE = "scale.local_mode=true"


def pytest_collection_modifyitems(items):
    """Modules marked local_mode run after every other module of the pass, the one that also runs a worker
    (`local_mode(worker_first=True)`, its worker run first) before the rest. Twice in CI (clean clones, the whole
    main pass before it) a Ray Train worker run that followed local-mode runs in this process left the process's
    GCS connection hung (every later call to the GCS waited forever); in isolation it never did, and the cause was
    not found. No worker run follows a local-mode run this way."""
    def order(item) -> int:
        mark = item.get_closest_marker("local_mode")
        return 0 if mark is None else 1 if mark.kwargs.get("worker_first") else 2

    items.sort(key=order)


# One local cluster for the main pass, shared by the modules that need Ray (a start and stop costs ~7 s and ~8
# CPU-seconds on 2 cores; the workflows' own main() reuses one already up). A module that leaves resources held
# (an actor or a placement group still alive 10 s after its last test) gets the cluster stopped behind it, so the
# next module starts clean: a long-lived cluster once saw a Ray Train controller wait for its placement group,
# and a leak is what that looks like. A module with RAY_FAKE_GPUS (a GPU resource with no CUDA behind it, for
# placement tests) gets a cluster of its own.
_shared = {"gpus": None}


def _start_ray(gpus):
    from trainers import local_ray

    # workers must import helpers defined in test modules (pickled by reference)
    tests = os.path.dirname(os.path.abspath(__file__))
    local_ray.start(env_vars={"PYTHONPATH": os.pathsep.join([tests, os.path.dirname(tests)])},
                    num_cpus=2, include_dashboard=False, log_to_driver=False,
                    **({"num_gpus": gpus} if gpus else {}))
    _shared["gpus"] = gpus


def _released(ray, timeout=10.0) -> bool:
    """Every CPU and GPU of the cluster free again (actors and placement groups gone) within `timeout`."""
    deadline = time.time() + timeout
    while True:
        total, free = ray.cluster_resources(), ray.available_resources()
        if all(free.get(k, 0) >= total[k] - 1e-6 for k in ("CPU", "GPU") if k in total):
            return True
        if time.time() > deadline:
            print(f"\nray_local: resources still held after the module ({free} of {total}): restarting Ray")
            return False
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_local(request):
    import ray

    from trainers import local_ray

    gpus = getattr(request.module, "RAY_FAKE_GPUS", None)
    if ray.is_initialized() and _shared["gpus"] != gpus:
        local_ray.stop()
    if not ray.is_initialized():
        _start_ray(gpus)
    yield ray
    if gpus or not ray.is_initialized() or not _released(ray):
        local_ray.stop()


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_ray():
    yield
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        from trainers import local_ray

        local_ray.stop()


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


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")
    except OSError:
        return ""


def listening_addresses(pids: list[int]) -> dict[str, int]:
    """{host:port: pid} of every TCP socket the processes listen on (from /proc/net/tcp{,6} and their fds)."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A":   # LISTEN
                    listening[fields[9]] = fields[1]
    found = {}
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            inode = link[len("socket:["):-1] if link.startswith("socket:[") else None
            if inode in listening:
                found[_address(listening[inode])] = pid
    return found


def _address(hex_address: str) -> str:
    """/proc/net/tcp's little-endian hex "0100007F:1F90" -> "127.0.0.1:8080" (IPv4-mapped v6 too)."""
    import ipaddress

    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return f"{ip}:{int(port, 16)}"


def kill_marked(marker: str) -> None:
    for pid in processes_with(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def unrelated_ray():
    """Another Ray instance on this host for the length of a test, started the plain way (`ray.init()` in
    someone else's script, 1 CPU, with a dashboard); yields a function telling whether it is still up."""
    marker = f"OPENSET_NEIGHBOUR_RAY={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env[marker.split("=")[0]] = marker.split("=")[1]
    script = "import ray, time; ray.init(num_cpus=1); print('up', flush=True); time.sleep(7200)"
    err = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                            start_new_session=True)
    try:
        if proc.stdout.readline().strip() != "up":
            err.seek(0)
            pytest.fail(f"the unrelated Ray instance did not start:\n{err.read()[-3000:]}")
        yield lambda: proc.poll() is None and any("gcs_server" in cmdline(p) for p in processes_with(marker))
    finally:
        # SIGTERM, then time for the instance's own processes to exit on their own: its dashboard and runtime-env
        # agents do not carry the marker, and a SIGKILL of the marked raylet a second after the driver's orphaned
        # them (seen after a clean-clone run); the kill stays as the backstop
        proc.terminate()
        deadline = time.time() + 30
        while time.time() < deadline and processes_with(marker):
            time.sleep(0.5)
        kill_marked(marker)
        err.close()


def write_wav(path, x, sr=16000):
    """A 16-bit PCM wav (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(x, dtype=np.float32), sr, subtype="PCM_16")


def write_augment_sources(root, seed=0, sr=16000):
    """MUSAN and RIRS_NOISES trees as openslr.org/17 and /28 ship them (a few files each)."""
    rng = np.random.default_rng(seed)
    musan = root / "musan"
    write_wav(musan / "noise" / "free-sound" / "noise-free-sound-0000.wav", 0.3 * rng.standard_normal(3 * sr))
    write_wav(musan / "music" / "fma" / "music-fma-0000.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * sr) / sr))
    write_wav(musan / "speech" / "librivox" / "speech-librivox-0000.wav", 0.2 * rng.standard_normal(sr // 2))
    (musan / "noise" / "free-sound" / "ANNOTATIONS").write_text("noise-free-sound-0000 ...\n")
    rirs = root / "RIRS_NOISES"
    for size in ("smallroom", "largeroom"):
        t = np.arange(sr // 2) / sr
        write_wav(rirs / "simulated_rirs" / size / "Room001" / "Room001-00001.wav",
             0.5 * rng.standard_normal(len(t)) * np.exp(-6.9 * t / 0.3))
    write_wav(rirs / "pointsource_noises" / "noise-free-sound-0001.wav", rng.standard_normal(sr))   # not an RIR
    return musan, rirs


@contextlib.contextmanager
def tracked(backend: str, out, uri=None):
    """The session `--tracker BACKEND [--tracking-uri URI]` opens around a speaker run (workflows/common.py
    guarded)."""
    from trainers import tracking

    tracking.start(backend, out, "speaker", uri)
    try:
        yield
    finally:
        tracking.finish("FINISHED")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, artifacts proxied into tmp), in its own process
    group, killed with all its workers at the end; yields its URI once it answers /health."""
    import socket
    import urllib.request
    from pathlib import Path

    tmp = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            # a tracking server only: without MLflow's job execution (its GenAI jobs), which starts a
                            # job runner and seven huey consumer processes, each importing mlflow (10 processes ->
                            # 2; on a loaded 2-core machine the server once took 2.5 min to answer)
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            assert proc.poll() is None and time.time() < deadline, (tmp / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # its store is in tmp: nothing to shut down cleanly
        proc.wait()
        log.close()
