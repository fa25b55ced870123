"""Smoke test: every benchmark script runs end to end with --quick and prints its ratio line.

No timing assertions: these machines are shared and noisy; the numbers are for people to read.
"""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["bench_shards.py", "bench_input_pipeline.py", "bench_train_overhead.py", "bench_scoring.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_quick(script):
    # Each script runs in a fresh process; the Ray ones start (and shut down) their own local Ray, num_cpus=2.
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    assert any(line.startswith("RESULT: target") for line in lines), proc.stdout[-3000:]
    header = next(i for i, line in enumerate(lines) if line.startswith("| ") and "target" in line)
    assert lines[header + 1].startswith("|---"), proc.stdout[-3000:]
    row = [c.strip() for c in lines[header + 2].strip("|").split("|")]
    cols = [c.strip() for c in lines[header].strip("|").split("|")]
    assert len(row) == len(cols)
    float(row[cols.index("ratio vs target")])


def test_bench_heads_quick():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_heads.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| head")]
    assert len(rows) >= 16 and any(r.startswith("| mmp") for r in rows)
    assert any(line.startswith("RESULT: target <= 1.3x") for line in proc.stdout.splitlines())
