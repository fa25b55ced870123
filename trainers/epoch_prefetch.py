"""The next epoch's data starts while this epoch ends.

Each epoch of a Ray Train worker reads its shard through a new Ray Data execution (`streaming_split` starts
one per epoch), and its first batch comes 1.5-2.7 s later on 2 CPUs (benchmarks/bench_input_pipeline.py)
while the trainer waits. `prefetched_epochs` runs a task's batches for every epoch of the run, one epoch
after the other, in a thread up to `depth` batches ahead of the trainer: when epoch e's stream ends, epoch
e+1's execution starts while the trainer still has up to `depth - 1` batches of epoch e to go (the queue
also holds the epoch's end), and inside an epoch the task's own per-batch work (crops, augmentation)
overlaps the training step.
The batches are those of `batches(epoch)`, in the same order: a run gives the same numbers with or
without it. A split serves one epoch at a time (a new epoch ends the current one), so e+1 starts only once
epoch e's stream has ended.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterator

_END = object()


class _Prefetcher:
    def __init__(self, batches: Callable[[int], Iterator], epochs: range, depth: int):
        self.epochs = epochs
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(batches,), name="epoch-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Queue `item`; False once the consumer has gone."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, batches: Callable[[int], Iterator]) -> None:
        for epoch in self.epochs:
            try:
                for batch in batches(epoch):
                    if not self._put((epoch, batch)):
                        return
            except BaseException as e:  # handed to the trainer, which raises it
                self._put((epoch, e))
                return
            if not self._put((epoch, _END)):
                return

    def epoch(self, epoch: int) -> Iterator:
        """Epoch `epoch`'s batches. What a trainer left of an earlier epoch (every worker stops at the
        shortest worker's step count) is read and dropped: the split serves the next epoch only after it."""
        if epoch not in self.epochs:
            raise ValueError(f"epoch {epoch} is not among the prefetched epochs {self.epochs}")
        while True:
            got, item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            if got < epoch:
                continue
            if item is _END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()   # a thread waiting on the full queue ends; one inside a Ray Data read ends with the worker
        self._thread.join(timeout=1.0)


@contextlib.contextmanager
def prefetched_epochs(batches: Callable[[int], Iterator], epochs: range, depth: int):
    """Yields `epoch -> iterator of that epoch's batches` for the epochs of `epochs`, taken in order.
    depth = 0: no thread, each epoch's `batches(epoch)` runs when the trainer asks for it."""
    if depth <= 0:
        yield batches
        return
    prefetcher = _Prefetcher(batches, epochs, depth)
    try:
        yield prefetcher.epoch
    finally:
        prefetcher.close()
