"""The one shard writer/reader of the project: rows -> Ray Data -> sharded WebDataset + manifest.

Every corpus builder hands `build_shards` a list of items (dicts with at least `key` and `path`)
and a picklable `decode(item) -> {extension: bytes | str | dict}` function. Ray Data runs the
decoding in parallel (`map_batches`, one shard per call) and a `Datasink` writes the tars.

Why not `Dataset.write_webdataset`: Ray's WebDataset datasink stamps every member with
`time.time()` and names files by write UUID, so two builds of the same inputs are never
byte-identical. `ShardSink` writes the same tar layout (`<key>.<ext>` members, keys without dots)
with a fixed mtime, owner and member order, under the names `{corpus}-{split}-{index:06d}.tar`.

Nothing half-written looks complete: shards are written into a staging folder, moved into place
only when every shard succeeded, and `manifest.json` is written last, atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from ray.data import Datasink

from datasets.atomic import write_bytes, write_json

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class ShardError(RuntimeError):
    """A shard set is missing, incomplete, altered, or could not be built."""


# ----------------------------------------------------------------------------- naming

def shard_name(corpus: str, split: str, index: int) -> str:
    return f"{corpus}-{split}-{index:06d}.tar"


def check_key(key: str) -> str:
    # ray.data.read_webdataset splits key/extension at the FIRST dot of the basename.
    if not key or "." in key or key.startswith("/"):
        raise ShardError(f"invalid sample key {key!r}: keys must be non-empty, relative and contain no '.'")
    return key


# ----------------------------------------------------------------------------- tar writing

def _member_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (dict, list, int, float)):
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
    raise TypeError(f"cannot store a {type(value).__name__} in a shard member")


def write_tar(path: Path, samples: Iterable[dict[str, Any]]) -> tuple[int, int, str]:
    """Write samples (`__key__` + extension members) deterministically. Returns (count, bytes, sha256)."""
    buf = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = check_key(sample["__key__"])
            for ext in sorted(k for k in sample if not k.startswith("__")):
                if sample[ext] is None:
                    continue
                data = _member_bytes(sample[ext])
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
            count += 1
    data = buf.getvalue()
    write_bytes(path, data, make_parent=False)   # into a build's staging folder, which exists unless discarded
    return count, len(data), hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- Ray Data stages

_ROW_COLUMNS = ("__shard__", "__order__", "__key__", "__path__", "__error__", "__members__")


class DecodeShard:
    """`map_batches` UDF: one input row = one planned shard; outputs one row per sample.

    Bad items are not raised here: they become rows with `__error__` set, so the driver can
    report every bad file at once (or skip them when asked) instead of failing on the first.
    """

    def __init__(self, decode: Callable[[dict], dict]):
        self.decode = decode

    def __call__(self, batch: dict) -> dict:
        rows: list[dict] = []
        for shard, items_json in zip(batch["shard"], batch["items"]):
            for order, item in enumerate(json.loads(items_json)):
                row = {"__shard__": int(shard), "__order__": order, "__key__": item["key"],
                       "__path__": item["path"], "__error__": None}
                try:
                    # members travel pickled in one binary column so every corpus shares one schema
                    row["__members__"] = pickle.dumps(self.decode(item), protocol=5)
                except (ValueError, OSError) as exc:  # bad input, reported by the driver
                    row["__error__"] = f"{type(exc).__name__}: {exc}"
                    row["__members__"] = None
                rows.append(row)
        return {k: [r[k] for r in rows] for k in _ROW_COLUMNS}


class ShardSink(Datasink):
    """Writes each planned shard as one deterministic tar in `staging`; the driver gets the stats."""

    def __init__(self, staging: str, corpus: str, split: str):
        self.staging, self.corpus, self.split = staging, corpus, split
        self.results: list[dict] = []

    def on_write_complete(self, write_result) -> None:  # runs on the driver
        self.results = sorted((r for ret in write_result.write_returns for r in ret), key=lambda r: r["index"])

    @property
    def supports_distributed_writes(self) -> bool:
        # True lets Ray Data fuse decode and write into one task per shard (with False it pins the
        # writes to the driver's node, splits the plan in two operators and, on a small machine, runs
        # the decodes one at a time). On a multi-node cluster `out_dir` must therefore be shared
        # storage (NFS), like Ray Train's storage_path; a shard written elsewhere fails the final move.
        return True

    def write(self, blocks, ctx) -> list[dict]:
        from ray.data.block import BlockAccessor

        by_shard: dict[int, list[dict]] = {}
        for block in blocks:
            for row in BlockAccessor.for_block(block).iter_rows(public_row_format=False):
                by_shard.setdefault(int(row["__shard__"]), []).append(dict(row))
        results = []
        for shard, rows in sorted(by_shard.items()):
            rows.sort(key=lambda r: r["__order__"])
            good = [r for r in rows if r["__error__"] is None]
            bad = [{"key": r["__key__"], "path": r["__path__"], "error": r["__error__"]}
                   for r in rows if r["__error__"]]
            name = shard_name(self.corpus, self.split, shard)
            samples = ({"__key__": r["__key__"], **pickle.loads(r["__members__"])} for r in good)
            count, size, digest = write_tar(Path(self.staging) / name, samples)
            results.append({"index": shard, "name": name, "samples": count, "bytes": size, "sha256": digest,
                            "rows": len(rows), "bad": bad})
        return results


# ----------------------------------------------------------------------------- fingerprint & manifest

def source_fingerprint(items: Sequence[dict]) -> str:
    """Cheap identity of the inputs: every item's fields plus its file's size and mtime (like make)."""
    h = hashlib.sha256()
    for item in sorted(items, key=lambda it: it["key"]):
        try:
            st = os.stat(item["path"])
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{json.dumps(item, sort_keys=True)}\t{stamp}\n".encode())
    return h.hexdigest()


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ShardError(f"no {MANIFEST} in {out_dir}: the shard set is missing or was never completed; build it first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path} is not valid JSON ({exc}); delete the folder and rebuild") from exc
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{path}: schema version {manifest.get('schema_version')} != {SCHEMA_VERSION}; rebuild")
    return manifest


def verify_shards(out_dir: str | os.PathLike, checksum: bool = True) -> dict:
    """Check every shard against the manifest before training; raises one ShardError naming every
    missing, truncated or altered shard."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    broken = []
    for shard in manifest["shards"]:
        path = out_dir / shard["name"]
        if not path.is_file():
            broken.append(f"{path} is missing (listed in {out_dir / MANIFEST})")
        elif (size := path.stat().st_size) != shard["bytes"]:
            broken.append(f"{path} is truncated or altered: {size} bytes, manifest says {shard['bytes']}")
        elif checksum and sha256_file(path) != shard["sha256"]:
            broken.append(f"{path} is altered: sha256 differs from {out_dir / MANIFEST}")
    if broken:
        raise ShardError(f"{len(broken)} of {len(manifest['shards'])} shard(s) damaged: shard "
                         + "; shard ".join(broken) + "; rebuild the shard set")
    return manifest


