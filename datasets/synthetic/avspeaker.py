"""Generated multi-speaker conversations in exactly the AVA-ActiveSpeaker layout (datasets/avspeaker/layout.py):
mp4 videos of drawn faces whose mouths open with their own voice's envelope, the mixture and the main
speaker's clean voice as wav, and AVA's CSV rows (10 rows per second per face).

    OUT/ava_activespeaker_{train,val}_v1.0/<video_id>-activespeaker.csv
    OUT/videos/<video_id>.mp4        H.264, 25 fps, 160 x 120, no audio track
    OUT/audio/<video_id>.wav         16 kHz mono mixture (voices + noise at 30 dB SNR)
    OUT/audio/<video_id>.main.wav    the voice of whoever holds the turn (roles.py on the CSV's labels)

A conversation: the turn holder talks in long turns (2-3.5 s); the others interrupt with short overlapping
bursts (0.3-0.7 s) during a turn; at a turn's end, either another speaker starts before the holder stops and
keeps talking (a role switch by interruption) or, after a short gap, someone starts a new turn.
Voices: Debian's flite voices (CMU ARCTIC recordings: kal, awb, rms, slt, ...) where installed, reading
sentences; otherwise a generated source-filter voice per speaker (pitch, formants, syllable rhythm). Faces:
one skin tone and slot per speaker, a slight head bob, blinking; listeners' mouths twitch a little.

Deterministic: every choice comes from numpy Generators seeded by (seed, video), flite is deterministic
and x264 runs single-threaded, so one seed gives the same files. Built in OUT.partial-* and renamed last;
the `.complete` marker makes a rerun with the same parameters a no-op.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import io
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from datasets.avspeaker.layout import SPLIT_DIRS
from datasets.avspeaker.roles import RoleRules, turn_holder
from datasets.synthetic.marker import already_generated, mark_complete

SR, FPS, WIDTH, HEIGHT, ROW_DT = 16000, 25, 160, 120, 0.1
FORMAT_VERSION = 2
FLITE_VOICES = ("kal", "awb", "rms", "slt", "kal16")
SENTENCES = (
    "I think we should start with the budget before anything else.",
    "That is exactly the point I was trying to make last week.",
    "Well, the numbers do not add up if you look at the second quarter.",
    "Let me finish, because the schedule depends on this decision.",
    "We could move the meeting to Thursday afternoon instead.",
    "Nobody told me the report was due on Friday morning.",
    "The river rose two feet overnight and closed the old bridge.",
    "If we hire two more people, the project will be done by spring.",
    "I disagree, the design is simpler than it looks on paper.",
    "Please send me the slides when you get back to your desk.",
    "The train was late again, so I missed the first half of the talk.",
    "Our customers keep asking for a cheaper version of the product.",
)


def flite_voices() -> list[str]:
    """flite voices installed here (in FLITE_VOICES order); [] without flite."""
    if shutil.which("flite") is None:
        return []
    try:
        listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    have = set(listed.split(":", 1)[-1].split())
    return [v for v in FLITE_VOICES if v in have]


def _flite_stream(voice: str, tmp: Path) -> np.ndarray:
    """~30 s of one voice reading every sentence, at 16 kHz (flite's kal is 8 kHz: resampled)."""
    from scipy.signal import resample_poly

    parts = []
    for i, text in enumerate(SENTENCES):
        out = tmp / f"{voice}-{i}.wav"
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True,
                       timeout=60)
        x, sr = sf.read(out, dtype="float32")
        if sr != SR:
            x = resample_poly(x, SR, sr).astype(np.float32)
        parts += [x, np.zeros(int(0.15 * SR), np.float32)]
    x = np.concatenate(parts)
    return x / (np.abs(x).max() + 1e-9)


def _generated_stream(rng: np.random.Generator, seconds: float = 30.0) -> np.ndarray:
    """A source-filter voice (no TTS installed): a glottal pulse train at the speaker's pitch with intonation,
    two formant resonators per syllable, 4-6 syllables per second."""
    from scipy.signal import lfilter

    n = int(seconds * SR)
    f0 = rng.uniform(90, 230) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * np.arange(n) / SR))
    phase = np.cumsum(f0 / SR)
    src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float32) + 0.02 * rng.standard_normal(n)
    out = np.zeros(n, np.float32)
    pos = 0
    while pos < n:
        length = int(SR / rng.uniform(4, 6))
        seg = src[pos:pos + length]
        y = np.zeros_like(seg)
        for f in (rng.uniform(300, 900), rng.uniform(900, 2500)):
            r, th = 0.97, 2 * np.pi * f / SR
            y += lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], seg)
        out[pos:pos + length] = y * np.hanning(len(seg))
        pos += length + int(rng.uniform(0.0, 0.08) * SR)
    return out / (np.abs(out).max() + 1e-9)


