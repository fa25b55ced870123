"""Where a small Ray Train run's CPU goes, per process kind (Linux: read from /proc).

Trains a tiny semi-weak count model (bags of generated images, 1 epoch) through `trainers.loop.fit` on this
process's own local Ray, `--runs` times, and prints for each run its wall time, the CPU-seconds of the whole
machine, and the CPU-seconds of every process kind that ran during it (Ray names its actors' processes
`ray::<Class>`; a sampler thread reads every process's utime + stime each 0.1 s, so processes that end with
the run are counted too). The suite starts dozens of such runs; this shows what each one costs before its
first step (tests/README.md, Timings).

    python scripts/profile_train_run.py [--runs 3] [--workers 0]   # 0: Ray Train's local mode (scale.local_mode)

`--command` profiles any command the same way instead (a test module, a workflow), e.g. the `ray job submit` fixture:

    python scripts/profile_train_run.py --command "pytest -q tests/test_job_submit.py -k runs_the_workflow"
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_ticks() -> int:
    # guest time is counted inside user time already: not added again
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def process_ticks(names: dict[int, str]) -> dict[int, int]:
    """{pid: utime + stime} of every live process; `names` keeps each pid's first meaningful name."""
    ticks = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            stat = open(f"/proc/{pid}/stat").read()
            fields = stat[stat.rindex(")") + 2:].split()
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])
        if not cmd:   # a process still starting (or a kernel thread): its command name for now
            names.setdefault(pid, stat[stat.index("(") + 1:stat.rindex(")")])
        elif not cmd.startswith("ray::IDLE") or pid not in names:   # an idle worker later takes its actor's name
            names[pid] = cmd.split()[0] if cmd.startswith("ray::") else Path(cmd.split()[0]).name
    return ticks


class Sampler:
    """The last CPU ticks seen of every process between start() and stop()."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self.last: dict[int, int] = {}
        self._stop = threading.Event()

    def __enter__(self):
        self.before = process_ticks(self.names)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.last.update(process_ticks(self.names))
            time.sleep(0.1)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.last.update(process_ticks(self.names))

    def by_kind(self) -> collections.Counter:
        cpu = collections.Counter()
        for pid, ticks in self.last.items():
            cpu[self.names.get(pid, "?")] += (ticks - self.before.get(pid, 0)) / TICK
        return cpu


def report(label: str, wall: float, busy: int, sampler: Sampler, top: int) -> None:
    total = (machine_busy_ticks() - busy) / TICK
    print(f"{label}: wall {wall:.1f} s, machine CPU {total:.1f} s")
    for kind, seconds in sampler.by_kind().most_common(top):
        if seconds >= 0.01:
            print(f"  {seconds:6.2f} s  {kind}")


def profile_command(command: str) -> None:
    busy, t0 = machine_busy_ticks(), time.perf_counter()
    with Sampler() as sampler:
        code = subprocess.run(command, shell=True, cwd=ROOT).returncode
    report(f"{command} (exit {code})", time.perf_counter() - t0, busy, sampler, 30)
    sys.exit(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="Ray Train workers; 0: local mode, in this process")
    ap.add_argument("--command", help="profile this shell command instead of the training runs")
    args = ap.parse_args()
    if args.command:
        profile_command(args.command)
        return

    from datasets.bags import TRAIN_MEMBERS, build_bag_shards
    from datasets.images import load_images
    from datasets.shards import read_shards, shard_paths
    from datasets.synthetic.images import generate_image_corpus
    from trainers import local_ray
    from trainers.loop import LoopConfig, fit
    from trainers.semiweak.task import BagTask

    work = Path(tempfile.mkdtemp(prefix="profile-train-"))
    local_ray.start(env_vars={"PYTHONPATH": str(ROOT)}, num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        images = load_images("cifar10", generate_image_corpus(work / "img", per_train_batch=40, test_size=10), "train")
        build_bag_shards(images, work / "shards", corpus="bags", split="train", bag_size=8, seed=0)
        paths = shard_paths(work / "shards")
        time.sleep(5)   # let the fresh cluster settle
        for run in range(args.runs):
            busy, t0 = machine_busy_ticks(), time.perf_counter()
            with Sampler() as sampler:
                fit(BagTask("count", 3, 10, batch_size=4, width=4), {"train": read_shards(paths, 0, TRAIN_MEMBERS)},
                    LoopConfig(epochs=1, batch_size=4), storage_path=str(work / "runs"), name=f"run{run}",
                    cpus_per_worker=1, workers=args.workers)
                wall = time.perf_counter() - t0
                time.sleep(2)   # the run's processes exit after fit() returns
            report(f"run {run + 1}/{args.runs}", wall, busy, sampler, 12)
    finally:
        local_ray.stop()


if __name__ == "__main__":
    main()
