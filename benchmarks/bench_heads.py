"""Forward+backward time and peak memory of each head vs the plain linear softmax head, on CPU.

All heads live in one process and are timed alternating (head A, head B, ..., then again), so
drifts in CPU clock or load hit every head alike; the median over repetitions is reported.
Memory: each head in a fresh child process (one per CPU at a time) whose glibc malloc serves every
block over 64 KiB with its own mmap (MALLOC_MMAP_THRESHOLD_), so resident memory follows live
tensors exactly; after warm-up, with the gradients reset to None, the kernel's peak-RSS mark is
reset (/proc/self/clear_refs) and the peak of one forward+backward above the resident memory
before it is reported: activations + temporaries + gradients (parameters and the input excluded).
Linux only.

Labels are P x K grouped (K=2) for every head, as the Mask Proxy heads need them.

    python benchmarks/bench_heads.py [--classes 6000] [--dim 512] [--batch 256] [--reps 20] [--quick]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainers.heads import build_head  # noqa: E402

HEADS = [
    ("softmax", {}),
    ("arcface", {}),
    ("cosface", {}),
    ("sphereface", {}),
    ("sphereface_detached", {}),
    ("spherefacer", dict(magnitude="v0")),
    ("spherefacer", dict(magnitude="v1")),
    ("spherefacer", dict(magnitude="v2")),
    ("spherefacer", dict(magnitude="v1", fn="sfn")),
    ("spherefacer", dict(magnitude="v1", cgd=False)),
    ("sphereface2", dict(margin_type="C")),
    ("sphereface2", dict(margin_type="A")),
    ("sphereface2", dict(margin_type="M")),
    ("sphereface2", dict(margin_type="C", detach=False)),
    ("mask_proxy", dict(k=2)),
    ("mmp", dict(k=2)),
]
TARGET = 1.3


def label(name, kw):
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")" if kw else "")


def step(head, x, y):
    head.zero_grad(set_to_none=True)
    x.grad = None
    head(x, y).backward()


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status (this measure needs Linux)")


def peak_bytes(head, x, y) -> int:
    """Peak resident bytes of one forward+backward above the resident bytes before it (exact only
    under MALLOC_MMAP_THRESHOLD_, as the child processes of `main` run)."""
    for _ in range(3):  # warm: thread pools, lazily built kernels
        step(head, x, y)
    head.zero_grad(set_to_none=True)
    x.grad = None
    gc.collect()
    before = _status_bytes("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
    head(x, y).backward()
    return _status_bytes("VmHWM:") - before


def inputs(args):
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, args.dim, requires_grad=True)
    y = torch.randperm(args.classes)[:args.batch // 2].repeat_interleave(2)  # P speakers x K=2
    return x, y


def child_peak(args, i: int) -> int:
    """Run `--peak-of i` in a fresh process with every large block mmap'd; returns its bytes."""
    cmd = [sys.executable, __file__, "--peak-of", str(i), "--classes", str(args.classes),
           "--dim", str(args.dim), "--batch", str(args.batch), "--seed", str(args.seed)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=6000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 600 classes, 3 repetitions")
    ap.add_argument("--peak-of", type=int, help=argparse.SUPPRESS)  # child: one head's memory
    args = ap.parse_args()
    if args.quick:
        args.classes, args.reps = 600, 3
    if args.peak_of is not None:
        x, y = inputs(args)
        name, kw = HEADS[args.peak_of]
        print(peak_bytes(build_head(name, args.dim, args.classes, **kw), x, y))
        return

    x, y = inputs(args)
    heads = [(label(n, kw), build_head(n, args.dim, args.classes, **kw)) for n, kw in HEADS]

    for _, head in heads:  # warm-up
        for _ in range(3):
            step(head, x, y)
    times = {name: [] for name, _ in heads}
    for _ in range(args.reps):
        for name, head in heads:
            t0 = time.perf_counter()
            step(head, x, y)
            times[name].append(time.perf_counter() - t0)
    # the children at once, one per CPU: each measures only its own resident memory (and none is timed)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        mem = dict(zip([name for name, _ in heads], pool.map(lambda i: child_peak(args, i), range(len(heads)))))

    base_t = statistics.median(times["softmax"])
    base_m = mem["softmax"]
    print(f"K={args.classes}, D={args.dim}, B={args.batch}, reps={args.reps}, "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}, CPU, float32\n")
    print("| head | fwd+bwd ms (median) | time × softmax | peak MiB | memory × softmax |")
    print("|---|---:|---:|---:|---:|")
    worst_t = worst_m = 0.0
    for name, _ in heads:
        rt, rm = statistics.median(times[name]) / base_t, mem[name] / base_m
        worst_t, worst_m = max(worst_t, rt), max(worst_m, rm)
        flag = lambda r: " ⚠" if r > TARGET else ""  # noqa: E731
        print(f"| {name} | {1e3 * rt * base_t:.2f} | {rt:.2f}{flag(rt)} | {mem[name] / 2**20:.1f} | "
              f"{rm:.2f}{flag(rm)} |")
    print(f"\n⚠: over the {TARGET}× target.")
    print(f"RESULT: target <= {TARGET}x softmax; "
          f"worst time {worst_t:.2f}x ({'met' if worst_t <= TARGET else 'MISSED'}), "
          f"worst peak memory {worst_m:.2f}x ({'met' if worst_m <= TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
