"""The real VoxCeleb layouts on disk -> train utterances, trial utterances and trial lists.

Accepted layouts (VoxCeleb1/2 as distributed; docs/speaker.md):
  * single tree  root/wav/idXXXXX/<youtube_id>/NNNNN.wav  (or root/aac/.../NNNNN.m4a)
    with trial lists at root. Train = every speaker that appears in no trial list (the
    VoxCeleb1-O protocol keeps test speakers out of training); test = the trial utterances.
    Note: VoxCeleb1-E/H lists (list_test_all2, list_test_hard2) cover all 1251 VoxCeleb1
    speakers, so with them present a single tree has no training speakers (train == []);
    those lists are meant for models trained on VoxCeleb2.
  * split folders  root/dev/{wav|aac}/...  (training) and  root/test/{wav|aac}/...  (trials),
    trial lists at root or in root/test. Trial paths are resolved in test/ first, then dev/
    (VoxCeleb1-E/H trials name dev speakers).
  * root/train_list.txt (or dev/train_list.txt), lines `id00012 id00012/21Uxsk56VDQ/00001.wav`,
    overrides the training set when present.

Keys: the path relative to the audio folder without its extension, "/"-separated, e.g.
"id10001/1zcIwhmdeo4/00001". Keys must contain no "." (WebDataset splits key and extension at
the first dot), so "%" is escaped as "%25" and "." as "%2E" (reversible, see `key_to_relpath`).
Trial files name ".wav" paths even for VoxCeleb2's ".m4a" files, so trials are matched by key.

Zero-length or corrupt files are not detected here: `datasets.audio.load_audio` reports them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from datasets.atomic import write_text
from datasets.errors import LayoutError

TRIAL_LISTS = ("veri_test2", "list_test_hard2", "list_test_all2", "veri_test", "list_test_hard", "list_test_all")
TRAIN_LIST = "train_list.txt"
# Folder name -> file extension found in it (VoxCeleb1 wav, VoxCeleb2 AAC in m4a).
AUDIO_DIRS = {"wav": ".wav", "aac": ".m4a"}
EXPECTED = "wav/idXXXXX/<video>/NNNNN.wav"


@dataclass(frozen=True)
class Utterance:
    key: str      # e.g. "id10001/1zcIwhmdeo4/00001": relative path, no extension, no "."
    path: str     # absolute path of the audio file
    speaker: str  # e.g. "id10001"


@dataclass(frozen=True)
class Trial:
    label: int    # 1 = same speaker, 0 = different speakers
    enroll: str   # utterance key
    test: str     # utterance key


@dataclass
class VoxCelebLayout:
    root: str
    train: list[Utterance] = field(default_factory=list)     # sorted by key
    test: list[Utterance] = field(default_factory=list)      # utterances named by trials, sorted
    trials: dict[str, list[Trial]] = field(default_factory=dict)  # list name (no .txt) -> trials
    speakers: list[str] = field(default_factory=list)        # sorted training speakers


# ----------------------------------------------------------------------------- keys

def relpath_to_key(rel: str) -> str:
    """'id1/vid/00001.wav' -> 'id1/vid/00001' (dots escaped so the key has none)."""
    rel = rel.replace("\\", "/")
    stem = os.path.splitext(rel)[0]  # only the file name's last extension
    return stem.replace("%", "%25").replace(".", "%2E")


def key_to_relpath(key: str, ext: str = ".wav") -> str:
    """Inverse of `relpath_to_key`."""
    return key.replace("%2E", ".").replace("%25", "%") + ext


# ----------------------------------------------------------------------------- scanning

def _scan(audio_dir: Path) -> dict[str, Utterance]:
    """All <speaker>/<video>/<utt><ext> files (exactly three levels, hidden entries skipped)."""
    ext = AUDIO_DIRS[audio_dir.name]
    found: dict[str, Utterance] = {}
    base = os.path.abspath(audio_dir)
    for spk in _subdirs(base):
        for vid in _subdirs(os.path.join(base, spk)):
            with os.scandir(os.path.join(base, spk, vid)) as it:
                for e in it:
                    if e.name.startswith(".") or not e.name.endswith(ext) or not e.is_file():
                        continue
                    rel = f"{spk}/{vid}/{e.name}"
                    key = relpath_to_key(rel)
                    found[key] = Utterance(key=key, path=os.path.join(base, spk, vid, e.name), speaker=spk)
    return found


def _subdirs(path: str) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _audio_dir(parent: Path) -> Path | None:
    for name in AUDIO_DIRS:
        if (parent / name).is_dir():
            return parent / name
    return None


def _scan_nonempty(audio_dir: Path) -> dict[str, Utterance]:
    utts = _scan(audio_dir)
    if not utts:
        ext = AUDIO_DIRS[audio_dir.name]
        stray = next(iter(audio_dir.rglob(f"*{ext}")), None)
        hint = f" (found {stray} at another depth)" if stray else ""
        raise LayoutError(
            f"no {ext} under {audio_dir}: expected VoxCeleb layout "
            f"{audio_dir.name}/idXXXXX/<video>/NNNNN{ext}{hint}"
        )
    return utts


# ----------------------------------------------------------------------------- lists

def _trial_lines(path: Path) -> Iterable[tuple[int, int, str, str]]:
    """(line number, label, enroll relpath, test relpath); malformed lines raise LayoutError."""
    with open(path, encoding="utf-8-sig") as f:  # tolerate a BOM
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or parts[0] not in ("0", "1") or not all(map(_is_relpath, parts[1:])):
                raise LayoutError(
                    f"{path}:{n}: malformed trial line {line.rstrip()!r}: expected "
                    "'<1|0> id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav'; fix or delete the line"
                )
            yield n, int(parts[0]), parts[1], parts[2]


def _is_relpath(p: str) -> bool:
    parts = p.replace("\\", "/").split("/")
    return not p.startswith("/") and ".." not in parts and all(parts)


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Parse a trial list (syntax only; `find_layout` also checks the files exist)."""
    return [Trial(label, relpath_to_key(a), relpath_to_key(b)) for _, label, a, b in _trial_lines(Path(path))]


