"""workflows/configs/: the paper-scale recipes. Each one loads with its workflow's config class (the file name's
prefix names the workflow) and passes that workflow's `validate(cfg)`, which builds the model once on 2 classes and
refuses unknown names and keys; each says in its header how to run it and holds no data roots; every workflow and
every speaker head family has one. Fast: no Ray, no data."""
import copy
import dataclasses
import importlib
import shlex
import typing
from pathlib import Path

import pytest
import yaml

from trainers.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "workflows" / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))

# file-name prefix -> (workflow module, its config class)
WORKFLOWS = {
    "speaker_": ("speaker", "SpeakerConfig"),
    "face_": ("face", "FaceConfig"),
    "sed_": ("sed", "SEDConfig"),
    "esc50_": ("esc50_actions", "ESC50Config"),
    "semiweak_": ("semiweak", "SemiWeakConfig"),
    "robust_": ("robust", "RobustConfig"),
    "foolhd_": ("foolhd", "FoolHDConfig"),
}
SPEAKER_HEAD_FAMILIES = ("arcface", "sphereface", "spherefacer", "sphereface2", "mask_proxy", "mmp")
# What the command line adds to every run of a recipe: corpus roots are never in a YAML. The semiweak workflow checks
# at validation that its data.kind has a root (`--cifar PATH` sets data.kind=cifar10 and data.root=PATH).
COMMAND_LINE = {"semiweak": ["data.root=/data/cifar10"], "robust": ["data.root=/data/images"]}


def workflow_of(path: Path) -> str:
    found = [wf for prefix, (wf, _) in WORKFLOWS.items() if path.name.startswith(prefix)]
    assert len(found) == 1, f"{path.name}: the file name must start with one of {', '.join(WORKFLOWS)}"
    return found[0]


def module_and_class(path: Path):
    wf = workflow_of(path)
    module = importlib.import_module(f"workflows.{wf}")
    cls = dict(WORKFLOWS.values())[wf]
    return module, getattr(module, cls)


def load_recipe(path: Path, overrides=()):
    """The config a run of the recipe gets: defaults <- the YAML <- the command line's overrides."""
    module, cls = module_and_class(path)
    return module, load_config(cls, path, COMMAND_LINE.get(workflow_of(path), []) + list(overrides))


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def header_command(path: Path) -> list[str]:
    """The header's `ray job submit ... -- python workflows/<wf>.py ...` command, from `python` on (comment lines,
    backslash continuations joined)."""
    lines = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
    start = next((i for i, line in enumerate(lines) if line.startswith("ray job submit")), None)
    assert start is not None, f"{path.name}: the header must show the `ray job submit` command that runs it"
    command = lines[start]
    for line in lines[start + 1:]:
        if not command.endswith("\\"):
            break
        command = command[:-1] + " " + line
    argv = shlex.split(command)
    assert "--" in argv, f"{path.name}: `ray job submit --working-dir . -- python workflows/...`"
    return argv[argv.index("--") + 1:]


def ids(paths):
    return [p.name for p in paths]


def test_there_are_recipes():
    assert RECIPES, f"no recipes in {CONFIGS}"


@pytest.mark.parametrize("path", RECIPES, ids=ids(RECIPES))
def test_recipe_loads_and_validates(path):
    module, cfg = load_recipe(path)
    module.validate(cfg)


def free_form_sections(doc: dict, cls, where: str = ""):
    """(dotted key, YAML value) of each free-form dict field (a head's or encoder's keyword arguments) in the YAML."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in doc:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            yield from free_form_sections(doc[f.name], hints[f.name], f"{where}{f.name}.")
        elif hints[f.name] is dict or typing.get_origin(hints[f.name]) is dict:
            yield f"{where}{f.name}", doc[f.name]


@pytest.mark.parametrize("path", RECIPES, ids=ids(RECIPES))
def test_recipe_keyword_arguments_are_the_ones_it_writes(path):
    """A head's or encoder's keyword arguments are what the recipe writes, not merged with the defaults of another
    encoder or head (e.g. the speaker default TDNN's hid_dim under a ResNet34)."""
    _, cls = module_and_class(path)
    _, cfg = load_recipe(path)
    for key, written in free_form_sections(raw(path), cls):
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert value == written, f"{path.name}: {key} loads as {value}, the file says {written}"


@pytest.mark.parametrize("path", RECIPES, ids=ids(RECIPES))
def test_recipe_header_says_how_to_run_it_and_no_data_root_is_in_it(path):
    text = path.read_text()
    wf = workflow_of(path)
    assert text.startswith("#"), f"{path.name}: start with a comment saying which paper/reference settings it encodes"
    assert "our choice" in text.lower(), f"{path.name}: say which numbers are our choice"
    argv = header_command(path)
    assert argv[:2] == ["python", f"workflows/{wf}.py"], f"{path.name}: the header's command must run {wf}"
    module, _ = module_and_class(path)
    try:
        args = module.parse_args(argv[2:])
    except SystemExit as exc:   # argparse printed which flag it refused
        pytest.fail(f"{path.name}: workflows/{wf}.py refuses the flags of the header's command (exit {exc.code})")
    assert Path(args.config) == path.relative_to(ROOT)

    def strings(value):
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in [k, *strings(v)]]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    assert not [s for s in strings(raw(path)) if s.startswith(("/", "~"))], \
        f"{path.name}: data roots come from the command line, not the recipe"
    assert "root" not in raw(path).get("data", {}), f"{path.name}: data.root comes from the command line"
    assert all(len(line) <= 120 for line in text.splitlines()), f"{path.name}: lines of at most 120 characters"


@pytest.mark.parametrize("path", RECIPES, ids=ids(RECIPES))
def test_recipe_check_is_not_vacuous(path, tmp_path):
    """The same recipe with a misspelt key fails to load, and with a bad value (or, where it has a head, an unknown
    head keyword) fails validation."""
    doc = raw(path)
    section = next(k for k, v in doc.items() if isinstance(v, dict) and v and k != "head")
    typo = copy.deepcopy(doc)
    key = next(iter(typo[section]))
    typo[section][key + "x"] = typo[section].pop(key)
    bad = tmp_path / path.name
    bad.write_text(yaml.safe_dump(typo))
    with pytest.raises(ConfigError, match=f"{section}.{key}x"):
        load_recipe(bad)

    module, cfg = load_recipe(path, ["train.optimizer=rmsprop"])
    with pytest.raises(ConfigError, match="optimizer"):
        module.validate(cfg)
    if "head" in doc:
        module, cfg = load_recipe(path, ["head.mm=0.3"])
        with pytest.raises(ConfigError, match="mm"):
            module.validate(cfg)


def test_every_workflow_has_a_recipe():
    have = {workflow_of(p) for p in RECIPES}
    missing = sorted({wf for wf, _ in WORKFLOWS.values()} - have)
    assert not missing, f"no recipe in {CONFIGS} for {missing}"


def test_every_speaker_head_family_has_a_recipe():
    from trainers.heads import HEADS

    heads = {HEADS[load_recipe(p)[1].head["name"]] for p in RECIPES if workflow_of(p) == "speaker"}
    missing = [family for family in SPEAKER_HEAD_FAMILIES if HEADS[family] not in heads]
    assert not missing, f"no speaker recipe with the head families {missing}"
