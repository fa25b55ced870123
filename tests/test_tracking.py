"""Experiment tracking (`--tracker`, trainers/tracking.py): the flattening of the config and the report into
MLflow params and metrics, by hand, and the flag check. Real runs are tracked where the suite already runs them
(no run of its own here): tests/test_speaker_e2e.py logs its runs to a real `mlflow server` (conftest.py) and to
TensorBoard and reads them back; tests/test_sweep_e2e.py checks one MLflow run per trial."""

import pytest


def test_params_and_metrics_are_flattened_within_mlflow_limits():
    from trainers.tracking import MAX_PARAM_VALUE, metrics_of, params_of

    config = {"train": {"lr": 0.1, "lr_milestones": [2, 4], "monitor": ""}, "head": {"name": "arcface", "m": 0.2},
              "note": "x" * (MAX_PARAM_VALUE + 10), "augment": {}}
    assert params_of(config) == {"train.lr": "0.1", "train.lr_milestones": "[2, 4]", "train.monitor": "",
                                 "head.name": "arcface", "head.m": "0.2",
                                 "note": "x" * (MAX_PARAM_VALUE - 3) + "...", "augment": "{}"}
    report = {"workflow": "speaker", "config": {"train": {"lr": 0.1}}, "versions": {"python": "3.11"},
              "history": [{"loss": 1.0}], "manifests": {"train": {"num_samples": 72}}, "plots": {"det": "det.png"},
              "verification": {"veri_test2": {"trained": {"eer": 0.25, "n_trials": 216, "ok": True}}},
              "per_class_ap": [0.5, 0.7], "timing_s": {"train": 3.5}, "b@1 (%)": 12}
    assert metrics_of(report) == {"verification.veri_test2.trained.eer": 0.25,
                                  "verification.veri_test2.trained.n_trials": 216.0, "timing_s.train": 3.5,
                                  "b_1 ___": 12.0}


@pytest.mark.parametrize("argv", [["speaker", "--tracking-uri", "http://127.0.0.1:5000"],
                                  ["speaker", "--tracker", "tensorboard", "--tracking-uri", "sqlite:///x.db"],
                                  ["sweep", "semiweak", "--space", "semiweak", "--trials", "1",
                                   "--tracking-uri", "http://127.0.0.1:5000"]])
def test_tracking_uri_without_mlflow_exits_2(tmp_path, capsys, argv):
    import importlib

    main = importlib.import_module(f"workflows.{argv[0]}").main
    assert main([*argv[1:], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --tracking-uri is an MLflow tracking URI: give it with --tracker mlflow"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workflow", ["semiweak", "morph"])
def test_tracker_with_local_mode_exits_2_before_data(tmp_path, capsys, workflow):
    """Local mode runs no Ray Train callbacks, which log the epochs: refused before anything is generated."""
    import importlib

    main = importlib.import_module(f"workflows.{workflow}").main
    out = tmp_path / "out"
    assert main(["--tracker", "tensorboard", "--set", "scale.local_mode=true", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scale.local_mode=true runs none" in err[0], err
    assert not (out / "metrics.json").exists() and not (out / "shards").exists() and not (out / "data").exists()
