"""Semi-weak labels end to end on a real local Ray: bags as shards -> the one loop -> instance accuracy;
the weak-label path provably blind to instance labels; the workflow's bad-input exits."""
import json
import pickle

import numpy as np
import pytest
import torch
from conftest import LOCAL_MODE

from datasets.bags import SUPERVISED_MEMBERS, TRAIN_MEMBERS, build_bag_shards, plan_bags
from datasets.images import CIFAR_DIR, FASHION_DEBIAN, ImageSet, load_images
from datasets.synthetic.images import generate_image_corpus
from trainers.config import load_config
from workflows.semiweak import SemiWeakConfig, main, run

pytestmark = [pytest.mark.slow, pytest.mark.local_mode]


def small_run(tmp_path, overrides):
    cfg = load_config(SemiWeakConfig, None, ["methods=[two_stage,mil]", "train.epochs=6", LOCAL_MODE, *overrides])
    report = run(cfg, tmp_path, log=print)
    print(json.dumps({k: {m: v for m, v in r.items() if m != "history"} for k, r in report["results"].items()},
                     indent=1))
    return report


def test_two_stage_beats_chance_and_mil_on_the_demo_set(ray_local, tmp_path):
    report = small_run(tmp_path, [])
    r = report["results"]
    assert report["chance_accuracy"] == 0.1
    assert r["two_stage"]["instance_accuracy"] > 6 * report["chance_accuracy"]       # far above chance
    assert r["two_stage"]["instance_accuracy"] > r["mil"]["instance_accuracy"] + 0.1
    assert r["two_stage"]["count_mae"] < r["mil"]["count_mae"]
    assert set(r) == {"two_stage (stage 1)", "two_stage", "mil"}
    assert len(r["two_stage"]["history"]) == 6
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["results"]["two_stage"]["bags"] == 62 and saved["shards"]["train"]["num_samples"] == 156
    assert "| two_stage | " in (tmp_path / "results.md").read_text()
    assert (tmp_path / "plots" / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not FASHION_DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_two_stage_beats_mil_on_real_fashion_mnist(ray_local, tmp_path):
    report = small_run(tmp_path, ["data.kind=fashion-mnist", f"data.root={FASHION_DEBIAN}", "data.max_train=4000",
                                  "data.max_test=1000"])
    r = report["results"]
    assert r["two_stage"]["instance_accuracy"] > 0.7
    assert r["two_stage"]["instance_accuracy"] > r["mil"]["instance_accuracy"]


def train_all(runs: dict, storage) -> dict:
    """{name: (kind, shard paths, members)} trained in Ray Train's local mode -> {name: (losses, state)}."""
    from datasets.shards import read_shards
    from trainers.loop import LoopConfig, fit, load_checkpoint_state
    from trainers.resources import in_parallel
    from trainers.semiweak.task import BagTask

    def train(name):
        kind, paths, members = runs[name]
        result = fit(BagTask(kind, 3, 10, batch_size=4, width=4), {"train": read_shards(paths, 0, members)},
                     LoopConfig(epochs=2, batch_size=4), storage_path=str(storage), name=name, workers=0)
        state, history = load_checkpoint_state(result.checkpoint)
        return [h["loss"] for h in history], state["model"]

    return in_parallel(train, list(runs))


def test_the_weak_loss_never_sees_instance_labels(ray_local, tmp_path):
    """Two shard sets with the same images and counts but different instance labels (each bag's labels
    rotated among its instances): the count loss trains identically on both, the supervised one does not."""
    from datasets.shards import shard_paths

    root = generate_image_corpus(tmp_path / "img", per_train_batch=40, test_size=10)
    images = load_images("cifar10", root, "train")
    rotated = images.labels.copy()
    for idx in plan_bags(len(images), 8, seed=0):
        rotated[idx] = np.roll(images.labels[idx], 1)
    assert (rotated != images.labels).mean() > 0.5
    paths = {}
    for name, labels in (("true", images.labels), ("rotated", rotated)):
        build_bag_shards(ImageSet(images.images, labels, images.classes, images.source), tmp_path / name,
                         corpus="bags", split="train", bag_size=8, seed=0)
        paths[name] = shard_paths(tmp_path / name)
    runs = train_all({f"{kind}-{name}": (kind, p, TRAIN_MEMBERS if kind == "count" else SUPERVISED_MEMBERS)
                      for kind in ("count", "supervised") for name, p in paths.items()}, tmp_path / "ckpt")
    (loss_true, state_true), (loss_rotated, state_rotated) = runs["count-true"], runs["count-rotated"]
    assert loss_true == loss_rotated
    assert all(torch.equal(state_true[k], state_rotated[k]) for k in state_true)
    assert runs["supervised-true"][0] != runs["supervised-rotated"][0]


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_bad_input_exits(tmp_path, capsys):
    code, err = run_main(capsys, "--method", "llp,oracle", "--out", tmp_path)
    assert code == 2 and "unknown methods ['oracle']" in err
    root = generate_image_corpus(tmp_path / "img", per_train_batch=10, test_size=10)
    code, err = run_main(capsys, "--cifar", root, "--bag-size", "60", "--out", tmp_path / "o")
    assert code == 2 and "bags.size 60 is larger than the train split" in err and "choose --bag-size <= 50" in err
    (root / CIFAR_DIR / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8),
                                                                b"labels": [1, 11]}, protocol=2))
    code, err = run_main(capsys, "--cifar", root, "--out", tmp_path / "o")
    assert code == 2 and "test_batch: label 11 at index 1 is out of range 0..9" in err
    code, err = run_main(capsys, "--mnist", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and "train-images-idx3-ubyte[.gz] is missing" in err
    assert not (tmp_path / "o" / "metrics.json").exists()