def script(rng: np.random.Generator, speakers: int, seconds: float) -> list[list[tuple[float, float]]]:
    """Speaking intervals per speaker: long turns, short overlapping interruptions, role switches."""
    talk: list[list[tuple[float, float]]] = [[] for _ in range(speakers)]
    t, holder = rng.uniform(0.1, 0.4), int(rng.integers(speakers))
    while t < seconds:
        length = rng.uniform(2.0, 3.5)
        talk[holder].append((t, min(t + length, seconds)))
        others = [k for k in range(speakers) if k != holder]
        if length > 1.6 and rng.random() < 0.7:            # an interruption inside the turn
            who, at = int(rng.choice(others)), t + rng.uniform(0.5, length - 1.0)
            talk[who].append((at, min(at + rng.uniform(0.3, 0.7), seconds)))
        end = t + length
        nxt = int(rng.choice(others))
        if rng.random() < 0.5:                              # the next speaker cuts in and keeps talking
            t = end - rng.uniform(0.3, 0.6)
        else:
            t = end + rng.uniform(0.2, 0.6)
        holder = nxt
    return [sorted(iv) for iv in talk]


def _place(stream: np.ndarray, intervals, rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    for a, b in intervals:
        i, j = int(a * SR), min(int(b * SR), n)
        if j <= i:
            continue
        off = int(rng.integers(0, len(stream) - (j - i)))
        piece = stream[off:off + j - i].copy()
        fade = min(160, len(piece) // 2)
        piece[:fade] *= np.linspace(0, 1, fade)
        piece[len(piece) - fade:] *= np.linspace(1, 0, fade)
        out[i:j] += piece
    return out


def envelope(x: np.ndarray, fps: int, frames: int) -> np.ndarray:
    """Mouth opening in [0, 1] per video frame: the voice's RMS over each frame, over its 95th percentile."""
    hop = SR // fps
    x = np.pad(x, (0, max(0, frames * hop - len(x))))[:frames * hop].reshape(frames, hop)
    rms = np.sqrt((x ** 2).mean(axis=1))
    ref = np.percentile(rms[rms > 1e-4], 95) if (rms > 1e-4).any() else 1.0
    return np.clip(rms / (ref + 1e-9), 0, 1)


def draw_frames(rng: np.random.Generator, mouths: np.ndarray, slots: list[tuple[int, int]], tones: list[int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames (frames, H, W, 3) and normalized head boxes (speakers, frames, 4)."""
    k_n, frames = mouths.shape
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = (70 + 40 * yy / HEIGHT)[..., None] * np.array([0.9, 1.0, 1.1], np.float32)
    video = np.empty((frames, HEIGHT, WIDTH, 3), np.uint8)
    boxes = np.zeros((k_n, frames, 4), np.float32)
    rx, ry = 17.0, 22.0
    bob_phase = rng.uniform(0, 2 * np.pi, k_n)
    blinks = rng.random((k_n, frames)) < 0.02
    noise = rng.standard_normal((HEIGHT, WIDTH, 1)).astype(np.float32) * 3
    for f in range(frames):
        img = base + noise
        for k, ((cx0, cy0), tone) in enumerate(zip(slots, tones)):
            cx, cy = cx0 + 1.5 * np.sin(0.15 * f + bob_phase[k]), cy0 + 1.0 * np.cos(0.11 * f + bob_phase[k])
            head = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            img[head] = np.array([tone, tone * 0.8, tone * 0.65], np.float32)
            eye_h = 0.5 if blinks[k, f] else 2.0
            for ex in (cx - 7, cx + 7):
                img[((xx - ex) / 2.5) ** 2 + ((yy - (cy - 6)) / eye_h) ** 2 <= 1] = 20
            mh = 0.8 + 6.0 * mouths[k, f]
            img[((xx - cx) / 7.0) ** 2 + ((yy - (cy + 10)) / mh) ** 2 <= 1] = (90, 20, 30)
            boxes[k, f] = ((cx - rx) / WIDTH, (cy - ry) / HEIGHT, (cx + rx) / WIDTH, (cy + ry) / HEIGHT)
        video[f] = np.clip(img, 0, 255).astype(np.uint8)
    return video, np.clip(boxes, 0, 1)


def write_mp4(path: Path, video: np.ndarray) -> None:
    import av

    # one x264 thread, no threaded lookahead, explicit timestamps and no macroblock-tree rate control: x264's
    # decisions then depend on the frames only. With mbtree on, encoding the same frames again in one process gave
    # other bytes now and then (measured: 2 of 8 encodes of one demo video; 0 of 24, for each of three videos, without)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={
            "threads": "1", "crf": "20", "preset": "fast",
            "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:sync-lookahead=0:mbtree=0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(video):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _wav_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), SR, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def make_video(root: Path, i: int, split: str, seed: int, seconds: float, streams: list[np.ndarray],
               rules: RoleRules) -> None:
    rng = np.random.default_rng([seed, i])
    vid = f"conv{seed:03d}x{i:04d}"
    k_n = 3 if rng.random() < 0.75 else 2
    n, frames = int(seconds * SR), int(seconds * FPS)
    talk = script(rng, k_n, seconds)
    voices = rng.choice(len(streams), size=k_n, replace=len(streams) < k_n)
    clean = np.stack([_place(streams[v], talk[k], rng, n) * rng.uniform(0.5, 0.9) for k, v in enumerate(voices)])
    mix = clean.sum(axis=0)
    mix += rng.standard_normal(n).astype(np.float32) * np.sqrt((mix ** 2).mean() / 10 ** 3.0)   # 30 dB SNR

    # labels on the CSV's grid; the main voice follows the holder derived from exactly those labels
    times = (np.arange(int(round(seconds / ROW_DT))) + 0.5) * ROW_DT
    speaking = np.array([[any(a <= t < b for a, b in talk[k]) for t in times] for k in range(k_n)])
    holder = turn_holder(speaking, ROW_DT, rules)
    per_sample = np.repeat(holder, int(round(ROW_DT * SR)))[:n]
    main = np.where(per_sample[None, :] == np.arange(k_n)[:, None], clean, 0).sum(axis=0)

    mouths = np.stack([envelope(c, FPS, frames) for c in clean])
    mouths += 0.08 * rng.random(mouths.shape) * (mouths < 0.05)          # listeners' small twitches
    order = rng.permutation(3)[:k_n]
    slots = [(int(28 + 52 * s + rng.integers(-4, 5)), int(55 + rng.integers(-8, 9))) for s in order]
    tones = [int(rng.integers(150, 230)) for _ in range(k_n)]
    video, boxes = draw_frames(rng, mouths, slots, tones)

    write_mp4(root / "videos" / f"{vid}.mp4", video)
    (root / "audio" / f"{vid}.wav").write_bytes(_wav_bytes(mix))
    (root / "audio" / f"{vid}.main.wav").write_bytes(_wav_bytes(main))
    with open(root / SPLIT_DIRS[split] / f"{vid}-activespeaker.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        for k in range(k_n):
            for j, t in enumerate(times):
                box = boxes[k, min(int(t * FPS), frames - 1)]
                w.writerow([vid, f"{t:.2f}", *(f"{v:.4f}" for v in box),
                            "SPEAKING_AUDIBLE" if speaking[k, j] else "NOT_SPEAKING",
                            f"{vid}_0000_{int(seconds):04d}:{k}"])


_STREAMS: list[np.ndarray] = []   # a generator process's voices, sent once when it starts


def _keep_streams(streams: list[np.ndarray]) -> None:
    _STREAMS[:] = streams


def _make_video_with_kept_streams(root: Path, i: int, split: str, seed: int, seconds: float, rules: RoleRules) -> None:
    make_video(root, i, split, seed, seconds, _STREAMS, rules)


def generate(out: str | Path, *, videos: int = 48, test_fraction: float = 0.25, seconds: float = 8.0, seed: int = 0,
             rules: RoleRules = RoleRules(), voices: str = "auto", log=print) -> Path:
    """Write the corpus into `out` (no-op when it already holds this one); returns `out`."""
    import time

    out = Path(out)
    names = flite_voices() if voices == "auto" else []
    params = {"videos": videos, "test_fraction": test_fraction, "seconds": seconds, "seed": seed,
              "rules": [rules.pause_s, rules.take_s, rules.min_interrupt_s], "voices": names,
              "format": FORMAT_VERSION}
    if already_generated(out, params, ".complete", "conversation corpus"):
        log(f"[demo] {out}: up to date ({videos} conversations)")
        return out
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no finished conversation corpus: delete it or choose "
                         "another folder")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent if out.parent.exists() else None))
    try:
        for sub in ("videos", "audio", *SPLIT_DIRS.values()):
            (tmp / sub).mkdir()
        with tempfile.TemporaryDirectory() as work:
            streams = ([_flite_stream(v, Path(work)) for v in names] if names
                       else [_generated_stream(np.random.default_rng([seed, 10_000, k])) for k in range(5)])
        log(f"[demo] voices: {', '.join('flite ' + v for v in names) or 'generated (flite not installed)'}")
        n_test = max(1, int(round(videos * test_fraction)))
        # one process per CPU: each video comes from its own seed alone (x264 on one thread), so the files are the
        # same bytes as one after another; spawned, not forked (the caller may hold torch's thread pool)
        with cf.ProcessPoolExecutor(min(os.cpu_count() or 1, videos), mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_keep_streams, initargs=(streams,)) as pool:
            jobs = [pool.submit(_make_video_with_kept_streams, tmp, i, "test" if i >= videos - n_test else "train",
                                seed, seconds, rules) for i in range(videos)]
            for done, job in enumerate(cf.as_completed(jobs), 1):
                job.result()
                if done % 12 == 0 or done == videos:
                    log(f"[demo] {done}/{videos} conversations ({time.perf_counter() - t0:.0f} s)")
        mark_complete(tmp, params)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--videos", type=int, default=48)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    generate(a.out, videos=a.videos, seconds=a.seconds, seed=a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
