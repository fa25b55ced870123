"""ESC-50 action vectors end to end on the REAL shipped annotations (no audio needed): crowd-kit
aggregation -> the one loop, the 5 official folds as parallel Ray Train runs -> accuracy; and the
workflow's bad-input exits."""
import json

import pytest
from conftest import LOCAL_MODE

from trainers.config import load_config
from workflows.esc50_actions import ESC50Config, main, run

pytestmark = [pytest.mark.slow, pytest.mark.local_mode]


@pytest.fixture(scope="module")
def av_run(ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("esc50")
    cfg = load_config(ESC50Config, None, ["models=[av_mlp]", "aggregators=[sum]", "train.epochs=12", LOCAL_MODE])
    return out, run(cfg, out, log=print)


def test_av_only_reaches_the_real_data_bar(av_run):
    """Measured before this test was written: logistic regression on the summed vectors gives 51.0 %
    over ESC-50's 5 folds."""
    out, report = av_run
    r = report["results"]["av_mlp"]["sum"]
    print(json.dumps({k: v for k, v in r.items() if k != "history"}, indent=1))
    assert set(r["per_fold"]) == {"1", "2", "3", "4", "5"}
    assert r["mean"] >= 0.51


def test_outputs_kappa_and_notice(av_run):
    out, report = av_run
    saved = json.loads((out / "metrics.json").read_text())
    assert 0.15 < saved["fleiss_kappa"]["overall"] < 0.3          # the paper reports 0.23
    assert "pseudo-workers" in saved["notice"] and "pseudo-workers" in (out / "results.md").read_text()
    assert (out / "plots" / "confusion_av_mlp_sum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_unknown_aggregator_and_model(tmp_path, capsys):
    code, err = run_main(capsys, "--aggregator", "median", "--out", tmp_path)
    assert code == 2 and "unknown aggregators ['median']" in err
    code, err = run_main(capsys, "--model", "av_svm", "--out", tmp_path)
    assert code == 2 and "unknown models ['av_svm']" in err


def test_annotation_of_a_file_not_in_esc50_is_ignored_but_the_clip_it_replaced_misses_a_rater(tmp_path, capsys):
    """Rows of a file outside the meta are ignored (a corpus may be a subset of ESC-50); the clip whose row
    was renamed then has 2 of its 3 raters, which is still refused, naming the line."""
    from datasets.esc50.meta import SUM_FILE, THREE_RATERS_FILE, read_sum

    lines = THREE_RATERS_FILE.read_text().splitlines()
    lines[1] = lines[1].replace("1-100032-A-0.wav", "9-999999-A-0.wav")
    bad = tmp_path / "ann.csv"
    bad.write_text("\n".join(lines) + "\n")
    esc = tmp_path / "esc50"
    (esc / "audio").mkdir(parents=True)
    meta = ["filename,fold,target,category,esc10,src_file,take"]   # the real clips, as ESC-50's meta lists them
    for row in read_sum(SUM_FILE).itertuples():
        (esc / "audio" / row.filename).write_bytes(b"")
        meta.append(f"{row.filename},{row.fold},{row.target},{row.category},False,"
                    f"{row.filename.split('-')[1]},{row.filename.split('-')[2]}")
    (esc / "meta").mkdir()
    (esc / "meta" / "esc50.csv").write_text("\n".join(meta) + "\n")
    code, err = run_main(capsys, "--esc50", esc, "--annotations", bad, "--out", tmp_path / "o")
    assert code == 2 and "ann.csv line 3: 1-100032-A-0.wav has 2 row(s)" in err and "9-999999" not in err, err


def test_summed_file_only_sums(tmp_path, capsys):
    from datasets.esc50.meta import SUM_FILE

    code, err = run_main(capsys, "--annotations", SUM_FILE, "--aggregator", "mv", "--out", tmp_path)
    assert code == 2 and "only supports --aggregator sum" in err


@pytest.fixture(scope="module")
def audio_run(ray_local, tmp_path_factory):
    """The demo: generated audio under real ESC-50 names, held-out fold 1 (5 parallel folds: above). Measured with
    these settings: logmel_cnn 46 %, fusion_early 54 %, fusion_late 61 % (chance 2 %)."""
    out = tmp_path_factory.mktemp("esc50-audio")
    cfg = load_config(ESC50Config, None, ["models=[av_mlp, logmel_cnn, fusion_early, fusion_late]",
                                          "test_folds=[1]", "cnn_train.epochs=5", "train.epochs=5", LOCAL_MODE])
    return out, cfg, run(cfg, out, log=print)


def test_an_esc50_subset_trains_audio_only_models_without_annotations(audio_run, tmp_path, capsys):
    """A corpus in the ESC-50 layout holding a subset of the clips (the demo's: 500 of 2000) and only an audio
    model: no annotation file is read (a missing one does not matter), so none of its rows can stop the run."""
    out, _, report = audio_run
    code = main(["--esc50", report["data"]["esc50"], "--model", "logmel_cnn", "--fold", "1",
                 "--set", "cnn_train.epochs=1", "--annotations", str(tmp_path / "absent.csv"),
                 "--out", str(tmp_path / "subset"), "--set", LOCAL_MODE])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "subset" / "metrics.json").read_text())
    assert saved["data"]["annotations"] is None and set(saved["results"]) == {"logmel_cnn"}


