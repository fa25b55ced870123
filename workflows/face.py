#!/usr/bin/env python
"""Face verification (SphereFace family): identity folders -> shards (Ray Data) -> backbone + head
(Ray Train) -> embeddings of the LFW pair images (Ray Data batch inference) -> cosine scores ->
LFW 10-fold accuracy and EER.

    python workflows/face.py --out runs/face-demo            # generated demo corpus, local Ray
    python workflows/face.py --data /data/faces --out runs/casia --workers 4 --head sphereface2 \\
        --set data.image_size=112 --set model.backbone_args='{width: 1.0}' --set model.embed_dim=512

--data ROOT must hold (folder and file names are config keys, defaults shown):
    ROOT/train/<identity>/<image>.jpg        training set, CASIA-WebFace / VGGFace2 layout    data.train_dir
    ROOT/lfw/<name>/<name>_0001.jpg          verification images, LFW layout (.jpg/.jpeg/.png) data.test_dir
    ROOT/pairs.txt                           LFW pairs: '<folds> <pairs>', then per fold       data.pairs
                                             <pairs> 'name n1 n2' + <pairs> 'name1 n1 name2 n2' lines
Images are resized to data.image_size squared at shard time (align and crop faces beforehand).
A wrong layout fails before any work with one `error:` line naming the path (exit code 2).
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
from trainers.resources import ScaleConfig, inference_actors  # noqa: E402
from tuning.target import SweepTarget  # noqa: E402
from workflows import common  # noqa: E402


@dataclasses.dataclass
class DataConfig:
    root: str = ""                   # face data root (--data); empty: the generated demo corpus in OUT/data
    train_dir: str = "train"         # under --data: <identity>/<image>
    test_dir: str = "lfw"            # under --data: <name>/<name>_NNNN.jpg
    pairs: str = "pairs.txt"         # under --data: LFW pairs file
    image_size: int = 32             # shards hold image_size x image_size RGB PNGs; the backbone is built for it
    samples_per_shard: int = 512
    shuffle_buffer: int = 512
    skip_bad: bool = False           # skip unreadable training images (recorded in the manifest); pair images must read
    flip_test: bool = True           # test embedding = f(x) + f(horizontally flipped x)


@dataclasses.dataclass
class ModelConfig:
    backbone: str = "sfnet20"
    embed_dim: int = 128
    backbone_args: dict = dataclasses.field(default_factory=lambda: {"width": 0.25})


@dataclasses.dataclass
class DemoConfig:
    n_train_ids: int = 400           # more identities, not more epochs, is what makes unseen faces separable
    n_test_ids: int = 60              # 6 per fold: different-person pairs span 15 identity pairs per fold
    images_per_id: int = 8
    size: int = 64                   # generated at 64 px and resized at shard time, as real photos are
    n_folds: int = 10
    pairs_per_fold: int = 30
    seed: int = 0


@dataclasses.dataclass
class FaceConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    head: dict = dataclasses.field(default_factory=lambda: {"name": "sphereface2"})
    # constant lr: on the demo budget a decay to lr/10 cost ~2 points of accuracy (measured)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(epochs=12, batch_size=64, lr=1e-3,
                                                                            final_lr=1e-3, weight_decay=5e-4))
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def make_task(cfg: FaceConfig, num_classes: int):
    from trainers.face.task import FaceTask
    from trainers.heads import pk_group_size

    return FaceTask(backbone=cfg.model.backbone, backbone_args=dict(cfg.model.backbone_args),
                    embed_dim=cfg.model.embed_dim, image_size=cfg.data.image_size, head=dict(cfg.head),
                    num_classes=num_classes, batch_size=cfg.train.batch_size, shuffle_buffer=cfg.data.shuffle_buffer,
                    seed=cfg.train.seed, pk=pk_group_size(cfg.head))


def validate(cfg: FaceConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    from trainers.embedding import validate_head_config

    common.require_positive(cfg, "data.image_size", "data.samples_per_shard", "data.shuffle_buffer", "model.embed_dim")
    common.checked(lambda: validate_head_config(cfg, make_task, "images per identity"))


def corpus_root(cfg: FaceConfig, out: Path, log) -> Path:
    """data.root, or the demo corpus (generated once per demo section) when it is empty."""
    from datasets.synthetic.faces import generate_face_corpus

    if cfg.data.root:
        return Path(cfg.data.root)
    demo = cfg.demo
    root = out / "data" / f"faces-demo-{config_hash(demo)[:8]}"
    log(f"[data] demo corpus (identity folders + LFW layout, generated once per demo section) in {root}")
    try:
        return generate_face_corpus(root, n_train_ids=demo.n_train_ids, n_test_ids=demo.n_test_ids,
                                    images_per_id=demo.images_per_id, size=demo.size, seed=demo.seed,
                                    n_folds=demo.n_folds, pairs_per_fold=demo.pairs_per_fold)
    except ValueError as exc:  # infeasible demo.* parameters
        raise ConfigError(f"demo corpus: {exc}") from exc


def run(cfg: FaceConfig, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; returns what it writes to metrics.json plus the DET curves ("det_curves").
    `callbacks` go to the Ray Train run."""
    import numpy as np

    from datasets.errors import LayoutError
    from datasets.faces import build_face_shards, find_face_layout
    from datasets.shards import shard_paths
    from trainers.embedding import scored_systems
    from trainers.face.task import extract_embeddings, face_dataset
    from trainers.loop import check_batches, train_or_reuse
    from trainers.resources import init_ray
    from trainers.verification import TrialList, evaluate

    validate(cfg)
    common.clear_stale_results(out, cfg, log)
    root = corpus_root(cfg, out, log)
    layout = find_face_layout(root, cfg.data.train_dir, cfg.data.test_dir, cfg.data.pairs)  # before OUT is created
    out.mkdir(parents=True, exist_ok=True)
    folds = sorted({p.fold for p in layout.pairs})
    if len(folds) < 2:
        raise LayoutError(f"{root / cfg.data.pairs} has {len(folds)} fold; cross-validated accuracy needs >= 2")
    log(f"[data] {root}: {len(layout.train)} training images of {len(layout.identities)} identities, "
        f"{len(layout.pairs)} pairs in {len(folds)} folds over {len(layout.test)} images")
    init_ray(log)

    t0 = time.perf_counter()
    shards = out / "shards"
    for split, items, ids, skip in (("train", layout.train, layout.identities, cfg.data.skip_bad),
                                    ("test", layout.test, layout.test_identities, False)):
        build_face_shards(items, ids, shards / split, size=cfg.data.image_size, split=split, root=root,
                          samples_per_shard=cfg.data.samples_per_shard, seed=cfg.train.seed, skip_bad=skip)
    manifests, digests = common.verified_shards(shards, ("train", "test"))
    shard_time = time.perf_counter() - t0

    check_batches(manifests["train"]["num_samples"], cfg.train, cfg.scale.workers, "training images")
    task = make_task(cfg, num_classes=len(manifests["train"]["classes"]))
    run_name = f"face-{config_hash(cfg)}-{digests['train'][:8]}"
    t0 = time.perf_counter()
    train_paths = shard_paths(shards / "train")
    state, history = train_or_reuse(task, cfg.train, out, run_name,
                                    lambda: face_dataset(train_paths, shuffle_seed=cfg.train.seed), cfg.scale, log,
                                    callbacks=callbacks)
    train_time = time.perf_counter() - t0

    systems = scored_systems(task, state["model"], cfg.train.seed)
    t0 = time.perf_counter()
    test_paths = shard_paths(shards / "test")
    pairs = TrialList(cfg.data.pairs, [p.left_key for p in layout.pairs], [p.right_key for p in layout.pairs],
                      np.array([p.label for p in layout.pairs]), [p.fold for p in layout.pairs])
    results, curves = evaluate(systems,
                               lambda enc: extract_embeddings(test_paths, task, enc, inference_actors(cfg.scale),
                                                              flip=cfg.data.flip_test, use_gpu=cfg.scale.use_gpu),
                               [pairs])
    eval_time = time.perf_counter() - t0

    return common.verification_report(out, cfg, "face", root, (manifests, digests), results, curves, history,
                                      {"shards": shard_time, "train": train_time, "eval": eval_time},
                                      f"DET on {cfg.data.pairs}: {cfg.model.backbone} + {cfg.head['name']}", log,
                                      note=None if cfg.data.root else "generated demo corpus, not LFW")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="face data root (layout above); omitted: a generated demo corpus")
    p.add_argument("--out", type=Path, default=Path("runs/face-demo"), help="shards, checkpoints, metrics, plots")
    common.add_common_args(p)
    p.add_argument("--backbone", "--encoder", dest="backbone", help="model.backbone (sfnet20)")
    p.add_argument("--head", help="head.name (sphereface2, arcface, cosface, ...); its keyword arguments via "
                                  "--set head.m=0.3")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable training images (listed in the manifest)")
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list:
    """The command line's flags as config overrides (shorthand flags literal, then --set)."""
    return common.shorthand_overrides(args, common.literal_overrides(**{
        "data.root": args.data, "model.backbone": args.backbone,
        "head": {"name": args.head} if args.head else None,   # a new head drops the old one's keywords
        "data.skip_bad": args.skip_bad or None}))


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = overrides_of(args)
    return common.guarded(lambda: run(load_config(FaceConfig, args.config, overrides), args.out), args)


def _final(report: dict) -> dict:
    trained = next(iter(report["verification"].values()))["trained"]
    return {"accuracy": trained["mean_acc"], "eer": trained["eer"]}


SWEEP = SweepTarget("face", FaceConfig, run, validate, metric="accuracy", mode="max", final=_final,
                    data_key="data.root")


if __name__ == "__main__":
    sys.exit(main())
