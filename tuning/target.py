"""What a sweep needs to know of a workflow, declared by the workflow itself next to its config
(`SWEEP = SweepTarget(...)` in workflows/<name>.py): tuning never imports workflows.

`per_epoch` targets score a validation set after every epoch (trainers.loop's `evaluate` hook), so
ASHA can stop weak trials early; the others report their metric once, at the end of the trial (a
held-out-fold score: what an ablation table compares), and run under the FIFO scheduler.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable


def _one_report(cfg) -> int:
    return 1


@dataclasses.dataclass(frozen=True)
class SweepTarget:
    name: str                       # the workflow's name (`workflows/sweep.py <name>`)
    config_class: type              # its config dataclass
    run: Callable                   # run(cfg, out, *, log, callbacks=None) -> the report it writes to metrics.json
    validate: Callable              # validate(cfg): bad names and values fail before any trial starts
    metric: str                     # what the search selects on
    mode: str                       # min | max
    final: Callable                 # final(report) -> {metric: value, ...}: what a finished trial reports
    per_epoch: bool = False         # the metric is reported after every epoch too (ASHA can compare trials)
    overrides: tuple = ()           # what every trial of this workflow gets (before the space's)
    budget: Callable = _one_report  # cfg -> the most per-epoch results one trial reports (ASHA's max_t)
    list_keys: tuple = ()           # config keys that are lists (a sampled value is wrapped)
    data_key: str | None = None     # the config key `--data PATH` sets (None: the workflow has several roots)
    prepare: Callable | None = None  # (cfg, sweep out, log) -> overrides every trial shares (made once, e.g. shards)

    def trial(self, cfg, out: Path, log, callbacks) -> dict:
        """One trial: the workflow's run() into `out`; the final metrics."""
        return self.final(self.run(cfg, out, log=log, callbacks=callbacks))
