"""cluster/: every YAML parses; the launcher config passes Ray's shipped schema and Ray's own checks; the KubeRay
manifests pass the CRD's required keys and types; every entrypoint runs a workflow of this repo with flags and
config keys it accepts (a sweep: its space and every --set resolved into a trial's config), on paths of the
shared volume; every cluster file runs the project image that cluster/Dockerfile builds (the project and its pins
on Ray's GPU image), so no runtime environment installs packages; the runtime environments build as Ray's
RuntimeEnv, the jobs' with a remote working_dir, and the project packs without runs/ or .venv/. Nothing here
starts Ray."""
import copy
import dataclasses
import importlib
import json
import re
import shlex
import tempfile
import zipfile
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
KUBERAY = sorted((CLUSTER / "kuberay").glob("*.yaml"))
EXPECTED = {"aws-gpu.yaml", "runtime_env.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob-sed.yaml",
            "kuberay/rayjob-speaker.yaml", "kuberay/rayjob-sweep.yaml"}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib (3.11+) or tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def fails(validate, instance) -> bool:
    try:
        validate(instance)
    except (jsonschema.ValidationError, ValueError):
        return True
    return False


# ----------------------------------------------------------------------------- every file

def test_the_cluster_files_exist():
    assert EXPECTED <= {str(p.relative_to(CLUSTER)) for p in CLUSTER.rglob("*.yaml")}


@pytest.mark.parametrize("path", sorted(CLUSTER.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses(path):
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) and d for d in docs), f"{path}: expected non-empty mappings"


# ----------------------------------------------------------------------------- cluster launcher

def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_launcher_config_passes_rays_schema_and_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config, schema = load(LAUNCHER), ray_schema()
    jsonschema.validate(config, schema)
    # What `ray up` runs first: defaults filled in, head type declared, sum of min_workers <= max_workers.
    validate_config(prepare_config(copy.deepcopy(config)))

    bad = copy.deepcopy(config)   # the schema is not vacuous: resources must be integers
    bad["available_node_types"]["worker.gpu"]["resources"]["GPU"] = "1"
    assert fails(lambda c: jsonschema.validate(c, schema), bad)


def python_range() -> tuple[tuple, tuple]:
    spec = pyproject()["requires-python"]
    low = re.search(r">=\s*3\.(\d+)", spec).group(1)
    high = re.search(r"<\s*3\.(\d+)", spec).group(1)
    return (3, int(low)), (3, int(high))


def dockerfile() -> list[str]:
    """cluster/Dockerfile's instructions, continuation lines joined and comments dropped."""
    text = "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#"))
    return [" ".join(i.split()) for i in re.sub(r"\\\n", " ", text).splitlines() if i.strip()]


def project_image() -> str:
    """The image tag cluster/Dockerfile's header tells to build and push (the registry is the user's to replace)."""
    tags = set(re.findall(r"docker build -f cluster/Dockerfile -t (\S+) \.", DOCKERFILE.read_text()))
    assert len(tags) == 1, tags
    return tags.pop()