def shard_paths(out_dir: str | os.PathLike, manifest: dict | None = None) -> list[str]:
    manifest = manifest or read_manifest(out_dir)
    return [str(Path(out_dir) / s["name"]) for s in manifest["shards"]]


def read_shards(paths: Sequence[str], shuffle_seed: int | None = None, members: Sequence[str] | None = None):
    """Ray Dataset of the shards' samples, one read block per shard; `shuffle_seed` randomizes the
    shard order (training; the same order every epoch), None keeps it (evaluation). `members`
    (extensions) reads only those: a member left out never leaves the tar."""
    import ray

    paths = list(paths)
    if shuffle_seed is not None:
        # The permutation `randomize_block_order(seed)` applies to the blocks, applied to the paths
        # instead: that operator is an all-to-all barrier (nothing flows on until every shard is read,
        # for a large corpus into the object store) and keeps the reads from fusing with the next map.
        np.random.default_rng(shuffle_seed).shuffle(paths)
    return ray.data.read_webdataset(paths, override_num_blocks=len(paths),
                                    suffixes=list(members) if members is not None else None)


def json_member(value) -> dict:
    """A sample's `.json` member as read back: Ray's WebDataset reader may hand it over decoded or as bytes."""
    return value if isinstance(value, dict) else json.loads(value)


def manifest_digest(out_dir: str | os.PathLike) -> str:
    return sha256_file(Path(out_dir) / MANIFEST)


# ----------------------------------------------------------------------------- build

def discard(staging: Path) -> None:
    """Remove a staging folder that write tasks may still be writing into (after Ctrl-C they can outlive
    the driver's build). Renamed first, atomically: a late task can then no longer create a file under
    the old name (its write fails), so no full tar reappears in a folder being removed."""
    gone = staging.with_name(f"{staging.name}.discarded")
    try:
        os.rename(staging, gone)
    except FileNotFoundError:
        return
    shutil.rmtree(gone, ignore_errors=True)


