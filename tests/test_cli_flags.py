"""Command-line shorthand flags are literal: a path or a name is the string given (`#`, digits and all),
never parsed as YAML; only `--set key=value` values are YAML. No Ray, no data."""
import io

import pytest

from trainers.config import load_config
from workflows import common, esc50_actions, face, sed, semiweak, speaker

ODD = "/data/run #1/12345"   # YAML would cut the comment off, and read a bare 12345 as a number


@pytest.mark.parametrize("workflow, argv, key, expected", [
    (speaker, ["--data", ODD], "data.root", ODD),
    (speaker, ["--head", "yes", "--set", "head.m=0.3"], "head", {"name": "yes", "m": 0.3}),
    (face, ["--data", "12345"], "data.root", "12345"),
    (face, ["--backbone", "1e3"], "model.backbone", "1e3"),
    (sed, ["--tau", ODD, "--fsd", "#fsd"], "data.tau", ODD),
    (sed, ["--tau", ODD, "--fsd", "#fsd"], "data.fsd", "#fsd"),
    (sed, ["--pooling", "null", "--fold", "2,3"], "model.pooling", "null"),
    (sed, ["--fold", "2,3"], "test_folds", [2, 3]),
    (esc50_actions, ["--embedding-weights", ODD], "embedding.weights", ODD),
    (esc50_actions, ["--embedding-weights", "12345"], "embedding.weights", "12345"),
    (esc50_actions, ["--embedding-kind", "cnn14"], "embedding.kind", "cnn14"),
    (esc50_actions, ["--esc50", ODD, "--annotations", "a #b.csv"], "data.annotations", "a #b.csv"),
    (esc50_actions, ["--aggregator", "mean,mv", "--fold", "1"], "aggregators", ["mean", "mv"]),
    (semiweak, ["--cifar", ODD], "data.root", ODD),
    (semiweak, ["--svhn", "x"], "data.kind", "svhn"),
])
def test_shorthand_flags_are_literal(workflow, argv, key, expected):
    cls = workflow.SWEEP.config_class
    cfg = load_config(cls, None, workflow.overrides_of(workflow.parse_args(argv)))
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    assert node == expected


def test_set_values_stay_yaml_and_win_over_shorthands():
    args = speaker.parse_args(["--data", ODD, "--set", "data.root=/other #not this", "--set", "train.epochs=007"])
    cfg = load_config(speaker.SpeakerConfig, None, speaker.overrides_of(args))
    assert cfg.data.root == "/other" and cfg.train.epochs == 7   # YAML: the comment goes, 007 is a number


def test_a_comma_list_flag_refuses_non_integers(capsys):
    with pytest.raises(SystemExit, match="--fold takes comma-separated integers"):
        sed.overrides_of(sed.parse_args(["--fold", "1,x"]))


def test_a_run_of_another_config_first_removes_the_previous_results(tmp_path):
    """After a failed or interrupted run with a new config, --out must not show the old config's results as
    if they were current; the same config keeps them (a rerun replaces them), shards and models stay."""
    import json

    from workflows.common import clear_stale_results, resolved_config

    old = load_config(speaker.SpeakerConfig, None, ["train.epochs=3"])
    for name in ("metrics.json", "results.md", "config.yaml", "plots/det.png", "shards/train/manifest.json",
                 "model.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "metrics.json").write_text(json.dumps({"config": resolved_config(old)}))
    clear_stale_results(tmp_path, old, log=lambda *a: None)
    assert (tmp_path / "results.md").exists() and (tmp_path / "plots" / "det.png").exists()
    clear_stale_results(tmp_path, load_config(speaker.SpeakerConfig, None, ["train.epochs=4"]), log=lambda *a: None)
    assert not [n for n in ("metrics.json", "results.md", "config.yaml", "plots") if (tmp_path / n).exists()]
    assert (tmp_path / "shards" / "train" / "manifest.json").exists() and (tmp_path / "model.pt").exists()


def test_report_records_the_resolved_config(tmp_path):
    """config.yaml and metrics.json's config are the same resolved config: every default and every head keyword
    with its default (a head in a section too); config.yaml loads back as the config run."""
    import json

    import yaml

    from workflows import morph

    cfg = load_config(speaker.SpeakerConfig, None, ["head.m=0.3"])
    report = common.write_report(tmp_path, cfg, {"workflow": "speaker"}, "| table |", "plots/", log=lambda *a: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written == saved["config"] == report["config"] and saved["workflow"] == "speaker"
    assert written["head"] == {"name": "arcface", "s": 32.0, "m": 0.3, "detach_margin": False}
    assert written["margin"] == {"warmup": True, "start_epoch": 2, "fix_epoch": 6} and written["train"]["epochs"] == 12
    assert load_config(speaker.SpeakerConfig, tmp_path / "config.yaml").head == written["head"]
    nested = common.resolved_config(load_config(morph.MorphConfig, None, ["voice.head={name: cosface}"]))
    assert {"s": 32.0, "m": 0.2}.items() <= nested["voice"]["head"].items()


def test_the_quiet_console_shows_an_error_after_a_workers_unfinished_progress_line():
    """A worker's progress bar is redrawn with \\r and never ends its line; the interrupt message printed next
    must still reach the console (it once ran into the bar's unfinished line and was hidden)."""
    log, console = io.StringIO(), io.StringIO()
    out = common._Console(log, console, verbose=False, state={"traceback": False})
    out.write("\r\x1b[2m\x1b[36m(pid=18559)\x1b[0m - split(1, equal=True):   0%|          | 0/72")
    print("error: interrupted; rerun the same command to resume", file=out)
    print("Ray's logs of this run: /tmp/x", file=out)
    out.write("(RayTrainWorker pid=12) [train] epoch 1/2 loss 1.0\n(pid=3) INFO noise\n")
    print("error: a.csv line 3: two labels\n  fix the line", file=out)   # one message over two lines
    assert console.getvalue() == ("error: interrupted; rerun the same command to resume\n"
                                  "Ray's logs of this run: /tmp/x\n"
                                  "(RayTrainWorker pid=12) [train] epoch 1/2 loss 1.0\n"
                                  "error: a.csv line 3: two labels\n  fix the line\n")
    assert "split(1, equal=True)" in log.getvalue() and "INFO noise" in log.getvalue()
