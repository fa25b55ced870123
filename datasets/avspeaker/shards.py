"""AVA-layout videos -> one sample per window -> sharded WebDataset, through the one shard writer. Ray Data
decodes each window's video frames with PyAV, crops the face tracks, reads the audio, computes the log-mel
features and derives the turn-taking roles (roles.py) per (track, segment).

Shard members per window (key `<video_id>/w<start in ms>`; N = max_tracks, S = segments, F = frames per
segment, L = 100 mel frames per second x segment length):
    faces.npy  uint8 N x S x F x C x C   grayscale face crops (zeros where a track is absent or padded)
    mel.npy    float32 S x L x n_mels     kaldi log-mel filterbank (25 ms / 10 ms) of the mixture
    mix.npy    int16 window samples        the mixture (16-bit PCM)
    main.npy   int16 window samples        the main speaker's clean voice (zeros when unknown: see json)
    label.npy  int8 4 x N x S              roles (0 silent, 1 main, 2 interrupter), present, track valid, and
                                           row 3[0, :] = main speaker per segment (-1 nobody)
    box.npy    float32 N x S x 4           mean normalized face box per (track, segment)
    json       {video_id, start, entities, has_main, switches: [segment, ...]}
"""
from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import numpy as np

from datasets.avspeaker.layout import Row, Video, Windowing, speaking_timeline, windows
from datasets.avspeaker.roles import RoleRules, frame_roles, segments_of, turn_holder
from datasets.errors import LayoutError

MEMBERS = ("faces.npy", "mel.npy", "mix.npy", "main.npy", "label.npy", "box.npy", "json")


@dataclasses.dataclass(frozen=True)
class Decoding:
    sample_rate: int = 16000
    n_mels: int = 40
    crop: int = 32                # face crops C x C, grayscale
    frames_per_segment: int = 4   # video frames sampled evenly in each segment


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def load_npy(value) -> np.ndarray:
    """A `.npy` member as read back (bytes, or already decoded by Ray's reader)."""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return np.load(io.BytesIO(bytes(value)), allow_pickle=False)
    return np.asarray(value)


def read_frames(path: str, times: np.ndarray) -> np.ndarray:
    """Grayscale frames (len(times), H, W) uint8 of the video at the given seconds (the decoded frame whose
    timestamp is nearest each time)."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            stream = container.streams.video[0]
            start = max(float(times.min()) - 0.5, 0.0)
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            stamps, frames = [], []
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time or 0.0)
                if t < start - 1.0:
                    continue
                stamps.append(t)
                frames.append(frame.to_ndarray(format="gray"))
                if t > float(times.max()) + 0.1:
                    break
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode the video ({exc}); re-encode it (e.g. H.264 mp4)") from exc
    if not frames:
        raise ValueError(f"{path}: no frame decoded near {times.min():.2f}-{times.max():.2f} s")
    stamps = np.asarray(stamps)
    pick = np.abs(stamps[None, :] - times[:, None]).argmin(axis=1)
    return np.stack([frames[i] for i in pick])


def read_audio(video: str, wav: str, start: float, seconds: float, sr: int) -> np.ndarray:
    """float32 mono samples of [start, start + seconds) from the wav, else the video's audio stream; zero-padded."""
    n = int(round(seconds * sr))
    if wav:
        import soundfile as sf

        info = sf.info(wav)
        if info.samplerate != sr:
            raise ValueError(f"{wav}: sample rate {info.samplerate} Hz, expected {sr} (convert with "
                             f"`sox in.wav -r {sr} -c 1 -b 16 out.wav`)")
        x, _ = sf.read(wav, start=int(round(start * sr)), frames=n, dtype="float32", always_2d=True)
        x = x.mean(axis=1)
    else:
        x = _video_audio(video, start, seconds, sr)
    return np.pad(x, (0, n - len(x)))[:n].astype(np.float32)


