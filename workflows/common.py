"""What every workflow script shares: CLI flags, the resolved config and the report files, exit codes."""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import signal
import sys
import threading
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchaudio", "ray", "numpy", "pyarrow", "webdataset", "soundfile", "scikit-learn", "pillow",
            "adversarial-robustness-toolbox", "av", "fast-bss-eval", "pesq", "pystoi", "mlflow", "tensorboard")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (sections as in the dataclasses of the workflow)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set train.lr=1e-3 --set head.m=0.3")
    p.add_argument("--workers", type=int, help="scale.workers: Ray Train workers")
    p.add_argument("--epochs", type=int, help="train.epochs")
    add_verbose_arg(p)
    add_tracking_args(p)


def add_tracking_args(p: argparse.ArgumentParser) -> None:
    """Experiment tracking flags: not config keys (tracking changes no result, config hash or run name)."""
    p.add_argument("--tracker", choices=("mlflow", "tensorboard"),
                   help="log the run (config, per-epoch and final metrics, results.md and plots): to MLflow "
                        "(--tracking-uri; default: the local store OUT/mlflow.db) or TensorBoard (OUT/tensorboard)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (http://host:5000, sqlite:///...); "
                                                        "only with --tracker mlflow")


def add_verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Ray's own lines (INFO logs, Ray Data progress) on the console too; OUT/logs/run.log "
                        "always holds them")


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
    """The config as run: every key, and every head's keyword arguments with their defaults (a head may sit
    in a section, as morph's voice.head)."""
    from trainers.config import to_dict
    from trainers.heads import head_defaults

    def resolve(section: dict) -> dict:
        return {k: head_defaults(v) if k == "head" and isinstance(v, dict) and "name" in v
                else resolve(v) if isinstance(v, dict) else v for k, v in section.items()}

    return resolve(to_dict(cfg))


def _sigterm_as_sigint(signum, frame) -> None:
    """SIGTERM (what schedulers and `timeout` send) stops the job as Ctrl-C does: through the SIGINT
    handler in force (Ray Tune's, which saves the sweep for a resume, or Python's KeyboardInterrupt)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


# A line of the project's own, as the driver prints it or Ray forwards it from a worker ("(RayTrainWorker
# pid=12) [train] epoch 1/2 ..."): a "[stage]" tag; results tables; what guarded() says.
_OWN_LINE = re.compile(r"^((\x1b\[[0-9;]*m)?\([^)]*pid=\d+[^)]*\)(\x1b\[[0-9;]*m)? )?"
                       r"(\[[a-z][\w-]*\] |error: |\||Ray's logs of this run)")


class _Console(io.TextIOBase):
    """sys.stdout / sys.stderr of a job: everything goes to run.log; the console gets the project's lines
    (all of them with --verbose). Once a traceback starts, the rest of the job's output is shown: a
    failure's detail must reach the console."""

    def __init__(self, log, console, verbose: bool, state: dict):
        self.log, self.console, self.verbose, self.state = log, console, verbose, state
        self.pending = ""
        self.error_open = False   # an error message's line is shown up to its end
        self.lock = threading.Lock()   # Ray forwards workers' lines from its own thread

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.log.write(text)
            if self.verbose or self.state["traceback"]:
                self.console.write(text)
                return len(text)
            if self.pending and _OWN_LINE.match(text):
                # a print of the project's starts a line of its own: an unfinished one before it (a worker's
                # progress bar, redrawn with \r and no newline) ends here, or it would swallow this one
                self._show(self.pending)
                self.pending = ""
            if not self.pending and text.startswith("error: "):
                # an error message may span lines (one print: one write): all of it is shown, and its line's end
                self.console.write(text)
                self.error_open = not text.endswith("\n")
                return len(text)
            rest = text
            if self.error_open:   # print writes the end of the line apart
                shown, newline, rest = text.partition("\n")
                self.console.write(shown + newline)
                self.error_open = not newline
            self.pending += rest
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                if line.startswith("Traceback (most recent call last)"):
                    self.state["traceback"] = True
                self._show(line)
        return len(text)

    def _show(self, line: str) -> None:
        if self.state["traceback"] or _OWN_LINE.match(line):
            self.console.write(line + "\n")

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()


def _console_stream(stream, fd: int):
    """Where a job's console lines go: a copy of the terminal's fd (fd 1 and 2 then point to run.log),
    or the stream itself when it is not that fd (pytest's capture)."""
    try:
        if stream.fileno() == fd:
            return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    return stream


