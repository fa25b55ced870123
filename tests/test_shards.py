"""The one shard writer: round trip through both readers, determinism, manifest checks, bad items."""
import functools
import hashlib
import json
import tarfile

import numpy as np
import pytest

from datasets.shards import (
    MANIFEST,
    ShardError,
    build_shards,
    discard,
    read_manifest,
    shard_paths,
    verify_shards,
    write_tar,
)


def toy_decode(item, fail_on=()):
    if item["key"] in fail_on:
        raise ValueError(f"cannot decode {item['path']}")
    rng = np.random.default_rng(int(item["key"].rsplit("/", 1)[1]))
    return {"npy_raw": rng.integers(0, 255, 64, dtype=np.uint8).tobytes(), "cls": str(item["label"]),
            "json": {"source": item["path"]}}


def toy_items(tmp_path, n=23):
    items = []
    for i in range(n):
        path = tmp_path / "src" / f"{i:03d}.raw"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * (i + 1))
        items.append({"key": f"spk{i % 3}/vid/{i:05d}", "path": str(path), "label": i % 3})
    return items


def build(items, out, **kw):
    kw.setdefault("decode", toy_decode)
    return build_shards(items, out, corpus="toy", split="train", config={"rate": 1}, samples_per_shard=5,
                        log=lambda *_: None, **kw)


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def test_round_trip_both_readers(ray_local, tmp_path):
    import webdataset as wds

    items = toy_items(tmp_path)
    manifest = build(items, tmp_path / "out")
    assert [s["name"] for s in manifest["shards"]] == [f"toy-train-{i:06d}.tar" for i in range(5)]
    assert [s["samples"] for s in manifest["shards"]] == [5, 5, 5, 5, 3]
    assert manifest["num_samples"] == 23

    paths = shard_paths(tmp_path / "out")
    rows = ray_local.data.read_webdataset(paths).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(it["key"] for it in items)
    by_key = {r["__key__"]: r for r in rows}
    expected = toy_decode(items[7])
    assert by_key[items[7]["key"]]["npy_raw"] == expected["npy_raw"]
    assert by_key[items[7]["key"]]["cls"] == items[7]["label"]

    samples = list(wds.WebDataset(paths, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(by_key)
    s = next(x for x in samples if x["__key__"] == items[7]["key"])
    assert s["npy_raw"] == expected["npy_raw"] and json.loads(s["json"]) == {"source": items[7]["path"]}


def test_rebuild_is_byte_identical_and_skipped(ray_local, tmp_path):
    items = toy_items(tmp_path)
    build(items, tmp_path / "a", seed=3)
    build(items, tmp_path / "b", seed=3)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    mtime = (tmp_path / "a" / MANIFEST).stat().st_mtime_ns
    build(items, tmp_path / "a", seed=3)  # same inputs and config: reused, not rewritten
    assert (tmp_path / "a" / MANIFEST).stat().st_mtime_ns == mtime
    build(items, tmp_path / "c", seed=4)  # another seed: another order
    assert digests(tmp_path / "c") != digests(tmp_path / "a")
    with tarfile.open(next((tmp_path / "a").glob("*.tar"))) as tar:
        assert {m.mtime for m in tar.getmembers()} == {0}


def test_an_interrupted_builds_staging_is_removed_by_the_next_build(ray_local, tmp_path):
    """Ctrl-C during a build could leave `.staging-*` folders of full tars (gigabytes at VoxCeleb scale)."""
    stale = tmp_path / "out" / ".staging-deadbeef"
    stale.mkdir(parents=True)
    (stale / "toy-train-000000.tar").write_bytes(b"\0" * 4096)
    build(toy_items(tmp_path), tmp_path / "out")
    assert not list((tmp_path / "out").glob(".staging-*"))
    assert len(list((tmp_path / "out").glob("toy-train-*.tar"))) == 5


def test_discarding_staging_wins_against_a_write_task_still_running(tmp_path):
    """The driver's cleanup after Ctrl-C raced write tasks that outlived it: a tar created while the folder
    was being emptied kept it alive, full. However the writer is timed, nothing remains."""
    import threading

    for attempt in range(20):
        staging = tmp_path / f".staging-{attempt:08x}"
        staging.mkdir()
        for i in range(200):
            (staging / f"toy-train-{i:06d}.tar").write_bytes(b"\0" * 512)
        stop = threading.Event()

        def late_writer():   # a write task: one tar after another into the staging folder
            i = 1000
            while not stop.is_set():
                try:
                    write_tar(staging / f"toy-train-{i:06d}.tar", [{"__key__": f"k{i}", "txt": "x"}])
                except OSError:   # its folder is gone: the task fails, as it should
                    pass
                i += 1

        writer = threading.Thread(target=late_writer)
        writer.start()
        try:
            discard(staging)
        finally:
            stop.set()
            writer.join()
        assert not list(tmp_path.glob(f".staging-{attempt:08x}*")), f"attempt {attempt}: a staging folder survived"


def test_changed_source_triggers_rebuild(ray_local, tmp_path):
    items = toy_items(tmp_path)
    build(items, tmp_path / "out")
    first = read_manifest(tmp_path / "out")["source_fingerprint"]
    with open(items[0]["path"], "ab") as f:
        f.write(b"more")
    assert build(items, tmp_path / "out")["source_fingerprint"] != first


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered"])
def test_damaged_shard_is_named(ray_local, tmp_path, damage):
    build(toy_items(tmp_path), tmp_path / "out")
    shard = tmp_path / "out" / "toy-train-000002.tar"
    data = shard.read_bytes()
    if damage == "missing":
        shard.unlink()
    elif damage == "truncated":
        shard.write_bytes(data[:1000])
    else:
        shard.write_bytes(data[:600] + bytes([data[600] ^ 1]) + data[601:])
    with pytest.raises(ShardError, match=f"toy-train-000002.tar is {damage if damage != 'truncated' else 'truncated'}"):
        verify_shards(tmp_path / "out")
    (tmp_path / "out" / "toy-train-000000.tar").unlink()   # a second one: both are named, in one error
    with pytest.raises(ShardError, match=r"2 of \d+ shard\(s\) damaged: shard .*000000.tar is missing.*000002.tar"):
        verify_shards(tmp_path / "out")


def test_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(ShardError, match="no manifest.json"):
        verify_shards(tmp_path)


def test_bad_items_fail_by_default_and_leave_nothing(ray_local, tmp_path):
    items = toy_items(tmp_path)
    bad = (items[4]["key"], items[11]["key"])
    with pytest.raises(ShardError, match="2 unreadable or invalid") as err:
        build(items, tmp_path / "out", decode=functools.partial(toy_decode, fail_on=bad))
    assert items[4]["path"] in str(err.value) and items[11]["path"] in str(err.value)
    assert "--skip-bad" in str(err.value)
    assert not (tmp_path / "out" / MANIFEST).exists()
    assert not list((tmp_path / "out").glob("*.tar")) and not list((tmp_path / "out").glob(".staging*"))


def test_skip_bad_records_them(ray_local, tmp_path):
    items = toy_items(tmp_path)
    bad = (items[4]["key"],)
    manifest = build(items, tmp_path / "out", decode=functools.partial(toy_decode, fail_on=bad), skip_bad=True)
    assert manifest["num_samples"] == 22
    assert [s["path"] for s in manifest["skipped"]] == [items[4]["path"]]
    verify_shards(tmp_path / "out")


def test_keys_with_dots_are_refused(tmp_path):
    with pytest.raises(ShardError, match="contain no '.'"):
        build([{"key": "a/b.wav", "path": "x", "label": 0}], tmp_path / "out")
