"""`ray job submit --working-dir . -- python workflows/<speaker|sed|esc50_actions|robust|avspeaker|morph|foolhd>.py`
against a local head with token auth on; a two-node cluster on this machine (a second `ray start --address` node)
running a 2-worker semi-weak job."""
import concurrent.futures
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SMALL_TDNN

from trainers import local_ray

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    """n distinct free ports: every socket stays bound until all are picked, so no two picks can coincide."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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


def start_head(env: dict) -> tuple[str, int, int]:
    """`ray start --head` on fresh ports and a fresh temp dir; returns (temp dir, GCS port, dashboard port).

    Tried three times: on a loaded 2-core CI machine a start once failed with no trace. Each failure's
    ray-start.log and the head's own logs are printed, so a repeat is diagnosable."""
    for attempt in range(3):
        gcs, dash, agent, agent_grpc, runtime_env, metrics = free_ports(6)  # another Ray may hold the defaults
        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix socket paths must stay < 108 chars
        log_path = os.path.join(temp, "ray-start.log")
        # Ray's daemons inherit ray start's stdout/stderr: give them a file, not a pipe that closes
        # (a daemon writing to a closed pipe dies, and the job agent with it).
        with open(log_path, "w") as log:
            proc = subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                                   f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
                                   f"--dashboard-agent-listen-port={agent}",
                                   f"--dashboard-agent-grpc-port={agent_grpc}",
                                   f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                                   f"--temp-dir={temp}"], env=env, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode == 0:
            return temp, gcs, dash
        print(f"ray start attempt {attempt + 1} failed (exit {proc.returncode}):\n{Path(log_path).read_text()[-4000:]}")
        for name in ("gcs_server.out", "gcs_server.err", "raylet.out", "raylet.err"):
            for f in Path(temp).glob(f"session_*/logs/{name}"):
                print(f"--- {f}\n{f.read_text(errors='replace')[-2000:]}")
        stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)
    pytest.fail("ray start --head failed three times; its logs are printed above")


@contextlib.contextmanager
def head_cluster():
    """A local head with token auth on, stopped (and its temp dir removed) at the end: (env, job address, GCS port,
    temp dir)."""
    # no Ray Train preemption watcher (an actor per run polling whether a node is being drained: 31 of the job
    # test's 925 CPU-seconds), as on the project's own local Ray (trainers/local_ray.py): nothing drains these heads
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           **local_ray.NO_PREEMPTION_WATCHER}
    env.pop("RAY_ADDRESS", None)
    temp, gcs, dash = start_head(env)
    try:
        yield env, f"http://127.0.0.1:{dash}", gcs, temp
    finally:
        stop_head(temp)
        if not os.environ.get("KEEP_RAY_TMP"):
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_head():
    """One head for the tests here (a start costs ~10 s on 2 cores); the two-node test runs after the workflows'
    jobs (file order) and its second node stops with the head."""
    with head_cluster() as head:
        yield head


WORKFLOWS = {
    "speaker": (["--epochs", "2", "--set", "demo.n_train_speakers=8", "--set", "demo.n_test_speakers=4",
                 "--set", "train.log_every_steps=1", "--set", SMALL_TDNN],
                lambda report: "veri_test2" in report["verification"]),
    "esc50_actions": (["--epochs", "2", "--model", "av_logreg", "--fold", "1"],
                      lambda report: report["results"]["av_logreg"]["sum"]["per_fold"].keys() == {"1"}),
    "sed": (["--epochs", "1", "--set", "demo.per_fold=6", "--set", "demo.scenes_per_class=2",
             "--set", "test_folds=[1, 3]"],   # two held-out folds: two Ray Train runs at once (at per_fold 6
             # every validation mixture is in fold 2, so test fold 2 would have none: a ConfigError)
            lambda report: report["results"]["20"]["full"]["folds"] == 2),
    "robust": (["--digits", "--epochs", "2", "--method", "crp", "--attack", "fgsm,pgd", "--set", "data.max_train=200",
                "--set", "data.max_test=30", "--set", "crp.copies=2", "--set", "eval.pgd_steps=[3]",
                "--set", "eval.transfer_steps=3", "--set", "eval.eps=[0.1]", "--set", "train.batch_size=32",
                "--set", "eval.examples=3"],
               lambda report: robust_job_ok(report)),
    "avspeaker": (["--epochs", "1", "--variant", "transformer", "--set", "data.videos=5", "--set", "data.seconds=4",
                   "--set", "window.window_s=2", "--set", "model.dim=16", "--set", "model.layers=1",
                   "--set", "train.batch_size=2"],
                  lambda report: avspeaker_job_ok(report)),
    # the speaker job's model as the frozen voice encoder (`--voice-model`, a user's speaker -> morph chain)
    "morph": (["--voice-model", "{jobs}/speaker/model.pt", "--epochs", "1", "--set", "demo.n_train_ids=4",
               "--set", "demo.n_test_ids=3", "--set", "demo.sessions=1", "--set", "demo.images_per_id=4",
               "--set", "faces.train.epochs=1", "--set", "faces.train.batch_size=8", "--set", "train.batch_size=8",
               "--set", "eval.lambdas=[]", "--set", "model.width=8"],
              lambda report: morph_job_ok(report)),
    "foolhd": ([a for kv in ("demo.source=generated", "demo.speakers=3", "demo.sessions=2", "demo.utts=2",
                             "demo.width=16", "demo.stats_width=16", "demo.epochs=1", "demo.crop_seconds=1.0",
                             "demo.attack_files=2", "demo.attack_channels=4", "demo.attack_iterations=3",
                             "demo.attack_targeted_iterations=3", "demo.pretrain_epochs=1", "attack.bim_steps=2",
                             "train.batch_size=3") for a in ("--set", kv)],
               lambda report: foolhd_job_ok(report)),
}


