"""ESC-50 and its crowdsourced action-vector annotations (arXiv 2104.12693) -> validated clips and ratings.

Real layouts read:
  ESC-50       ROOT/meta/esc50.csv  header `filename,fold,target,category,esc10,src_file,take`
               (official folds 1-5, targets 0-49), audio in ROOT/audio/, e.g. audio/1-100032-A-0.wav
  three raters actionvector_three_per_audiofile.csv  header `filename,category,<20 ACTIONS>`,
               each action rated 0-4, three rows per file by three anonymous raters (no worker
               ids): the rows become pseudo-workers r1, r2, r3 in their order within the file
  sums         actionvector_one_per_audiofile_sum.csv  header `filename,fold,target,category,
               <20 ACTIONS>`, each the sum of the three raters' ratings (0-12, written as 1.0)
  crowd        the general format for annotation sets that have worker ids, defined here: header
               `task,worker,action,label`, one row per (task, worker, action); task is an ESC-50
               filename, worker any non-empty id, action one of ACTIONS, label a rating 0-4; each
               (task, worker) pair rates all 20 actions exactly once.

Ratings frames (`read_three_raters`, `read_crowd`) have columns filename, rater, *ACTIONS (int
ratings), one row per (file, rater), and are what `datasets.esc50.action_vectors` aggregates. Passing
`meta` (the clips of `read_esc50`) checks every annotated file against ESC-50's meta.

A copy of the real annotations ships in the project (SHIPPED_ANNOTATIONS, see NOTE.md there);
the path assumes a source checkout (editable install).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from datasets.errors import LayoutError

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = range(1, 6)
TARGETS = range(0, 50)
# In file order, as in the header of both real annotation files.
ACTIONS = ("blowing", "breaking", "calling", "crumpling", "dripping", "exhaling", "exploding", "gasping",
           "groaning", "pouring", "ringing", "rolling", "rotating", "scraping", "singing", "sizzling",
           "splashing", "tapping", "vibrating", "wailing")
RATINGS = range(0, 5)
RATERS = 3                                   # rows per file in the three-raters file
SUMS = range(0, RATERS * RATINGS[-1] + 1)
PSEUDO_WORKERS = "pseudo_workers"            # ratings.attrs flag set by read_three_raters
THREE_RATERS_COLUMNS = ("filename", "category", *ACTIONS)
SUM_COLUMNS = ("filename", "fold", "target", "category", *ACTIONS)
CROWD_COLUMNS = ("task", "worker", "action", "label")

SHIPPED_ANNOTATIONS = Path(__file__).resolve().parents[2] / "data" / "esc50-actions"
THREE_RATERS_FILE = SHIPPED_ANNOTATIONS / "actionvector_three_per_audiofile.csv"
SUM_FILE = SHIPPED_ANNOTATIONS / "actionvector_one_per_audiofile_sum.csv"


@dataclass(frozen=True)
class ESC50Clip:
    filename: str   # e.g. "1-100032-A-0.wav"
    path: str       # absolute path of the audio file
    fold: int       # official fold 1-5
    target: int     # class index 0-49
    category: str   # e.g. "dog"
    esc10: bool     # in the ESC-10 subset
    src_file: str   # Freesound clip id, e.g. "100032"
    take: str       # e.g. "A"


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, row) of a comma-separated file with at least `columns`, all non-empty."""
    if not path.is_file():
        raise LayoutError(f"{path} not found: pass the path of an existing CSV file")
    with open(path, newline="", encoding="utf-8-sig") as f:  # tolerate a BOM
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(f"{path} line 1: missing column(s) {', '.join(missing)}; the header must "
                              f"name {','.join(columns)} (comma-separated)")
        rows = []
        for line, row in enumerate(reader, start=2):
            empty = [c for c in columns if row.get(c) in (None, "")]
            if empty:
                raise LayoutError(f"{path} line {line}: empty or missing field(s) {', '.join(empty)}: "
                                  "fill them in or delete the row")
            rows.append((line, row))
    if not rows:
        raise LayoutError(f"{path} has a header but no rows")
    return rows


