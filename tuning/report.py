"""What a finished sweep leaves behind: the trials table (markdown + CSV, best first), the best
trial's resolved config as a YAML the workflow takes with --config, and PNGs: optimization history,
parameter importances, and the metric against each swept parameter."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import yaml

from datasets.atomic import write_text
from trainers.plots import save_figure


def _other_metrics(last: dict, metric: str, per_epoch: bool) -> dict:
    """A trial's metrics besides the selection one: the test_/val_ ones of a workflow that reports
    every epoch (the rest are its last epoch's training statistics), everything but Tune's own
    bookkeeping of one that reports once, at the end (e.g. SED's micro-AP and segment F1)."""
    from ray.tune.result import AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, TRIAL_ID

    if per_epoch:
        return {k: v for k, v in last.items() if k.startswith(("test_", "val_")) and k != metric}
    skip = {*AUTO_RESULT_KEYS, DONE, EXPERIMENT_TAG, TRIAL_ID, "final", "trial_out", metric}
    return {k: v for k, v in last.items() if k not in skip and isinstance(v, (int, float))}


def trial_rows(result_grid, params: list[str], metric: str, per_epoch: bool = True) -> list[dict]:
    """One row per trial: its sampled values, last metric, epochs reported (for workflows that
    report every epoch; the others report once, at the end), how it ended, its other metrics."""
    rows = []
    for r in result_grid:
        last = r.metrics or {}
        iterations = int(last.get("training_iteration", 0))
        final = bool(last.get("final"))
        # the final report is not an epoch
        epochs = {"epochs": iterations - 1 if final else iterations} if per_epoch else {}
        rows.append({"trial": last.get("trial_id", ""), **{p: r.config.get(p) for p in params},
                     "metric": last.get(metric), **epochs,
                     "status": "error" if r.error else "finished" if final else "stopped early",
                     "trial_out": last.get("trial_out", ""),
                     **_other_metrics(last, metric, per_epoch)})
    return rows


def ranked(rows: list[dict], mode: str) -> list[dict]:
    """Best first; trials that failed, or reported no metric, last."""
    scored = [r for r in rows if r["status"] != "error" and isinstance(r["metric"], (int, float))
              and np.isfinite(r["metric"])]
    return sorted(scored, key=lambda r: r["metric"], reverse=mode == "max") + [r for r in rows if r not in scored]


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_tables(rows: list[dict], metric: str, out: Path) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r if k != "trial_out"))
    header = [metric if c == "metric" else c for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    table = "\n".join(lines)
    write_text(out / "results.md", table + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns + ["trial_out"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "results.csv", buf.getvalue())
    return table


def write_best_config(best: dict, out: Path) -> Path | None:
    """The best finished trial's resolved config (from its metrics.json), CPU budget reset to automatic."""
    metrics = Path(best.get("trial_out") or "/nonexistent") / "metrics.json"
    if not metrics.is_file():
        return None
    config = json.loads(metrics.read_text())["config"]
    if isinstance(config.get("scale"), dict):
        config["scale"]["cpu_budget"] = None   # the sweep's share of its cluster, not the best value's
    path = out / "best_config.yaml"
    write_text(path, yaml.safe_dump(config, sort_keys=False))
    return path


def plot_sweep(rows: list[dict], params: list[str], metric: str, mode: str, values: list[float], importances: dict,
               out: Path, log_params=()) -> list[str]:
    """`values`: the metric of the study's trials in the order Optuna sampled them; `log_params`:
    parameters sampled log-uniformly (plotted on a log axis)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    done = [r for r in rows if isinstance(r["metric"], (int, float))]
    paths = []
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    best = np.minimum.accumulate(values) if mode == "min" else np.maximum.accumulate(values)
    ax.plot(range(1, len(values) + 1), values, "o", label="trial")
    ax.plot(range(1, len(values) + 1), best, "-", label=f"best so far ({mode})")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("Optimization history")
    ax.legend()
    ax.grid(True, ls=":", lw=0.6)
    paths.append(save_figure(fig, out / "optimization_history.png"))

    fig = Figure(figsize=(6, 0.5 + 0.45 * max(len(importances), 1)))
    ax = fig.add_subplot()
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel("importance (Optuna fANOVA)")
    else:
        ax.text(0.5, 0.5, "too few finished trials to rank parameters", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"Parameter importances for {metric}")
    paths.append(save_figure(fig, out / "param_importances.png"))

    fig = Figure(figsize=(4 * len(params), 3.5))
    for i, p in enumerate(params):
        ax = fig.add_subplot(1, len(params), i + 1)
        xs = [r[p] for r in done]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.plot(xs, [r["metric"] for r in done], "o")
            if p in log_params:
                ax.set_xscale("log")   # plainly labelled ticks at 10^k (and 2, 5 x 10^k in a narrow range)
                narrow = max(xs) < 100 * min(xs)
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
                ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.tick_params(axis="x", labelrotation=30)
        else:   # categorical: one column per value
            cats = sorted({str(x) for x in xs})
            ax.plot([cats.index(str(x)) for x in xs], [r["metric"] for r in done], "o")
            ax.set_xticks(range(len(cats)), cats)
        ax.set_xlabel(p)
        ax.set_ylabel(metric)
        ax.grid(True, ls=":", lw=0.6)
    fig.tight_layout()
    paths.append(save_figure(fig, out / "metric_vs_params.png"))
    return paths


def study_results(study_db: Path, study_name: str) -> tuple[list[float], dict]:
    """(the metric of every finished trial in sampling order, Optuna's parameter importances or {}) of the
    persisted study. Trials ASHA stopped count with their last value, as Tune hands them to Optuna."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{study_db}")
    complete = [t for t in sorted(study.trials, key=lambda t: t.number) if t.state == optuna.trial.TrialState.COMPLETE]
    values = [t.value for t in complete]
    if len(complete) < 2 or not any(len({str(t.params.get(p)) for t in complete}) > 1 for p in complete[0].params):
        return values, {}
    try:
        return values, dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):   # e.g. a parameter that never varied among finished trials
        return values, {}