def log_to_file(out: Path, verbose: bool = False):
    """Send this process's fd 1 and 2 (Ray's C++ and Python logs, Ray Data progress, workers' forwarded
    lines) to OUT/logs/run.log, and keep on the console only the project's lines unless `verbose`.
    Returns the function that restores the console; `restore(discard=True)` removes the log again when it
    created OUT (bad input writes nothing)."""
    path = Path(out) / "logs" / "run.log"
    created = not Path(out).exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")
    saved = {"stdout": sys.stdout, "stderr": sys.stderr, "fds": (os.dup(1), os.dup(2))}
    sys.stdout.flush()
    sys.stderr.flush()
    consoles = (_console_stream(sys.stdout, 1), _console_stream(sys.stderr, 2))
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    state = {"traceback": False}
    sys.stdout = _Console(log, consoles[0], verbose, state)
    sys.stderr = _Console(log, consoles[1], verbose, state)

    def restore(discard: bool = False) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved["stdout"], saved["stderr"]
        for fd, copy in zip((1, 2), saved["fds"]):
            os.dup2(copy, fd)
            os.close(copy)
        for stream in consoles:
            if stream not in (saved["stdout"], saved["stderr"]):
                stream.close()
        log.close()
        if discard and created:
            path.unlink(missing_ok=True)
            for d in (path.parent, path.parent.parent):
                with contextlib.suppress(OSError):   # only while empty
                    d.rmdir()

    restore.log = log
    return restore


def guarded(fn, args: argparse.Namespace | None = None) -> int:
    """Run the job; bad input becomes one clear line on stderr and exit code 2. Ctrl-C or SIGTERM stop
    it with one line and exit code 130 (a rerun of the same command resumes); either way the Ray
    connection the job opened is closed, and a local instance it started shut down with all its
    processes (one already running, e.g. a test's, is left alone). With `args` (its `out` and `verbose`),
    the job's console is quiet and OUT/logs/run.log holds everything (`log_to_file`)."""
    from datasets.audio import AudioError
    from datasets.errors import LayoutError
    from datasets.shards import ShardError
    from trainers.config import ConfigError

    def ray_up() -> bool:   # without importing Ray: a job that never imported it never started it
        return "ray" in sys.modules and sys.modules["ray"].is_initialized()

    tracker = getattr(args, "tracker", None)
    if getattr(args, "tracking_uri", None) and tracker != "mlflow":
        print("error: --tracking-uri is an MLflow tracking URI: give it with --tracker mlflow", file=sys.stderr)
        return 2
    already_up = ray_up()
    restore = log_to_file(args.out, args.verbose) if args is not None else None
    if tracker:
        from trainers import tracking

        # the workflow's name (the MLflow experiment): the script defining the job (workflows/<name>.py)
        tracking.start(tracker, args.out, Path(fn.__code__.co_filename).stem, args.tracking_uri)
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
    except BaseException:
        if restore is not None:   # Python prints it on the console once restored; run.log gets it now
            import traceback

            traceback.print_exc(file=restore.log)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ray_up() and not already_up:   # a local instance goes with it; a cluster's only disconnects
            from trainers import local_ray

            kept = local_ray.stop(failed=code != 0)
            if kept:
                print(f"Ray's logs of this run: {kept} (removed when the next local run starts)", file=sys.stderr)
        if restore is not None:
            restore(discard=code == 2)
        if tracker:
            tracking.finish({0: "FINISHED", 130: "KILLED"}.get(code, "FAILED"))
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


def write_config(out: Path, cfg) -> dict:
    """out/config.yaml: the resolved config (pass it back with --config to rerun exactly this); returns it."""
    import yaml

    from datasets.atomic import write_text

    config = resolved_config(cfg)
    write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return config


def write_report(out: Path, cfg, report: dict, table: str, plots: str, log=print) -> dict:
    """config.yaml (the resolved config), metrics.json (`report` with the resolved config and the
    package versions), results.md (the table), all of them and the plots into the job's tracker (if
    --tracker), and the closing lines saying where to look."""
    from datasets.atomic import write_json, write_text
    from trainers import tracking

    config = write_config(out, cfg)
    report = {"workflow": report.pop("workflow"), "config": config, "versions": versions(), **report}
    write_json(out / "metrics.json", report)
    write_text(out / "results.md", table + "\n")
    tracking.log_report(out, config, report, table)
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
