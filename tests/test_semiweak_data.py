"""Semi-weak data: CIFAR-10 / IDX / SVHN readers (and what they refuse), the bag plan, and bag shards
written by Ray Data (deterministic, counts that match the instances)."""
import gzip
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from datasets.bags import SUPERVISED_MEMBERS, TRAIN_MEMBERS, BagError, build_bag_shards, plan_bags
from datasets.errors import LayoutError
from datasets.images import CIFAR_DIR, FASHION_DEBIAN, load_images, read_idx, write_cifar10_batch, write_idx
from datasets.synthetic.images import CLASSES, generate_image_corpus


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return generate_image_corpus(tmp_path_factory.mktemp("img") / "demo", per_train_batch=40, test_size=50)


def copy_cifar(src: Path, dst: Path) -> Path:
    (dst / CIFAR_DIR).mkdir(parents=True)
    for f in (src / CIFAR_DIR).iterdir():
        (dst / CIFAR_DIR / f.name).write_bytes(f.read_bytes())
    return dst / CIFAR_DIR


def test_generated_set_reads_back_in_cifar_layout(demo_root, tmp_path):
    train, test = load_images("cifar10", demo_root, "train"), load_images("cifar10", demo_root, "test")
    assert train.images.shape == (200, 32, 32, 3) and test.images.shape == (50, 32, 32, 3)
    assert train.classes == CLASSES and np.bincount(train.labels).tolist() == [20] * 10
    # the same parameters give byte-identical batches
    again = generate_image_corpus(tmp_path / "again", per_train_batch=40, test_size=50)
    assert (again / CIFAR_DIR / "data_batch_3").read_bytes() == (demo_root / CIFAR_DIR / "data_batch_3").read_bytes()


