"""Closed-set speaker identification on a VoxCeleb-layout corpus: train and test utterances of the SAME speakers
(FoolHD's target task), and their shard sets through the one shard writer.

Which utterances test:
  * `iden_split.txt` at the root (VoxCeleb1's identification split as distributed: lines
    `3 id10001/1zcIwhmdeo4/00001.wav`, 1 = train, 2 = validation, 3 = test): 1 trains, 3 tests, 2 is not used;
  * otherwise, per speaker, one of its videos (sessions), chosen from (seed, speaker), tests and the others train,
    as VoxCeleb1's split keeps test videos apart; a speaker with a single video gives a third of its utterances
    (at least one, a seeded choice) to test.
Every audio file under wav/ (or dev/wav and test/wav) counts; speakers are all of them, in sorted order; a test
utterance of a speaker without training utterances is dropped and counted (closed set).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from datasets.errors import LayoutError
from datasets.shards import build_shards
from datasets.voxceleb.layout import EXPECTED, Utterance, _audio_dir, _is_relpath, _scan_nonempty, relpath_to_key
from datasets.voxceleb.shards import _items, decode_utterance

IDEN_SPLIT = "iden_split.txt"


def scan_all(root: str | os.PathLike) -> dict[str, Utterance]:
    """Every utterance of root/{wav|aac} or of root/dev and root/test, by key."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"VoxCeleb root {root} does not exist or is not a folder: pass the folder holding wav/ "
                          "(or dev/ and test/)")
    dirs = [d for d in (_audio_dir(root), _audio_dir(root / "dev") if (root / "dev").is_dir() else None,
                        _audio_dir(root / "test") if (root / "test").is_dir() else None) if d is not None]
    if not dirs:
        raise LayoutError(f"no audio under {root}: expected VoxCeleb layout {root}/{EXPECTED} (or dev/ and test/)")
    found: dict[str, Utterance] = {}
    for d in dirs:
        found.update(_scan_nonempty(d))
    return found


def _read_iden_split(path: Path, index: dict[str, Utterance]) -> tuple[list, list]:
    train, test = [], []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[0] not in ("1", "2", "3") or not _is_relpath(parts[1]):
                raise LayoutError(f"{path}:{n}: malformed line {line.rstrip()!r}: expected "
                                  "'<1|2|3> id10001/1zcIwhmdeo4/00001.wav'; fix or delete the line")
            key = relpath_to_key(parts[1])
            if key not in index:
                raise LayoutError(f"{path}:{n}: names {parts[1]}, which is not under {path.parent}: restore the "
                                  "audio or use the split of this corpus")
            (train if parts[0] == "1" else test if parts[0] == "3" else []).append(index[key])
    return train, test


def _session_split(index: dict[str, Utterance], seed: int) -> tuple[list, list]:
    by_speaker: dict[str, dict[str, list]] = {}
    for key in sorted(index):
        spk, video = key.split("/")[:2]
        by_speaker.setdefault(spk, {}).setdefault(video, []).append(index[key])
    train, test = [], []
    for s, (spk, videos) in enumerate(sorted(by_speaker.items())):
        rng = np.random.default_rng([seed, s])
        names = sorted(videos)
        if len(names) > 1:
            held = names[int(rng.integers(len(names)))]
            for v in names:
                (test if v == held else train).extend(videos[v])
        else:
            utts = videos[names[0]]
            chosen = set(rng.permutation(len(utts))[:max(1, len(utts) // 3)].tolist()) if len(utts) > 1 else set()
            for i, u in enumerate(utts):
                (test if i in chosen else train).append(u)
    return train, test


def identification_split(root: str | os.PathLike, seed: int = 0) -> dict:
    """{"train", "test": [Utterance], "speakers": sorted ids, "how": str, "dropped": test utterances dropped}."""
    root = Path(root)
    index = scan_all(root)
    split_file = root / IDEN_SPLIT
    if split_file.is_file():
        train, test = _read_iden_split(split_file, index)
        how = f"{IDEN_SPLIT} (1 train, 3 test)"
    else:
        train, test = _session_split(index, seed)
        how = "one held-out video per speaker (seeded)"
    speakers = sorted({u.speaker for u in train})
    kept = [u for u in test if u.speaker in set(speakers)]
    if len(speakers) < 2 or not kept:
        raise LayoutError(f"{root}: identification needs >= 2 speakers with training utterances and test utterances "
                          f"of those speakers; found {len(speakers)} speakers, {len(kept)} test utterances ({how})")
    return {"train": sorted(train, key=lambda u: u.key), "test": sorted(kept, key=lambda u: u.key),
            "speakers": speakers, "how": how, "dropped": len(test) - len(kept)}


def build_identification_shards(split: dict, root: str | Path, out_dir: str | Path, *, sample_rate: int = 8000,
                                samples_per_shard: int = 64, seed: int = 0, skip_bad: bool = False,
                                log=print) -> dict[str, dict]:
    """`out_dir/train` and `out_dir/test`, both labelled by the index of the speaker in split["speakers"]."""
    root = Path(root).resolve()
    index = {s: i for i, s in enumerate(split["speakers"])}
    decode = functools.partial(decode_utterance, sample_rate=sample_rate)
    manifests = {}
    for name in ("train", "test"):
        items, _ = _items(split[name], root)
        for item in items:
            item["label"] = index[item["speaker"]]
        manifests[name] = build_shards(items, Path(out_dir) / name, corpus="voxceleb-iden", split=name, decode=decode,
                                       config={"sample_rate": sample_rate, "format": "wav-pcm16-mono"},
                                       samples_per_shard=samples_per_shard, seed=seed, skip_bad=skip_bad,
                                       extra={"classes": split["speakers"]}, log=log)
    return manifests
