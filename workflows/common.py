"""What every workflow script shares: CLI flags, the resolved config and the report files, exit codes."""
from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchaudio", "ray", "numpy", "pyarrow", "webdataset", "soundfile", "scikit-learn", "pillow")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (sections as in the dataclasses of the workflow)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set train.lr=1e-3 --set head.m=0.3")
    p.add_argument("--workers", type=int, help="scale.workers: Ray Train workers")
    p.add_argument("--epochs", type=int, help="train.epochs")


def shorthand_overrides(args: argparse.Namespace, extra: list[str] = ()) -> list[str]:
    """Shorthand flags become dotted overrides; explicit --set comes last so it wins."""
    out = list(extra)
    if args.workers is not None:
        out.append(f"scale.workers={args.workers}")
    if args.epochs is not None:
        out.append(f"train.epochs={args.epochs}")
    return out + list(args.set)


def root_overrides(**roots) -> list[str]:
    """Path flags (`--data PATH`...) as overrides of their config keys: {"data.root": path or None}."""
    return [f"{key}={Path(path)}" for key, path in roots.items() if path is not None]


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


def guarded(fn) -> int:
    """Run the job; bad input becomes one clear line on stderr and exit code 2."""
    from datasets.audio import AudioError
    from datasets.errors import LayoutError
    from datasets.shards import ShardError
    from trainers.config import ConfigError

    try:
        fn()
    except (ConfigError, ShardError, LayoutError, AudioError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def manifest_summary(manifests: dict, digests: dict) -> dict:
    """Per split: what metrics.json records of its shard set."""
    return {s: {"sha256": digests[s], "num_samples": m["num_samples"], "shards": len(m["shards"]),
                "skipped": len(m["skipped"])} for s, m in manifests.items()}


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
                        curves: dict, history: list, timing: dict, title: str, log=print) -> dict:
    """What the verification workflows (speaker, face) write, under the same keys: DET and training
    PNGs, then the report (`write_report`). Returns the report plus the DET curves ("det_curves")."""
    from trainers.plots import plot_det, plot_training_curves
    from trainers.verification import results_table

    det = plot_det(curves, out / "plots" / "det.png", title=title)
    training = plot_training_curves(history, out / "plots" / "training.png")
    report = write_report(out, cfg, {
        "workflow": workflow,
        "data": str(root),
        "manifests": manifest_summary(*shards),
        "verification": results,
        "history": history,
        "timing_s": timing,
        "plots": {"det": str(det), "training": str(training)},
    }, results_table(results), f"{det}, {training}", log)
    return {**report, "det_curves": curves}
