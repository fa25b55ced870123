"""A Tune sweep (Optuna + ASHA, Train V2 runs inside the trials) on this 2-CPU machine, beside an unrelated
Ray instance (another user's), stopped with SIGTERM (a scheduler's; handled as Ctrl-C) after its first
trial, then resumed with the same command. The stopped sweep exits 130 and leaves no process behind; the
resumed one finishes without rerunning the finished trial. Neither mistakes the other Ray for its own (Ray
Train's placement-group watcher would then fail or free the wrong run's resources) nor stops it; the
table, the best config, the PNGs, the Optuna study and one MLflow run per trial (`--tracker mlflow`) are left."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import cmdline, kill_marked, processes_with

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]
ROOT = Path(__file__).resolve().parents[1]
TRIALS = 2   # the first finishes before the interrupt, the second after the resume


# The built-in semiweak space without its stage-2 choice: one Ray Train run per trial instead of up to two (the
# space as a YAML file, which the sweep also takes)
SPACE = """workflow: semiweak
fixed: {method.stage2: false}
params:
  bags.size: {choice: [8, 16, 32]}
  method.loss: {choice: [poisson, mse, l1]}
  method.reg_weight: {uniform: [0.0, 0.5]}
"""


def sweep_cmd(out: Path) -> list[str]:
    space = out.parent / "space.yaml"
    space.write_text(SPACE)
    return [sys.executable, str(ROOT / "workflows" / "sweep.py"), "semiweak", "--space", str(space),
            "--trials", str(TRIALS), "--out", str(out), "--seed", "1",
            "--set", "train.epochs=2", "--set", "demo.per_train_batch=70", "--set", "demo.test_size=64",
            "--set", "width=4", "--tracker", "mlflow",   # the local store, OUT/mlflow.db
            "--verbose"]   # verbose: the test watches Tune's own lines on the console


def test_sweep_beside_another_ray_is_interrupted_resumed_and_reports(tmp_path, unrelated_ray):
    out = tmp_path / "sweep"
    marker = f"OPENSET_SWEEP_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}   # its own local Ray
    env[marker.split("=")[0]] = marker.split("=")[1]
    first = subprocess.Popen(sweep_cmd(out), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(first.stdout), daemon=True)
    reader.start()
    # Interrupt once Tune's controller has recorded a finished trial ("Trial ... completed after N
    # iterations"): the state it saves when stopped then holds it. The trial's own files appear earlier.
    def completed() -> bool:
        return any("completed after" in line for line in list(lines))

    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and not completed():
        time.sleep(0.5)
    assert first.poll() is None, "".join(lines)[-3000:]
    assert completed(), "no trial finished in 10 min"
    first.send_signal(signal.SIGTERM)
    code = first.wait(timeout=300)
    reader.join(timeout=10)
    try:
        assert code == 130 and "error: interrupted" in "".join(lines), "".join(lines)[-3000:]
        deadline = time.time() + 120
        while time.time() < deadline and processes_with(marker):
            time.sleep(1)
        assert not processes_with(marker), [cmdline(p) for p in processes_with(marker)]
    finally:
        kill_marked(marker)
    # what Tune recorded as finished (a trial's own files can be written just before Tune sees it end)
    done = re.findall(r"Trial run_trial_(\w+) completed after", "".join(lines))
    finished = [out / "trials" / d / "metrics.json" for d in done]
    assert finished and len(finished) < TRIALS and all(p.is_file() for p in finished), done
    stamp = {p: p.stat().st_mtime_ns for p in finished}

    second = subprocess.run(sweep_cmd(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming the interrupted sweep" in second.stdout
    for output in ("".join(lines), second.stdout + second.stderr):
        assert "multiple active Ray instances" not in output and "its own local Ray instance at 127.0.0.1:" in output
    assert unrelated_ray(), "the sweep stopped another Ray instance on the host"
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items()), "a finished trial ran again"

    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["trials"] == TRIALS and summary["errors"] == 0 and summary["concurrency"] == 1
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == TRIALS + 1 and rows[0].split(",")[:2] == ["trial", "bags.size"]
    metrics = [float(r.split(",")[list(rows[0].split(",")).index("metric")]) for r in rows[1:] if "finished" in r]
    assert metrics == sorted(metrics)               # val_count_error: best (lowest) first
    from trainers.config import load_config
    from workflows.semiweak import SemiWeakConfig

    best = load_config(SemiWeakConfig, out / "best_config.yaml")
    assert best.methods == ["two_stage"] and best.data.val_fraction == 0.1 and best.scale.cpu_budget is None
    assert best.method.stage2 is False   # the space's fixed value
    for png in ("optimization_history", "param_importances", "metric_vs_params"):
        assert (out / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import optuna

    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) >= TRIALS - 1

    # --tracker mlflow: one finished MLflow run per trial (the interrupted trial's first attempt may leave one
    # more, unfinished), with the sampled keys and every epoch's validation metric
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(out.name).experiment_id])
    tracked = {r.info.run_name: r for r in runs if r.info.status == "FINISHED"}
    header = rows[0].split(",")
    for row in (dict(zip(header, r.split(","))) for r in rows[1:]):
        run = tracked.pop(f"run_trial_{row['trial']}")
        assert run.data.params["bags.size"] == row["bags.size"]
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_count_error"))
        assert steps == list(range(1, int(row["epochs"]) + 1 + (row["status"] == "finished"))), (row, steps)
    assert not tracked, tracked   # one per trial
