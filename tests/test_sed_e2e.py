"""Integration: generated TAU + FSD corpora -> remix shards -> two held-out folds trained as parallel
Ray Train runs -> clip and segment metrics, activity PNGs, on a real local Ray."""
import json

import pytest
from conftest import LOCAL_MODE

from trainers.config import load_config
from workflows.sed import SEDConfig, run

pytestmark = [pytest.mark.slow, pytest.mark.local_mode]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_run(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("sed")
    # 8 of the demo's 12 epochs: at 12 the margins were +0.27 macro AP and +0.28 AUC over the bars' 0.15 / 0.1
    cfg = load_config(SEDConfig, None, ["test_folds=[1, 2]", "train.epochs=8", LOCAL_MODE])
    return out, cfg, run(cfg, out, log=print)


def test_full_model_is_far_above_untrained_at_20_db(demo_run):
    rows = demo_run[2]["results"]["20"]
    trained, untrained = rows["full"], rows["(untrained, full)"]
    print(json.dumps(rows, indent=1))
    assert trained["macro_ap"] > untrained["macro_ap"] + 0.15
    assert trained["auc"] > untrained["auc"] + 0.1
    # Not asserted: frame-level localisation. The official time attention (a T x T linear map) need not keep
    # frame probabilities low outside events; on this budget its segment F1 at the 0.5 threshold stays at
    # the untrained level (measured, docs/sed.md). The clip-level scores above are what it is trained for.
    assert 0 <= trained["segment_f1"] <= 1 and trained["segment_error_rate"] >= 0


def test_outputs_and_provenance(demo_run):
    out, cfg, report = demo_run
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["runs"]["snr20/full"]) == {"1", "2"}               # both held-out folds ran
    assert len(saved["classes"]) == 12 and saved["manifests"]["snr20"]["num_samples"] == 4 * cfg.demo.per_fold
    assert saved["versions"]["ray"] == "2.60.0"
    for fold in (1, 2):
        plots = out / "snr20" / "full" / f"fold{fold}" / "plots"
        activity = sorted(plots.glob("activity_*.png"))
        assert len(activity) == cfg.eval.plot_clips
        assert all(p.read_bytes()[:8] == PNG for p in [*activity, plots / "training.png"])
    table = (out / "results.md").read_text()
    assert "| 20 | full |" in table and "| 20 | (untrained, full) |" in table


def test_second_run_reuses_shards_and_models(demo_run, capsys):
    out, cfg, first = demo_run
    again = run(cfg, out, log=print)
    logged = capsys.readouterr().out
    assert "up to date" in logged and logged.count("skipping training") == 2
    assert again["results"] == first["results"]


def test_a_sweep_reads_its_metric_from_the_report(demo_run):
    """What a `workflows/sweep.py sed` trial reports: the held-out fold's scores of the full model."""
    from workflows.sweep import TARGETS

    _, cfg, report = demo_run
    final = TARGETS["sed"].final(report)
    assert final["macro_ap"] == report["results"]["20"]["full"]["macro_ap"] and {"micro_ap", "segment_f1"} <= set(final)
