"""The DCASE remix (arXiv 2106.06858): TAU Urban Acoustic Scenes 2019 + FSDKaggle2018 -> weakly labelled
10 s mixtures at 0/10/20 dB, planned here and mixed in parallel by the one shard writer.

Real layouts read:
  TAU  ROOT/meta.csv   tab-separated, header `filename scene_label identifier source_label`,
                       filenames `audio/<scene>-<city>-<id>-<seg>-<device>.wav` (10 s clips)
  FSD  ROOT/train.csv  comma-separated, header `fname,label,manually_verified` (0/1), files in
                       ROOT/audio_train/, labels among the 41 of FSDKaggle2018

Protocol (Kong's create_mixture_yaml, qiuqiangkong/sed_time_freq_segmentation): manually verified events only;
events split into 4 folds by a seeded permutation; each mixture is one scene clip plus 3 events of distinct
labels from one fold at onsets 0.5, 3.0 and 5.5 s, each cut to its first <= 2 s. The scene is
energy-normalized (to SCENE_RMS); each event is scaled so that its energy over its own window is
SNR dB above the scene's energy over that same window. The same planned mixtures are rendered at
every SNR. A mixture whose peak would clip is scaled down as a whole (`mix_gain`, which keeps
every SNR). Each shard sample holds the mixture (`wav`), its labels (`json`: weak labels, strong
events with onset/offset, SNR, fold, source files, gains).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import math
from pathlib import Path

import numpy as np

from datasets.audio import AudioError, encode_wav, load_audio
from datasets.errors import LayoutError

FSD_LABELS = (
    "Acoustic_guitar", "Applause", "Bark", "Bass_drum", "Burping_or_eructation", "Bus", "Cello",
    "Chime", "Clarinet", "Computer_keyboard", "Cough", "Cowbell", "Double_bass",
    "Drawer_open_or_close", "Electric_piano", "Fart", "Finger_snapping", "Fireworks", "Flute",
    "Glockenspiel", "Gong", "Gunshot_or_gunfire", "Harmonica", "Hi-hat", "Keys_jangling", "Knock",
    "Laughter", "Meow", "Microwave_oven", "Oboe", "Saxophone", "Scissors", "Shatter", "Snare_drum",
    "Squeak", "Tambourine", "Tearing", "Telephone", "Trumpet", "Violin_or_fiddle", "Writing")
TAU_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
FSD_COLUMNS = ("fname", "label", "manually_verified")
ONSETS = (0.5, 3.0, 5.5)
MAX_EVENT_S = 2.0
CLIP_S = 10.0
SCENE_RMS = 0.03          # -30 dBFS: room for a 20 dB event on top before the mix would clip
PEAK = 0.99


@dataclasses.dataclass(frozen=True)
class SceneClip:
    path: str
    rel: str              # as in meta.csv, e.g. audio/airport-barcelona-0-0-a.wav
    scene: str


@dataclasses.dataclass(frozen=True)
class EventClip:
    path: str
    fname: str
    label: str


def _rows(path: Path, delimiter: str, columns: tuple[str, ...], what: str) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise LayoutError(f"{path} not found: --{what} must point at the folder holding it")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(f"{path} line 1: missing column(s) {', '.join(missing)} (header is "
                              f"{reader.fieldnames}); expected {delimiter.join(columns)!r}"
                              + (" separated by tabs" if delimiter == "\t" else ""))
        rows = []
        for line, row in enumerate(reader, start=2):
            if any(row.get(c) in (None, "") for c in columns):
                raise LayoutError(f"{path} line {line}: empty or missing field(s) in {row}")
            rows.append((line, row))
    if not rows:
        raise LayoutError(f"{path} lists no files")
    return rows


def read_tau(root: str | Path) -> list[SceneClip]:
    """TAU Urban Acoustic Scenes 2019 development: every clip of meta.csv (sorted by filename)."""
    root = Path(root)
    clips = []
    for line, row in _rows(root / "meta.csv", "\t", TAU_COLUMNS, "tau"):
        path = root / row["filename"]
        if not path.is_file():
            raise LayoutError(f"{root / 'meta.csv'} line {line}: {path} does not exist")
        clips.append(SceneClip(str(path), row["filename"], row["scene_label"]))
    return sorted(clips, key=lambda c: c.rel)


def read_fsd(root: str | Path, labels: tuple[str, ...] = FSD_LABELS) -> list[EventClip]:
    """FSDKaggle2018 train.csv: the manually verified events (sorted by fname)."""
    root = Path(root)
    meta = root / "train.csv"
    events = []
    for line, row in _rows(meta, ",", FSD_COLUMNS, "fsd"):
        if row["label"] not in labels:
            raise LayoutError(f"{meta} line {line}: unknown label {row['label']!r}; FSDKaggle2018 "
                              f"labels are {', '.join(labels)}")
        if row["manually_verified"] not in ("0", "1"):
            raise LayoutError(f"{meta} line {line}: manually_verified must be 0 or 1, got "
                              f"{row['manually_verified']!r}")
        if row["manually_verified"] == "1":
            path = root / "audio_train" / row["fname"]
            if not path.is_file():
                raise LayoutError(f"{meta} line {line}: {path} does not exist")
            events.append(EventClip(str(path), row["fname"], row["label"]))
    if not events:
        raise LayoutError(f"{meta} has no manually verified events (manually_verified = 1)")
    return sorted(events, key=lambda e: e.fname)


def plan_mixtures(scenes: list[SceneClip], events: list[EventClip], *, per_fold: int, folds: int = 4,
                  seed: int = 0) -> list[dict]:
    """The seeded mixture plan: `per_fold` mixtures for each event fold (1-based), each a scene
    clip and len(ONSETS) events of distinct labels from that fold. Pure: same inputs, same plan."""
    if per_fold < 1 or folds < 1:
        raise ValueError(f"need per_fold >= 1 and folds >= 1, got {per_fold}, {folds}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(events))
    fold_events = [[events[i] for i in order[f::folds]] for f in range(folds)]
    scene_order = rng.permutation(len(scenes))
    plan = []
    for f, pool in enumerate(fold_events, start=1):
        by_label: dict[str, list[EventClip]] = {}
        for e in pool:
            by_label.setdefault(e.label, []).append(e)
        labels = sorted(by_label)
        if len(labels) < len(ONSETS):
            raise ValueError(f"event fold {f} has {len(labels)} label(s) ({labels}); each mixture needs "
                             f"{len(ONSETS)} distinct labels: provide more verified events")
        for i in range(per_fold):
            scene = scenes[scene_order[len(plan) % len(scenes)]]
            chosen = rng.choice(len(labels), size=len(ONSETS), replace=False)
            mixed = []
            for onset, li in zip(ONSETS, chosen):
                pool_l = by_label[labels[li]]
                e = pool_l[int(rng.integers(len(pool_l)))]
                mixed.append({"path": e.path, "fname": e.fname, "label": e.label, "onset": onset})
            plan.append({"key": f"fold{f}/mix{i:05d}", "path": scene.path, "scene": scene.rel,
                         "scene_label": scene.scene, "fold": f, "events": mixed})
    return plan


def _energy(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix(item: dict, sample_rate: int, hop: int) -> dict:
    """Render one planned mixture at item['snr'] dB (a `build_shards` decode function)."""
    n = int(round(CLIP_S * sample_rate))
    scene, _ = load_audio(item["path"], sample_rate)
    if len(scene) < n:
        raise AudioError(f"scene clip {item['path']} is {len(scene) / sample_rate:.2f} s long; the protocol "
                         f"mixes {CLIP_S:g} s scenes: remove it from meta.csv")
    scene = scene[:n].astype(np.float64)
    if _energy(scene) == 0.0:
        raise AudioError(f"scene clip {item['path']} is silent: remove it from meta.csv")
    scene_gain = SCENE_RMS / math.sqrt(_energy(scene))
    out = scene * scene_gain
    strong = []
    for ev in item["events"]:
        x, _ = load_audio(ev["path"], sample_rate)
        x = x[:int(MAX_EVENT_S * sample_rate)].astype(np.float64)
        if len(x) < hop:
            raise AudioError(f"event {ev['path']} is {len(x)} samples long, shorter than one frame "
                             f"(hop {hop}): remove it from train.csv")
        if _energy(x) == 0.0:
            raise AudioError(f"event {ev['path']} is silent: remove it from train.csv")
        start = int(round(ev["onset"] * sample_rate))
        window = slice(start, start + len(x))
        gain = math.sqrt(_energy(out[window]) / _energy(x) * 10.0 ** (item["snr"] / 10.0))
        out[window] += gain * x
        strong.append({"label": ev["label"], "onset": ev["onset"], "offset": (start + len(x)) / sample_rate,
                       "source": ev["fname"], "gain": gain})
    # Rescale the whole mixture if it would clip: every ratio, so every SNR, is kept.
    peak = float(np.abs(out).max())
    mix_gain = min(1.0, PEAK / peak)
    return {"wav": encode_wav((out * mix_gain).astype(np.float32), sample_rate),
            "json": {"labels": sorted({e["label"] for e in strong}), "events": strong, "snr": item["snr"],
                     "fold": item["fold"], "scene": item["scene"], "scene_label": item["scene_label"],
                     "scene_gain": scene_gain, "mix_gain": mix_gain, "sample_rate": sample_rate}}


def build_remix_shards(plan: list[dict], out_dir: str | Path, *, snrs, sample_rate: int, hop: int,
                       labels: list[str], samples_per_shard: int = 64, seed: int = 0,
                       skip_bad: bool = False) -> dict[int, dict]:
    """One shard set per SNR, `out_dir/snr{S}`, mixed in parallel by Ray Data; {snr: manifest}."""
    from datasets.shards import build_shards

    decode = functools.partial(mix, sample_rate=sample_rate, hop=hop)
    manifests = {}
    for snr in snrs:
        items = [{**p, "key": f"{p['key']}/snr{snr}", "snr": snr} for p in plan]
        manifests[snr] = build_shards(
            items, Path(out_dir) / f"snr{snr}", corpus="dcase_remix", split=f"snr{snr}", decode=decode,
            config={"sample_rate": sample_rate, "hop": hop, "protocol": "kong-remix-v1",
                    "scene_rms": SCENE_RMS},
            samples_per_shard=samples_per_shard, seed=seed, skip_bad=skip_bad, extra={"classes": labels})
    return manifests