def _video_audio(path: str, start: float, seconds: float, sr: int) -> np.ndarray:
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream and no audio/<video_id>.wav beside it; add the wav")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode the audio ({exc})") from exc
    x = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return x[int(round(start * sr)):int(round((start + seconds) * sr))]


def log_mel(x: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    """(frames, n_mels) kaldi log-mel, 25 ms hamming windows every 10 ms, frames = len / hop (snip_edges off)."""
    import torch
    from torchaudio.compliance import kaldi

    w = torch.from_numpy(x.astype(np.float32) * 32768.0).unsqueeze(0)
    return kaldi.fbank(w, num_mel_bins=n_mels, frame_length=25.0, frame_shift=10.0, dither=0.0,
                       sample_frequency=sr, window_type="hamming", energy_floor=0.0, snip_edges=False).numpy()


def crop_face(frame: np.ndarray, box, size: int) -> np.ndarray:
    from PIL import Image

    h, w = frame.shape
    x1, y1, x2, y2 = box
    left, top = int(np.floor(x1 * w)), int(np.floor(y1 * h))
    right, bottom = max(int(np.ceil(x2 * w)), left + 1), max(int(np.ceil(y2 * h)), top + 1)
    return np.asarray(Image.fromarray(frame[top:bottom, left:right]).resize((size, size), Image.BILINEAR))


def decode_window(item: dict, w: Windowing, d: Decoding) -> dict:
    rows = [Row(r[0], r[1], tuple(r[2]), r[3], r[4]) for r in item["rows"]]
    entities, start = item["entities"], item["start"]
    n, s, f = w.max_tracks, w.segments, d.frames_per_segment
    _, present = speaking_timeline(rows, entities, start, s * w.frames_per_segment, w.grid_s)
    k = len(entities)
    label = np.zeros((4, n, s), dtype=np.int8)
    label[0, :k] = item["roles"]
    label[1, :k] = present.reshape(k, s, -1).any(axis=2)
    label[2, :k] = 1
    label[3, 0] = item["main_id"]

    # face boxes per (track, segment): the rows' mean; crops at F evenly spaced times per segment
    boxes = np.zeros((n, s, 4), dtype=np.float32)
    by_track: dict[int, list[Row]] = {}
    for r in rows:
        if r.entity in entities:
            by_track.setdefault(entities.index(r.entity), []).append(r)
    times = start + (np.arange(s)[:, None] + (np.arange(f)[None, :] + 0.5) / f) * w.segment_s
    decoded = read_frames(item["path"], times.reshape(-1))
    video_frames = decoded.reshape(s, f, *decoded.shape[1:])
    faces = np.zeros((n, s, f, d.crop, d.crop), dtype=np.uint8)
    for kk, track in by_track.items():
        ts = np.array([r.t for r in track])
        for si in range(s):
            inside = [r.box for r in track if start + si * w.segment_s <= r.t < start + (si + 1) * w.segment_s]
            if inside:
                boxes[kk, si] = np.mean(inside, axis=0)
            if not label[1, kk, si]:
                continue
            for fi in range(f):
                near = track[int(np.abs(ts - times[si, fi]).argmin())]
                faces[kk, si, fi] = crop_face(video_frames[si, fi], near.box, d.crop)

    mix = read_audio(item["path"], item["wav"], start, w.window_s, d.sample_rate)
    main = (read_audio(item["path"], item["main_wav"], start, w.window_s, d.sample_rate) if item["main_wav"]
            else np.zeros_like(mix))
    mel = log_mel(mix, d.sample_rate, d.n_mels)
    per = int(round(w.segment_s * 100))
    mel = np.pad(mel, ((0, max(0, s * per - len(mel))), (0, 0)))[:s * per].reshape(s, per, d.n_mels)
    pcm = lambda x: np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)  # noqa: E731
    return {"faces.npy": _npy(faces), "mel.npy": _npy(mel.astype(np.float32)), "mix.npy": _npy(pcm(mix)),
            "main.npy": _npy(pcm(main)), "label.npy": _npy(label), "box.npy": _npy(boxes),
            "json": {"video_id": rows[0].video_id if rows else "", "start": float(start), "entities": entities,
                     "has_main": bool(item["main_wav"]), "switches": item["switches"]}}


