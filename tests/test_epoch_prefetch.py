"""The next-epoch prefetch of the training loop (trainers/epoch_prefetch.py), without Ray: the same batches in the
same order, the next epoch started while the trainer is still inside the current one, abandoned epochs, errors,
shutdown. The loop itself runs it in every end-to-end test (reproducible metrics: test_reproducible.py)."""
import threading

import pytest

from trainers.epoch_prefetch import prefetched_epochs


def counting(n: int, started: dict | None = None):
    """batches(epoch): n items (epoch, i); records when each epoch's stream starts."""
    def batches(epoch):
        if started is not None:
            started[epoch].set()
        for i in range(n):
            yield (epoch, i)
    return batches


@pytest.mark.parametrize("depth", [0, 1, 3, 50])
def test_same_batches_in_the_same_order(depth):
    with prefetched_epochs(counting(5), range(2, 5), depth) as epoch_batches:
        got = [list(epoch_batches(e)) for e in range(2, 5)]
    assert got == [[(e, i) for i in range(5)] for e in range(2, 5)]


def test_next_epoch_starts_while_the_trainer_is_inside_this_one():
    started = {e: threading.Event() for e in range(2)}
    with prefetched_epochs(counting(6, started), range(2), depth=3) as epoch_batches:
        it = epoch_batches(0)
        taken = [next(it) for _ in range(4)]          # 4 of 6 taken: the last 2 and the epoch's end fit in the queue
        assert started[1].wait(timeout=10), "epoch 1 did not start while epoch 0 had 2 batches to go"
        assert taken + list(it) == [(0, i) for i in range(6)]
        assert list(epoch_batches(1)) == [(1, i) for i in range(6)]


def test_without_room_the_next_epoch_waits():
    started = {e: threading.Event() for e in range(2)}
    with prefetched_epochs(counting(6, started), range(2), depth=2) as epoch_batches:
        it = epoch_batches(0)
        next(it)
        assert not started[1].wait(timeout=0.5)        # 5 left + the end > 2 queued + 1 held by the thread
        assert len(list(it)) == 5 and list(epoch_batches(1)) == [(1, i) for i in range(6)]


def test_what_is_left_of_an_abandoned_epoch_is_dropped():
    with prefetched_epochs(counting(5), range(3), depth=2) as epoch_batches:
        it = epoch_batches(0)
        assert [next(it), next(it)] == [(0, 0), (0, 1)]
        it.close()                                     # a worker stopped in lockstep after 2 steps
        assert list(epoch_batches(1)) == [(1, i) for i in range(5)]
        assert list(epoch_batches(2)) == [(2, i) for i in range(5)]


def test_an_error_in_the_stream_reaches_the_trainer():
    def batches(epoch):
        yield (epoch, 0)
        if epoch == 1:
            raise OSError("shard-00003.tar: truncated")
        yield (epoch, 1)

    with prefetched_epochs(batches, range(3), depth=4) as epoch_batches:
        assert list(epoch_batches(0)) == [(0, 0), (0, 1)]
        with pytest.raises(OSError, match="shard-00003.tar"):
            list(epoch_batches(1))


def test_an_epoch_outside_the_range_is_refused():
    with prefetched_epochs(counting(2), range(1, 3), depth=1) as epoch_batches:
        with pytest.raises(ValueError, match="epoch 0 is not among"):
            next(epoch_batches(0))


def test_leaving_early_stops_the_thread():
    before = {t.ident for t in threading.enumerate()}
    with prefetched_epochs(counting(1000), range(5), depth=2) as epoch_batches:
        next(epoch_batches(0))                         # the thread now waits on a full queue
    left = [t for t in threading.enumerate() if t.ident not in before]
    assert all(not t.is_alive() for t in left), left