def test_dockerfile_builds_the_project_on_rays_gpu_image():
    """FROM Ray's GPU image of the installed Ray and a Python pyproject accepts; the project and every pin of
    constraints.txt installed (torch's CUDA wheel from PyTorch's index), torchaudio's extension left in place,
    the image's own user; tagged openset-ray:<pyproject version>."""
    steps = dockerfile()
    (base,) = [s.split()[1] for s in steps if s.startswith("FROM ")]
    image = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py3(?P<minor>\d+)-gpu", base)
    assert image and image["ray"] == ray.__version__, base
    low, high = python_range()
    assert low <= (3, int(image["minor"])) < high, "the image's Python must satisfy pyproject's requires-python"

    copied = {p.rstrip("/") for s in steps if s.startswith("COPY ") for p in s.split()[1:-1] if not p.startswith("--")}
    packages = {p.rstrip("*") for p in pyproject_setuptools()["packages"]["find"]["include"]}
    assert {"pyproject.toml", "constraints.txt", "README.md", "workflows"} | packages <= copied
    (install,) = [s for s in steps if s.startswith("RUN ") and "pip install" in s]
    assert re.search(r'pip install .*-c constraints\.txt --extra-index-url "\$\{TORCH_INDEX\}" \.( |$)',
                     install), install
    assert any(re.fullmatch(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu\d+", s) for s in steps)
    assert "fix_torchaudio" not in install, "the CUDA build's torchaudio extension loads: nothing to strip"
    assert [s for s in steps if s.startswith("USER ")] == ["USER ray"]
    tag = re.escape(pyproject()["version"])
    assert re.fullmatch(r"[a-z0-9.-]+(/[a-z0-9._-]+)+/openset-ray:" + tag, project_image()), project_image()


def pyproject_setuptools() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomllib (3.11+) or tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_launcher_runs_the_project_image_autoscales_gpu_workers_with_token_auth():
    config = load(LAUNCHER)
    assert config["docker"]["image"] == project_image()

    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu = [t for name, t in types.items() if name != config["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu and all(t["min_workers"] < t["max_workers"] <= config["max_workers"] for t in gpu)

    # The image holds the packages: no node installs any at start, and the code comes with each job.
    assert not [c for c in config["setup_commands"] if re.search(r"\b(pip|conda|uv)\b", c)]
    assert "." not in config["file_mounts"].values()

    # Token auth on every node: the same token file everywhere, and ray start in token mode.
    assert config["file_mounts"].get("/home/ray/.ray/auth_token") == "~/.ray/auth_token"
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)

    # Shards and checkpoints must be shared: the host's /shared is in every container.
    assert "--volume=/shared:/shared" in config["docker"]["run_options"]


# ----------------------------------------------------------------------------- KubeRay: the CRD's schema
# Transcribed from ray-project/kuberay ray-operator/config/crd/bases/ray.io_rayclusters.yaml and ray.io_rayjobs.yaml
# at commit 1184bc872c0801e59c18caf8a1a4eb5f2800ce93 (version ray.io/v1): the required lists and the field names and
# types of RayCluster/RayJob specs and groups verbatim; the pod template reduced to the fields used here (those CRDs
# embed the whole PodTemplateSpec per group, 0.7 and 1.1 MB: too big to vendor). That v1 is the strictest (later
# KubeRay made rayStartParams and entrypoint optional, apis/ray/v1/*_types.go) and later ones only add fields, so
# manifests that pass it pass them. Unknown keys fail: the API server would silently prune a misspelt one.
STR, BOOL, INT32 = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
STRING_MAP = {"type": "object", "additionalProperties": STR}
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
                       r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}
ENV = {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
    "name": STR, "value": STR,
    "valueFrom": {"type": "object", "properties": {"secretKeyRef": {
        "type": "object", "required": ["key"], "properties": {"key": STR, "name": STR, "optional": BOOL}}}}}}}
CONTAINER = {"type": "object", "required": ["name"], "properties": {
    "name": STR, "image": STR, "env": ENV,
    "ports": {"type": "array", "items": {"type": "object", "required": ["containerPort"],
                                         "properties": {"containerPort": INT32, "name": STR}}},
    "resources": {"type": "object", "properties": {"limits": {"type": "object", "additionalProperties": QUANTITY},
                                                   "requests": {"type": "object", "additionalProperties": QUANTITY}}},
    "volumeMounts": {"type": "array", "items": {"type": "object", "required": ["mountPath", "name"],
                                                "properties": {"mountPath": STR, "name": STR, "readOnly": BOOL}}}}}
POD_TEMPLATE = {"type": "object", "properties": {"metadata": {"type": "object"}, "spec": {
    "type": "object", "required": ["containers"], "properties": {
        "containers": {"type": "array", "items": CONTAINER},
        "restartPolicy": STR,
        "tolerations": {"type": "array", "items": {"type": "object", "properties": {
            "effect": STR, "key": STR, "operator": STR, "value": STR}}},
        "volumes": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": STR,
            "persistentVolumeClaim": {"type": "object", "required": ["claimName"],
                                      "properties": {"claimName": STR, "readOnly": BOOL}},
            "emptyDir": {"type": "object", "properties": {"medium": STR, "sizeLimit": QUANTITY}}}}}}}}}