def video_items(videos: list[Video], w: Windowing, rules: RoleRules) -> list[dict]:
    """One item per window, carrying what its decode needs (JSON-serializable: build_shards ships them). The
    turn is followed over the whole video (who holds it at a window's start depends on what came before), then
    each window's segments get their slice of the roles."""
    items = []
    for v in videos:
        frame_shape(v.video)   # an undecodable video fails here, before Ray Data starts
        wins = windows(v, w)
        if not wins:
            continue
        everyone = sorted({r.entity for r in v.rows})
        origin = wins[0]["start"]
        total = int(round((wins[-1]["start"] - origin + w.window_s) / w.grid_s))
        speaking, _ = speaking_timeline(v.rows, everyone, origin, total, w.grid_s)
        roles = frame_roles(speaking, turn_holder(speaking, w.grid_s, rules))
        for win in wins:
            j = int(round((win["start"] - origin) / w.grid_s))
            idx = [everyone.index(e) for e in win["entities"]]
            seg, main_id, switch = segments_of(roles[idx, j:j + w.segments * w.frames_per_segment],
                                               w.frames_per_segment, max(1, int(round(rules.min_interrupt_s /
                                                                                      w.grid_s))))
            rows = [[r.video_id, r.t, list(r.box), r.label, r.entity] for r in v.rows
                    if r.entity in win["entities"] and win["start"] - w.segment_s <= r.t < win["start"] + w.window_s
                    + w.segment_s]
            items.append({**win, "path": v.video, "wav": v.wav, "main_wav": v.main_wav, "rows": rows,
                          "roles": seg.tolist(), "main_id": main_id.tolist(),
                          "switches": np.flatnonzero(switch).tolist()})
    return items


def frame_shape(path: str) -> tuple[int, int]:
    """(height, width) of the video's frames; an unreadable video is named here, before Ray Data starts."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise LayoutError(f"{path}: no video stream; AVA's videos/ must hold videos")
            st = container.streams.video[0]
            frame = next(container.decode(st), None)
            if frame is None:
                raise LayoutError(f"{path}: no decodable frame; re-encode or replace the video")
            return frame.height, frame.width
    except av.error.FFmpegError as exc:
        raise LayoutError(f"{path}: cannot decode the video ({type(exc).__name__}: {exc}); re-encode or replace "
                          "it (e.g. H.264 mp4)") from None


def build_av_shards(videos: list[Video], out_dir: str | Path, *, split: str, w: Windowing, d: Decoding,
                    rules: RoleRules, seed: int = 0, samples_per_shard: int = 64, log=print) -> dict:
    from datasets.shards import build_shards

    items = video_items(videos, w, rules)
    if not items:
        raise LayoutError(f"no whole {w.window_s} s window in the {split} annotations: lower data.window_s")
    return build_shards(
        items, out_dir, corpus="ava", split=split,
        decode=functools.partial(decode_window, w=w, d=d),
        config={"windowing": dataclasses.asdict(w), "decoding": dataclasses.asdict(d),
                "rules": dataclasses.asdict(rules), "format": 1},
        samples_per_shard=samples_per_shard, seed=seed, log=log,
        extra={"tracks": w.max_tracks, "segments": w.segments, "videos": len(videos)})


def rows_to_arrays(batch: dict) -> dict:
    """A numpy batch of shard rows -> stacked arrays {faces, mel, mix, main, label, box} + list of meta."""
    from datasets.shards import json_member

    out = {m.split(".")[0]: np.stack([load_npy(v) for v in batch[m]]) for m in MEMBERS if m != "json" and m in batch}
    out["meta"] = [json_member(m) for m in batch["json"]]
    return out
