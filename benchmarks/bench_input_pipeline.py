"""Input pipeline: speaker-model training steps/s fed from shards (Ray Data fbank) vs from memory.

A generated demo corpus (``datasets.synthetic.speakers.generate_corpus``) is sharded with
``build_speaker_shards``. The model is the workflow's default (``workflows.speaker.make_task``:
TDNN x-vector, hid_dim 256, embed 192, arcface head, batch 32, 200-frame crops, Adam).
Every variant runs in this driver process with the same torch threads and the same train step as
``trainers.loop`` (forward, zero_grad, backward, optimizer step, ``float(loss)``):

* in-memory:     the same number of (B, 200, 80) float32 batches, cropped once beforehand and held as
                 tensors.
* shard-fed:     ``trainers.speaker.feature_dataset`` (decode_wav + kaldi fbank in Ray Data tasks)
                 -> ``ds.streaming_split(1, equal=True)[0]`` (what Ray Train hands a worker)
                 -> ``SpeakerTask.batches`` (local shuffle buffer, random crops + CMN in the consumer),
                 through ``trainers.epoch_prefetch.prefetched_epochs`` with the loop's default depth
                 (``train.prefetch_batches``): the next epoch's Ray Data execution starts while the
                 current epoch's last queued batches train.
* shard-fed, no prefetch: the same with ``train.prefetch_batches=0`` (each epoch's execution starts
                 when the trainer asks for its first batch: the loop before the prefetch).

Setup mirrors the workflow with 1 training worker on 2 CPUs: the trainer holds 1 CPU (torch
threads = 1, as Ray Train sets OMP_NUM_THREADS for a 1-CPU worker) and Ray Data is limited to the
other CPU. Each variant trains ``--epochs`` consecutive epochs (the prefetch works across an epoch
boundary, so a variant's epochs must follow each other); an epoch's steps/s counts its whole wall time,
including any wait for the first batch. The first shard-fed epoch is a cold start in both shard
variants. Best epoch and median are reported; the result is the best epochs' ratio.
Target: shard-fed / in-memory steps/s >= 0.95.

    python benchmarks/bench_input_pipeline.py [--train-speakers 48] [--epochs 3] [--quick]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TARGET = 0.95


def start_ray(data_cpus: float | None, num_cpus: int = 2) -> None:
    from ray.data import DataContext, ExecutionResources

    from trainers import local_ray

    # always a fresh local Ray of its own, even if RAY_ADDRESS is set or another Ray runs here
    local_ray.start(env_vars={"PYTHONPATH": str(ROOT)}, num_cpus=num_cpus, include_dashboard=False,
                    log_to_driver=False)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    if data_cpus is not None:
        ctx.execution_options.resource_limits = ExecutionResources(cpu=data_cpus)
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def make_shards(work: Path, train_speakers: int, samples_per_shard: int, seed: int = 0) -> tuple[list[str], int, float]:
    """Demo corpus -> train shards. Returns (train shard paths, number of classes, seconds taken)."""
    from datasets.shards import shard_paths
    from datasets.synthetic.speakers import generate_corpus
    from datasets.voxceleb.layout import find_layout
    from datasets.voxceleb.shards import build_speaker_shards

    t0 = time.perf_counter()
    root = generate_corpus(work / "corpus", n_train_speakers=train_speakers, n_test_speakers=2, seed=seed)
    layout = find_layout(root)
    manifests = build_speaker_shards(layout, root, work / "shards", samples_per_shard=samples_per_shard,
                                     seed=seed)
    return shard_paths(work / "shards" / "train"), len(manifests["train"]["classes"]), time.perf_counter() - t0


def make_task(num_classes: int, batch_size: int | None = None):
    from workflows.speaker import SpeakerConfig
    from workflows.speaker import make_task as workflow_task

    cfg = SpeakerConfig()
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    return cfg, workflow_task(cfg, num_classes)


def new_model(task, cfg):
    from trainers.loop import _optimizer

    torch.manual_seed(cfg.train.seed)
    model = task.build_model()
    model.train()
    return model, _optimizer(cfg.train, model.parameters())


def train_epoch(model, optimizer, batches) -> dict:
    """The step of trainers.loop; returns wall time, steps, time to the first batch, time waiting for data,
    mean loss."""
    t0 = time.perf_counter()
    steps, wait, first, loss_sum, count = 0, 0.0, None, 0.0, 0
    it = iter(batches)
    while True:
        tw = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            wait += time.perf_counter() - tw
            break
        wait += time.perf_counter() - tw
        if first is None:
            first = time.perf_counter() - t0
        loss, _correct, n = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += float(loss.detach()) * n
        count += n
        steps += 1
    elapsed = time.perf_counter() - t0
    return {"time": elapsed, "steps": steps, "steps_per_s": steps / elapsed, "first": first or 0.0, "wait": wait,
            "loss": loss_sum / max(count, 1)}


def in_memory_batches(shard, task, n_batches: int) -> list[dict]:
    """`n_batches` cropped (B, num_frames, F) batches from one pass over the shard, as tensors."""
    out = list(task.batches(shard, epoch=10_000, rank=0))[:n_batches]
    while len(out) < n_batches:
        out.append(out[len(out) % max(len(out), 1)])
    return [{k: v.clone() for k, v in b.items()} for b in out]


def data_only_pass(shard, task, shuffle_buffer) -> tuple[float, float]:
    """(time to the first batch, time for the whole pass) of the feature iterator alone."""
    t0, first = time.perf_counter(), None
    for _ in shard.iter_batches(batch_size=task.batch_size, batch_format="numpy", drop_last=True,
                                local_shuffle_buffer_size=shuffle_buffer,
                                local_shuffle_seed=0 if shuffle_buffer else None):
        first = first if first is not None else time.perf_counter() - t0
    return first or 0.0, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-speakers", type=int, default=48, help="12 utterances each (demo default: 24)")
    ap.add_argument("--samples-per-shard", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs of each variant (>= 2)")
    ap.add_argument("--torch-threads", type=int, default=1, help="torch threads of the training loop (both variants)")
    ap.add_argument("--data-cpus", type=float, default=1.0, help="CPU limit of Ray Data (0 = no limit)")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke test (< 60 s)")
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be >= 2")
    if args.quick:
        args.train_speakers, args.epochs = 8, 2

    from trainers import local_ray

    torch.set_num_threads(args.torch_threads)
    work = Path(tempfile.mkdtemp(prefix="bench-input-"))
    try:
        t0 = time.perf_counter()
        start_ray(args.data_cpus or None)
        print(f"[setup] ray.init: {time.perf_counter() - t0:.1f} s")
        paths, num_classes, took = make_shards(work, args.train_speakers, args.samples_per_shard)
        print(f"[setup] demo corpus + shards: {len(paths)} train shards, {num_classes} speakers, {took:.1f} s")

        from trainers.speaker.task import feature_dataset

        cfg, task = make_task(num_classes, batch_size=16 if args.quick else None)
        shard = feature_dataset(paths, task.front, shuffle_seed=cfg.train.seed).streaming_split(1, equal=True)[0]
        t0 = time.perf_counter()
        n_steps = sum(1 for _ in task.batches(shard, epoch=0, rank=0))  # also warms up the Ray workers
        mem = in_memory_batches(shard, task, n_steps)
        print(f"[setup] {n_steps} steps/epoch of {task.batch_size}; in-memory batches {tuple(mem[0]['feats'].shape)} "
              f"precomputed in {time.perf_counter() - t0:.1f} s")

        from trainers.epoch_prefetch import prefetched_epochs

        depth = cfg.train.prefetch_batches
        variants = {"memory": None, "shard": depth, "shard, no prefetch": 0}
        runs: dict[str, list[dict]] = {}
        epochs = range(1, args.epochs + 1)
        for name, prefetch in variants.items():
            model, opt = new_model(task, cfg)
            runs[name] = []
            with prefetched_epochs(lambda e: task.batches(shard, e, 0), epochs, prefetch or 0) as epoch_batches:
                for epoch in epochs:
                    r = train_epoch(model, opt, mem if prefetch is None else epoch_batches(epoch))
                    runs[name].append(r)
                    print(f"[{name}] epoch {epoch}/{args.epochs}: {r['steps']} steps in {r['time']:.2f} s "
                          f"= {r['steps_per_s']:.3f} steps/s (first batch after {r['first']:.2f} s, "
                          f"waiting for data {r['wait']:.2f} s in all)", flush=True)
                    if r["steps"] != n_steps:
                        raise SystemExit(f"{name}: {r['steps']} steps, expected {n_steps}")

        diag = {name: data_only_pass(shard, task, buf)
                for name, buf in (("plain", None), ("shuffle", task.shuffle_buffer))}
        best = {k: max(r["steps_per_s"] for r in v) for k, v in runs.items()}
        med = {k: statistics.median(r["steps_per_s"] for r in v) for k, v in runs.items()}
        first = {k: statistics.median(r["first"] for r in v) for k, v in runs.items()}
        wait = {k: statistics.median(r["wait"] - r["first"] for r in v) for k, v in runs.items()}
        # Time per step outside the iterator (model step + loop), per variant: shows CPU contention.
        compute = {k: statistics.median((r["time"] - r["wait"]) / r["steps"] for r in v) for k, v in runs.items()}
        ratio = best["shard"] / best["memory"]
        print()
        print(f"Training steps/s of the {cfg.model.encoder} + {cfg.head['name']} speaker model, batch "
              f"{task.batch_size} x {task.num_frames} frames x {task.front.num_mel_bins} mels, {n_steps} steps "
              f"per epoch ({n_steps * task.batch_size} samples), {args.epochs} consecutive epochs per variant, "
              f"driver process, torch threads {torch.get_num_threads()}, Ray Data CPU limit "
              f"{args.data_cpus or 'none'} of 2, shuffle buffer {task.shuffle_buffer}, iterator: "
              f"streaming_split(1)[0], prefetch depth {depth} batches.")
        print()
        print("| variant | steps/s best / median | first batch wait (s, median) | later data waits (s/epoch) "
              "| step compute (s) | / in-memory, best (median) | target | ratio vs target |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k in ("shard", "shard, no prefetch", "memory"):
            print(f"| {k} | {best[k]:.3f} / {med[k]:.3f} | {first[k]:.2f} | {wait[k]:.2f} | {compute[k]:.3f} "
                  f"| {best[k] / best['memory']:.3f} ({med[k] / med['memory']:.3f}) | >= {TARGET} "
                  f"| {best[k] / best['memory'] / TARGET:.2f} |")
        print()
        print(f"Prefetch gain: shard-fed best steps/s with / without the next-epoch prefetch = "
              f"{best['shard'] / best['shard, no prefetch']:.3f}x")
        if ratio >= TARGET:
            print(f"RESULT: target met (shard-fed / in-memory = {ratio:.3f} >= {TARGET})")
        else:
            print(f"RESULT: target MISSED by {TARGET - ratio:.3f} ({100 * (1 - ratio / TARGET):.1f}% short): the "
                  f"shard-fed epoch waits {first['shard']:.2f} s for its first batch and {wait['shard']:.2f} s for "
                  f"later batches; a step takes {compute['shard']:.3f} s shard-fed vs {compute['memory']:.3f} s "
                  f"in-memory" + (" (Ray Data's threads and tasks share the 2 cores with the training step)."
                                  if compute["shard"] > 1.03 * compute["memory"] else "."))
        print(f"Data only (no training), one pass each: no local shuffle: first batch {diag['plain'][0]:.2f} s, "
              f"whole epoch {diag['plain'][1]:.2f} s; shuffle buffer {task.shuffle_buffer}: first batch "
              f"{diag['shuffle'][0]:.2f} s, whole epoch {diag['shuffle'][1]:.2f} s.")
    finally:
        local_ray.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
