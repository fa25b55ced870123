#!/usr/bin/env python
"""Learning from semi-weak labels: images -> bags of B with class-count vectors as shards (Ray Data)
-> the two-stage framework (count loss, then count-exact pseudo-labels) and its baselines (MIL on
presence, LLP on proportions, fully supervised) trained in the one loop, methods in parallel (Ray
Train) -> instance accuracy and bag count MAE on the test split's bags, learning-curve PNG.

    python workflows/semiweak.py                                     # generated demo set, CIFAR-10 layout
    python workflows/semiweak.py --fashion-mnist /usr/share/datasets/fashion-mnist --bag-size 16
    python workflows/semiweak.py --cifar /data/cifar10 --out runs/semiweak --method two_stage,llp --workers 2
    ray job submit --working-dir . -- python workflows/semiweak.py --out /tmp/semiweak-job

--cifar ROOT: cifar-10-batches-py/ (python version); --mnist / --fashion-mnist ROOT: the four IDX files
(gzipped or not); --svhn ROOT: train_32x32.mat and test_32x32.mat. Ablation keys (also Tune's):
bags.size, bags.size_max (sizes drawn from [size, size_max]), train.batch_size (bags per step),
method.loss (poisson | mse | l1), method.reg_weight, method.stage2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError, config_hash, load_config  # noqa: E402
from trainers.loop_config import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig  # noqa: E402
from tuning.target import SweepTarget  # noqa: E402
from workflows import common  # noqa: E402

SOURCES = ("demo", "cifar10", "mnist", "fashion-mnist", "svhn")


@dataclasses.dataclass
class DataConfig:
    kind: str = "demo"               # demo (generated, CIFAR-10 layout) | cifar10 | mnist | fashion-mnist | svhn
    root: str = ""
    max_train: int = 0               # a seeded subset of the training split (0: all of it)
    max_test: int = 0
    val_fraction: float = 0.0        # > 0: this share of the training images becomes validation bags, scored
                                     # after every epoch (val_acc; val_count_error: what sweeps select on)


@dataclasses.dataclass
class BagConfig:
    size: int = 16
    size_max: int = 0                # > size: each bag's size drawn uniformly from [size, size_max]
    bags_per_shard: int = 64


@dataclasses.dataclass
class MethodConfig:
    loss: str = "poisson"            # stage 1 count loss: poisson | mse | l1
    reg_weight: float = 0.0          # instance-entropy regularizer of the weak-label losses
    stage2: bool = True              # two_stage: pseudo-label stage (off: stage 1 alone)
    stage2_init: str = "stage1"      # stage1 (fine-tune stage 1's weights) | scratch


@dataclasses.dataclass
class DemoConfig:
    per_train_batch: int = 500       # x 5 training batches
    test_size: int = 1000
    seed: int = 0


@dataclasses.dataclass
class SemiWeakConfig:
    methods: list = dataclasses.field(default_factory=lambda: ["two_stage", "llp", "mil", "supervised"])
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    bags: BagConfig = dataclasses.field(default_factory=BagConfig)
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    width: int = 16                  # instance CNN channels w, 2w, 4w
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(   # batch_size: bags per step
        epochs=8, batch_size=8, lr=2e-3, final_lr=2e-4, weight_decay=1e-4))
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def validate(cfg: SemiWeakConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    from trainers.loop import validate as validate_loop
    from trainers.semiweak.task import METHODS, BagTask

    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        raise ConfigError(f"unknown methods {unknown or cfg.methods}; choose from {', '.join(METHODS)}")
    if cfg.data.kind not in SOURCES:
        raise ConfigError(f"unknown data.kind {cfg.data.kind!r}; choose from {', '.join(SOURCES)}")
    if cfg.data.kind == "demo" and cfg.data.root:
        raise ConfigError(f"data.root is {cfg.data.root} but data.kind is demo (generated): set data.kind to "
                          f"one of {', '.join(SOURCES[1:])}")
    if cfg.data.kind != "demo" and not cfg.data.root:
        raise ConfigError(f"data.kind {cfg.data.kind} needs data.root (e.g. --{cfg.data.kind.replace('10', '')} PATH)")
    if cfg.bags.size < 1 or (cfg.bags.size_max and cfg.bags.size_max < cfg.bags.size):
        raise ConfigError(f"bags.size must be >= 1 and bags.size_max 0 or >= bags.size, got {cfg.bags.size}, "
                          f"{cfg.bags.size_max}")
    if cfg.method.stage2_init not in ("stage1", "scratch"):
        raise ConfigError(f"method.stage2_init must be stage1 or scratch, got {cfg.method.stage2_init!r}")
    if not 0 <= cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    common.require_positive(cfg, "width", "demo.per_train_batch", "demo.test_size")
    if min(cfg.data.max_train, cfg.data.max_test, cfg.bags.bags_per_shard - 1) < 0:
        raise ConfigError("data.max_train and data.max_test must be >= 0 and bags.bags_per_shard >= 1")

    def build_model():
        validate_loop(cfg.train)
        BagTask("count", 3, 2, cfg.train.batch_size, cfg.width, cfg.method.loss, cfg.method.reg_weight).build_model()

    common.checked(build_model)


def load_splits(cfg: SemiWeakConfig, out: Path, log) -> dict:
    """{split: ImageSet}, subsampled (seeded) to data.max_train / max_test."""
    import numpy as np

    from datasets.images import ImageSet, describe, load_images

    kind, root = cfg.data.kind, Path(cfg.data.root) if cfg.data.root else None
    if kind == "demo":
        from datasets.synthetic.images import generate_image_corpus

        root = out / "data" / f"images-demo-{config_hash(cfg.demo)[:8]}"
        log(f"[data] demo image set (CIFAR-10 python layout, generated) in {root}")
        generate_image_corpus(root, per_train_batch=cfg.demo.per_train_batch, test_size=cfg.demo.test_size,
                              seed=cfg.demo.seed)
        kind = "cifar10"
    splits = {}
    for i, (split, limit) in enumerate((("train", cfg.data.max_train), ("test", cfg.data.max_test))):
        images = load_images(kind, root, split)
        if limit and limit < len(images):
            keep = np.sort(np.random.default_rng([cfg.train.seed, i]).choice(len(images), limit, replace=False))
            images = ImageSet(images.images[keep], images.labels[keep], images.classes, f"{images.source}[{limit}]")
        splits[split] = images
    if cfg.data.val_fraction:
        train, n = splits["train"], len(splits["train"])
        is_val = np.zeros(n, dtype=bool)
        is_val[np.random.default_rng([cfg.train.seed, 2]).permutation(n)[:int(round(n * cfg.data.val_fraction))]] = True
        splits["val"], splits["train"] = (ImageSet(train.images[m], train.labels[m], train.classes,
                                                   f"{train.source}[{name}]")
                                          for m, name in ((is_val, "val"), (~is_val, "train")))
    for split, images in splits.items():
        log(f"[data] {split}: {describe(images)}")
    return splits


def results_table(results: dict, bag_size: str, stage2: bool) -> str:
    lines = [f"| method | instance accuracy (%) | bag count MAE | bags exact (%) | trained on (bags of {bag_size}) |",
             "|---|---|---|---|---|"]
    seen = {"two_stage": "counts -> count-exact pseudo-labels" if stage2 else "counts", "two_stage (stage 1)": "counts",
            "llp": "proportions", "mil": "presence", "supervised": "instance labels"}
    for name, r in results.items():
        lines.append(f"| {name} | {100 * r['instance_accuracy']:.2f} | {r['count_mae']:.3f} | "
                     f"{100 * r['bag_exact']:.1f} | {seen[name]} |")
    return "\n".join(lines)


def run(cfg: SemiWeakConfig, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; `callbacks` go to every Ray Train run (a Tune sweep passes TuneReportCallback)."""
    from datasets.bags import build_bag_shards
    from datasets.shards import manifest_digest, shard_paths
    from trainers.plots import plot_training_curves
    from trainers.resources import init_ray
    from trainers.semiweak.methods import train_and_evaluate

    validate(cfg)
    common.clear_stale_results(out, cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg, out, log)
    channels, classes = splits["train"].images.shape[3], splits["train"].classes
    for split, images in splits.items():
        if cfg.bags.size > len(images):
            raise ConfigError(f"bags.size {cfg.bags.size} is larger than the {split} split of {images.source} "
                              f"({len(images)} images): choose --bag-size <= {len(images)}")
    init_ray(log)
    t0 = time.perf_counter()
    paths, digests, manifests = {}, {}, {}
    for split, images in splits.items():
        shard_dir = out / "shards" / split
        manifests[split] = build_bag_shards(images, shard_dir, corpus="bags", split=split, bag_size=cfg.bags.size,
                                            bag_size_max=cfg.bags.size_max, seed=cfg.train.seed,
                                            bags_per_shard=cfg.bags.bags_per_shard)
        paths[split], digests[split] = shard_paths(shard_dir), manifest_digest(shard_dir)
    shard_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = train_and_evaluate(cfg, channels, len(classes), paths, sorted(digests.items()), out, log, callbacks)
    curves = plot_training_curves({n: r["history"] for n, r in results.items()}, out / "plots" / "learning_curves.png",
                                  title="Semi-weak labels: training loss and accuracy "
                                  "(acc: count-consistent instances for the weak methods)")
    bag_size = f"{cfg.bags.size}-{cfg.bags.size_max}" if cfg.bags.size_max else str(cfg.bags.size)
    report = {
        "workflow": "semiweak",
        "data": {s: {"source": im.source, "images": len(im), "classes": list(im.classes)} for s, im in splits.items()},
        "shards": common.manifest_summary(manifests, digests),
        "chance_accuracy": 1 / len(classes),
        "results": results,
        "plots": {"learning_curves": curves},
        "timing_s": {"shards": shard_time, "train_and_eval": time.perf_counter() - t0},
    }
    text = results_table(results, bag_size, cfg.method.stage2)
    return common.write_report(out, cfg, report, text, curves, log)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--cifar", help="CIFAR-10 python version root (cifar-10-batches-py/ or its parent)")
    source.add_argument("--mnist", help="MNIST IDX folder")
    source.add_argument("--fashion-mnist", help="Fashion-MNIST IDX folder (Debian: /usr/share/datasets/fashion-mnist)")
    source.add_argument("--svhn", help="SVHN format 2 folder (train_32x32.mat, test_32x32.mat)")
    p.add_argument("--out", type=Path, default=Path("runs/semiweak"), help="shards, checkpoints, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--bag-size", type=int, help="bags.size")
    p.add_argument("--method", help="methods: comma-separated (two_stage, llp, mil, supervised)")
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list:
    """The command line's flags as config overrides (shorthand flags literal, then --set)."""
    kind, root = next(((kind, root) for kind, root in (("cifar10", args.cifar), ("mnist", args.mnist),
                                                       ("fashion-mnist", args.fashion_mnist), ("svhn", args.svhn))
                       if root), (None, None))
    return common.shorthand_overrides(args, common.literal_overrides(**{
        "data.kind": kind, "data.root": root, "bags.size": args.bag_size,
        "methods": args.method.split(",") if args.method else None}))


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = overrides_of(args)
    return common.guarded(lambda: run(load_config(SemiWeakConfig, args.config, overrides), args.out), args)


def _final(report: dict) -> dict:
    r = report["results"]["two_stage"]   # stage 2's model, or stage 1's when method.stage2 is off
    last = r["history"][-1]
    return {"val_count_error": last["val_count_error"], "val_count_mae": last["val_count_mae"],
            "val_acc": last["val_acc"], "test_instance_accuracy": r["instance_accuracy"],
            "test_count_mae": r["count_mae"]}


def _two_stages(cfg: SemiWeakConfig) -> int:
    return cfg.train.epochs * 2    # stage 1 + stage 2: the most one trial reports


SWEEP = SweepTarget("semiweak", SemiWeakConfig, run, validate, metric="val_count_error", mode="min", final=_final,
                    per_epoch=True, overrides=("methods=[two_stage]", "data.val_fraction=0.1"), budget=_two_stages,
                    data_key="data.root")


if __name__ == "__main__":
    sys.exit(main())
