"""CRP data path on real Ray and real tars: one shard per image through the one writer, and the K constant
perturbations the training task regenerates: every worker and a resumed run see the same copies of the same
example; bad input exits 2 with one line before any data is read."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from datasets.image_shards import MEMBERS, build_image_shards
from datasets.images import ImageSet, write_idx
from datasets.shards import read_shards, shard_paths, verify_shards
from trainers.robust import perturb
from trainers.robust.task import RobustTask
from workflows.robust import main

N, K, R, SEED = 24, 3, 0.2, 5


def image_set() -> ImageSet:
    rng = np.random.default_rng(0)
    return ImageSet(rng.integers(0, 256, (N, 6, 6, 1), dtype=np.uint8), rng.integers(0, 10, N), tuple("0123456789"),
                    "test")


def task(method: str = "crp") -> RobustTask:
    return RobustTask(method, "mnist_net", "mnist", 10, 1, 6, batch_size=5, width=0.25, copies=K, radius=R,
                      chunk=8, seed=SEED)


def expected_versions(images: ImageSet) -> dict:
    """{bytes of an input: (index, copy)} for all N(K+1) versions, computed from perturb.perturbed directly."""
    out = {}
    for i, image in enumerate(images.images):
        x = image.astype(np.float32).transpose(2, 0, 1) / 255   # the model's layout, C x H x W
        for k in range(K + 1):
            out[perturb.perturbed(x, "linf_uniform", R, SEED, i, k).tobytes()] = (i, k)
        assert out[x.tobytes()] == (i, 0)
    return out


def seen(batches) -> list:
    return [np.ascontiguousarray(x).tobytes() for b in batches for x in b["x"].numpy()]


def test_two_workers_and_a_resumed_run_see_the_same_perturbations(ray_local, tmp_path):
    images = image_set()
    manifest = build_image_shards(images, tmp_path / "train", corpus="toy", split="train", seed=1,
                                  samples_per_shard=7)
    assert verify_shards(tmp_path / "train")["num_samples"] == N == manifest["num_samples"]
    assert manifest["classes"] == list("0123456789") and manifest["image_shape"] == [6, 6, 1]
    expected = expected_versions(images)
    paths = shard_paths(tmp_path / "train")
    assert len(paths) == 4

    # two workers, each with its share of the shards (as Ray Train splits the blocks among workers), epoch 0
    t = task()
    first = [seen(t.batches(read_shards(part, 1, MEMBERS), 0, rank)) for rank, part in enumerate((paths[:2],
                                                                                                  paths[2:]))]
    assert all(first), "each worker got examples"
    epoch0 = first[0] + first[1]
    # every example's K+1 versions, each exactly once per epoch, each the one regenerated from (seed, index, copy)
    assert sorted(expected[v] for v in epoch0) == sorted(expected.values())
    assert not {expected[v][0] for v in first[0]} & {expected[v][0] for v in first[1]}

    # a resumed run: a fresh task (unpickled, as a restarted worker gets it) on a fresh read, another epoch, one worker
    resumed = pickle.loads(pickle.dumps(task()))
    epoch3 = seen(resumed.batches(read_shards(paths, 1, MEMBERS), 3, 0))
    assert sorted(expected[v] for v in epoch3) == sorted(expected.values())
    assert epoch3 != epoch0   # shuffled differently, same versions

    # vanilla (and pgd_at) see the clean examples only
    vanilla = seen(task("vanilla").batches(read_shards(paths, 1, MEMBERS), 0, 0))
    assert sorted(expected[v] for v in vanilla) == [(i, 0) for i in range(N)]


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--set", "crp.radius=0"], "crp.radius must be > 0"),
    (["--set", "crp.radius=-0.1"], "crp.radius must be > 0"),
    (["--set", "crp.copies=-1"], "crp.copies (K) must be an integer >= 0"),
    (["--set", "crp.noise=laplace"], "unknown crp.noise 'laplace'"),
    (["--method", "crp,trades"], "unknown or repeated methods ['trades']"),
    (["--attack", "fgsm,deepfool"], "unknown attack 'deepfool'"),
    (["--set", "model.name=vgg"], "unknown model.name 'vgg'"),
    (["--set", "data.kind=imagenet"], "unknown data.kind 'imagenet'"),
    (["--set", "data.kind=svhn"], "data.kind svhn needs data.root"),
    (["--set", "eval.eps=[0.1, -1]"], "eval.eps must be a non-empty list of numbers > 0"),
    (["--set", "model.kwargs={depth: 28}"], "model.kwargs"),
])
def test_bad_config_exits_2_before_reading_data(tmp_path, capsys, argv, message):
    code, err = run_main(capsys, *argv, "--out", tmp_path / "o")
    assert code == 2, err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()   # nothing read, nothing written


def test_bad_layouts_and_labels_exit_2(tmp_path, capsys):
    code, err = run_main(capsys, "--mnist", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and "train-images-idx3-ubyte[.gz] is missing" in err
    images = np.zeros((4, 28, 28), np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([1, 2, 12, 3], np.uint8))
    code, err = run_main(capsys, "--mnist", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and "label 12 at index 2 is out of range 0..9" in err, err
    assert not (tmp_path / "o" / "metrics.json").exists()
