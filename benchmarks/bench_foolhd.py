"""FoolHD costs: (1) files attacked per minute as parallel Ray tasks vs one process attacking the same files one after
another; (2) the MDCT's forward + inverse vs torch.stft / istft of the same frame size.

(1) The same files (seeded speech-like noise bursts, 2 s at 8 kHz), the same untrained x-vector (the demo's width
    128), FoolHD untargeted only (autoencoder of 16 channels, fixed iterations, no baselines): trainers/foolhd/
    parallel.run_attacks (one Ray task per file, 1 CPU and 1 torch thread each, on a local Ray of 2 CPUs) vs
    trainers/foolhd/attacks.attack_file over the files in this process with 1 torch thread (what one task does).
    Ratio = Ray files/min over sequential files/min. Target >= 1.6 on 2 CPUs.
(2) MDCT(640) forward + inverse (trainers/foolhd/mdct.py) vs torch.stft + istft (n_fft 640, hop 320, Hann window),
    on the same batch of 8 x 5 s at 8 kHz, best of several repeats. Ratio = MDCT seconds / STFT seconds.
    Target <= 1.5.

    python benchmarks/bench_foolhd.py [--files 6] [--iterations 100] [--quick]

The default per-file work is the demo's untargeted attack (100 iterations; the paper: up to 500); at 20 iterations a
file takes ~2 s and each task's start (arguments, model, first steps) weighs on the ratio (measured: 1.36x vs 1.82x).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PARALLEL_TARGET, MDCT_TARGET = 1.6, 1.5


def waves(n: int, seconds: float = 2.0, sr: int = 8000) -> list[dict]:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    out = []
    for i in range(n):
        envelope = (np.sin(2 * np.pi * rng.uniform(2, 5) * t) > 0).astype(np.float32)
        x = 0.2 * envelope * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.02 * rng.standard_normal(len(t))
        out.append({"key": f"id{10001 + i}/bench/00001", "wave": x.astype(np.float32), "label": i % 4})
    return out


def bench_parallel(n_files: int, iterations: int) -> tuple[float, float]:
    from trainers import local_ray
    from trainers.foolhd.attacks import AttackConfig, attack_file
    from trainers.foolhd.frontend import FrontEndConfig
    from trainers.foolhd.parallel import run_attacks
    from trainers.foolhd.xvector import build_xvector

    kwargs = {"width": 128, "stats_width": 384, "embed_dim": 128, "hidden": 128, "dropout": 0.0}
    torch.manual_seed(0)
    model = build_xvector(4, FrontEndConfig(), **kwargs)
    state = model.state_dict()
    cfg = AttackConfig(modes=["untargeted"], baselines=[], iterations=iterations, channels=16, init="random")
    files = waves(n_files)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for i, f in enumerate(files):
        attack_file(model, f["wave"], f["label"], None, cfg, i)
    sequential = n_files / (time.perf_counter() - t0) * 60
    torch.set_num_threads(2)
    local_ray.start(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_attacks(state, 4, FrontEndConfig(), kwargs, files[:2], cfg, Path(tempfile.mkdtemp()), "warm-up",
                    log=lambda s: None)   # workers up and torch imported, as in a run's steady state
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            run_attacks(state, 4, FrontEndConfig(), kwargs, files, cfg, Path(out), "bench", log=lambda s: None)
            parallel = n_files / (time.perf_counter() - t0) * 60
    finally:
        local_ray.stop()
    return sequential, parallel


def bench_mdct(repeats: int) -> tuple[float, float]:
    from trainers.foolhd.mdct import MDCT

    torch.set_num_threads(1)
    x = torch.randn(8, 40000)
    mdct, window = MDCT(640), torch.hann_window(640)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    with torch.no_grad():
        t_mdct = best(lambda: mdct.inverse(mdct(x), x.shape[-1]))
        t_stft = best(lambda: torch.istft(torch.stft(x, 640, 320, window=window, return_complex=True), 640, 320,
                                          window=window, length=x.shape[-1]))
    return t_mdct, t_stft


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=6)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--quick", action="store_true", help="4 files, 3 iterations, 5 MDCT repeats")
    a = p.parse_args()
    files, iterations, repeats = (4, 3, 5) if a.quick else (a.files, a.iterations, 50)
    t_mdct, t_stft = bench_mdct(repeats)
    sequential, parallel = bench_parallel(files, iterations)
    print("| measurement | this project | reference | ratio | target | ratio vs target |")
    print("|---|---|---|---|---|---|")
    ratio = parallel / sequential
    print(f"| files attacked / min ({files} files, {iterations} iterations) | Ray tasks {parallel:.1f} | one process "
          f"{sequential:.1f} | {ratio:.2f}x | >= {PARALLEL_TARGET}x | {ratio / PARALLEL_TARGET:.2f} |")
    mratio = t_mdct / t_stft
    print(f"| MDCT forward + inverse, 8 x 5 s | {1000 * t_mdct:.2f} ms | stft + istft {1000 * t_stft:.2f} ms | "
          f"{mratio:.2f}x | <= {MDCT_TARGET}x | {MDCT_TARGET / mratio:.2f} |")
    met = {True: "met", False: "NOT met"}
    print(f"RESULT: target >= {PARALLEL_TARGET}x files/min with Ray tasks: {met[ratio >= PARALLEL_TARGET]}; "
          f"target <= {MDCT_TARGET}x MDCT vs STFT: {met[mratio <= MDCT_TARGET]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