CLUSTER_SPEC = {"type": "object", "required": ["headGroupSpec"], "additionalProperties": False, "properties": {
    "autoscalerOptions": {"type": "object", "additionalProperties": False, "properties": {
        "env": ENV, "envFrom": {"type": "array"}, "idleTimeoutSeconds": INT32, "image": STR, "imagePullPolicy": STR,
        "resources": {"type": "object"}, "securityContext": {"type": "object"},
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]}, "volumeMounts": {"type": "array"}}},
    "enableInTreeAutoscaling": BOOL,
    "headGroupSpec": {"type": "object", "required": ["rayStartParams", "template"], "additionalProperties": False,
                      "properties": {"enableIngress": BOOL, "headService": {"type": "object"},
                                     "rayStartParams": STRING_MAP, "replicas": INT32, "serviceType": STR,
                                     "template": POD_TEMPLATE}},
    "headServiceAnnotations": STRING_MAP,
    "rayVersion": STR,
    "workerGroupSpecs": {"type": "array", "items": {
        "type": "object", "required": ["groupName", "maxReplicas", "minReplicas", "rayStartParams", "template"],
        "additionalProperties": False,
        "properties": {"groupName": STR, "maxReplicas": INT32, "minReplicas": INT32, "rayStartParams": STRING_MAP,
                       "replicas": INT32, "scaleStrategy": {"type": "object"}, "template": POD_TEMPLATE}}}}}
JOB_SPEC = {"type": "object", "required": ["entrypoint"], "additionalProperties": False, "properties": {
    "clusterSelector": STRING_MAP, "entrypoint": STR, "entrypointNumCpus": {"type": "number"},
    "entrypointNumGpus": {"type": "number"}, "entrypointResources": STR, "jobId": STR, "metadata": STRING_MAP,
    "rayClusterSpec": CLUSTER_SPEC, "runtimeEnv": STR, "runtimeEnvYAML": STR, "shutdownAfterJobFinishes": BOOL,
    "submitterPodTemplate": POD_TEMPLATE, "suspend": BOOL, "ttlSecondsAfterFinished": INT32}}


