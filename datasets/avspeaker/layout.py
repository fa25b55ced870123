"""The AVA-ActiveSpeaker annotation layout with its videos beside it, read and checked before any video is
decoded, and cut into fixed windows of segments (one shard sample per window).

    ROOT/ava_activespeaker_train_v1.0/<video_id>-activespeaker.csv   AVA's training annotations
    ROOT/ava_activespeaker_val_v1.0/<video_id>-activespeaker.csv     AVA's validation set (our test split)
    ROOT/videos/<video_id>.{mp4,mkv,webm}                             the videos (audio track inside, or:)
    ROOT/audio/<video_id>.wav                                         optional mono mixture (else the video's audio)
    ROOT/audio/<video_id>.main.wav                                    optional clean voice of the main speaker
                                                                      (generated data: the mask's target)

A CSV row is AVA's, without a header (one is tolerated):
    video_id, frame_timestamp, entity_box_x1, entity_box_y1, entity_box_x2, entity_box_y2, label, entity_id
with the box normalized to [0, 1] and label one of SPEAKING_AUDIBLE, SPEAKING_NOT_AUDIBLE, NOT_SPEAKING.
Speech for the turn-taking roles is SPEAKING_AUDIBLE (a speaker nobody hears holds no turn in the audio).
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from datasets.errors import LayoutError

LABELS = ("SPEAKING_AUDIBLE", "SPEAKING_NOT_AUDIBLE", "NOT_SPEAKING")
SPLIT_DIRS = {"train": "ava_activespeaker_train_v1.0", "test": "ava_activespeaker_val_v1.0"}
VIDEO_EXTS = (".mp4", ".mkv", ".webm")
HEADER = ("video_id", "frame_timestamp", "entity_box_x1", "entity_box_y1", "entity_box_x2", "entity_box_y2",
          "label", "entity_id")


@dataclasses.dataclass(frozen=True)
class Row:
    video_id: str
    t: float
    box: tuple[float, float, float, float]
    label: str
    entity: str

    @property
    def speaking(self) -> bool:
        return self.label == "SPEAKING_AUDIBLE"


@dataclasses.dataclass
class Video:
    video_id: str
    video: str                 # the video file
    wav: str                   # the mixture's wav, or "" (then the video's audio stream)
    main_wav: str              # the main speaker's clean voice, or ""
    rows: list[Row]
    csv: str                   # the annotation file (for messages)


def parse_row(fields: list[str], where: str) -> Row:
    if len(fields) != 8:
        raise LayoutError(f"{where}: {len(fields)} fields, an AVA-ActiveSpeaker row has 8 ({', '.join(HEADER)})")
    video_id, t, x1, y1, x2, y2, label, entity = (f.strip() for f in fields)
    try:
        t, box = float(t), tuple(float(v) for v in (x1, y1, x2, y2))
    except ValueError:
        raise LayoutError(f"{where}: timestamp and box must be numbers, got {fields[1:6]}") from None
    if not (np.isfinite(t) and t >= 0):
        raise LayoutError(f"{where}: frame_timestamp {t} must be a time in seconds >= 0")
    if not all(0.0 <= v <= 1.0 for v in box) or box[0] >= box[2] or box[1] >= box[3]:
        raise LayoutError(f"{where}: face box {box} must be normalized to [0, 1] with x1 < x2 and y1 < y2 "
                          "(AVA's boxes are fractions of the frame size): fix the row")
    if label not in LABELS:
        raise LayoutError(f"{where}: unknown label {label!r}; AVA-ActiveSpeaker labels are {', '.join(LABELS)}")
    if not video_id or not entity:
        raise LayoutError(f"{where}: empty video_id or entity_id")
    return Row(video_id, t, box, label, entity)


def read_csv(path: Path) -> list[Row]:
    rows = []
    with open(path, newline="") as f:
        for n, fields in enumerate(csv.reader(f), 1):
            if not fields or (n == 1 and fields[0].strip() == "video_id"):
                continue
            rows.append(parse_row(fields, f"{path} row {n}"))
    return rows


def find_videos(root: str | Path, split: str) -> list[Video]:
    """The split's videos with their rows, checked (rows, files) before anything is decoded."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder; --ava takes the AVA-ActiveSpeaker root (with "
                          f"{SPLIT_DIRS['train']}/ and videos/)")
    folder = root / SPLIT_DIRS[split]
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    if not files:
        raise LayoutError(f"no annotation CSV in {folder}: expected AVA's {SPLIT_DIRS[split]}/<video_id>-"
                          "activespeaker.csv files")
    by_video: dict[str, list[Row]] = {}
    where: dict[str, str] = {}
    for path in files:
        for row in read_csv(path):
            by_video.setdefault(row.video_id, []).append(row)
            where.setdefault(row.video_id, str(path))
    videos = []
    for vid in sorted(by_video):
        found = [root / "videos" / f"{vid}{ext}" for ext in VIDEO_EXTS if (root / "videos" / f"{vid}{ext}").is_file()]
        if not found:
            raise LayoutError(f"{where[vid]} names video {vid!r}, but {root / 'videos'} holds no {vid}.mp4/.mkv/.webm:"
                              " add the video or remove its rows")
        wav, main = root / "audio" / f"{vid}.wav", root / "audio" / f"{vid}.main.wav"
        rows = sorted(by_video[vid], key=lambda r: (r.entity, r.t))
        videos.append(Video(vid, str(found[0]), str(wav) if wav.is_file() else "",
                            str(main) if main.is_file() else "", rows, where[vid]))
    return videos


