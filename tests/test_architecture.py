"""The code's shape is a contract: the layers import one way (workflows > tuning > trainers > datasets),
trainer task packages are independent, heads have no import cycles (import-linter, run here on the real
tree and on copies with one planted violation each, which must fail), registries list every name no matter
what else was imported (a fresh interpreter per registry), and docstrings cite nothing that is not here."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("workflows", "tuning", "trainers", "datasets")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, contract", [
    ("tuning/spaces.py", "import workflows.common", "Layers"),
    ("datasets/shards.py", "import trainers.loop", "Layers"),
    ("trainers/sed/task.py", "import trainers.speaker.task", "independent of each other"),
    ("trainers/loop.py", "import trainers.esc50.folds", "does not depend on any task package"),
    ("trainers/heads/ops.py", "import trainers.heads.base", "No import cycles"),
])
def test_each_contract_fails_on_a_planted_violation(tmp_path, module, planted, contract):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "configs"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.strip().endswith("BROKEN")]
    assert any(contract in line for line in broken) or contract in result.stdout.split("Contracts:")[0], \
        result.stdout


def fresh_interpreter(code: str):
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code, expected", [
    ("from trainers.heads import HEADS; print(json.dumps(sorted(HEADS)))",
     ["aam", "am", "arcface", "asoftmax", "cosface", "mask_proxy", "mask_proxy_loo", "mmp", "mmp_loo", "mp",
      "multinomial_mask_proxy",
      "softmax", "sphereface", "sphereface2", "sphereface_detached", "sphereface_r", "spherefacer"]),
    ("from trainers.encoders import ENCODERS; print(json.dumps(sorted(ENCODERS)))",
     ["resnet18", "resnet34", "sfnet20", "tdnn"]),
    ("from workflows.sweep import TARGETS; print(json.dumps(sorted(TARGETS)))",
     ["esc50_actions", "face", "morph", "robust", "sed", "semiweak", "speaker"]),
    ("from trainers.esc50.audio import EXTRACTORS; print(json.dumps(sorted(EXTRACTORS)))", ["cnn14", "logmel_cnn"]),
], ids=["heads", "encoders", "sweep targets", "embedding extractors"])
def test_a_registry_lists_every_name_in_a_fresh_interpreter(code, expected):
    assert fresh_interpreter("import json; " + code) == expected


def test_registry_modules_do_not_import_their_own_registry():
    """A head or encoder module importing its package's __init__ (where the registry lives) is the
    knot the explicit tables replaced: the registry would then depend on import order again."""
    import grimp

    graph = grimp.build_graph("trainers")
    for package in ("trainers.heads", "trainers.encoders"):
        for module in graph.find_children(package):
            assert package not in graph.find_modules_directly_imported_by(module), f"{module} imports {package}"


CITED = r"\b((?:trainers|datasets|tuning|workflows|docs|cluster)/[a-z0-9_/.-]+\.(?:py|md|yaml))\b"


def cited_texts():
    code = [p for name in (*PACKAGES, "benchmarks", "tests") for p in (ROOT / name).rglob("*.py")]
    prose = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "workflows" / "configs").glob("*.yaml"),
             *(ROOT / name / "README.md" for name in ("benchmarks", "tests", "cluster"))]
    return sorted(p for p in code + prose if p.name != "test_architecture.py")


def test_docs_and_docstrings_cite_files_that_exist():
    """No code, doc or recipe cites DESIGN.md (the design notes live outside the repository); every
    repository path ending in .py, .md or .yaml named in them exists."""
    for path in cited_texts():
        text = path.read_text()
        assert "DESIGN" not in text, f"{path.relative_to(ROOT)} cites the design notes, which are not in the repository"
        for cited in re.findall(CITED, text):
            assert (ROOT / cited).exists(), f"{path.relative_to(ROOT)} cites {cited}, which does not exist"
