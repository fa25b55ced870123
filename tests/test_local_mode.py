"""scale.local_mode: Ray Train's local mode (the training function in this process) trains the same batches as a
Ray Train worker, keeps its own checkpoints (Ray Train persists none in local mode), resumes from them, and refuses
callbacks it would silently drop. A tiny semi-weak count model on real bag shards and the shared local Ray."""
import json

import pytest

from datasets.bags import TRAIN_MEMBERS, build_bag_shards
from datasets.images import load_images
from datasets.shards import read_shards, shard_paths
from datasets.synthetic.images import generate_image_corpus
from trainers.config import ConfigError
from trainers.loop import LOCAL_CHECKPOINT, LoopConfig, fit, load_checkpoint_state
from trainers.semiweak.task import BagTask

pytestmark = [pytest.mark.slow, pytest.mark.local_mode(worker_first=True)]


@pytest.fixture(scope="module")
def shards(ray_local, tmp_path_factory):
    work = tmp_path_factory.mktemp("local-mode")
    images = load_images("cifar10", generate_image_corpus(work / "img", per_train_batch=40, test_size=10), "train")
    build_bag_shards(images, work / "shards", corpus="bags", split="train", bag_size=8, seed=0, bags_per_shard=4)
    return shard_paths(work / "shards")


def train(paths, storage, name, epochs, workers, **kw):
    result = fit(BagTask("count", 3, 10, batch_size=4, width=4), {"train": read_shards(paths, 0, TRAIN_MEMBERS)},
                 LoopConfig(epochs=epochs, batch_size=4, checkpoints_to_keep=1), storage_path=str(storage),
                 name=name, workers=workers, cpus_per_worker=1, **kw)
    return load_checkpoint_state(result.checkpoint)


def test_local_mode_trains_what_a_worker_trains_and_resumes(shards, tmp_path):
    assert len(shards) > 1   # several blocks: their order matters
    _, worker_history = train(shards, tmp_path, "worker", 2, workers=1)   # first: see conftest's item order
    state, history = train(shards, tmp_path, "local", 2, workers=0)
    kept = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert kept == [f"{LOCAL_CHECKPOINT}000002"] and state["epoch"] == 2   # checkpoints_to_keep=1
    for ours, theirs in zip(history, worker_history, strict=True):   # one thread vs the test's: float sums differ
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5) and ours["acc"] == theirs["acc"]
    _, again = train(shards, tmp_path, "local-again", 2, workers=0)
    assert [h["loss"] for h in again] == [h["loss"] for h in history]   # the same seeds, the same numbers

    # an interrupted copy of a later checkpoint is not taken for one: the rerun resumes from epoch 2
    (tmp_path / "local" / f"{LOCAL_CHECKPOINT}000003.tmp").mkdir()
    state, resumed = train(shards, tmp_path, "local", 3, workers=0)
    assert [h["resumed_from_epoch"] for h in resumed] == [0, 0, 2] and state["epoch"] == 3
    assert resumed[:2] == json.loads(json.dumps(history))


def test_local_mode_refuses_callbacks(shards, tmp_path):
    from ray.train import UserCallback

    with pytest.raises(ConfigError, match="--tracker and Tune sweeps need scale.local_mode=false"):
        train(shards, tmp_path, "cb", 1, workers=0, callbacks=[UserCallback()])
    assert not (tmp_path / "cb").exists()


def test_after_a_local_run_this_process_is_no_train_worker(shards, tmp_path):
    from ray.train.v2._internal.util import _in_ray_train_worker

    train(shards, tmp_path, "once", 1, workers=0)
    assert not _in_ray_train_worker()
