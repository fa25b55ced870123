"""Search spaces resolve against their workflow's config; the concurrency plan leaves a CPU for Ray
Data; bad spaces fail with one clear message. No Ray needed."""
import pytest

from trainers.config import ConfigError
from tuning.spaces import SPACES, load_space, overrides
from tuning.tuner import SweepSettings, plan_concurrency, trial_config
from workflows.sweep import TARGETS


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_named_space_resolves_and_validates(name):
    space = load_space(name)
    target = TARGETS[space["workflow"]]
    settings = SweepSettings(space["workflow"], space, trials=1)
    for pick in (0, -1):   # the first and the last value of every parameter
        sampled = {k: args[pick] for k, spec in space["params"].items() for args in spec.values()}
        cfg = trial_config(target, settings, sampled, 0.5)
        target.validate(cfg)
        assert cfg.scale.cpu_budget == 0.5
        for key, value in sampled.items():
            node = cfg
            for part in key.split("."):
                node = node[part] if isinstance(node, dict) else getattr(node, part)
            assert node == ([value] if key in target.list_keys else value), key


def test_sampled_values_beat_fixed_and_user_overrides():
    space = load_space("arcface")
    settings = SweepSettings("speaker", space, trials=1, set=["head.m=0.05", "train.epochs=3"])
    cfg = trial_config(TARGETS["speaker"], settings, {"head.m": 0.33, "head.s": 16}, 1.0)
    assert cfg.head == {"name": "arcface", "m": 0.33, "s": 16} and cfg.train.epochs == 3
    assert cfg.data.val_speakers == 8   # the speaker target's per-epoch validation


def test_concurrency_plan_leaves_a_cpu_for_data():
    assert plan_concurrency(2, 0, 1, False, trials=8) == (1, 1.0)
    assert plan_concurrency(8, 0, 2, False, trials=8) == (3, 2.0)
    assert plan_concurrency(8, 0, 2, False, trials=8, requested=2) == (2, 2.0)    # --max-concurrent caps
    assert plan_concurrency(8, 0, 2, False, trials=8, requested=7) == (3, 2.0)    # ...but never overfills
    assert plan_concurrency(8, 0, 3, False, trials=2) == (2, 3.0)
    assert plan_concurrency(3, 0, 4, False, trials=8) == (1, 2.0)                 # 0.5 CPU a worker, one free
    assert plan_concurrency(16, 4, 1, True, trials=8) == (4, 1.0)
    assert plan_concurrency(16, 4, 2, True, trials=1) == (1, 2.0)
    assert plan_concurrency(8, 0, 1, True, trials=32) == (1, 1.0)                # GPU nodes not up yet
    assert plan_concurrency(8, 0, 1, True, trials=32, requested=4) == (4, 1.0)   # the autoscaler adds them


def test_overrides_format():
    assert overrides({"a.b": 0.5, "c": True, "d": "v1", "e": "sum"}, list_keys=("e",)) == \
        ["a.b=0.5", "c=true", "d=v1", "e=[sum]"]


