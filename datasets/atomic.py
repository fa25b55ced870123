"""The one atomic writer: a file is written under a temporary name beside its destination and
renamed into place last, so a reader (or a rerun after Ctrl-C) never sees a half-written file
that looks complete. Every layer writes through here: shards and manifests, generated corpora,
metrics, configs, models and plots."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, make_parent: bool = True) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix, so writers that look at it still work);
    renamed to `path` when the block succeeds, removed when it raises. `make_parent=False`: a missing
    folder is an error (a shard write task must fail once its build's staging folder is discarded,
    not recreate it)."""
    path = Path(path)
    if make_parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, make_parent: bool = True) -> None:
    with atomic_path(path, make_parent) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj, sort_keys: bool = False) -> None:
    """Indented JSON; numpy scalars and other number-likes are written as floats."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=sort_keys, default=float) + "\n")