def build_shards(
    items: Sequence[dict],
    out_dir: str | os.PathLike,
    *,
    corpus: str,
    split: str,
    decode: Callable[[dict], dict],
    config: dict,
    samples_per_shard: int = 256,
    seed: int = 0,
    skip_bad: bool = False,
    extra: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Build (or reuse) `out_dir/{corpus}-{split}-NNNNNN.tar` + `manifest.json`; returns the manifest.

    `config` must hold everything that changes the bytes (sample rate, seed, ...): together with the
    source fingerprint it decides whether an existing shard set is reused. `extra` is copied into
    the manifest (e.g. the class list). Bad items fail the build naming every bad file, unless
    `skip_bad`, which records them in the manifest instead.
    """
    import ray

    out_dir = Path(out_dir)
    if not items:
        raise ShardError(f"no samples to write for {corpus}/{split} into {out_dir}")
    if samples_per_shard < 1:
        raise ShardError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    items = sorted(items, key=lambda it: it["key"])
    for item in items:
        check_key(item["key"])
    # Shards hold a seeded permutation (as WeSpeaker shuffles its list before sharding): sorted keys
    # would put one speaker per shard and defeat a training loop's local shuffle buffer.
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    build = {"corpus": corpus, "split": split, "samples_per_shard": samples_per_shard, "seed": seed,
             "skip_bad": skip_bad, **config}
    fingerprint = source_fingerprint(items)

    if (out_dir / MANIFEST).is_file():
        try:
            old = verify_shards(out_dir)
            if old["build"] == json.loads(json.dumps(build)) and old["source_fingerprint"] == fingerprint:
                log(f"[shards] {corpus}/{split}: up to date ({len(old['shards'])} shards, "
                    f"{old['num_samples']} samples) in {out_dir}")
                return old
        except ShardError as exc:
            log(f"[shards] {corpus}/{split}: rebuilding ({exc})")
        (out_dir / MANIFEST).unlink()  # the old set is no longer complete once we start rewriting

    chunks = [items[i:i + samples_per_shard] for i in range(0, len(items), samples_per_shard)]
    log(f"[shards] {corpus}/{split}: {len(items)} samples -> {len(chunks)} shards in {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".staging-*"):   # an interrupted build's (its write tasks may have outlived it)
        log(f"[shards] {corpus}/{split}: removing {stale}, left by an interrupted build")
        discard(stale)
    staging = out_dir / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        plan = ray.data.from_items(
            [{"shard": i, "items": json.dumps(chunk)} for i, chunk in enumerate(chunks)],
            override_num_blocks=len(chunks))
        sink = ShardSink(str(staging), corpus, split)
        # The build is one fused decode+write operator, so Ray Data's per-operator resource
        # reservation only holds CPUs back for operators that do not exist (measured: on 2 CPUs it
        # runs one task until the first finishes; benchmarks/bench_shards.py). Set on the plan's own
        # DataContext: a Dataset copies the current one when it is created, later changes miss it.
        plan.context.op_resource_reservation_enabled = False
        plan.map_batches(DecodeShard(decode), batch_size=1).write_datasink(sink)
        results = sink.results
        _check_complete(results, chunks, corpus, split)
        bad = [b for r in results for b in r["bad"]]
        if bad and not skip_bad:
            listing = "\n".join(f"  {b['path']}: {b['error']}" for b in bad[:20])
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise ShardError(f"{len(bad)} unreadable or invalid input file(s) in {corpus}/{split}:\n{listing}{more}\n"
                             "Fix or remove them, or pass --skip-bad to skip them "
                             "(they are then listed in the manifest).")
        for stale in out_dir.glob(f"{corpus}-{split}-*.tar"):
            stale.unlink()
        for r in results:
            os.replace(staging / r["name"], out_dir / r["name"])
    finally:
        discard(staging)

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "corpus": corpus,
        "split": split,
        "build": build,
        "source_fingerprint": fingerprint,
        "num_samples": sum(r["samples"] for r in results),
        "shards": [{k: r[k] for k in ("name", "samples", "bytes", "sha256")} for r in results],
        "skipped": bad,
        **(extra or {}),
    }
    write_json(out_dir / MANIFEST, manifest, sort_keys=True)
    log(f"[shards] {corpus}/{split}: wrote {manifest['num_samples']} samples"
        + (f", skipped {len(bad)} bad file(s)" if bad else ""))
    return manifest


def _check_complete(results: list[dict], chunks: list, corpus: str, split: str) -> None:
    indices = [r["index"] for r in results]
    if indices != list(range(len(chunks))) or any(r["rows"] != len(c) for r, c in zip(results, chunks)):
        raise ShardError(f"{corpus}/{split}: Ray Data delivered shards incompletely or split across write tasks "
                         f"(got shard indices {indices[:10]}...); nothing was written. Please report this.")
