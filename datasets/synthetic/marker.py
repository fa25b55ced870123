"""What the corpus generators share: the "generated once per parameters" marker that makes a
second run a no-op and refuses to mix corpora (files are written with datasets.atomic)."""
from __future__ import annotations

import json
from pathlib import Path

from datasets.atomic import write_bytes

MARKER = ".complete"


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
    write_bytes(root / MARKER, (json.dumps(params, sort_keys=True) + "\n").encode())