def test_audio_models_and_fusion_learn_the_demo_classes(audio_run):
    out, cfg, report = audio_run
    res = report["results"]
    print(json.dumps({m: {a: r["mean"] for a, r in by.items()} for m, by in res.items()}, indent=1))
    assert set(res) == {"av_mlp", "logmel_cnn", "fusion_early", "fusion_late"}
    assert set(res["logmel_cnn"]["-"]["per_fold"]) == {"1"}
    assert res["logmel_cnn"]["-"]["mean"] > 0.2                 # 50 classes: chance is 0.02
    assert res["fusion_late"]["sum"]["mean"] >= min(res["av_mlp"]["sum"]["mean"], res["logmel_cnn"]["-"]["mean"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["data"]["demo"] and saved["data"]["clips"] == 5 * 50 * cfg.demo.clips_per_fold
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"fold{f}" for f in range(1, 6)]
    assert (out / "plots" / "confusion_logmel_cnn_-.png").is_file()


def test_embedding_models_use_a_pluggable_extractor(audio_run, capsys):
    """emb_mlp / fusion_emb on embeddings of the fold-1 CNN (trained on folds 2-5), tested on fold 1; refused
    for fold 2, which it was trained on."""
    out, cfg, _ = audio_run
    weights = out / "logmel_cnn" / "fold1" / "model.pt"
    code = main(["--model", "emb_mlp,fusion_emb", "--fold", "1", "--embedding-weights", str(weights),
                 "--out", str(out), "--epochs", "5", "--set", LOCAL_MODE])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "metrics.json").read_text())["results"]
    assert res["emb_mlp"]["-"]["mean"] > 0.2 and "sum" in res["fusion_emb"]
    code = main(["--model", "emb_mlp", "--out", str(out), "--embedding-weights", str(out / "results.md")])
    assert code == 2 and "cannot load embedding weights" in capsys.readouterr().err
    code = main(["--model", "emb_mlp", "--fold", "2", "--out", str(out), "--embedding-weights", str(weights)])
    assert code == 2 and "trained on ESC-50 folds [2, 3, 4, 5]" in capsys.readouterr().err   # training folds recorded


def test_a_sweep_reads_its_metric_from_the_report(av_run):
    """What a `workflows/sweep.py esc50_actions` trial (one model, one aggregator) reports."""
    from workflows.sweep import TARGETS

    _, report = av_run
    final = TARGETS["esc50_actions"].final(report)
    assert final == {"accuracy": report["results"]["av_mlp"]["sum"]["mean"],
                     "accuracy_std": report["results"]["av_mlp"]["sum"]["std"]}
