"""Streaming P x K batch builder for proxy / entity losses (Mask Proxy, arXiv 2011.04491).

`pk_batches(rows, P, K, seed)` reads (label, sample) rows from one worker's stream (in
distributed training: that worker's Ray Data shard, e.g. `shard.iter_rows()`), keeps a FIFO
buffer per label, and yields batches of P distinct labels x K samples each.

Distributed use: every worker runs its own sampler over its own shard. No cross-worker
coordination is needed, because a batch only has to be K-grouped within the worker that computes
the loss on it (each DDP replica computes its own loss on its own batch; only gradients are
averaged). This holds however the shards were split: a speaker whose utterances landed on two
workers simply forms groups on each worker that has >= K of them. Note the number of batches per
epoch can then differ between workers (it depends on each shard's label mix), so a DDP loop must
cap the steps per epoch to a common count (e.g. all-reduce MIN of a per-worker count, or a fixed
`steps_per_epoch`).

Choice: whenever at least P labels have >= K buffered samples ("ready"), P of them are drawn with
`random.Random(seed)` from the ready labels (in the order they became ready), their K oldest
samples are popped and the batch is emitted, grouped label by label. The same rows with the same
seed give the same batches.

Epoch end: when `rows` is exhausted, batches keep being emitted while >= P labels are ready. What
is left — ready labels fewer than P, and labels with < K buffered samples — is an incomplete
group: with drop_incomplete=True (default) it is all dropped; with False, the remaining ready
groups (fewer than P labels, still K each, so still valid for Mask Proxy) are emitted as one last
smaller batch (repeated while a label still has >= K) and only the < K leftovers are dropped. Dropped samples and
labels are counted in `stats` (a dict the caller passes in) as "dropped_samples" and "dropped_labels"; "batches" and
"samples" count what was emitted.

Memory: buffered samples are bounded by the input order. Shuffle the stream first
(`local_shuffle_buffer_size` or a per-epoch `random_shuffle`); a speaker-sorted stream buffers
whole speakers.
"""
from __future__ import annotations

import random
from typing import Any, Hashable, Iterable, Iterator


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def pk_batches(rows_iter: Iterable[tuple[Hashable, Any]], P: int, K: int, seed: int,
               drop_incomplete: bool = True,
               stats: dict | None = None) -> Iterator[list[tuple[Hashable, Any]]]:
    """Yield lists of P·K (label, sample) pairs: P distinct labels, K samples each, label-grouped.

    See the module docstring for the choice rule, epoch-end behaviour and `stats` keys."""
    P, K = _positive_int("P", P), _positive_int("K", K)
    rng = random.Random(seed)
    buffers: dict[Hashable, list] = {}
    ready: dict[Hashable, None] = {}      # insertion-ordered set of labels with >= K samples
    counts = {"batches": 0, "samples": 0, "dropped_samples": 0, "dropped_labels": 0}

    def take(labels):
        batch = []
        for lab in labels:
            buf = buffers[lab]
            batch.extend((lab, s) for s in buf[:K])
            del buf[:K]
            if len(buf) < K:
                del ready[lab]
            if not buf:
                del buffers[lab]
        counts["batches"] += 1
        counts["samples"] += len(batch)
        return batch

    def emit():
        return take(rng.sample(list(ready), P))

    try:
        for label, sample in rows_iter:
            buf = buffers.setdefault(label, [])
            buf.append(sample)
            if len(buf) == K:          # became ready (a ready label stays ready until popped)
                ready[label] = None
            if len(ready) >= P:
                yield emit()
        while len(ready) >= P:
            yield emit()
        while not drop_incomplete and ready:     # < P ready labels: one smaller batch (more
            yield take(list(ready))              # only if a label still holds >= K after it)
        counts["dropped_samples"] = sum(len(b) for b in buffers.values())
        counts["dropped_labels"] = len(buffers)
    finally:
        if stats is not None:
            stats.update(counts)

