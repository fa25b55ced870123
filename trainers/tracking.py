"""Experiment tracking of a job (`--tracker mlflow|tensorboard`): one session per driver process.

A workflow run becomes one MLflow run (experiment: the workflow's name) or one TensorBoard log dir
(OUT/tensorboard): the resolved config as params, every training run's per-epoch metrics (logged live
from Ray Train's controller, `EpochLogger`), the report's numbers as final metrics, and config.yaml,
metrics.json, results.md and the plots as artifacts. The MLflow run is created on first use, so a
sweep's driver, which logs nothing itself, creates none: its trials are tracked by Tune's callbacks
(`sweep_callbacks`). Trials run in their own processes, where no session is open.

mlflow and tensorboard are imported inside functions; workflows import this module inside functions too
(`--help` stays light).
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

from ray.train import UserCallback

LOCAL_STORE = "mlflow.db"       # MLflow's own default name (sqlite:///mlflow.db), kept under OUT
LOCAL_ARTIFACTS = "mlruns"      # and its default artifact folder
TENSORBOARD_DIR = "tensorboard"
FINAL_RUN = "final"             # the TensorBoard run (sub-folder) of the final metrics, config and results
MAX_PARAM_VALUE = 6000          # MLflow's limits (mlflow.utils.validation): longer values are cut
MAX_PER_BATCH = 100             # params per log_batch call (metrics: 1000)
NOT_METRICS = ("config", "versions", "history", "manifests", "plots")   # report keys that are no final metrics


@dataclasses.dataclass
class Session:
    backend: str                 # mlflow | tensorboard
    out: Path                    # the job's OUT
    name: str                    # the workflow's name: the MLflow experiment
    uri: str | None = None       # MLflow tracking URI (None: the local store under OUT)
    run_id: str | None = None    # the job's MLflow run, once created
    announced: bool = False      # where to look was said

    @property
    def tracking_uri(self) -> str:
        return self.uri or f"sqlite:///{self.out / LOCAL_STORE}"


_session: Session | None = None
_lock = threading.RLock()


def start(backend: str, out: Path, name: str, uri: str | None = None) -> None:
    """Open the job's session (`guarded` does, for --tracker): nothing is logged yet."""
    global _session
    _session = Session(backend, Path(out).resolve(), name, uri)


def active() -> bool:
    """A job's session is open (--tracker)."""
    return _session is not None


