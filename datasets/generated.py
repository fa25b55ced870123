"""What the corpus generators share: atomic file writes and the "generated once per parameters"
marker that makes a second run a no-op and refuses to mix corpora."""
from __future__ import annotations

import json
import os
from pathlib import Path

MARKER = ".complete"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def already_generated(root: Path, params: dict, last_file: str, what: str) -> bool:
    """True if `root` holds a finished corpus of these parameters (its marker and `last_file` exist);
    raises if it holds one of other parameters."""
    marker = root / MARKER
    if not marker.is_file():
        return False
    try:
        old = json.loads(marker.read_text())
    except ValueError:  # torn/edited marker: regenerate (the stray-file check still guards)
        old = params
    if old == params and (root / last_file).is_file():
        return True
    if old != params:
        raise ValueError(f"{root} holds a {what} made with other parameters ({old}): "
                         "delete it or choose another output folder")
    return False


def refuse_strays(root: Path, found, written) -> None:
    stray = sorted(set(found) - set(written))
    if stray:
        raise ValueError(f"{root} already holds files this generator did not write (e.g. {stray[0]}): "
                         "delete it or choose another output folder")


def mark_complete(root: Path, params: dict) -> None:
    """Written last: a corpus without its marker is regenerated."""
    write_atomic(root / MARKER, (json.dumps(params, sort_keys=True) + "\n").encode())
