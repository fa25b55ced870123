"""Semi-weak labels runs (arXiv 2103.10608): every method trained at once (parallel Ray Train runs;
two_stage's stage 2 after its stage 1), then each evaluated on the test bags in turn.

`cfg` below is the semiweak workflow's config (sections train, method, scale, the width and the list of
methods), read by attribute: trainers never import workflows.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from datasets.bags import SUPERVISED_MEMBERS, TRAIN_MEMBERS
from datasets.shards import read_shards
from trainers.config import config_hash, to_dict
from trainers.loop import train_or_reuse
from trainers.resources import in_parallel, inference_actors, parallel_runs_scale
from trainers.semiweak.task import BagTask, evaluate, pseudo_labelled


def train_method(cfg, method: str, in_channels: int, num_classes: int, paths: dict, tag: list,
                 out: Path, scale, log, callbacks=None) -> dict:
    """One method's training run(s); {stage name: (task, state, history)}."""
    kind = {"two_stage": "count"}.get(method, method)
    m = cfg.method
    task = BagTask(kind, in_channels, num_classes, cfg.train.batch_size, cfg.width, m.loss, m.reg_weight,
                   seed=cfg.train.seed)
    members = SUPERVISED_MEMBERS if method == "supervised" else TRAIN_MEMBERS
    weak = {"loss": m.loss, "reg_weight": m.reg_weight} if kind == "count" else \
        {"reg_weight": m.reg_weight} if kind in ("llp", "mil") else {}
    key = [to_dict(cfg.train), cfg.width, weak, tag]
    run_dir = out / method
    run_dir.mkdir(parents=True, exist_ok=True)
    val = (lambda: read_shards(paths["val"], None, SUPERVISED_MEMBERS)) if "val" in paths else None
    state, history = train_or_reuse(
        task, cfg.train, run_dir, f"semiweak-{method}-{config_hash(key)}",
        lambda: read_shards(paths["train"], cfg.train.seed, members), scale, log, val, callbacks)
    stages = {
        method if method != "two_stage" or not m.stage2 else "two_stage (stage 1)": (task, state["model"], history)}
    if method == "two_stage" and m.stage2:
        log("[semiweak] two_stage: count-exact pseudo-labels from stage 1, then stage 2")
        pseudo_task = dataclasses.replace(task, kind="pseudo",
                                          init_state=state["model"] if m.stage2_init == "stage1" else None)
        (run_dir / "stage2").mkdir(exist_ok=True)
        state2, history2 = train_or_reuse(   # pseudo-labelling runs only if stage 2 trains
            pseudo_task, cfg.train, run_dir / "stage2", f"semiweak-stage2-{config_hash(key + [m.stage2_init])}",
            # the other methods may still be training: the labelling actors take this run's workers' CPU share
            # (taking the cluster's but one, they left too little for any read task: a deadlock, seen in CI)
            lambda: pseudo_labelled(read_shards(paths["train"], None, TRAIN_MEMBERS), task, state["model"],
                                    len(paths["train"]), cfg.scale.workers, cfg.scale.use_gpu, scale.cpus_per_worker
                                    ).randomize_block_order(seed=cfg.train.seed),
            scale, log, val, callbacks)
        stages["two_stage"] = (pseudo_task, state2["model"], history2)
    return stages


def train_and_evaluate(cfg, in_channels: int, num_classes: int, paths: dict, tag: list, out: Path, log,
                       callbacks=None) -> dict:
    """{method or stage name: test-bag scores + training history} for every method of cfg.methods.
    `paths`: shard paths per split (train, test, and val when validation bags exist); `tag`: the
    shards' digests (a rerun on the same shards reuses the trained models)."""
    scale = parallel_runs_scale(cfg.scale, len(cfg.methods), log)
    trained = in_parallel(lambda m: train_method(cfg, m, in_channels, num_classes, paths, tag, out, scale, log,
                                                 callbacks), cfg.methods)
    results = {}
    for method in cfg.methods:   # evaluated one after another: prediction actors beside training would starve it
        for name, (task, state, history) in trained[method].items():
            results[name] = {**evaluate(read_shards(paths["test"], None, SUPERVISED_MEMBERS), task, state,
                                        len(paths["test"]), inference_actors(cfg.scale), cfg.scale.use_gpu),
                             "history": history}
            log(f"[semiweak] {name}: instance accuracy {100 * results[name]['instance_accuracy']:.2f} %, "
                f"count MAE {results[name]['count_mae']:.3f}")
    return results