def _whole(path: Path, line: int, column: str, text: str, allowed: range, what: str) -> int:
    """`text` as a whole number in `allowed` ("2" and "2.0" both read as 2)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value.is_integer() and int(value) in allowed):
        raise LayoutError(f"{path} line {line}: {column} = {text!r} is not {what} "
                          f"({allowed[0]}-{allowed[-1]}): fix the row")
    return int(value)


def read_esc50(root: str | Path) -> list[ESC50Clip]:
    """Every clip of ROOT/meta/esc50.csv (sorted by filename); each audio file must exist."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise LayoutError(f"{meta} not found: pass the ESC-50 root, the folder holding meta/esc50.csv and audio/")
    clips: dict[str, ESC50Clip] = {}
    for line, row in _rows(meta, ESC50_COLUMNS):
        name = row["filename"]
        if name in clips:
            raise LayoutError(f"{meta} line {line}: {name} is listed twice: delete one row")
        if row["esc10"] not in ("True", "False"):
            raise LayoutError(f"{meta} line {line}: esc10 = {row['esc10']!r}, expected True or False: fix the row")
        path = root / "audio" / name
        if not path.is_file():
            raise LayoutError(f"{meta} line {line}: {path} does not exist: restore the audio or "
                              "pass the ESC-50 root holding meta/ and audio/")
        clips[name] = ESC50Clip(
            filename=name, path=str(path.resolve()),
            fold=_whole(meta, line, "fold", row["fold"], FOLDS, "one of ESC-50's official folds"),
            target=_whole(meta, line, "target", row["target"], TARGETS, "an ESC-50 class index"),
            category=row["category"], esc10=row["esc10"] == "True", src_file=row["src_file"],
            take=row["take"])
    return [clips[k] for k in sorted(clips)]


def _meta_index(meta: Iterable[ESC50Clip] | None) -> dict[str, ESC50Clip] | None:
    return None if meta is None else {c.filename: c for c in meta}


OUTSIDE_META = "outside_meta"   # frame.attrs: the annotated clips that are not in the meta (ignored)


def _in_meta(path: Path, line: int, name: str, index: dict[str, ESC50Clip] | None, **fields) -> bool:
    """False for a file the meta does not list (a corpus may hold a subset of ESC-50, e.g. ESC-10: its
    rows are ignored and counted); a listed one must agree with the meta on `fields`."""
    if index is None:
        return True
    clip = index.get(name)
    if clip is None:
        return False
    for field, value in fields.items():
        if getattr(clip, field) != value:
            raise LayoutError(f"{path} line {line}: {name} has {field} {value!r} here but "
                              f"{getattr(clip, field)!r} in ESC-50's meta/esc50.csv: fix the row")
    return True


def _ratings(path: Path, line: int, row: dict) -> list[int]:
    return [_whole(path, line, a, row[a], RATINGS, "a rating") for a in ACTIONS]


def read_three_raters(path: str | Path, meta: Iterable[ESC50Clip] | None = None) -> pd.DataFrame:
    """The three-raters file -> ratings frame; raters are pseudo-workers r1, r2, r3 (row order
    within each file), flagged by `ratings.attrs[PSEUDO_WORKERS]`."""
    path, index = Path(path), _meta_index(meta)
    records, first_line, seen, outside = [], {}, {}, set()
    for line, row in _rows(path, THREE_RATERS_COLUMNS):
        name = row["filename"]
        if not _in_meta(path, line, name, index, category=row["category"]):
            outside.add(name)
            continue
        if seen.get(name) == RATERS:
            raise LayoutError(f"{path} line {line}: {name} has more than {RATERS} rows (the first at line "
                              f"{first_line[name]}); the format has exactly {RATERS} raters per file: "
                              "delete the extra row")
        first_line.setdefault(name, line)
        seen[name] = seen.get(name, 0) + 1
        records.append((name, f"r{seen[name]}", *_ratings(path, line, row)))
    short = next((name for name, n in seen.items() if n < RATERS), None)
    if short is not None:
        raise LayoutError(f"{path} line {first_line[short]}: {short} has {seen[short]} row(s); the format has "
                          f"exactly {RATERS} raters per file: add the missing rows or delete the file's rows")
    ratings = pd.DataFrame(records, columns=["filename", "rater", *ACTIONS])
    ratings.attrs[PSEUDO_WORKERS] = True
    ratings.attrs[OUTSIDE_META] = len(outside)
    return ratings


