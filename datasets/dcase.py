"""The DCASE remix (arXiv 2106.06858): TAU Urban Acoustic Scenes 2019 + FSDKaggle2018 -> weakly labelled
10 s mixtures at 0/10/20 dB, planned here and mixed in parallel by the one shard writer.

Real layouts read:
  TAU  ROOT/meta.csv   tab-separated, header `filename scene_label identifier source_label`,
                       filenames `audio/<scene>-<city>-<id>-<seg>-<device>.wav` (10 s clips)
  FSD  ROOT/train.csv  comma-separated, header `fname,label,manually_verified` (0/1), files in
                       ROOT/audio_train/, labels among the 41 of FSDKaggle2018

Protocol: Kong's `utils/create_mixture_yaml.py` and `utils/create_mixed_audio.py`
(qiuqiangkong/sed_time_freq_segmentation), step for step:
- folds: a RandomState(1234) permutation of every train.csv row, verified or not; row at position n of
  it goes to fold n % 4 + 1;
- plan: a fresh RandomState(1234) shuffles the scene list once; then per fold the fold's verified
  events are shuffled and cut into consecutive triples (labels may repeat within a mixture), mixture k
  (counted over all folds) takes scene k, its events start at 0.5, 3.0 and 5.5 s and last
  min(duration, 2 s);
- audio (`normalize_to_energy`): the scene is scaled to mean-square 1 over its 10 s, each event to
  mean-square 10^(snr/10) over its whole file, then cut; the mixture is the mean of the events and
  scene channels after dividing both by their joint peak (the reference's stereo file, averaged by its
  feature extractor).
The same plan is rendered at every SNR. Each shard sample holds the mixture (`wav`) and its labels
(`json`: weak labels, strong events with onset/offset, SNR, fold, source files, gains).
Ours: where there are fewer scenes than mixtures (the demo) the shuffled scene list is reused
cyclically; the reference would stop with an IndexError.
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
SEED = 1234               # the reference's RandomState seed, for the folds and for the plan


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
    verified: bool = True


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
    """TAU Urban Acoustic Scenes 2019 development: every clip of meta.csv, in file order (the plan
    shuffles this order, as the reference does)."""
    root = Path(root)
    clips = []
    for line, row in _rows(root / "meta.csv", "\t", TAU_COLUMNS, "tau"):
        path = root / row["filename"]
        if not path.is_file():
            raise LayoutError(f"{root / 'meta.csv'} line {line}: {path} does not exist")
        clips.append(SceneClip(str(path), row["filename"], row["scene_label"]))
    return clips


def read_fsd(root: str | Path, labels: tuple[str, ...] = FSD_LABELS) -> list[EventClip]:
    """FSDKaggle2018 train.csv: every row, in file order, flagged `verified` (the folds count every row,
    the mixtures use verified ones only)."""
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
        path = root / "audio_train" / row["fname"]
        verified = row["manually_verified"] == "1"
        if verified and not path.is_file():    # unverified files are never read
            raise LayoutError(f"{meta} line {line}: {path} does not exist")
        events.append(EventClip(str(path), row["fname"], row["label"], verified))
    if not any(e.verified for e in events):
        raise LayoutError(f"{meta} has no manually verified events (manually_verified = 1)")
    return events


def event_folds(n_rows: int, folds: int = 4, seed: int = SEED) -> np.ndarray:
    """Fold (1-based) of each train.csv row: position n of a seeded permutation -> n % folds + 1."""
    fold = np.zeros(n_rows, dtype=int)
    fold[np.random.RandomState(seed).permutation(n_rows)] = np.arange(n_rows) % folds + 1
    return fold


def draw_events(pool: np.ndarray, count: int, rng: np.random.RandomState) -> np.ndarray:
    """`count` entries of `pool`, shuffled in place as the reference's `repeat_array` does: it shuffles
    the same array once per repeat and concatenates references to it, so every repeat is the last
    shuffle (one permutation, tiled)."""
    repeats = count // len(pool) + 1
    for _ in range(repeats):
        rng.shuffle(pool)
    return np.tile(pool, repeats)[:count]


def plan_mixtures(scenes: list[SceneClip], events: list[EventClip], *, per_fold: int, folds: int = 4,
                  seed: int = SEED) -> list[dict]:
    """The mixture plan of the reference: `per_fold` mixtures for each event fold (1-based), each a
    scene clip and len(ONSETS) consecutive events of the fold's shuffled verified events. Pure: same
    inputs, same plan."""
    if per_fold < 1 or folds < 1:
        raise ValueError(f"need per_fold >= 1 and folds >= 1, got {per_fold}, {folds}")
    fold_of = event_folds(len(events), folds, seed)
    verified = np.array([e.verified for e in events], dtype=bool)
    rng = np.random.RandomState(seed)
    scene_order = rng.permutation(len(scenes))
    plan = []
    for f in range(1, folds + 1):
        pool = np.flatnonzero((fold_of == f) & verified)
        if len(pool) == 0:
            raise ValueError(f"event fold {f} has no verified events: provide more verified events")
        drawn = draw_events(pool, per_fold * len(ONSETS), rng)
        for i in range(per_fold):
            scene = scenes[scene_order[len(plan) % len(scenes)]]   # cyclic reuse: ours (module doc)
            triple = [events[j] for j in drawn[i * len(ONSETS):(i + 1) * len(ONSETS)]]
            plan.append({"key": f"fold{f}/mix{i:05d}", "path": scene.path, "scene": scene.rel,
                         "scene_label": scene.scene, "fold": f,
                         "events": [{"path": e.path, "fname": e.fname, "label": e.label, "onset": onset}
                                    for onset, e in zip(ONSETS, triple)]})
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
    scene_gain = 1.0 / math.sqrt(_energy(scene))          # mean-square 1 (0 dB)
    scene = scene * scene_gain
    events = np.zeros(n)
    strong = []
    for ev in item["events"]:
        x, _ = load_audio(ev["path"], sample_rate)
        cut = min(len(x), int(round(MAX_EVENT_S * sample_rate)))
        if cut < hop:
            raise AudioError(f"event {ev['path']} is {cut} samples long, shorter than one frame "
                             f"(hop {hop}): remove it from train.csv")
        if _energy(x) == 0.0:
            raise AudioError(f"event {ev['path']} is silent: remove it from train.csv")
        # Energy of the whole file, before the cut: an event's SNR is not measured in its window.
        gain = 10.0 ** (item["snr"] / 20.0) / math.sqrt(_energy(x))
        start = int(round(ev["onset"] * sample_rate))
        events[start:start + cut] = gain * x[:cut]       # onsets 2.5 s apart, cuts <= 2 s: no overlap
        strong.append({"label": ev["label"], "onset": ev["onset"], "offset": ev["onset"] + cut / sample_rate,
                       "source": ev["fname"], "gain": gain})
    # The reference writes (events, scene) divided by their joint peak and averages the channels.
    mix_gain = 0.5 / max(float(np.abs(events).max()), float(np.abs(scene).max()))
    return {"wav": encode_wav(((events + scene) * mix_gain).astype(np.float32), sample_rate),
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
            config={"sample_rate": sample_rate, "hop": hop, "protocol": "kong-remix-v2"},
            samples_per_shard=samples_per_shard, seed=seed, skip_bad=skip_bad, extra={"classes": labels})
    return manifests
