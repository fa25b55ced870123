"""CRP costs: (1) training with regenerated perturbations vs vanilla, per sample seen; (2) PGD-20 evaluation as
parallel Ray tasks vs a plain single-process loop over the same model.

(1) The same shards (Fashion-MNIST from Debian when installed, else scikit-learn's digits), the same model
    (the demo's quarter-width MNIST net), the same step, in this process (the loop's own cost is
    bench_train_overhead.py's): `crp` with K copies expands each chunk of rows to its K+1 versions (K regenerated
    perturbations per example); vanilla sees the clean rows K+1 times (K+1 epochs), so both see N(K+1) samples.
    Ratio = (crp seconds per sample) / (vanilla seconds per sample). Target <= 1.10.
(2) PGD-20 (L-infinity, eps 0.1, step 0.01, random start) on the same test images against the same trained-for-
    nothing model: `trainers.robust.evaluate.evaluate_models` (one Ray task per CPU, 1 torch thread each) vs
    `attacks.robust_correct` over the whole set in this process (torch's default threads). Ratio = Ray images/s
    over plain images/s. Target >= 1.5 on 2 CPUs.

    python benchmarks/bench_robust.py [--train 2000] [--copies 10] [--test 2000] [--quick]
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

TRAIN_TARGET, EVAL_TARGET = 1.10, 1.5


def images(split: str, limit: int):
    from datasets.images import FASHION_DEBIAN, load_images, read_sklearn_digits

    if (FASHION_DEBIAN / "train-images-idx3-ubyte.gz").is_file():
        data = load_images("fashion-mnist", FASHION_DEBIAN, split)
    else:
        data = read_sklearn_digits(split)
    return data.images[:limit], data.labels[:limit]


def epoch_time(task, paths, epochs: int) -> tuple[float, int]:
    from datasets.image_shards import MEMBERS
    from datasets.shards import read_shards

    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    samples, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        ds = read_shards(paths, 0, MEMBERS).materialize()
        for batch in task.batches(ds, epoch, 0):
            loss, _, n = model(**batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            samples += n
    return time.perf_counter() - t0, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    args = ap.parse_args()
    if args.quick:
        args.train, args.copies, args.test = 300, 3, 100

    from datasets.image_shards import build_image_shards
    from datasets.images import DIGITS, ImageSet
    from datasets.shards import shard_paths
    from trainers import local_ray
    from trainers.robust.attacks import AttackSpec, robust_correct
    from trainers.robust.evaluate import evaluate_models
    from trainers.robust.task import RobustTask

    local_ray.start(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        x, y = images("train", args.train)
        with tempfile.TemporaryDirectory(prefix="bench-robust-") as work:
            build_image_shards(ImageSet(x, y, DIGITS, "bench"), Path(work) / "train", corpus="bench", split="train")
            paths = shard_paths(Path(work) / "train")
            size = x.shape[1]
            common = dict(model="mnist_net", normalization="mnist", num_classes=10, in_channels=1, image_size=size,
                          batch_size=128, width=0.25, copies=args.copies, radius=0.2)
            crp_t, crp_n = epoch_time(RobustTask("crp", **common), paths, 1)
            van_t, van_n = epoch_time(RobustTask("vanilla", **common), paths, args.copies + 1)
        train_ratio = (crp_t / crp_n) / (van_t / van_n)

        tx, ty = images("test", args.test)
        task = RobustTask("vanilla", **common)
        state = task.build_model().state_dict()
        spec = AttackSpec("pgd", 0.1, 20, 0.01)
        t0 = time.perf_counter()
        evaluate_models({"m": (task, state)}, tx, ty, [spec], slices=2)
        ray_s = time.perf_counter() - t0
        net = task.build_model().net.eval()
        t0 = time.perf_counter()
        robust_correct(net, tx.astype(np.float32).transpose(0, 3, 1, 2) / 255, ty, spec, 10)
        plain_s = time.perf_counter() - t0
        eval_ratio = plain_s / ray_s
    finally:
        local_ray.stop()

    print("| measurement | crp / ray | vanilla / plain | ratio | target | ratio vs target |\n|---|---|---|---|---|---|")
    print(f"| training s per 1000 samples (K={args.copies}) | {1000 * crp_t / crp_n:.3f} | "
          f"{1000 * van_t / van_n:.3f} | {train_ratio:.2f} | <= {TRAIN_TARGET} | {train_ratio / TRAIN_TARGET:.2f} |")
    print(f"| PGD-20 images/s ({len(ty)} images) | {len(ty) / ray_s:.1f} | {len(ty) / plain_s:.1f} | "
          f"{eval_ratio:.2f} | >= {EVAL_TARGET} | {eval_ratio / EVAL_TARGET:.2f} |")
    print(f"RESULT: target <= {TRAIN_TARGET}x training cost per sample: {train_ratio:.2f}x; "
          f"target >= {EVAL_TARGET}x PGD-20 throughput: {eval_ratio:.2f}x (torch threads here: "
          f"{torch.get_num_threads()})")


if __name__ == "__main__":
    main()