def read_sum(path: str | Path, meta: Iterable[ESC50Clip] | None = None) -> pd.DataFrame:
    """The summed file -> frame filename, fold, target, category, *ACTIONS (float sums 0-12)."""
    path, index = Path(path), _meta_index(meta)
    records, lines, outside = [], {}, set()
    for line, row in _rows(path, SUM_COLUMNS):
        name = row["filename"]
        if name in lines:
            raise LayoutError(f"{path} line {line}: {name} is listed twice (also at line {lines[name]}): "
                              "delete one row")
        lines[name] = line
        fold = _whole(path, line, "fold", row["fold"], FOLDS, "one of ESC-50's official folds")
        target = _whole(path, line, "target", row["target"], TARGETS, "an ESC-50 class index")
        if not _in_meta(path, line, name, index, fold=fold, target=target, category=row["category"]):
            outside.add(name)
            continue
        sums = [float(_whole(path, line, a, row[a], SUMS, f"a sum of {RATERS} ratings")) for a in ACTIONS]
        records.append((name, fold, target, row["category"], *sums))
    frame = pd.DataFrame(records, columns=list(SUM_COLUMNS))
    frame.attrs[OUTSIDE_META] = len(outside)
    return frame


def read_crowd(path: str | Path, meta: Iterable[ESC50Clip] | None = None) -> pd.DataFrame:
    """A crowd-format file (see the module docstring) -> ratings frame (rater = worker id)."""
    path, index = Path(path), _meta_index(meta)
    ratings: dict[tuple[str, str], dict[str, int]] = {}
    lines: dict[tuple[str, str, str], int] = {}
    outside = set()
    for line, row in _rows(path, CROWD_COLUMNS):
        task, worker, action = row["task"], row["worker"], row["action"]
        if action not in ACTIONS:
            raise LayoutError(f"{path} line {line}: unknown action {action!r}; actions are {', '.join(ACTIONS)}")
        if (task, worker, action) in lines:
            raise LayoutError(f"{path} line {line}: worker {worker!r} rated {action!r} of {task} twice (also at "
                              f"line {lines[task, worker, action]}): keep one row")
        if not _in_meta(path, line, task, index):
            outside.add(task)
            continue
        lines[task, worker, action] = line
        ratings.setdefault((task, worker), {})[action] = _whole(path, line, "label", row["label"], RATINGS, "a rating")
    for (task, worker), rated in ratings.items():
        missing = [a for a in ACTIONS if a not in rated]
        if missing:
            first = min(lines[task, worker, a] for a in rated)
            raise LayoutError(f"{path} line {first}: worker {worker!r} rated {task} but not action(s) "
                              f"{', '.join(missing)}; each (task, worker) rates all {len(ACTIONS)} actions: "
                              "add the rows or delete the pair's rows")
    frame = pd.DataFrame([(t, w, *(r[a] for a in ACTIONS)) for (t, w), r in ratings.items()],
                         columns=["filename", "rater", *ACTIONS])
    frame.attrs[OUTSIDE_META] = len(outside)
    return frame


def read_annotations(path: Path, meta):
    """(ratings frame or None, summed frame or None) by the file's header."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except OSError as exc:
        raise FileNotFoundError(f"cannot read annotations {path}: {exc.strerror}") from None
    if "worker" in header:
        return read_crowd(path, meta), None
    if "fold" in header:
        return None, read_sum(path, meta)
    return read_three_raters(path, meta), None


def stem(filename: str) -> str:
    return filename.rsplit(".", 1)[0]


def clip_table(esc50: Path | None):
    """(clips from meta/esc50.csv or None, {stem: (target, fold)}, class names by target)."""
    if esc50 is not None:
        clips = read_esc50(esc50)
        return clips, {stem(c.filename): (c.target, c.fold) for c in clips}, \
            [n for _, n in sorted({(c.target, c.category) for c in clips})]
    frame = read_sum(SUM_FILE)
    return None, {stem(r.filename): (int(r.target), int(r.fold)) for r in frame.itertuples()}, \
        [n for _, n in sorted(set(zip(frame["target"], frame["category"])))]
