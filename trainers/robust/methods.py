"""CRP runs (arXiv 2103.08265): every method trained at once (parallel Ray Train runs through the one loop),
plus the separately trained source model of the transfer attacks, then all scored by trainers/robust/evaluate.py.

`cfg` below is the robust workflow's config (sections model, crp, adv, train, scale and the list of methods),
read by attribute: trainers never import workflows.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets.image_shards import MEMBERS
from datasets.shards import read_shards
from trainers.config import config_hash, to_dict
from trainers.loop import train_or_reuse
from trainers.resources import in_parallel, parallel_runs_scale
from trainers.robust.task import RobustTask

SOURCE = "source"   # the transfer attacks' source: vanilla training from another seed


def make_task(cfg, method: str, shape: tuple, num_classes: int, seed: int | None = None) -> RobustTask:
    """The TrainTask of `method` ("source": vanilla, seeded differently) for images of `shape` (H, W, C)."""
    m, crp, adv = cfg.model, cfg.crp, cfg.adv
    return RobustTask("vanilla" if method == SOURCE else method, m.name, m.normalization, num_classes, shape[2],
                      shape[0], cfg.train.batch_size, m.width, dict(m.kwargs), crp.copies, crp.noise, crp.radius,
                      adv.eps, adv.step, adv.steps, seed=cfg.train.seed if seed is None else seed,
                      augment=cfg.data.augment, repeats=crp.copies + 1 if cfg.budget == "steps" else 1)


def train_all(cfg, shape: tuple, num_classes: int, paths: dict, tag: list, out: Path, log, callbacks=None,
              source: bool = True) -> dict:
    """{method: (task, state dict, history)} for cfg.methods (+ the source model when `source`). `tag`: the
    shards' digests (a rerun on the same shards reuses the trained models)."""
    runs = list(cfg.methods) + ([SOURCE] if source else [])
    scale = parallel_runs_scale(cfg.scale, len(runs), log)

    def train(method: str):
        task = make_task(cfg, method, shape, num_classes, cfg.train.seed + 1 if method == SOURCE else None)
        # the name hashes only what changes this method's run: K and r do not touch vanilla or pgd_at
        key = [to_dict(cfg.train), to_dict(cfg.model), dataclasses.asdict(task), tag]
        run_dir = out / "models" / method
        run_dir.mkdir(parents=True, exist_ok=True)
        val = (lambda: read_shards(paths["val"], None, MEMBERS)) if "val" in paths else None
        state, history = train_or_reuse(task, cfg.train, run_dir, f"robust-{method}-{config_hash(key)}",
                                        lambda: read_shards(paths["train"], task.seed, MEMBERS), scale, log, val,
                                        callbacks if method != SOURCE else None)
        return task, state["model"], history

    return in_parallel(train, runs)