@dataclasses.dataclass(frozen=True)
class Windowing:
    window_s: float = 4.0         # one sample: this many seconds of one video
    segment_s: float = 0.5        # one token per (track, segment)
    grid_s: float = 0.1           # the speaking timeline's frame step (AVA rows are ~ every 0.03-0.05 s)
    max_tracks: int = 3           # face tracks per window (most annotated first); fewer are padded

    def check(self) -> None:
        if min(self.window_s, self.segment_s, self.grid_s) <= 0 or self.max_tracks < 1:
            raise ValueError(f"windowing: sizes must be > 0 and max_tracks >= 1, got {self}")
        for name, a, b in (("window_s / segment_s", self.window_s, self.segment_s),
                           ("segment_s / grid_s", self.segment_s, self.grid_s)):
            if abs(a / b - round(a / b)) > 1e-6:
                raise ValueError(f"windowing: {name} must be a whole number, got {a} / {b}")

    @property
    def segments(self) -> int:
        return int(round(self.window_s / self.segment_s))

    @property
    def frames_per_segment(self) -> int:
        return int(round(self.segment_s / self.grid_s))


def speaking_timeline(rows: list[Row], entities: list[str], start: float, frames: int, dt: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(speaking, present): (tracks, frames) booleans on the grid start + (j + 0.5) dt; a frame is speaking
    where a row of that entity within it says SPEAKING_AUDIBLE, present where any row falls in it."""
    speaking = np.zeros((len(entities), frames), dtype=bool)
    present = np.zeros_like(speaking)
    index = {e: k for k, e in enumerate(entities)}
    for r in rows:
        k = index.get(r.entity)
        j = int(np.floor((r.t - start) / dt + 1e-9))
        if k is None or not 0 <= j < frames:
            continue
        present[k, j] = True
        speaking[k, j] |= r.speaking
    return speaking, present


def windows(video: Video, w: Windowing) -> list[dict]:
    """One item per whole window of the annotated span: {key, start, entities}. Tracks: the max_tracks
    entities with the most rows in the window (ties by name)."""
    if not video.rows:
        return []
    # windows tile the annotated span from its first grid frame; a last partial window is dropped
    t0 = np.floor(min(r.t for r in video.rows) / w.grid_s + 1e-9) * w.grid_s
    t1 = max(r.t for r in video.rows) + w.grid_s
    out = []
    for i in range(int(np.floor((t1 - t0) / w.window_s + 1e-6))):
        start = round(t0 + i * w.window_s, 6)
        counts: dict[str, int] = {}
        for r in video.rows:
            if start <= r.t < start + w.window_s:
                counts[r.entity] = counts.get(r.entity, 0) + 1
        if not counts:
            continue
        entities = sorted(counts, key=lambda e: (-counts[e], e))[:w.max_tracks]
        out.append({"key": f"{video.video_id}/w{int(round(start * 1000)):09d}", "start": start,
                    "entities": sorted(entities)})
    return out
