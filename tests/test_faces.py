"""Face data path: identity-folder reader, LFW pairs, generator, face shards, SFNet-20, 10-fold accuracy."""
import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.errors import LayoutError
from datasets.faces import (
    FaceImage,
    FacePair,
    build_face_shards,
    decode_face,
    find_face_layout,
    find_identity_folders,
    lfw_key,
    pair_images,
    read_lfw_pairs,
)
from datasets.shards import ShardError, shard_paths
from datasets.synthetic.faces import generate_face_corpus
from datasets.synthetic.marker import MARKER
from trainers.metrics import best_threshold, verification_accuracy_10fold


def write_image(path, color=(200, 120, 90), size=(40, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- identity folders

def test_identity_folders_layout(tmp_path):
    write_image(tmp_path / "0000045" / "001.jpg")
    write_image(tmp_path / "0000045" / "002.png")
    write_image(tmp_path / "0000099" / "a.b.jpg")          # dot in the name: escaped in the key
    write_image(tmp_path / "0000099" / ".hidden.jpg")      # hidden: skipped
    (tmp_path / "0000099" / "notes.txt").write_text("x")   # not an image: skipped
    (tmp_path / ".cache").mkdir()                           # hidden folder: skipped
    items, ids = find_identity_folders(tmp_path)
    assert ids == ["0000045", "0000099"]
    assert [i.key for i in items] == ["0000045/001", "0000045/002", "0000099/a%2Eb"]
    assert items[0] == FaceImage("0000045/001", str(tmp_path / "0000045" / "001.jpg"), "0000045")
    assert all("." not in i.key for i in items)


def test_identity_folders_errors(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        find_identity_folders(tmp_path / "nope")
    with pytest.raises(LayoutError, match="no identity folders"):
        find_identity_folders(tmp_path)
    write_image(tmp_path / "stray.jpg")
    with pytest.raises(LayoutError, match="stray.jpg directly in the root"):
        find_identity_folders(tmp_path)
    write_image(tmp_path / "id1" / "1.jpg")
    (tmp_path / "id2").mkdir()
    (tmp_path / "id2" / "readme.txt").write_text("x")
    with pytest.raises(LayoutError, match=r"id2 holds no images"):
        find_identity_folders(tmp_path)
    (tmp_path / "id2" / "readme.txt").unlink()
    write_image(tmp_path / "id2" / "1.jpg")
    write_image(tmp_path / "id2" / "1.png")
    with pytest.raises(LayoutError, match="share the key 'id2/1'"):
        find_identity_folders(tmp_path)


# ----------------------------------------------------------------------------- LFW pairs

PAIRS = """2\t2
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1
Aaron_Peirsol\t1\t2
Aaron_Peirsol\t3\t4
AJ_Cook\t1\tMarsha_Thomason\t1
Aaron_Sorkin\t2\tFranco_Frattini\t1
"""


def test_read_lfw_pairs(tmp_path):
    (tmp_path / "pairs.txt").write_text(PAIRS)
    pairs = read_lfw_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 8
    assert [p.fold for p in pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.label for p in pairs] == [1, 1, 0, 0, 1, 1, 0, 0]
    assert pairs[0] == FacePair(0, 1, "Abel_Pacheco/Abel_Pacheco_0001", "Abel_Pacheco/Abel_Pacheco_0004")
    assert pairs[2] == FacePair(0, 0, "Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001", "Dean_Barker/Dean_Barker_0001")
    assert pairs[7].left_key == lfw_key("Aaron_Sorkin", 2)


def test_read_lfw_pairs_errors(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text(PAIRS.replace("Akhmed_Zakayev\t1\t3", "Akhmed_Zakayev\t1\tx"))
    with pytest.raises(LayoutError, match=r"pairs\.txt:3: malformed pair line 'Akhmed_Zakayev 1 x' in fold 1"):
        read_lfw_pairs(path)
    path.write_text(PAIRS.replace("AJ_Cook\t1\tMarsha_Thomason\t1", "AJ_Cook\t1\t2"))  # same line among different
    with pytest.raises(LayoutError, match=r"pairs\.txt:8: .*different-person pair"):
        read_lfw_pairs(path)
    path.write_text("ten 300\n")
    with pytest.raises(LayoutError, match=r"pairs\.txt:1: malformed header"):
        read_lfw_pairs(path)
    path.write_text("\n".join(PAIRS.splitlines()[:-1]) + "\n")
    with pytest.raises(LayoutError, match="8 lines, but the file has 7"):
        read_lfw_pairs(path)

    # images: every named image must exist under the images root (.jpg or .png)
    path.write_text(PAIRS)
    lfw = tmp_path / "lfw"
    for line in PAIRS.splitlines()[1:]:
        parts = line.split("\t")
        refs = ([(parts[0], parts[1]), (parts[0], parts[2])] if len(parts) == 3
                else [(parts[0], parts[1]), (parts[2], parts[3])])
        for name, n in refs:
            write_image(lfw / name / f"{name}_{int(n):04d}.jpg")
    assert len(read_lfw_pairs(path, lfw)) == 8
    (lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0004.jpg").rename(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0004.png")
    assert len(read_lfw_pairs(path, lfw)) == 8
    (lfw / "Dean_Barker" / "Dean_Barker_0001.jpg").unlink()
    with pytest.raises(LayoutError, match=r"pairs\.txt:4: image .*Dean_Barker/Dean_Barker_0001\.jpg does not exist"):
        read_lfw_pairs(path, lfw)


# ----------------------------------------------------------------------------- generator

def test_generator_layout_determinism_and_pairs(tmp_path):
    kw = dict(n_train_ids=3, n_test_ids=4, images_per_id=3, size=32, n_folds=2, pairs_per_fold=2)
    a = generate_face_corpus(tmp_path / "a", seed=5, **kw)
    b = generate_face_corpus(tmp_path / "b", seed=5, **kw)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a) != tree_digest(generate_face_corpus(tmp_path / "c", seed=6, **kw))

    items, ids = find_identity_folders(a / "train")
    assert ids == ["0000001", "0000002", "0000003"] and len(items) == 9
    assert items[0].key == "0000001/001"
    with Image.open(items[0].path) as im:
        assert im.size == (32, 32) and im.mode == "RGB"

    lines = (a / "pairs.txt").read_text().splitlines()
    assert lines[0].split() == ["2", "2"] and len(lines) == 1 + 2 * 2 * 2
    pairs = read_lfw_pairs(a / "pairs.txt", a / "lfw")  # every image exists
    assert [(p.fold, p.label) for p in pairs] == [(0, 1)] * 2 + [(0, 0)] * 2 + [(1, 1)] * 2 + [(1, 0)] * 2
    ident = {key: key.split("/")[0] for p in pairs for key in (p.left_key, p.right_key)}
    for p in pairs:
        assert (ident[p.left_key] == ident[p.right_key]) == bool(p.label)
    by_fold = {}
    for p in pairs:
        by_fold.setdefault(p.fold, set()).update({ident[p.left_key], ident[p.right_key]})
    assert not by_fold[0] & by_fold[1]  # identity-disjoint folds, as LFW
    assert not set(ids) & set(ident.values())  # test identities are not training identities

    # idempotent: the marker short-circuits; other parameters are refused
    mtime = (a / MARKER).stat().st_mtime_ns
    generate_face_corpus(a, seed=5, **kw)
    assert (a / MARKER).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="other parameters"):
        generate_face_corpus(a, seed=7, **kw)
    with pytest.raises(ValueError, match="fewer than pairs_per_fold"):
        generate_face_corpus(tmp_path / "d", **{**kw, "pairs_per_fold": 99})


def test_find_face_layout(tmp_path):
    import shutil

    root = generate_face_corpus(tmp_path / "c", n_train_ids=2, n_test_ids=2, images_per_id=2, size=16, n_folds=1,
                                pairs_per_fold=1)
    layout = find_face_layout(root)
    assert layout.identities == ["0000001", "0000002"] and len(layout.train) == 4
    assert [p.label for p in layout.pairs] == [1, 0]
    assert layout.test_identities == ["Synth_Person0001", "Synth_Person0002"]
    assert {im.key for im in layout.test} == {k for p in layout.pairs for k in (p.left_key, p.right_key)}
    (root / "pairs.txt").rename(root / "view2.txt")
    with pytest.raises(LayoutError, match=rf"{root / 'pairs.txt'} not found .*expected {root / 'train'}/<identity>"):
        find_face_layout(root)
    assert len(find_face_layout(root, pairs_file="view2.txt").pairs) == 2
    with pytest.raises(LayoutError, match=rf"{root / 'faces'} not found"):
        find_face_layout(root, test_dir="faces", pairs_file="view2.txt")
    shutil.rmtree(root / "train" / "0000002")
    with pytest.raises(LayoutError, match="1 identity folder.*at least 2"):
        find_face_layout(root, pairs_file="view2.txt")
    with pytest.raises(LayoutError, match="does not exist"):
        find_face_layout(tmp_path / "nope")


# ----------------------------------------------------------------------------- decoding & shards

def test_decode_face(tmp_path):
    path = write_image(tmp_path / "p" / "1.jpg", size=(50, 40))
    item = {"key": "p/1", "path": str(path), "identity": "p", "label": 3}
    out = decode_face(item, size=24)
    assert out["cls"] == "3" and out["id"] == "p"
    assert out["json"]["width"] == 50 and out["json"]["height"] == 40
    with Image.open(io.BytesIO(out["png"])) as im:
        assert im.format == "PNG" and im.size == (24, 24) and im.mode == "RGB"
    assert decode_face(item, size=24)["png"] == out["png"]  # deterministic bytes
    bad = tmp_path / "p" / "2.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"unreadable image .*2\.jpg"):
        decode_face({**item, "path": str(bad)})


def test_face_shards_readable_by_webdataset(ray_local, tmp_path):
    import webdataset as wds

    root = generate_face_corpus(tmp_path / "corpus", n_train_ids=3, n_test_ids=2, images_per_id=3, size=32,
                                n_folds=1, pairs_per_fold=2)
    items, ids = find_identity_folders(root / "train")
    bad = root / "train" / "0000002" / "999.png"
    bad.write_bytes(b"\x89PNG broken")
    items_bad, _ = find_identity_folders(root / "train")
    with pytest.raises(ShardError, match=r"999\.png"):
        build_face_shards(items_bad, ids, tmp_path / "bad", size=16, samples_per_shard=4)
    manifest = build_face_shards(items_bad, ids, tmp_path / "train", size=16, samples_per_shard=4, skip_bad=True,
                                 root=root)
    assert manifest["num_samples"] == 9 and len(manifest["shards"]) == 3 and manifest["classes"] == ids
    assert [s["path"] for s in manifest["skipped"]] == [str(bad)]

    samples = list(wds.WebDataset(shard_paths(tmp_path / "train"), shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == [i.key for i in items]
    for s in samples:
        assert {"png", "cls", "id", "json"} <= set(s)
        ident = s["__key__"].split("/")[0]
        assert s["id"].decode() == ident and int(s["cls"]) == ids.index(ident)
        assert json.loads(s["json"])["source"].startswith("train/")
        with Image.open(io.BytesIO(s["png"])) as im:
            assert im.size == (16, 16) and im.mode == "RGB"

    test_items, test_ids = pair_images(read_lfw_pairs(root / "pairs.txt", root / "lfw"), root / "lfw")
    assert test_ids == ["Synth_Person0001", "Synth_Person0002"]
    m = build_face_shards(test_items, test_ids, tmp_path / "test", size=16, split="test")
    assert m["num_samples"] == len(test_items) and m["shards"][0]["name"] == "faces-test-000000.tar"


# ----------------------------------------------------------------------------- backbone

def test_sfnet20_shapes_and_registry():
    from trainers.encoders import ENCODERS, build_encoder

    assert "sfnet20" in ENCODERS
    torch.manual_seed(0)
    net = build_encoder("sfnet20", feat_dim=80, embed_dim=64, input_size=32)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 20
    assert [net.stage1[0].out_channels, net.stage4[0].out_channels] == [16, 128]  # width 0.25
    out = net(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 64) and torch.isfinite(out).all()
    out.sum().backward()
    wide = build_encoder("sfnet20", embed_dim=8, width=0.5, input_size=(48, 40), batch_norm=True)
    assert wide(torch.randn(2, 3, 48, 40)).shape == (2, 8)
    with pytest.raises(ValueError, match="expects images"):
        net(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="unknown argument"):
        build_encoder("sfnet20", depth=3)


# ----------------------------------------------------------------------------- 10-fold accuracy

def test_10fold_perfectly_separable():
    folds = np.repeat(np.arange(10), 4)
    labels = np.tile([1, 1, 0, 0], 10)
    scores = np.where(labels == 1, 0.8, 0.2) + np.linspace(-0.1, 0.1, 40)
    r = verification_accuracy_10fold(scores, labels, folds)
    assert r["mean_acc"] == 1.0 and r["std_acc"] == 0.0 and r["eer"] == 0.0
    assert len(r["fold_acc"]) == 10


def test_10fold_known_thresholds():
    # fold 0 trains on fold 1: positives {0.6, 0.7}, negatives {0.3, 0.4} -> t = 0.5
    #   fold 0 at 0.5: 0.9 accepted (ok), 0.45 rejected (miss), 0.1 rejected (ok), 0.55 accepted (fa) -> 0.5
    # fold 1 trains on fold 0: sorted 0.1(n) 0.45(p) 0.55(n) 0.9(p); best 3/4 at 0.275 and 0.725 -> lowest 0.275
    #   fold 1 at 0.275: everything accepted -> 2/4
    scores = [0.9, 0.45, 0.1, 0.55, 0.6, 0.7, 0.3, 0.4]
    labels = [1, 1, 0, 0, 1, 1, 0, 0]
    folds = [0, 0, 0, 0, 1, 1, 1, 1]
    r = verification_accuracy_10fold(scores, labels, folds)
    assert r["thresholds"] == pytest.approx([0.5, 0.275])
    assert r["fold_acc"] == [0.5, 0.5] and r["mean_acc"] == 0.5 and r["std_acc"] == 0.0
    assert best_threshold([0.1, 0.2], [1, 1]) == (-np.inf, 1.0)
    assert best_threshold([0.1, 0.2], [0, 0]) == (np.inf, 1.0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        verification_accuracy_10fold(scores, labels, [0] * 8)


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        s = np.round(rng.normal(y * 0.7, 0.5), 1)  # rounding makes ties
        t, acc = best_threshold(s, y)
        grid = np.r_[-np.inf, np.unique(s), np.inf]
        brute = max(np.mean((s >= g) == (y == 1)) for g in grid)
        assert acc == pytest.approx(brute) and np.mean((s >= t) == (y == 1)) == pytest.approx(acc)
