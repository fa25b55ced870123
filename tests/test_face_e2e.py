"""Integration: generated face corpus -> shards -> Ray Train (SFNet-20 + SphereFace2) -> embeddings of
the pair images -> LFW 10-fold accuracy and EER, on a real local Ray; plus a wrong --data layout."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from datasets.faces import find_face_layout
from datasets.shards import MANIFEST
from trainers.config import load_config
from workflows.face import FaceConfig, run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.epochs=6", "train.batch_size=32", "demo.n_train_ids=100", "demo.n_test_ids=20",
        "demo.pairs_per_fold=20"]


@pytest.fixture(scope="module")
def demo_run(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("face")
    cfg = load_config(FaceConfig, None, FAST)
    return out, cfg, run(cfg, out, log=print)


def test_trained_beats_untrained(demo_run):
    _, _, report = demo_run
    trained, untrained = (report["verification"]["pairs.txt"]["trained"],
                          report["verification"]["pairs.txt"]["untrained"])
    print(f"accuracy trained {trained['mean_acc']:.3f} untrained {untrained['mean_acc']:.3f}; "
          f"EER trained {trained['eer']:.3f} untrained {untrained['eer']:.3f}")
    assert trained["n_trials"] == 400 and trained["n_folds"] == 10 and len(trained["fold_acc"]) == 10
    assert trained["mean_acc"] > untrained["mean_acc"] + 0.08
    assert trained["eer"] < untrained["eer"] - 0.05


def test_outputs_and_provenance(demo_run):
    out, cfg, report = demo_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["workflow"] == "face" and saved["config"]["model"]["backbone"] == "sfnet20"
    assert saved["config"]["head"]["name"] == "sphereface2"
    resolved = load_config(FaceConfig, out / "config.yaml")   # every head keyword, with its default
    assert resolved.head == {"name": "sphereface2", "margin_type": "C", "lam": 0.7, "r": 40.0, "m": 0.4, "t": 3.0,
                             "lw": 50.0, "detach": True}
    assert dataclasses.replace(resolved, head=cfg.head) == cfg and saved["config"]["head"] == resolved.head
    layout = find_face_layout(saved["data"])
    assert saved["manifests"]["train"]["num_samples"] == len(layout.train) == 800
    assert saved["manifests"]["test"]["num_samples"] == len(layout.test)  # the distinct images the pairs name
    assert len(saved["manifests"]["test"]["sha256"]) == 64 and saved["versions"]["ray"] == "2.60.0"
    assert [h["epoch"] for h in saved["history"]] == list(range(1, cfg.train.epochs + 1))
    assert saved["history"][-1]["loss"] < saved["history"][0]["loss"]
    for split in ("train", "test"):
        manifest = json.loads((out / "shards" / split / MANIFEST).read_text())
        assert manifest["build"]["size"] == cfg.data.image_size
        assert all((out / "shards" / split / s["name"]).is_file() for s in manifest["shards"])
    for png in ("det.png", "training.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().count("| pairs.txt |") == 2


def test_second_run_reuses_shards_and_model(demo_run, capsys):
    out, cfg, first = demo_run
    before = (out / "model.pt").stat().st_mtime_ns
    again = run(cfg, out, log=print)
    logged = capsys.readouterr().out
    assert "faces/train: up to date" in logged and "faces/test: up to date" in logged
    assert "skipping training" in logged and (out / "model.pt").stat().st_mtime_ns == before
    assert again["verification"] == first["verification"]


def test_wrong_layout_exits_2_naming_the_path(tmp_path):
    # a CASIA-style identity tree passed directly as --data: ROOT/train, ROOT/lfw, ROOT/pairs.txt are missing
    (tmp_path / "casia" / "0000045").mkdir(parents=True)
    (tmp_path / "casia" / "0000045" / "001.jpg").write_bytes(b"")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "workflows" / "face.py"), "--data", str(tmp_path / "casia"),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
    assert str(tmp_path / "casia" / "train") in proc.stderr and "pairs.txt" in proc.stderr
    assert not out.exists()  # nothing written before the layout is known to be right


def test_a_sweep_reads_its_metric_from_the_report(demo_run):
    """What a `workflows/sweep.py face` trial reports: the trained backbone's LFW accuracy and EER."""
    from workflows.sweep import TARGETS

    _, cfg, report = demo_run
    trained = report["verification"]["pairs.txt"]["trained"]
    assert TARGETS["face"].final(report) == {"accuracy": trained["mean_acc"], "eer": trained["eer"]}