def write_trials(path: str | os.PathLike, trials: Iterable[Trial], ext: str = ".wav") -> None:
    """Write trials in the VoxCeleb format `1 id/vid/00001.wav id/vid/00002.wav` (atomically)."""
    text = "".join(
        f"{int(t.label)} {key_to_relpath(t.enroll, ext)} {key_to_relpath(t.test, ext)}\n" for t in trials
    )
    write_text(path, text)


def _read_train_list(path: Path, index: dict[str, Utterance], audio_dir: Path) -> list[Utterance]:
    utts: dict[str, Utterance] = {}
    with open(path, encoding="utf-8-sig") as f:  # tolerate a BOM
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not _is_relpath(parts[1]):
                raise LayoutError(
                    f"{path}:{n}: malformed train list line {line.rstrip()!r}: expected "
                    "'id00012 id00012/21Uxsk56VDQ/00001.wav'; fix or delete the line"
                )
            key = relpath_to_key(parts[1])
            if key not in index:
                raise LayoutError(
                    f"{path}:{n}: names {audio_dir / parts[1]}, which does not exist: "
                    "fix the list or restore the file"
                )
            utts[key] = Utterance(key=key, path=index[key].path, speaker=parts[0])
    return [utts[k] for k in sorted(utts)]


# ----------------------------------------------------------------------------- layout

def find_layout(root: str | os.PathLike) -> VoxCelebLayout:
    """Inspect `root` (see the module docstring for the accepted layouts)."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"VoxCeleb root {root} does not exist or is not a folder: "
                          "pass the folder holding wav/ (or dev/ and test/)")

    if (root / "dev").is_dir() and (root / "test").is_dir():
        train_dir, test_dir = _audio_dir(root / "dev"), _audio_dir(root / "test")
        for part, d in (("dev", train_dir), ("test", test_dir)):
            if d is None:
                raise LayoutError(f"no wav/ or aac/ folder under {root / part}: "
                                  f"expected VoxCeleb layout {part}/{EXPECTED}")
        train_index, test_index = _scan_nonempty(train_dir), _scan_nonempty(test_dir)
        list_dirs = [root, root / "test"]
        train_list_dirs = [root, root / "dev"]
        lookups = [(test_dir, test_index), (train_dir, train_index)]
    else:
        audio_dir = _audio_dir(root)
        if audio_dir is None:
            raise LayoutError(
                f"no audio under {root}: expected VoxCeleb layout {root}/{EXPECTED} "
                f"(or {root}/dev/wav and {root}/test/wav, or aac/ with .m4a for VoxCeleb2)"
            )
        train_dir = audio_dir
        train_index = test_index = _scan_nonempty(audio_dir)
        list_dirs = train_list_dirs = [root]
        lookups = [(audio_dir, test_index)]

    trials: dict[str, list[Trial]] = {}
    test: dict[str, Utterance] = {}
    for name in TRIAL_LISTS:
        path = next((d / f"{name}.txt" for d in list_dirs if (d / f"{name}.txt").is_file()), None)
        if path is None:
            continue
        items, missing = [], []
        for n, label, a, b in _trial_lines(path):
            keys = []
            for rel in (a, b):
                key = relpath_to_key(rel)
                utt = next((idx[key] for _, idx in lookups if key in idx), None)
                if utt is None:
                    missing.append((n, lookups[0][0] / rel))
                else:
                    test[key] = utt
                keys.append(key)
            items.append(Trial(label, keys[0], keys[1]))
        if missing:
            n, p = missing[0]
            more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
            raise LayoutError(
                f"{path}:{n}: trial names {p}, which does not exist{more}: "
                "restore the audio or use a trial list that matches this corpus"
            )
        trials[name] = items
    if not trials:
        names = ", ".join(f"{n}.txt" for n in TRIAL_LISTS[:3])
        raise LayoutError(f"no trial list found in {', '.join(map(str, list_dirs))}: put {names} there")

    train_list = next((d / TRAIN_LIST for d in train_list_dirs if (d / TRAIN_LIST).is_file()), None)
    if train_list is not None:
        train = _read_train_list(train_list, train_index, train_dir)
    elif train_index is test_index:
        # Single tree: VoxCeleb1-O protocol, test speakers never train.
        test_speakers = {u.speaker for u in test.values()}
        train = [u for k, u in sorted(train_index.items()) if u.speaker not in test_speakers]
    else:
        train = [u for _, u in sorted(train_index.items())]

    return VoxCelebLayout(
        root=os.path.abspath(root),
        train=train,
        test=[test[k] for k in sorted(test)],
        trials=trials,
        speakers=sorted({u.speaker for u in train}),
    )