# each cluster takes the next job of this list: the longest first, the speaker job before the morph job that uses
# its model (DEPENDS)
LONGEST_FIRST = ["speaker", "foolhd", "morph", "sed", "robust", "esc50_actions", "avspeaker"]
DEPENDS = {"morph": "speaker"}
assert sorted(LONGEST_FIRST) == sorted(WORKFLOWS)


def foolhd_job_ok(report: dict) -> bool:
    """FoolHD end to end (3 generated speakers, tiny): identification shards at 8 kHz, the x-vector and the pretrained
    autoencoder through the one loop, two files attacked as Ray tasks (FoolHD untargeted / targeted, FGSM, BIM),
    PESQ / STOI from their packages."""
    assert set(report["attacks"]) >= {"untargeted", "fgsm", "bim"} and len(report["files"]) == 2
    assert report["shards"]["train"]["num_samples"] + report["shards"]["test"]["num_samples"] == 12
    assert report["versions"]["pesq"] == "0.0.4" and report["versions"]["pystoi"] == "0.4.1"
    assert all(Path(p).stat().st_size > 1000 for p in report["plots"].values())
    return True


def morph_job_ok(report: dict) -> bool:
    """Voice-guided face morphing end to end (4 + 3 generated paired identities, tiny): voice and face shards, the
    speaker job's encoder frozen, the two face nets and the guided autoencoder trained through the one loop,
    retrieval scored."""
    assert report["voice_encoder"]["source"].startswith("speaker workflow model ")
    r = report["results"]["1"]
    assert set(r) == {"voice", "no_voice", "random_voice", "unmorphed", "chance"} and 0 <= r["voice"]["b@1"] <= 1
    assert report["shards"]["face-test"]["num_samples"] == 12 and report["queries"] == 24
    assert all(Path(p).stat().st_size > 1000 for p in report["plots"].values())
    return True


def avspeaker_job_ok(report: dict) -> bool:
    """Main-speaker detection end to end (5 generated conversations, tiny): videos decoded into shards, the
    transformer trained through the one loop, scored and drawn."""
    r = report["results"]["transformer"]
    assert 0 <= r["map"] <= 1 and 0 <= r["accuracy"] <= 1 and "si_sdri" in r, r
    assert report["shards"]["test"]["num_samples"] == 2 and report["versions"]["av"] == "18.1.0"
    assert all(Path(p).stat().st_size > 1000 for p in report["plots"].values())
    return True


def robust_job_ok(report: dict) -> bool:
    """CRP end to end (digits, tiny): the crp model and the transfer source trained through the one loop, the best
    epoch picked on the validation split, white-box and transferred attacks scored, the outputs written."""
    crp = report["results"]["crp"]
    assert set(crp) == {"clean", "fgsm", "pgd-3", "transfer fgsm", "transfer pgd-3"}, crp
    assert 0 <= crp["pgd-3"]["0.1"] <= 1 and 1 <= report["selected_epoch"]["crp"] <= 2
    # an epoch of crp sees the N(K+1) versions (N = 200 - 20 for validation); under the default budget "steps" the
    # vanilla source sees each clean example K+1 times, as many samples
    seen = {m: round(h[0]["samples_per_s"] * h[0]["epoch_time_s"]) for m, h in report["history"].items()}
    assert seen == {"crp": 180 * 3, "source": 180 * 3}, seen
    assert report["shards"]["test"]["num_samples"] == 30 and report["shards"]["train"]["sha256"]
    assert report["versions"]["adversarial-robustness-toolbox"] == "1.20.1"
    assert all(Path(p).stat().st_size > 1000 for p in report["plots"].values())
    return True


