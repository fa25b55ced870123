#!/usr/bin/env python
"""Adversarial robustness from constant random perturbations (CRP, arXiv 2103.08265): images -> one shard set
per split (Ray Data) -> vanilla, CRP (K fixed random perturbations per example, from an L-infinity box of
radius r, regenerated from (seed, index, copy), never stored) and PGD adversarial training (Madry) through the
one Ray Train loop, methods in parallel, model selection on a validation split carved from training -> clean
accuracy and accuracy under FGSM, PGD-k (L-infinity, random start), PGD-L2, CW-L2 and transferred PGD/FGSM
(crafted on a separately trained source model) over an epsilon grid, as parallel Ray tasks -> results.md,
metrics.json, plots/robustness.png, plots/examples.png.

    python workflows/robust.py --out runs/robust-demo          # demo: Debian's Fashion-MNIST, else sklearn digits
    python workflows/robust.py --config workflows/configs/robust_mnist.yaml --mnist /data/mnist --out runs/crp-mnist
    ray job submit --working-dir . -- python workflows/robust.py --out /tmp/robust-job

--mnist / --fashion-mnist ROOT: the four IDX files (gzipped or not); --svhn ROOT: train_32x32.mat and
test_32x32.mat; --cifar ROOT: cifar-10-batches-py/ (python version); --digits: scikit-learn's bundled 8 x 8
digits. Keys (also Tune's): crp.copies (K; 0 = vanilla), crp.radius (r), crp.noise (linf_uniform | gaussian |
sign | l2_ball), adv.eps/step/steps (PGD training), eval.eps (the L-infinity grid), eval.pgd_steps.
The defaults are the demo's scale (3 epochs, a quarter-width MNIST net, 6000 training images, 500 test images,
budget "steps": vanilla takes as many optimizer steps as CRP); the paper's settings per dataset are the recipes
workflows/configs/robust_{mnist,svhn,cifar10}.yaml (docs/robust.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError  # noqa: E402
from trainers.loop_config import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig  # noqa: E402
from tuning.target import SweepTarget  # noqa: E402
from workflows import common  # noqa: E402

BUDGETS = ("epochs", "steps")
SOURCES = ("demo", "mnist", "fashion-mnist", "svhn", "cifar10", "digits")
# the model's normalization statistics per corpus ("auto"); Fashion-MNIST and digits borrow MNIST's
AUTO_NORMALIZATION = {"mnist": "mnist", "fashion-mnist": "mnist", "digits": "mnist", "svhn": "svhn",
                      "cifar10": "cifar10"}


@dataclasses.dataclass
class DataConfig:
    kind: str = "demo"           # demo (Debian's Fashion-MNIST when installed, else digits) | mnist | fashion-mnist
                                 # | svhn | cifar10 | digits (scikit-learn's bundled 8 x 8 digits)
    root: str = ""
    max_train: int = 6000        # a seeded subset of the training split (0: all of it)
    max_test: int = 500          # of the test split (attacks are the expensive part)
    val_fraction: float = 0.1    # carved from training: what train.monitor selects the epoch on, never the test set
    samples_per_shard: int = 1024
    # none | crop_flip: the official code's SVHN / CIFAR-10 training augmentation (random crop, padding 4, and
    # horizontal flip), drawn once per example and frozen with its copies (as there: applied when the set is built)
    augment: str = "none"


@dataclasses.dataclass
class ModelConfig:
    name: str = "mnist_net"      # mnist_net | resnet18 | wrn
    width: float = 0.25          # channel multiplier (1.0 = the paper's)
    normalization: str = "auto"  # auto (per data.kind) | mnist | svhn | cifar10 | none
    kwargs: dict = dataclasses.field(default_factory=dict)   # e.g. {depth: 28, widen: 10, dropout: 0.1} for wrn


@dataclasses.dataclass
class CRPConfig:
    copies: int = 10             # K perturbed copies per example (the paper's 10; 0 = vanilla training)
    radius: float = 0.3          # r (MNIST 0.3; SVHN 8/255; CIFAR-10 16/255 = twice the attack's eps)
    noise: str = "linf_uniform"  # linf_uniform (the paper's) | gaussian | sign | l2_ball


@dataclasses.dataclass
class AdvConfig:
    """PGD adversarial training (Madry et al.; MNIST: eps 0.3, 40 steps of 0.01; CIFAR-10: 8/255, 7 of 2/255)."""
    eps: float = 0.1             # demo (Fashion-MNIST): 10 steps of 0.025 at eps 0.1 (Madry's MNIST: 40 of 0.01 at 0.3)
    step: float = 0.025
    steps: int = 10


@dataclasses.dataclass
class EvalConfig:
    attacks: list = dataclasses.field(default_factory=lambda: ["fgsm", "pgd", "pgd_l2", "cw_l2"])
    eps: list = dataclasses.field(default_factory=lambda: [0.05, 0.1, 0.2])   # L-infinity grid (demo's)
    pgd_steps: list = dataclasses.field(default_factory=lambda: [20, 40, 100])
    step: float = 0.01           # PGD's step (MNIST 0.01; SVHN / CIFAR-10 2/255)
    l2_eps: list = dataclasses.field(default_factory=lambda: [1.0, 2.0])          # pgd_l2 and cw_l2 radii
    l2_steps: int = 20
    cw_steps: int = 20           # CW-L2's optimizer iterations per binary search step
    cw_search_steps: int = 3     # binary search steps over CW's constant (Carlini and Wagner's 10; demo 3)
    cw_const: float = 1.0        # CW's first constant c (ART's default 0.01 found nothing in the demo's budget)
    cw_examples: int = 60        # CW-L2 on this many test examples (0: all): it costs ~100x a PGD-20 on CPU
    transfer: bool = True        # FGSM and PGD crafted on a separately trained vanilla model (seed + 1)
    transfer_steps: int = 20     # the transferred PGD's steps
    slices: int = 2              # Ray tasks per model
    examples: int = 6            # adversarial examples shown per method in plots/examples.png


@dataclasses.dataclass
class RobustConfig:
    methods: list = dataclasses.field(default_factory=lambda: ["vanilla", "crp", "pgd_at"])
    # "epochs" (the paper's): every method runs train.epochs epochs over its own training set, CRP's being K + 1
    # times larger; "steps" (ours, the demo's): vanilla (and the transfer source) sees each clean example K + 1
    # times per epoch, so it takes as many optimizer steps as CRP and a short demo does not compare CRP with an
    # undertrained vanilla model (PGD-AT keeps one pass per epoch: each of its steps already costs adv.steps + 1)
    budget: str = "steps"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    crp: CRPConfig = dataclasses.field(default_factory=CRPConfig)
    adv: AdvConfig = dataclasses.field(default_factory=AdvConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    # MNIST's optimizer (Adam 1e-3, no weight decay, x0.2 at epoch 40 of 50: set lr_milestones [40] with 50 epochs)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(
        epochs=3, batch_size=128, optimizer="adam", lr=1e-3, final_lr=1e-3, lr_gamma=0.2, weight_decay=0.0,
        monitor="val_fgsm_acc", monitor_lr=False))
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def demo_source() -> str:
    from datasets.images import FASHION_DEBIAN

    return "fashion-mnist" if (FASHION_DEBIAN / "train-images-idx3-ubyte.gz").is_file() else "digits"


def validate(cfg: RobustConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    from trainers.loop import validate as validate_loop
    from trainers.robust.attacks import ATTACKS
    from trainers.robust.model import MODELS, NORMALIZATION
    from trainers.robust.perturb import AUGMENTS
    from trainers.robust.task import METHODS

    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods or len(set(cfg.methods)) != len(cfg.methods):
        raise ConfigError(f"unknown or repeated methods {unknown or cfg.methods}; choose from {', '.join(METHODS)}")
    bad = [a for a in cfg.eval.attacks if a not in ATTACKS]
    if bad:
        raise ConfigError(f"unknown attack {bad[0]!r} in eval.attacks; choose from {', '.join(ATTACKS)}")
    if cfg.data.augment not in AUGMENTS:
        raise ConfigError(f"unknown data.augment {cfg.data.augment!r}; choose from {', '.join(AUGMENTS)}")
    if cfg.budget not in BUDGETS:
        raise ConfigError(f"unknown budget {cfg.budget!r}; choose from {', '.join(BUDGETS)}")
    if cfg.data.kind not in SOURCES:
        raise ConfigError(f"unknown data.kind {cfg.data.kind!r}; choose from {', '.join(SOURCES)}")
    needs_root = cfg.data.kind not in ("demo", "digits")
    if needs_root and not cfg.data.root:
        raise ConfigError(f"data.kind {cfg.data.kind} needs data.root (--{cfg.data.kind.replace('10', '')} PATH)")
    if not needs_root and cfg.data.root:
        raise ConfigError(f"data.root is {cfg.data.root} but data.kind is {cfg.data.kind}: set data.kind to one "
                          f"of {', '.join(SOURCES[1:5])}")
    if cfg.model.name not in MODELS:
        raise ConfigError(f"unknown model.name {cfg.model.name!r}; choose from {', '.join(MODELS)}")
    if cfg.model.normalization not in ("auto", "none", *NORMALIZATION):
        raise ConfigError(f"unknown model.normalization {cfg.model.normalization!r}; choose auto, none or "
                          f"{', '.join(NORMALIZATION)}")
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1) (model selection needs a validation split), got "
                          f"{cfg.data.val_fraction}")
    if min(cfg.data.max_train, cfg.data.max_test) < 0:
        raise ConfigError("data.max_train and data.max_test must be >= 0")
    common.require_positive(cfg, "model.width", "adv.eps", "adv.step", "adv.steps", "eval.step", "eval.l2_steps",
                            "eval.cw_steps", "eval.cw_search_steps", "eval.cw_const", "eval.transfer_steps",
                            "eval.slices", "data.samples_per_shard")
    if cfg.eval.cw_examples < 0:
        raise ConfigError(f"eval.cw_examples must be >= 0, got {cfg.eval.cw_examples}")
    for key in ("eps", "l2_eps", "pgd_steps"):
        values = getattr(cfg.eval, key)
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
            raise ConfigError(f"eval.{key} must be a non-empty list of numbers > 0, got {values!r}")

    def build():
        from trainers.robust import perturb
        from trainers.robust.model import build_classifier

        perturb.check(cfg.crp.noise, cfg.crp.radius, cfg.crp.copies)
        validate_loop(cfg.train)
        channels = 3 if cfg.data.kind in ("svhn", "cifar10") else 1
        size = {"svhn": 32, "cifar10": 32, "digits": 8}.get(cfg.data.kind, 28)
        build_classifier(cfg.model.name, normalization_of(cfg), 2, channels, size, cfg.model.width,
                         **cfg.model.kwargs)

    try:
        common.checked(build)
    except TypeError as exc:   # a model keyword that does not exist
        raise ConfigError(f"model.kwargs: {exc}") from None


def normalization_of(cfg: RobustConfig) -> str:
    if cfg.model.normalization != "auto":
        return cfg.model.normalization
    kind = cfg.data.kind if cfg.data.kind != "demo" else "mnist"
    return AUTO_NORMALIZATION[kind]


def load_splits(cfg: RobustConfig, log) -> tuple[str, dict]:
    """(corpus kind, {train, val, test: ImageSet}): seeded subsets, validation carved from training."""
    import numpy as np

    from datasets.images import FASHION_DEBIAN, ImageSet, describe, load_images, read_sklearn_digits

    kind, root = cfg.data.kind, cfg.data.root
    if kind == "demo":
        kind = demo_source()
        root = str(FASHION_DEBIAN) if kind == "fashion-mnist" else ""
        log(f"[data] demo: {kind} ({root or 'bundled with scikit-learn'})")
    splits = {}
    for i, (split, limit) in enumerate((("train", cfg.data.max_train), ("test", cfg.data.max_test))):
        images = read_sklearn_digits(split) if kind == "digits" else load_images(kind, root, split)
        if limit and limit < len(images):
            keep = np.sort(np.random.default_rng([cfg.train.seed, i]).choice(len(images), limit, replace=False))
            images = ImageSet(images.images[keep], images.labels[keep], images.classes, f"{images.source}[{limit}]")
        splits[split] = images
    train, n = splits["train"], len(splits["train"])
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng([cfg.train.seed, 2]).permutation(n)[:max(1, int(round(n * cfg.data.val_fraction)))]] \
        = True
    splits["val"], splits["train"] = (ImageSet(train.images[m], train.labels[m], train.classes, f"{train.source}[{s}]")
                                      for m, s in ((is_val, "val"), (~is_val, "train")))
    for split, images in splits.items():
        log(f"[data] {split}: {describe(images)}")
    return kind, splits


def attack_specs(cfg: RobustConfig) -> list:
    from trainers.robust.attacks import AttackSpec

    e, specs = cfg.eval, []
    for name in e.attacks:
        if name == "fgsm":
            specs += [AttackSpec("fgsm", eps) for eps in e.eps]
        elif name in ("pgd", "bim", "mim"):   # bim, mim: the official code's enum, at pgd's steps (none: no start)
            specs += [AttackSpec(name, eps, steps, e.step) for steps in e.pgd_steps for eps in e.eps]
        elif name == "pgd_l2":
            specs += [AttackSpec("pgd_l2", eps, e.l2_steps) for eps in e.l2_eps]
        else:
            specs += [AttackSpec("cw_l2", eps, e.cw_steps, search_steps=e.cw_search_steps, const=e.cw_const)
                      for eps in e.l2_eps]
    return specs


def results_table(results: dict) -> str:
    """One row per method x attack, one column per epsilon (accuracy %)."""
    lines = ["| method | attack | epsilon: accuracy (%) |", "|---|---|---|"]
    for method, res in results.items():
        lines.append(f"| {method} | clean | {100 * res['clean']:.1f} |")
        for attack, by_eps in res.items():
            if isinstance(by_eps, dict):
                cells = ", ".join(f"{float(eps):g}: {100 * acc:.1f}" for eps, acc in by_eps.items())
                lines.append(f"| {method} | {attack} | {cells} |")
    return "\n".join(lines)


def test_arrays(paths: list):
    """The test split back from its shards (what evaluation reads: trainers never read raw corpora)."""
    import numpy as np

    from datasets.image_shards import MEMBERS, rows_to_arrays
    from datasets.shards import read_shards

    parts = [rows_to_arrays(b) for b in read_shards(paths, None, MEMBERS).iter_batches(batch_size=1024,
                                                                                        batch_format="numpy")]
    images, labels, index = (np.concatenate(p) for p in zip(*parts))
    order = np.argsort(index)
    return images[order], labels[order]


def run(cfg: RobustConfig, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; `callbacks` go to every method's Ray Train run (a Tune sweep passes TuneReportCallback)."""
    from datasets.image_shards import build_image_shards
    from datasets.shards import manifest_digest, shard_paths
    from trainers.plots import plot_training_curves
    from trainers.resources import init_ray
    from trainers.robust.evaluate import evaluate_models
    from trainers.robust.figures import plot_examples, plot_robustness
    from trainers.robust.methods import SOURCE, train_all

    validate(cfg)
    # "auto" resolved first: the config written (and compared by the next run) names the statistics used
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, normalization=normalization_of(cfg)))
    common.clear_stale_results(out, cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    kind, splits = load_splits(cfg, log)
    shape, classes = splits["train"].images.shape[1:], splits["train"].classes
    init_ray(log)
    t0 = time.perf_counter()
    paths, digests, manifests = {}, {}, {}
    for split, images in splits.items():
        shard_dir = out / "shards" / split
        manifests[split] = build_image_shards(images, shard_dir, corpus=kind.replace("-", ""), split=split,
                                              seed=cfg.train.seed, samples_per_shard=cfg.data.samples_per_shard)
        paths[split], digests[split] = shard_paths(shard_dir), manifest_digest(shard_dir)
    shard_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    trained = train_all(cfg, shape, len(classes), paths, sorted(digests.items()), out, log, callbacks,
                        source=cfg.eval.transfer)
    train_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    images, labels = test_arrays(paths["test"])
    models = {m: trained[m][:2] for m in cfg.methods}
    results = evaluate_models(models, images, labels, attack_specs(cfg),
                              trained[SOURCE][:2] if cfg.eval.transfer else None, cfg.eval.slices, cfg.train.seed,
                              cfg.eval.transfer_steps, cfg.eval.cw_examples)
    eval_time = time.perf_counter() - t0
    for method, res in results.items():
        log(f"[robust] {method}: clean {100 * res['clean']:.1f} %" + "".join(
            f", {a} @ {max(v)}: {100 * v[max(v)]:.1f} %" for a, v in res.items() if isinstance(v, dict)
            and a.startswith(("fgsm", "pgd-"))))
    plots = {
        "robustness": plot_robustness(results, out / "plots" / "robustness.png"),
        "examples": plot_examples(models, images, labels, classes, max(cfg.eval.eps), cfg.eval.step,
                                  max(cfg.eval.pgd_steps), cfg.eval.examples, out / "plots" / "examples.png",
                                  cfg.train.seed),
        "learning_curves": plot_training_curves({m: trained[m][2] for m in trained},
                                                out / "plots" / "learning_curves.png",
                                                title="CRP: training loss and accuracy, validation clean / FGSM"),
    }
    report = {
        "workflow": "robust",
        "data": {s: {"source": im.source, "images": len(im), "classes": list(im.classes)} for s, im in splits.items()},
        "shards": common.manifest_summary(manifests, digests),
        "results": {m: {k: ({str(e): a for e, a in v.items()} if isinstance(v, dict) else v) for k, v in r.items()}
                    for m, r in results.items()},
        "selected_epoch": {m: _best_epoch(trained[m][2], cfg.train.monitor) for m in trained},
        "history": {m: trained[m][2] for m in trained},
        "plots": {k: str(v) for k, v in plots.items()},
        "timing_s": {"shards": shard_time, "train": train_time, "evaluate": eval_time},
    }
    return common.write_report(out, cfg, report, results_table(results), ", ".join(map(str, plots.values())), log)


def _best_epoch(history: list, monitor: str) -> int | None:
    if not monitor or not history or monitor not in history[0]:
        return None
    return max(history, key=lambda h: h[monitor])["epoch"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--mnist", help="MNIST IDX folder")
    source.add_argument("--fashion-mnist", help="Fashion-MNIST IDX folder (Debian: /usr/share/datasets/fashion-mnist)")
    source.add_argument("--svhn", help="SVHN format 2 folder (train_32x32.mat, test_32x32.mat)")
    source.add_argument("--cifar", help="CIFAR-10 python version root (cifar-10-batches-py/ or its parent)")
    source.add_argument("--digits", action="store_true", help="scikit-learn's bundled 8 x 8 digits")
    p.add_argument("--out", type=Path, default=Path("runs/robust"), help="shards, models, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--method", help="methods: comma-separated (vanilla, crp, pgd_at)")
    p.add_argument("--attack", help="eval.attacks: comma-separated (fgsm, pgd, pgd_l2, cw_l2, bim, mim)")
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list:
    kind, root = next(((kind, root) for kind, root in (("mnist", args.mnist), ("fashion-mnist", args.fashion_mnist),
                                                       ("svhn", args.svhn), ("cifar10", args.cifar)) if root),
                      ("digits", None) if args.digits else (None, None))
    return common.shorthand_overrides(args, common.literal_overrides(**{
        "data.kind": kind, "data.root": root,
        "methods": args.method.split(",") if args.method else None,
        "eval.attacks": args.attack.split(",") if args.attack else None}))


def main(argv=None) -> int:
    from trainers.config import load_config

    args = parse_args(argv)
    overrides = overrides_of(args)
    return common.guarded(lambda: run(load_config(RobustConfig, args.config, overrides), args.out), args)


def _final(report: dict) -> dict:
    last = report["history"]["crp"][-1] if "crp" in report["history"] else next(iter(report["history"].values()))[-1]
    crp = report["results"].get("crp") or next(iter(report["results"].values()))
    pgd = {k: v for k, v in crp.items() if k.startswith("pgd-")}
    return {"val_fgsm_acc": last["val_fgsm_acc"], "val_acc": last["val_acc"], "test_clean": crp["clean"],
            **({"test_pgd": min(min(v.values()) for v in pgd.values())} if pgd else {})}


def _epochs(cfg: RobustConfig) -> int:
    return cfg.train.epochs


SWEEP = SweepTarget("robust", RobustConfig, run, validate, metric="val_fgsm_acc", mode="max", final=_final,
                    per_epoch=True, overrides=("methods=[crp]", "eval.transfer=false"), budget=_epochs,
                    data_key="data.root")


if __name__ == "__main__":
    sys.exit(main())