@pytest.mark.parametrize("text, message", [
    ("workflow: speaker\nparams: {head.m: {normal: [0, 1]}}\n", "head.m must be one of"),
    ("workflow: speaker\nparams: {head.m: {uniform: [0.5, 0.1]}}\n", "needs \\[low, high\\] with low < high"),
    ("workflow: speaker\nparams: {train.lr: {loguniform: [0, 1]}}\n", "loguniform needs low > 0"),
    ("workflow: speaker\nparams: {}\n", "non-empty 'params'"),
    ("workflow: speaker\nparams: {head.m: {choice: [[1, 2]]}}\n", "choice needs a list of numbers"),
    ("workflow: speaker\nsteps: 3\nparams: {head.m: {choice: [1]}}\n", "unknown keys \\['steps'\\]"),
])
def test_bad_spaces(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_space(str(path))


def test_unknown_space_name():
    with pytest.raises(ConfigError, match="unknown search space 'arcfase'"):
        load_space("arcfase")


def test_a_misspelt_key_fails_before_any_trial(tmp_path):
    from workflows.sweep import main

    path = tmp_path / "space.yaml"
    path.write_text("workflow: semiweak\nparams: {bags.sise: {choice: [8, 16]}}\n")
    assert main(["semiweak", "--space", str(path), "--trials", "2", "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
    assert main(["sed", "--space", "sed", "--trials", "2", "--out", str(tmp_path / "o"), "--scheduler", "asha"]) == 2
    assert main(["sed", "--space", "semiweak", "--trials", "2", "--out", str(tmp_path / "o")]) == 2


def test_asha_is_refused_without_the_state_api(ray_local, tmp_path):
    """The suite's Ray runs without a dashboard: Ray Train could not free the trials ASHA stops."""
    from tuning.tuner import sweep

    settings = SweepSettings("semiweak", load_space("semiweak"), trials=2, scheduler="asha")
    with pytest.raises(ConfigError, match="ASHA needs Ray's state API"):
        sweep(TARGETS["semiweak"], settings, tmp_path / "o")


def test_a_trials_cpu_budget_is_shared_by_its_parallel_runs():
    """ESC-50 trains its five folds as parallel Ray Train runs: inside a trial they share the trial's
    budget (pinning every worker to it would take 5 CPUs of a 2-CPU machine and hang the sweep)."""
    from trainers.resources import cpus_per_worker, parallel_runs_scale

    settings = SweepSettings("esc50_actions", load_space("esc50"), trials=1)
    cfg = trial_config(TARGETS["esc50_actions"], settings, {"aggregators": "mean", "models": "fusion_early"}, 1.0)
    folds = len(cfg.test_folds)
    assert folds > 1 and cpus_per_worker(cfg.scale) == 1.0
    assert parallel_runs_scale(cfg.scale, folds, log=lambda *a: None).cpus_per_worker == pytest.approx(1 / folds)


def test_sweep_plots_with_a_log_uniform_parameter(tmp_path):
    from tuning.report import plot_sweep

    rows = [{"metric": m, "model.alpha": a, "model.pooling": p}
            for m, a, p in [(0.57, 6e-3, "average"), (0.45, 1.4e-3, "max"), (0.5, 1e-4, "max")]]
    for i, subset in enumerate((rows, rows[:2])):   # a wide and a narrow (no whole decade) range
        paths = plot_sweep(subset, ["model.alpha", "model.pooling"], "macro_ap", "max", [0.57, 0.45, 0.5], {},
                           tmp_path / str(i), log_params=["model.alpha"])
        assert [p.rsplit("/", 1)[1] for p in paths] == ["optimization_history.png", "param_importances.png",
                                                        "metric_vs_params.png"]
        assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in paths)


@pytest.mark.parametrize("per_epoch", [True, False])
def test_results_table_keeps_every_metric_a_trial_reported(per_epoch):
    from ray.tune import Result

    from tuning.report import trial_rows

    final = {"val_eer": 0.2, "test_eer": 0.25} if per_epoch else {"macro_ap": 0.5, "micro_ap": 0.4, "segment_f1": 0.3}
    metric = next(iter(final))
    bookkeeping = {"training_iteration": 3, "time_total_s": 9.0, "done": True, "experiment_tag": "1_a=2",
                   "trial_id": "t1", "final": True, "trial_out": "/x", "config": {"a": 2}}
    training = {"epoch": 2, "loss": 1.5} if per_epoch else {}
    (row,) = trial_rows([Result(metrics={**final, **training, **bookkeeping}, checkpoint=None, error=None,
                                path="/x")], ["a"], metric, per_epoch)
    others = {k: v for k, v in final.items() if k != metric}
    assert row == {"trial": "t1", "a": 2, "metric": final[metric], **({"epochs": 2} if per_epoch else {}),
                   "status": "finished", "trial_out": "/x", **others}