def resource(kind: str, spec: dict) -> dict:
    """A whole object: what kubectl needs around the CRD's spec (name: a DNS-1123 subdomain)."""
    name = {"type": "string", "maxLength": 253,
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "properties": {
        "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": kind},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": name}}, "spec": spec}}


SCHEMAS = {"RayCluster": resource("RayCluster", CLUSTER_SPEC), "RayJob": resource("RayJob", JOB_SPEC)}


def cluster_spec(doc: dict) -> dict:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def groups(doc: dict) -> list[dict]:
    """The head group and every worker group of the manifest's cluster."""
    spec = cluster_spec(doc)
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def ray_containers(doc: dict) -> list[dict]:
    return [g["template"]["spec"]["containers"][0] for g in groups(doc)]   # KubeRay: the first one runs Ray


def rayjobs() -> list[tuple[Path, dict]]:
    return [(p, load(p)) for p in KUBERAY if load(p)["kind"] == "RayJob"]


def test_kuberay_has_a_cluster_and_the_sed_speaker_and_sweep_jobs():
    assert {load(p)["kind"] for p in KUBERAY} == {"RayCluster", "RayJob"}
    assert {shlex.split(doc["spec"]["entrypoint"])[1] for _, doc in rayjobs()} >= {"workflows/sed.py",
                                                                                     "workflows/speaker.py",
                                                                                     "workflows/sweep.py"}


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifest_passes_the_crd_schema(path):
    doc = load(path)
    validate = jsonschema.Draft7Validator(SCHEMAS[doc["kind"]]).validate
    validate(doc)

    # The schema is not vacuous: a dropped required key, a misspelt key and a number for a string all fail.
    no_head = copy.deepcopy(doc)
    del cluster_spec(no_head)["headGroupSpec"]
    typo = copy.deepcopy(doc)
    cluster_spec(typo)["rayVersoin"] = cluster_spec(typo).pop("rayVersion")
    number = copy.deepcopy(doc)
    groups(number)[1]["rayStartParams"]["num-gpus"] = 1
    assert all(fails(validate, d) for d in (no_head, typo, number))


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_cluster_autoscales_one_gpu_workers_on_the_installed_ray(path):
    doc = load(path)
    spec = cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__ and spec["enableInTreeAutoscaling"] is True
    head, *workers = ray_containers(doc)
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    assert workers and all(int(w["resources"]["limits"]["nvidia.com/gpu"]) == 1 for w in workers)
    assert all(g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"] > g["minReplicas"]
               for g in spec["workerGroupSpecs"])
    images = {c["image"] for c in ray_containers(doc)}
    if doc["kind"] == "RayJob":
        images.add(doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"])
    assert images == {load(LAUNCHER)["docker"]["image"]}, "one Ray image (and Python) for every cluster file"


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_every_ray_process_uses_the_same_token(path):
    """A worker's `ray start --address` enables token auth only with RAY_AUTH_MODE=token, and every Ray
    process needs the token: every Ray container, the autoscaler sidecar and the job submitter get both,
    the token from one Secret."""
    doc = load(path)
    envs = [c["env"] for c in ray_containers(doc)] + [cluster_spec(doc)["autoscalerOptions"]["env"]]
    if doc["kind"] == "RayJob":
        envs.append(doc["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"])
    secrets = set()
    for env in envs:
        by_name = {e["name"]: e for e in env}
        assert by_name["RAY_AUTH_MODE"]["value"] == "token"
        ref = by_name["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        secrets.add((ref["name"], ref["key"]))
    assert len(secrets) == 1


# ----------------------------------------------------------------------------- entrypoints

def workflow_config_class(module):
    """The workflow's top-level config dataclass: the one with the `scale` section."""
    found = [v for v in vars(module).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
             and v.__module__ == module.__name__ and "scale" in {f.name for f in dataclasses.fields(v)}]
    assert len(found) == 1, f"{module.__name__}: expected one config dataclass with a `scale` section, got {found}"
    return found[0]


SWEEP = "workflows/sweep.py"


def first_values(params: dict) -> dict:
    """The first value of every parameter of a search space: a choice's first option or an int range's low end,
    a float range's low end as a float (what tuning.tuner's probe samples before any trial starts)."""
    return {key: args[0] if kind in ("choice", "int") else float(args[0])
            for key, spec in params.items() for kind, args in spec.items()}


def parse_entrypoint(entrypoint: str):
    """(argv, module, parsed args, resolved config) of `python workflows/<name>.py ...`. For a sweep
    (`workflows/sweep.py <workflow> --space ...`) the config is one trial's, resolved by tuning.tuner's own
    `trial_config` at the first value of every parameter: every key of the space, every --set and --config
    must be keys of the swept workflow's config class, with values of its types."""
    from trainers.config import load_config
    from workflows import common

    argv = shlex.split(entrypoint)
    assert argv[0] == "python" and re.fullmatch(r"workflows/\w+\.py", argv[1]), entrypoint
    assert (ROOT / argv[1]).is_file(), f"{argv[1]} is not in the repository"
    module = importlib.import_module(argv[1][:-3].replace("/", "."))
    try:
        args = module.parse_args(argv[2:])
    except SystemExit as exc:   # argparse printed which flag it refused
        pytest.fail(f"{argv[1]} refuses the flags of {entrypoint!r} (exit {exc.code})")
    if args.config is not None:
        assert (ROOT / args.config).is_file(), f"--config {args.config} is not in the repository"
    if argv[1] == SWEEP:
        return argv, module, args, sweep_trial_config(module, args)
    cfg = load_config(workflow_config_class(module), ROOT / args.config if args.config else None,
                      common.shorthand_overrides(args))   # unknown keys and bad values raise ConfigError
    return argv, module, args, cfg


class RayWouldStart(Exception):
    pass


def sweep_trial_config(sweep, args):
    """What a sweep resolves and checks before any trial starts, on its own code: the settings from the command
    line (the space loaded and matched to the workflow), one trial's config (`trial_config` at the first value of
    every parameter), then `tuning.tuner.sweep` itself up to where it would start Ray (scheduler, trials, keys
    that cannot be swept, the workflow's `validate`)."""
    from unittest import mock

    from tuning import tuner

    settings = sweep.settings_of(args)
    if settings.config is not None:   # relative to the repository root, where the job's working_dir unpacks
        settings = dataclasses.replace(settings, config=str(ROOT / settings.config))
    target = sweep.TARGETS[settings.workflow]
    cfg = tuner.trial_config(target, settings, first_values(settings.space["params"]), 1.0)
    if args.data:   # --data reaches the trials' config through the workflow's data key
        assert [target.data_key, str(Path(args.data).resolve())] in [list(o) for o in settings.set]
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch("tuning.tuner.init_ray", side_effect=RayWouldStart), pytest.raises(RayWouldStart):
        tuner.sweep(target, settings, Path(tmp) / "out", log=lambda *a: None)   # an empty --out: nothing to resume
    return cfg


@pytest.mark.parametrize("path", [p for p, _ in rayjobs()], ids=lambda p: p.name)
def test_rayjob_entrypoint_is_a_workflow_with_accepted_flags_and_keys(path):
    """The run's settings come from a recipe of workflows/configs/ (--config), not from inline --set chains, and the
    resolved config passes the workflow's own validate (the model built once, before any data is read; a sweep's
    check above runs it through the sweep)."""
    argv, module, args, cfg = parse_entrypoint(load(path)["spec"]["entrypoint"])
    assert args.config is not None and Path(args.config).parent == Path("workflows/configs"), \
        f"{path.name}: pass a recipe of workflows/configs/ with --config"
    if argv[1] != SWEEP:
        module.validate(cfg)


def sweep_entrypoints() -> list[str]:
    return [doc["spec"]["entrypoint"] for _, doc in rayjobs() if shlex.split(doc["spec"]["entrypoint"])[1] == SWEEP]


def test_sweep_entrypoint_check_is_not_vacuous(tmp_path):
    """A misspelt --set key, a value of the wrong type, a space of another workflow, an unknown space, a misspelt
    key in a space file, a key the sweep refuses to sample, too few trials and --data the workflow cannot read as
    given all fail the entrypoint check."""
    from trainers.config import ConfigError
    from tuning.spaces import SPACES

    (entrypoint,) = sweep_entrypoints()
    argv = shlex.split(entrypoint)
    parse_entrypoint(shlex.join(argv))
    workflow, at = argv[2], argv.index("--space") + 1
    space = SPACES[argv[at]]

    def with_space(doc_or_name):
        if isinstance(doc_or_name, dict):
            path = tmp_path / f"space{len(list(tmp_path.iterdir()))}.yaml"
            path.write_text(yaml.safe_dump(doc_or_name))
            doc_or_name = str(path)
        return argv[:at] + [doc_or_name] + argv[at + 1:]

    key = next(iter(space["params"]))
    typo = copy.deepcopy(space)
    typo["params"][key + "x"] = typo["params"].pop(key)
    data_key = copy.deepcopy(space)
    data_key["params"]["data.num_frames"] = {"choice": [200, 300]}
    other = next(name for name, s in SPACES.items() if s["workflow"] != workflow)
    trials = argv.index("--trials") + 1
    parse_entrypoint(shlex.join(with_space(copy.deepcopy(space))))   # the same space from a file passes
    broken = {"misspelt --set key": argv + ["--set", "scale.wrokers=1"],
              "wrong type": argv + ["--set", "scale.workers=many"],
              "another workflow's space": with_space(other),
              "unknown space": with_space("no-such-space"),
              "misspelt space key": with_space(typo),
              "no trials": argv[:trials] + ["0"] + argv[trials + 1:]}
    if workflow == "speaker":
        broken["a data key swept (trials share one shard set)"] = with_space(data_key)
    for what, bad in broken.items():
        with pytest.raises(ConfigError):
            parse_entrypoint(shlex.join(bad))
            pytest.fail(f"not caught: {what}")
    if "--data" in argv:   # a corpus root the workflow cannot read as given is refused, never ignored
        data = argv[argv.index("--data") + 1]
        demo_kind = ["python", SWEEP, "semiweak", "--space", "semiweak", "--trials", "2", "--out", "/shared/x",
                     "--data", data]
        with pytest.raises(ConfigError, match="data.kind is demo"):
            parse_entrypoint(shlex.join(demo_kind))


@pytest.mark.parametrize("path", [p for p, _ in rayjobs()], ids=lambda p: p.name)
def test_rayjob_trains_on_gpus_it_can_get(path):
    """One Ray Train run (a sweep: one trial) needs scale.workers GPUs at once: more than the worker groups can
    hold never starts. use_gpu must be forced: the groups start at 0 pods, so auto-detection would find no GPU
    and use CPUs."""
    doc = load(path)
    _, _, _, cfg = parse_entrypoint(doc["spec"]["entrypoint"])
    assert cfg.scale.use_gpu is True
    gpus = sum(g["maxReplicas"] * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
               for g in doc["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    assert cfg.scale.workers <= gpus


def absolute_paths(value) -> list[str]:
    """Every string of a (nested) config that is an absolute path."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in absolute_paths(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in absolute_paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def shared_mounts(doc: dict) -> list[set[str]]:
    """Per Ray container: the mount paths of its PersistentVolumeClaim volumes."""
    out = []
    for group, container in zip(groups(doc), ray_containers(doc)):
        claims = {v["name"] for v in group["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
        out.append({m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims})
    return out


@pytest.mark.parametrize("path", [p for p, _ in rayjobs()], ids=lambda p: p.name)
def test_rayjob_data_outputs_and_code_are_on_the_shared_volume(path):
    """Ray Data tasks on any pod read the corpora and write shards to --out, Train workers checkpoint under
    it and every pod fetches working_dir: all of them must be on a volume every pod mounts at the same path."""
    doc = load(path)
    _, _, args, cfg = parse_entrypoint(doc["spec"]["entrypoint"])
    paths = [str(getattr(args, flag)) for flag in ("out", "data", "tau", "fsd") if getattr(args, flag, None)]
    paths += absolute_paths(dataclasses.asdict(cfg))   # e.g. a sweep's --set data.root=/shared/...
    assert str(args.out) in paths
    for mounts in shared_mounts(doc):
        for p in paths:
            assert any(Path(p).is_relative_to(m) for m in mounts), f"{p} is not on a shared volume ({mounts})"


# ----------------------------------------------------------------------------- runtime environment

def test_runtime_env_builds_as_rays_runtime_env(monkeypatch):
    from ray.runtime_env import RuntimeEnv

    up_before = ray.is_initialized()   # the suite's shared local Ray may be up already
    env = load(RUNTIME_ENV)
    assert set(env) <= RuntimeEnv.known_fields, "a misspelt field would pass as a plugin name"
    monkeypatch.chdir(ROOT)   # working_dir "." is resolved where `ray job submit` runs: the repository root
    built = RuntimeEnv(**env)
    assert built["working_dir"] == "."
    for _, doc in rayjobs():
        job_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        assert set(job_env) <= RuntimeEnv.known_fields
        RuntimeEnv(**job_env)   # a working_dir URI must name a .zip (or tar) archive
    assert ray.is_initialized() == up_before   # built without connecting to (or starting) a Ray


@pytest.mark.parametrize("path", [RUNTIME_ENV] + [p for p, _ in rayjobs()], ids=lambda p: p.name)
def test_no_runtime_env_installs_packages(path):
    """The image holds every package (torch's CUDA build included): a pip, uv or conda list would install them on
    every node as it starts."""
    env = load(path) if path == RUNTIME_ENV else yaml.safe_load(load(path)["spec"]["runtimeEnvYAML"])
    assert not {"pip", "uv", "conda"} & set(env), f"{path.name}: packages belong in cluster/Dockerfile"


@pytest.mark.parametrize("path", [p for p, _ in rayjobs()], ids=lambda p: p.name)
def test_rayjob_working_dir_is_a_remote_zip(path):
    """The submitter runs inside Kubernetes, with no checkout to upload: every pod fetches the code from a remote
    URI Ray downloads (GitHub's archive of a commit over https, or an object store), not from a file on a volume."""
    working_dir = yaml.safe_load(load(path)["spec"]["runtimeEnvYAML"])["working_dir"]
    assert re.fullmatch(r"(https|s3|gs)://\S+\.zip", working_dir), working_dir


def test_working_dir_package_holds_the_project_without_outputs(tmp_path):
    """Pack the repository exactly as `ray job submit` does (Ray's own packaging, .gitignore left out so the
    excludes alone must do it) and check what would travel."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, _get_excludes, create_package

    excludes = load(RUNTIME_ENV)["excludes"]
    excluded = _get_excludes(ROOT, excludes)
    for p in ("runs/sed/metrics.json", "runs/sed/shards/snr20/dcase-remix-000000.tar", ".venv/bin/python",
              "trainers/__pycache__/loop.pyc", ".git/HEAD", "openset_ray.egg-info/PKG-INFO", "out/model.pt",
              "out/data/a.wav"):
        assert excluded(ROOT / p), f"{p} would be uploaded"

    package = tmp_path / "working_dir.zip"
    create_package(str(ROOT), package, include_gitignore=False, excludes=excludes)
    names = set(zipfile.ZipFile(package).namelist())
    needed = {"workflows/sed.py", "workflows/speaker.py", "workflows/sweep.py", "workflows/semiweak.py",
              "tuning/tuner.py", "tuning/target.py", "tuning/spaces.py", "workflows/common.py", "datasets/shards.py",
              "trainers/loop.py", "workflows/configs/sed_paper.yaml", "constraints.txt",
              "data/esc50-actions/actionvector_three_per_audiofile.csv"}
    assert needed <= names
    assert not [n for n in names if excluded(ROOT / n) or n.startswith(("runs/", ".venv/", ".git/"))]
    assert package.stat().st_size < GCS_STORAGE_MAX_SIZE // 2   # Ray warns above half its upload limit