def run_job(env: dict, address: str, workflow: str, out: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`ray job submit` of a workflow, waiting for it to end."""
    cmd = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(ROOT), "--",
           "python", f"workflows/{workflow}.py", "--out", str(out), *args]
    # a fresh head answers "No available agent" until its job agent is up
    for _ in range(int(os.environ.get("JOB_TRIES", 30))):
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        if "No available agent" not in proc.stderr + proc.stdout:
            return proc
        time.sleep(2)
    return proc


def succeeded(proc: subprocess.CompletedProcess) -> str:
    """Asserts the job succeeded; returns what it printed."""
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "succeeded" in proc.stdout
    return proc.stdout


def submit(env: dict, address: str, workflow: str, out: Path, args: list[str]) -> str:
    return succeeded(run_job(env, address, workflow, out, args))


@pytest.fixture(scope="module")
def workflow_jobs(local_head, tmp_path_factory):
    """Every workflow's job, on two clusters at once (each runs one job at a time, longest first): on 2 cores much
    of a job is start-up and waiting (runtime env, Ray Train's controller, actors), which the other job's compute
    fills. Two clusters, not two jobs on one: each job sizes its Ray Train workers and actor pools to the CPUs of
    its cluster, and two such jobs could hold every CPU while each waits for a data task.
    {workflow: (future of its finished `ray job submit`, its OUT)}."""
    root = tmp_path_factory.mktemp("jobs")
    futures = {w: concurrent.futures.Future() for w in LONGEST_FIRST}
    todo = queue.Queue()
    for w in LONGEST_FIRST:
        todo.put(w)

    def drain(head) -> None:
        env, address, _, _ = head
        while True:
            try:
                w = todo.get_nowait()
            except queue.Empty:
                return
            try:
                if w in DEPENDS:
                    futures[DEPENDS[w]].result()
                args = [a.replace("{jobs}", str(root)) for a in WORKFLOWS[w][0]]
                futures[w].set_result(run_job(env, address, w, root / w, args))
            except Exception as exc:   # a hung or failed submit fails its own test
                futures[w].set_exception(exc)

    def drain_on_a_second_cluster() -> None:   # it lives as long as its jobs
        with head_cluster() as second:
            drain(second)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        done = [pool.submit(drain, local_head), pool.submit(drain_on_a_second_cluster)]
        yield {w: (futures[w], root / w) for w in LONGEST_FIRST}
        concurrent.futures.wait(done)


# the first of these tests waits for the fixture's seven jobs: ~7 min alone, 13.5-15 min beside the main pass
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_job_submit_runs_the_workflow(workflow_jobs, workflow):
    future, out = workflow_jobs[workflow]
    printed = succeeded(future.result())
    check = WORKFLOWS[workflow][1]
    assert check(json.loads((out / "metrics.json").read_text()))
    if workflow == "speaker":   # 2 epoch lines and a step line per step (train.log_every_steps=1), each shown once
        epochs = [line for line in printed.splitlines() if "[train] epoch" in line and " step " not in line]
        steps = [line[line.index("[train]"):] for line in printed.splitlines() if "[train] epoch 2/2 step " in line]
        assert len(epochs) == 2 and steps, printed[-3000:]
        assert len(set(steps)) == len(steps) and steps[0].startswith("[train] epoch 2/2 step 1/"), steps


def test_two_node_cluster_runs_a_two_worker_job(local_head, tmp_path):
    """A second Ray node joins the head (`ray start --address`, its own CPUs and ports, token auth);
    a 2-worker training job with one worker per node (SPREAD) succeeds and both nodes ran a worker."""
    env, address, gcs, temp = local_head
    ports = free_ports(8)
    with open(os.path.join(temp, "node2.log"), "w") as log:
        subprocess.run([str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                        f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
                        f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
                        f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}",
                        "--min-worker-port=20000", "--max-worker-port=29999"],
                       env=env, check=True, stdout=log, stderr=subprocess.STDOUT)

    def ray_list(kind: str, *filters: str) -> list[dict]:
        proc = subprocess.run([str(BIN / "ray"), "list", kind, f"--address={address}", "--detail", "--format", "json",
                               "--limit", "1000", *[a for f in filters for a in ("--filter", f)]],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        # an empty list is printed as this line, not as JSON (this test run alone: no job trained before it)
        return [] if proc.stdout.strip() == "No resource in the cluster" else json.loads(proc.stdout)

    alive = ray_list("nodes", "state=ALIVE")
    assert len(alive) == 2, alive
    earlier = {w["actor_id"] for w in ray_list("actors", "class_name=RayTrainWorker")}   # the head ran other jobs
    submit(env, address, "semiweak", tmp_path / "job-out",
           ["--workers", "2", "--epochs", "1", "--method", "supervised", "--set", "scale.placement_strategy=SPREAD",
            "--set", "demo.per_train_batch=40", "--set", "demo.test_size=64"])
    workers = [w for w in ray_list("actors", "class_name=RayTrainWorker") if w["actor_id"] not in earlier]
    assert len(workers) == 2 and {w["node_id"] for w in workers} == {n["node_id"] for n in alive}
    assert json.loads((tmp_path / "job-out" / "metrics.json").read_text())["results"]["supervised"]["bags"] == 4


def test_job_submit_without_token_is_refused(local_head):
    env, address, _, _ = local_head
    env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    env["RAY_AUTH_MODE"] = "disabled"
    proc = subprocess.run([str(BIN / "ray"), "job", "list", f"--address={address}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