def finish(status: str) -> None:
    """Close the session; the MLflow run (if one was created) ends with `status`: FINISHED, FAILED, KILLED."""
    global _session
    session, _session = _session, None
    if session is not None and session.run_id is not None:
        _client(session.tracking_uri).set_terminated(session.run_id, status=status)


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(session: Session, name: str) -> str:
    """The MLflow experiment `name`, created if new; in the local store its artifacts go under OUT."""
    from mlflow.exceptions import MlflowException

    client = _client(session.tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None if session.uri else (session.out / LOCAL_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:   # created meanwhile by another job
        return client.get_experiment_by_name(name).experiment_id


def _run_id(session: Session) -> str:
    with _lock:   # folds train from parallel threads (sed, esc50_actions): one run for all of them
        if session.run_id is None:
            run = _client(session.tracking_uri).create_run(experiment_id(session, session.name),
                                                           run_name=session.out.name, tags={"out": str(session.out)})
            session.run_id = run.info.run_id
            _announce(session)
    return session.run_id


def _announce(session: Session) -> None:
    """Where the job's tracking goes, said once, when the first thing is logged."""
    with _lock:
        if session.announced:
            return
        session.announced = True
    if session.backend == "mlflow":
        view = "" if session.uri else f"; view it: mlflow ui --backend-store-uri {session.tracking_uri}"
        print(f"[track] MLflow run {session.run_id} (experiment {session.name!r}) at {session.tracking_uri}{view}")
    else:
        print(f"[track] TensorBoard event files in {session.out / TENSORBOARD_DIR}; view them: tensorboard --logdir "
            f"{session.out / TENSORBOARD_DIR}")


def _prefix(session: Session, path: Path) -> str:
    """Where `path` sits in OUT ("" for OUT itself; "heads/arcface", "snr20/full/fold1"...): what tells apart
    the reports and training runs of one job; a path outside OUT is named in full."""
    path = Path(path).resolve()
    if path == session.out:
        return ""
    try:
        return path.relative_to(session.out).as_posix()
    except ValueError:
        return path.as_posix().strip("/")


def key(*parts: str) -> str:
    """A key MLflow accepts (alphanumerics, _ - . / : and spaces): anything else becomes "_"."""
    return re.sub(r"[^\w.\-/: ]", "_", "/".join(p for p in parts if p))


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}: the leaves of nested dicts under dotted keys."""
    flat = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        flat.update(flatten(v, name) if isinstance(v, dict) and v else {name: v})
    return flat


def params_of(config: dict) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values as text (cut at MLflow's limit: the whole
    config is the config.yaml artifact)."""
    return {key(k): (text if len(text := str(v)) <= MAX_PARAM_VALUE else text[:MAX_PARAM_VALUE - 3] + "...")
            for k, v in flatten(config).items()}


def metrics_of(report: dict) -> dict[str, float]:
    """The report's numbers (nested dicts, dotted keys) as final metrics; config, versions, the training
    history (logged per epoch), manifests, plots, text and lists (per-class tables: metrics.json has them)
    are left out."""
    return {key(k): float(v) for k, v in flatten({k: v for k, v in report.items() if k not in NOT_METRICS}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def epoch_callbacks(run_dir: Path) -> list:
    """The Ray Train callback logging a training run's epochs (nothing without a session). Its metrics are
    prefixed with where the run's model sits in OUT ("train" when in OUT itself): "train/loss", "voice/loss",
    "snr20/full/fold1/loss"..."""
    if _session is None:
        return []
    label = _prefix(_session, run_dir) or "train"
    if _session.backend == "mlflow":
        return [EpochLogger(label, _session.backend, _session.tracking_uri, _run_id(_session))]
    _announce(_session)
    return [EpochLogger(label, _session.backend, str(_session.out / TENSORBOARD_DIR / label))]


class EpochLogger(UserCallback):
    """Ray Train V2 callback logging rank 0's numeric metrics of every epoch at step = epoch. It runs in the
    training run's controller actor, not in the driver: it carries where to log and opens its own client or
    writer there."""

    def __init__(self, label: str, backend: str, target: str, run_id: str | None = None):
        self.label, self.backend, self.target, self.run_id = label, backend, target, run_id
        self._sink = None    # the client or writer, opened in the controller
        self._warned = False

    def after_report(self, run_context, metrics: list, checkpoint) -> None:
        values = {k: float(v) for k, v in metrics[0].items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
        step = int(metrics[0].get("epoch", 0))
        try:
            self._log(values, step)
        except Exception as exc:   # a tracking outage must not stop a training run: said once, then skipped
            if not self._warned:
                print(f"[track] warning: epoch metrics of {self.label} not logged ({exc}); training goes on",
                      flush=True)
                self._warned = True

    def _log(self, values: dict, step: int) -> None:
        if self.backend == "mlflow":
            from mlflow.entities import Metric

            self._sink = self._sink or _client(self.target)
            now = int(time.time() * 1000)
            self._sink.log_batch(self.run_id, metrics=[Metric(key(self.label, k), v, now, step)
                                                       for k, v in values.items()])
        else:
            from torch.utils.tensorboard import SummaryWriter

            self._sink = self._sink or SummaryWriter(self.target)
            for k, v in values.items():
                self._sink.add_scalar(k, v, step)
            self._sink.flush()


def log_report(out: Path, config: dict, report: dict, results: str) -> None:
    """A written report (the files of `out`: config.yaml, metrics.json, results.md, plots/) into the session:
    params, final metrics, artifacts. A job writing several reports (speaker --compare-heads) prefixes each
    with where it sits in OUT."""
    if _session is None:
        return
    prefix = _prefix(_session, out)
    params = {key(prefix, k): v for k, v in params_of(config).items()}
    metrics = {key(prefix, k): v for k, v in metrics_of(report).items()}
    files = [out / name for name in ("config.yaml", "metrics.json", "results.md")]
    files += sorted(p for p in Path(out).rglob("*.png") if "plots" in p.relative_to(out).parts)
    if _session.backend == "mlflow":
        folders = ("/".join(p for p in (prefix, f.relative_to(out).parent.as_posix()) if p not in ("", "."))
                   for f in files)
        _mlflow_report(_session, params, metrics, [(f, d) for f, d in zip(files, folders) if f.is_file()])
    else:
        _announce(_session)
        _tensorboard_report(_session, prefix, metrics, (Path(out) / "config.yaml").read_text(), results)


def _mlflow_report(session: Session, params: dict, metrics: dict, files: list) -> None:
    from mlflow.entities import Metric, Param

    client, run_id, now = _client(session.tracking_uri), _run_id(session), int(time.time() * 1000)
    items = list(params.items())
    for i in range(0, len(items), MAX_PER_BATCH):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + MAX_PER_BATCH]])
    values = [Metric(k, v, now, 0) for k, v in metrics.items()]
    for i in range(0, len(values), 10 * MAX_PER_BATCH):
        client.log_batch(run_id, metrics=values[i:i + 10 * MAX_PER_BATCH])
    for path, folder in files:
        client.log_artifact(run_id, str(path), artifact_path=folder or None)


def _tensorboard_report(session: Session, prefix: str, metrics: dict, config_yaml: str, results: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(session.out / TENSORBOARD_DIR / FINAL_RUN)) as writer:
        for k, v in metrics.items():
            writer.add_scalar(k, v, 0)
        writer.add_text(key(prefix, "config"), f"```yaml\n{config_yaml}```", 0)
        writer.add_text(key(prefix, "results"), results, 0)


def sweep_callbacks(out: Path, workflow: str, log=print) -> list:
    """Ray Tune callbacks of a sweep into `out`: MLflow, one run per trial (experiment: the sweep's folder
    name; its trial dir as artifacts), or TensorBoard event files in every trial dir (Tune's own logger,
    given explicitly so that it runs even where auto loggers are switched off)."""
    if _session is None:
        return []
    sweep_dir = Path(out).resolve()
    if _session.backend == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        experiment_id(_session, sweep_dir.name)   # created here: in the local store, with its artifacts in OUT
        log(f"[track] MLflow: one run per trial in experiment {sweep_dir.name!r} at {_session.tracking_uri}")
        return [MLflowLoggerCallback(tracking_uri=_session.tracking_uri, experiment_name=sweep_dir.name,
                                     tags={"workflow": workflow, "out": str(sweep_dir)}, save_artifact=True)]
    from ray.tune.logger import TBXLoggerCallback

    log(f"[track] TensorBoard event files in every trial dir: tensorboard --logdir {sweep_dir}")
    return [TBXLoggerCallback()]
