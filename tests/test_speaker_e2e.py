"""Integration: demo corpus -> shards -> 2-worker Ray Train (4 training speakers held out for a per-epoch val_eer)
-> embeddings -> EER, on a real local Ray; the run tracked (`--tracker`) to a real MLflow server, read back
(TensorBoard: test_reproducible.py)."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SMALL_TDNN, tracked

from trainers.config import load_config
from trainers.heads import MarginScheduler
from workflows.speaker import SpeakerConfig, run

pytestmark = pytest.mark.slow

FAST = ["train.epochs=10", "scale.workers=2", "demo.n_train_speakers=48", "data.val_speakers=4", SMALL_TDNN]


@pytest.fixture(scope="module")
def demo_run(ray_local, tmp_path_factory, mlflow_server):
    out = tmp_path_factory.mktemp("speaker")
    cfg = load_config(SpeakerConfig, None, FAST)
    with tracked("mlflow", out, mlflow_server):
        return out, cfg, run(cfg, out, log=print)


def test_trained_beats_untrained(demo_run):
    _, _, report = demo_run
    res = report["verification"]["veri_test2"]
    trained, untrained = res["trained"]["eer"], res["untrained"]["eer"]
    print(f"EER trained {trained:.3f} untrained {untrained:.3f}")
    assert trained < 0.75 * untrained and untrained - trained > 0.05
    assert res["trained"]["min_dcf_0.05"] < res["untrained"]["min_dcf_0.05"]


def test_outputs_and_provenance(demo_run):
    out, cfg, report = demo_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["scale"]["workers"] == 2
    model = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert set(model["state"]) == {"model", "epoch"}   # the optimizer stays in the checkpoints (resume) only
    assert model["run_name"] and not (out / "checkpoints" / model["run_name"]).exists()   # finished: pruned
    resolved = load_config(SpeakerConfig, out / "config.yaml")   # the face workflow writes the same
    assert resolved.head == {"name": "arcface", "s": 32.0, "m": 0.2, "detach_margin": False}
    assert dataclasses.replace(resolved, head=cfg.head) == cfg and saved["config"]["head"] == resolved.head
    assert yaml.safe_load((out / "config.yaml").read_text()) == saved["config"]   # one resolved config
    # the margin warm-up is logged per epoch, so training.png shows why the loss jumps as m grows
    warmup = MarginScheduler(0.2, cfg.margin.start_epoch, cfg.margin.fix_epoch)
    assert [h["margin"] for h in saved["history"]] == pytest.approx([warmup.margin_at(e) for e in range(10)])
    assert saved["history"][0]["margin"] == 0 and saved["history"][-1]["margin"] == pytest.approx(0.2)
    assert set(saved["manifests"]) == {"train", "test"} and len(saved["manifests"]["train"]["sha256"]) == 64
    assert saved["versions"]["ray"] == "2.60.0"
    assert [h["epoch"] for h in saved["history"]] == list(range(1, cfg.train.epochs + 1))
    assert saved["history"][-1]["loss"] < saved["history"][0]["loss"]
    for png in ("det.png", "training.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().count("veri_test2") == 2


def test_run_logged_to_an_mlflow_server(demo_run, mlflow_server, tmp_path):
    """The run's MLflow session, read back from a real server with the MLflow client: the resolved config as
    params, every epoch (logged from Ray Train's controller) as metrics.json records it, the final metrics, and
    config.yaml, metrics.json, results.md and the PNGs as artifacts."""
    import mlflow
    from mlflow import MlflowClient

    out, _, report = demo_run
    client = MlflowClient(mlflow_server)
    [run_] = client.search_runs([client.get_experiment_by_name("speaker").experiment_id])
    assert run_.info.status == "FINISHED" and run_.info.run_name == out.name and run_.data.tags["out"] == str(out)
    config = yaml.safe_load((out / "config.yaml").read_text())
    params = run_.data.params
    assert params["train.epochs"] == "10" and params["scale.workers"] == "2" and params["demo.n_train_speakers"] == "48"
    assert params["head.name"] == config["head"]["name"] and params["head.m"] == str(config["head"]["m"])
    assert params["model.encoder_args.hid_dim"] == str(config["model"]["encoder_args"]["hid_dim"])
    for name in ("loss", "margin", "val_eer"):
        history = sorted(client.get_metric_history(run_.info.run_id, f"train/{name}"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(h["epoch"], pytest.approx(h[name])) for h in report["history"]]
    eer = report["verification"]["veri_test2"]["trained"]["eer"]
    assert run_.data.metrics["verification.veri_test2.trained.eer"] == pytest.approx(eer)
    assert {a.path for a in client.list_artifacts(run_.info.run_id)} == {"config.yaml", "metrics.json", "results.md",
                                                                          "plots"}
    assert {a.path for a in client.list_artifacts(run_.info.run_id, "plots")} == {"plots/det.png",
                                                                                   "plots/training.png"}
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_.info.run_id, tracking_uri=mlflow_server,
                                                     dst_path=str(tmp_path)))
    assert (local / "results.md").read_text() == (out / "results.md").read_text()
    assert (local / "plots" / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "mlflow.db").exists()   # all of it went to the server


def test_second_run_reuses_shards_and_model(demo_run, capsys):
    out, cfg, first = demo_run
    before = (out / "model.pt").stat().st_mtime_ns
    again = run(cfg, out, log=print)
    logged = capsys.readouterr().out
    assert "up to date" in logged and "skipping training" in logged
    assert (out / "model.pt").stat().st_mtime_ns == before
    # same model, same shards, same trials: the same numbers
    assert again["verification"] == first["verification"]


def test_held_out_speakers_are_scored_every_epoch(demo_run, tmp_path):
    """data.val_speakers: those training speakers leave training and their all-pairs EER is reported per epoch
    (what sweeps select on), below chance (0.5) at the end."""
    _, _, report = demo_run
    val = [h["val_eer"] for h in report["history"]]
    print("val_eer per epoch", val)
    assert len(val) == 10 and all(0 <= v <= 1 for v in val) and val[-1] < 0.45
    assert report["config"]["data"]["val_speakers"] == 4
    from workflows.sweep import TARGETS  # what a `workflows/sweep.py speaker` trial reports

    final = TARGETS["speaker"].final(report)
    assert final["val_eer"] == val[-1] and final["test_eer"] == report["verification"]["veri_test2"]["trained"]["eer"]
    with pytest.raises(Exception, match=r"data.val_speakers must be in \[2, 15\]"):
        run(load_config(SpeakerConfig, None, ["train.epochs=1", "demo.n_train_speakers=16", "data.val_speakers=16"]),
            tmp_path / "bad", log=print)
