"""What every workflow script shares: CLI flags, the resolved config and the report files, exit codes."""
from __future__ import annotations

import argparse
import signal
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchaudio", "ray", "numpy", "pyarrow", "webdataset", "soundfile", "scikit-learn", "pillow",
            "adversarial-robustness-toolbox", "av", "fast-bss-eval", "pesq", "pystoi")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (sections as in the dataclasses of the workflow)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set train.lr=1e-3 --set head.m=0.3")
    p.add_argument("--workers", type=int, help="scale.workers: Ray Train workers")
    p.add_argument("--epochs", type=int, help="train.epochs")


def shorthand_overrides(args: argparse.Namespace, extra: list = ()) -> list:
    """Shorthand flags become overrides, as `(key, value)` pairs taken literally (a path or a name is the
    string given, never YAML); explicit --set (`key=value`, YAML) comes last so it wins."""
    out = list(extra)
    if args.workers is not None:
        out.append(("scale.workers", args.workers))
    if args.epochs is not None:
        out.append(("train.epochs", args.epochs))
    return out + list(args.set)


def int_list(text: str, flag: str) -> list[int]:
    """A comma-separated list of integers from a flag (`--fold 1,2`); anything else exits 2 naming it."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --{flag} takes comma-separated integers, got {text!r}") from None


def literal_overrides(**values) -> list[tuple]:
    """Flags given (not None) as literal overrides of their config keys: {"data.root": path, ...}; a
    path becomes its string."""
    return [(key, str(value) if isinstance(value, Path) else value) for key, value in values.items()
            if value is not None]


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolved_config(cfg) -> dict:
    """The config as run: every key, and a head's keyword arguments with their defaults."""
    from trainers.config import to_dict
    from trainers.heads import head_defaults

    data = to_dict(cfg)
    if isinstance(data.get("head"), dict) and "name" in data["head"]:
        data["head"] = head_defaults(data["head"])
    return data


def _sigterm_as_sigint(signum, frame) -> None:
    """SIGTERM (what schedulers and `timeout` send) stops the job as Ctrl-C does: through the SIGINT
    handler in force (Ray Tune's, which saves the sweep for a resume, or Python's KeyboardInterrupt)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def guarded(fn) -> int:
    """Run the job; bad input becomes one clear line on stderr and exit code 2. Ctrl-C or SIGTERM stop
    it with one line and exit code 130 (a rerun of the same command resumes); either way the Ray
    connection the job opened is closed, and a local instance it started shut down with all its
    processes (one already running, e.g. a test's, is left alone)."""
    from datasets.audio import AudioError
    from datasets.errors import LayoutError
    from datasets.shards import ShardError
    from trainers.config import ConfigError

    def ray_up() -> bool:   # without importing Ray: a job that never imported it never started it
        return "ray" in sys.modules and sys.modules["ray"].is_initialized()

    already_up = ray_up()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    code = 1   # anything not caught below propagates with its traceback
    try:
        fn()
        code = 0
    except (ConfigError, ShardError, LayoutError, AudioError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, SystemExit):
        # Python's SIGINT handler raises KeyboardInterrupt; Ray Train's (in force while it trains) aborts the
        # run, then exits through SystemExit: nothing else inside a job raises that
        print("error: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ray_up() and not already_up:   # a local instance goes with it; a cluster's only disconnects
            from trainers import local_ray

            kept = local_ray.stop(failed=code != 0)
            if kept:
                print(f"Ray's logs of this run: {kept} (removed when the next local run starts)", file=sys.stderr)
    return code


def manifest_summary(manifests: dict, digests: dict) -> dict:
    """Per split: what metrics.json records of its shard set."""
    return {s: {"sha256": digests[s], "num_samples": m["num_samples"], "shards": len(m["shards"]),
                "skipped": len(m["skipped"])} for s, m in manifests.items()}


RESULT_FILES = ("metrics.json", "results.md", "config.yaml")


def clear_stale_results(out: Path, cfg, log=print) -> None:
    """When a run with another config starts in `out`, the previous run's results (metrics.json,
    results.md, config.yaml, plots/) are removed first: after a failed or interrupted run, what `out`
    shows is never an older config's results looking current. A rerun of the same config keeps them
    until it replaces them. Shards, checkpoints and trained models stay (reruns reuse them)."""
    import json
    import shutil

    try:
        previous = json.loads((out / "metrics.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if previous == json.loads(json.dumps(resolved_config(cfg), default=float)):
        return
    log(f"[out] {out} holds the results of another config: removing them before this run")
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "plots", ignore_errors=True)


def verified_shards(shards: Path, names) -> tuple[dict, dict]:
    """({name: manifest}, {name: manifest digest}) of shard sets already built under `shards`; a missing,
    truncated or altered shard is named here, before training."""
    from datasets.shards import manifest_digest, verify_shards

    manifests = {name: verify_shards(shards / name) for name in names}
    return manifests, {name: manifest_digest(shards / name) for name in manifests}


def write_report(out: Path, cfg, report: dict, table: str, plots: str, log=print) -> dict:
    """config.yaml (the resolved config), metrics.json (`report` with the resolved config and the
    package versions), results.md (the table), and the closing lines saying where to look."""
    import yaml

    from datasets.atomic import write_json, write_text

    config = resolved_config(cfg)
    report = {"workflow": report.pop("workflow"), "config": config, "versions": versions(), **report}
    write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_json(out / "metrics.json", report)
    write_text(out / "results.md", table + "\n")
    log("\n" + table + f"\n\n[done] metrics: {out / 'metrics.json'}\n[done] plots:   {plots}")
    return report


def require_positive(cfg, *keys: str) -> None:
    """Sizes and rates that must be > 0, checked before any data is read (a negative sample rate would
    otherwise surface only as every file failing to decode, after the corpus and Ray are up)."""
    from trainers.config import ConfigError

    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if not value > 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {value!r}")


def checked(check) -> None:
    """Run a validation that raises ValueError for bad names and parameters (unknown encoders and
    heads, bad head or model parameters) and report it as a ConfigError: exit code 2, one line."""
    from trainers.config import ConfigError

    try:
        check()
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def verification_report(out: Path, cfg, workflow: str, root: Path, shards: tuple[dict, dict], results: dict,
                        curves: dict, history: list, timing: dict, title: str, log=print, extra=None,
                        note: str | None = None) -> dict:
    """What the verification workflows (speaker, face) write, under the same keys: DET (minDCF points
    marked; `note`, e.g. that the corpus is generated, in its corner) and training PNGs, then the report
    (`write_report`; `extra`: more keys). Returns the report plus the DET curves ("det_curves")."""
    from trainers.metrics import P_TARGETS
    from trainers.plots import plot_det, plot_training_curves
    from trainers.verification import results_table

    det = plot_det(curves, out / "plots" / "det.png", title=title, p_targets=P_TARGETS, note=note)
    training = plot_training_curves(history, out / "plots" / "training.png")
    report = write_report(out, cfg, {
        "workflow": workflow,
        "data": str(root),
        "manifests": manifest_summary(*shards),
        "verification": results,
        "history": history,
        "timing_s": timing,
        "plots": {"det": str(det), "training": str(training)},
        **(extra or {}),
    }, results_table(results), f"{det}, {training}", log)
    return {**report, "det_curves": curves}
