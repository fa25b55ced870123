"""What a sweep needs to know of each workflow: its config class, what every trial of it sets, the
metric to select on, and how one trial runs it and reads that metric back.

`per_epoch` targets score a validation set after every epoch (trainers.loop's `evaluate` hook), so
ASHA can stop weak trials early; the others report their metric once, at the end of the trial (a
held-out-fold score: what an ablation table compares), and run under the FIFO scheduler.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Target:
    module: str                     # the workflow module
    config_class: str
    metric: str
    mode: str                       # min | max
    per_epoch: bool
    sweep_overrides: tuple          # what every trial of this workflow gets (before the space's)
    final: Callable                 # (report, cfg) -> {metric: value, ...} read from run()'s report
    budget: Callable                # cfg -> the most per-epoch results one trial reports (ASHA's max_t)
    runner: Callable                # (workflow module, cfg, out, log, callbacks, **shared) -> run()'s report
    list_keys: tuple = ()           # config keys that are lists (a sampled value is wrapped)
    prepare: Callable | None = None  # (cfg, data, sweep out, log) -> `shared`: what trials share, made once

    def workflow(self):
        return importlib.import_module(self.module)

    def run(self, cfg, out: Path, log, callbacks, shared: dict) -> dict:
        """One trial: the workflow's run() into `out`; the final metrics."""
        return self.final(self.runner(self.workflow(), cfg, out, log, callbacks, **shared), cfg)


def _speaker_prepare(cfg, data, out: Path, log) -> dict:
    """The corpus (the demo one, generated, when no --data) and its shards, once for every trial:
    trials that built them each would race on the same files."""
    from datasets.voxceleb import find_layout
    from workflows import speaker

    root = Path(data) if data else speaker.demo_corpus(out, cfg.demo, log)
    speaker.shard_corpus(cfg, find_layout(root), root, out / "shards")
    return {"data": str(root), "shards_dir": str(out / "shards")}


def _semiweak_final(report: dict, cfg) -> dict:
    r = report["results"]["two_stage"]   # stage 2's model, or stage 1's when method.stage2 is off
    last = r["history"][-1]
    return {"val_count_error": last["val_count_error"], "val_count_mae": last["val_count_mae"],
            "val_acc": last["val_acc"], "test_instance_accuracy": r["instance_accuracy"],
            "test_count_mae": r["count_mae"]}


def _speaker_final(report: dict, cfg) -> dict:
    from datasets.voxceleb import TRIAL_LISTS

    name = next(n for n in (*TRIAL_LISTS, *sorted(report["trials"])) if n in report["trials"])  # Vox1-O first
    trials = report["trials"][name]["trained"]
    return {"val_eer": report["history"][-1]["val_eer"], "test_eer": trials["eer"],
            "test_min_dcf_0.01": trials["min_dcf_0.01"]}


def _sed_final(report: dict, cfg) -> dict:
    r = next(iter(report["results"].values()))["full"]
    return {"macro_ap": r["macro_ap"], "micro_ap": r["micro_ap"], "segment_f1": r["segment_f1"]}


def _esc50_final(report: dict, cfg) -> dict:
    (model, by_agg), = report["results"].items()
    r = next(iter(by_agg.values()))
    return {"accuracy": r["mean"], "accuracy_std": r["std"]}


def _face_final(report: dict, cfg) -> dict:
    return {"accuracy": report["verification"]["trained"]["mean_acc"],
            "eer": report["verification"]["trained"]["eer"]}


TARGETS: dict[str, Target] = {
    "semiweak": Target("workflows.semiweak", "SemiWeakConfig", "val_count_error", "min", True,
                       ("methods=[two_stage]", "data.val_fraction=0.1"), _semiweak_final,
                       lambda cfg: cfg.train.epochs * 2,    # stage 1 + stage 2: the most one trial reports
                       lambda wf, cfg, out, log, cb: wf.run(cfg, out, log, callbacks=cb)),
    "speaker": Target("workflows.speaker", "SpeakerConfig", "val_eer", "min", True, ("data.val_speakers=8",),
                      _speaker_final, lambda cfg: cfg.train.epochs,
                      lambda wf, cfg, out, log, cb, data, shards_dir: wf.run(cfg, Path(data), out, log,
                                                                              Path(shards_dir), callbacks=cb,
                                                                              score_untrained=False),
                      prepare=_speaker_prepare),
    "sed": Target("workflows.sed", "SEDConfig", "macro_ap", "max", False, ("ablations=[full]", "test_folds=[1]"),
                  _sed_final, lambda cfg: 1, lambda wf, cfg, out, log, cb: wf.run(cfg, None, None, out, log)),
    "esc50_actions": Target("workflows.esc50_actions", "ESC50Config", "accuracy", "max", False, (), _esc50_final,
                            lambda cfg: 1, lambda wf, cfg, out, log, cb: wf.run(cfg, None, None, out, log),
                            list_keys=("aggregators", "models")),
    "face": Target("workflows.face", "FaceConfig", "accuracy", "max", False, (), _face_final, lambda cfg: 1,
                   lambda wf, cfg, out, log, cb: wf.run(cfg, None, out, log)),
}