def test_cifar_rows_are_channel_major(tmp_path):
    """CIFAR-10 stores each row as 1024 red, then 1024 green, then 1024 blue values."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 1] = (10, 20, 30)
    folder = tmp_path / CIFAR_DIR
    write_cifar10_batch(folder / "test_batch", image, np.array([3]), "test_batch")
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=2))
    raw = pickle.loads((folder / "test_batch").read_bytes(), encoding="bytes")[b"data"][0]
    assert (raw[1], raw[1024 + 1], raw[2048 + 1]) == (10, 20, 30)
    read = load_images("cifar10", tmp_path, "test")
    assert read.images[0, 0, 1].tolist() == [10, 20, 30] and read.labels.tolist() == [3]


class Planted:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_pickle_is_refused_not_executed(demo_root, tmp_path):
    folder = copy_cifar(demo_root, tmp_path)
    marker = tmp_path / "executed"
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Planted(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(LayoutError, match=r"data_batch_2 is not a CIFAR-10 python batch \(refused to load global "
                                          r"(posix|os)\.system\); nothing in it was executed"):
        load_images("cifar10", tmp_path, "train")
    assert not marker.exists()


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, r"b'data' must be an N x 3072 uint8 array"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, r"label 10 at index 1 is out of range 0\.\.9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"2 images but 1 labels"),
    (["not", "a", "dict"], r"holds a list, not the dict of a CIFAR-10 batch"),
])
def test_bad_cifar_batches_name_the_file(demo_root, tmp_path, batch, message):
    folder = copy_cifar(demo_root, tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(LayoutError, match=message) as err:
        load_images("cifar10", tmp_path, "test")
    assert "test_batch" in str(err.value)


def test_missing_cifar_file(tmp_path):
    with pytest.raises(LayoutError, match="batches.meta is missing"):
        load_images("cifar10", tmp_path, "train")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels)
    read = load_images("mnist", tmp_path, "test")
    assert read.images.shape == (7, 28, 28, 1) and (read.images[..., 0] == images).all()
    assert read.labels.tolist() == labels.tolist() and read.classes[3] == "3"


def test_bad_idx_files(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(LayoutError, match=r"header says \(3, 4, 4\) \(48 bytes\) but 43 bytes follow"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"\x08\x03\x00\x00" + bytes(10)))
    with pytest.raises(LayoutError, match="not an IDX file"):
        read_idx(path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 12], np.uint8))
    with pytest.raises(LayoutError, match=r"label 12 at index 2 is out of range"):
        load_images("fashion-mnist", tmp_path, "train")


def test_svhn_mat_layout(tmp_path):
    import scipy.io

    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [10], [9]], np.uint8)})
    read = load_images("svhn", tmp_path, "train")
    assert read.labels.tolist() == [0, 1, 2, 0, 9]                  # 10 means digit 0
    assert read.images.shape == (5, 32, 32, 3) and (read.images[4] == x[..., 4]).all()
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x[:, :, :2], "y": np.ones((5, 1))})
    with pytest.raises(LayoutError, match=r"test_32x32.mat: X must be H x W x 3 x N"):
        load_images("svhn", tmp_path, "test")


@pytest.mark.skipif(not FASHION_DEBIAN.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    train, test = (load_images("fashion-mnist", FASHION_DEBIAN, s) for s in ("train", "test"))
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [6000] * 10 and train.classes[9] == "Ankle boot"


def test_bag_plan():
    bags = plan_bags(100, 16, seed=1)
    assert [len(b) for b in bags] == [16] * 6
    assert len(np.unique(np.concatenate(bags))) == 96                # disjoint, drawn without replacement
    assert all((a == b).all() for a, b in zip(bags, plan_bags(100, 16, seed=1)))
    ranged = plan_bags(1000, 4, 9, seed=2)
    sizes = [len(b) for b in ranged]
    assert min(sizes) == 4 and max(sizes) == 9 and sum(sizes) > 1000 - 9
    with pytest.raises(BagError, match=r"bag size 17 is larger than the split \(16 images\)"):
        plan_bags(16, 17)
    with pytest.raises(BagError, match="empty"):
        plan_bags(16, 8, 4)


def read_members(tar_path: Path) -> dict:
    out = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_bag_shards(ray_local, demo_root, tmp_path):
    images = load_images("cifar10", demo_root, "train")
    manifest = build_bag_shards(images, tmp_path / "a", corpus="bags", split="train", bag_size=8, bag_size_max=12,
                                seed=3, bags_per_shard=5)
    again = build_bag_shards(images, tmp_path / "b", corpus="bags", split="train", bag_size=8, bag_size_max=12,
                             seed=3, bags_per_shard=5)
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in again["shards"]]
    assert manifest["classes"] == list(CLASSES) and manifest["image_shape"] == [32, 32, 3]
    seen = 0
    for shard in manifest["shards"]:
        for key, sample in read_members(tmp_path / "a" / shard["name"]).items():
            bag = np.load(io.BytesIO(sample["npy"]))
            meta, truth = json.loads(sample["json"]), json.loads(sample["truth"])
            assert 8 <= len(bag) <= 12 and meta["bag_size"] == len(bag) == len(truth)
            assert meta["counts"] == np.bincount(truth, minlength=10).tolist() and sum(meta["counts"]) == len(bag)
            assert (bag == images.images[meta["index"]]).all() and truth == images.labels[meta["index"]].tolist()
            seen += len(bag)
    assert seen == manifest["instances"] > 200 - 12


def test_weak_training_reads_no_instance_labels(ray_local, demo_root, tmp_path):
    from datasets.shards import read_shards, shard_paths

    images = load_images("cifar10", demo_root, "test")
    build_bag_shards(images, tmp_path, corpus="bags", split="test", bag_size=16)
    weak = read_shards(shard_paths(tmp_path), 0, TRAIN_MEMBERS).take(2)
    full = read_shards(shard_paths(tmp_path), 0, SUPERVISED_MEMBERS).take(2)
    assert {"npy", "json"} <= set(weak[0]) and "truth" not in weak[0] and "truth" in full[0]

