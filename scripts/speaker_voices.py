"""Real recorded voices (Debian's TTS voices) as a small VoxCeleb1-layout corpus, plus MUSAN- and
RIRS_NOISES-layout augmentation folders, so the speaker workflow can be measured with and without
augmentation on real voices instead of the source-filter generator (datasets/synthetic/speakers.py).

    OUT/voxceleb1/dev/wav/idNNNNN/<11-char session id>/NNNNN.wav    training pseudo-speakers
    OUT/voxceleb1/test/wav/idNNNNN/<11-char session id>/NNNNN.wav   test pseudo-speakers
    OUT/voxceleb1/veri_test2.txt                                    trials among the test speakers
    OUT/musan/{noise/free-sound,music/fma,speech/librivox}/<kind>-<subset>-NNNN.wav
    OUT/RIRS_NOISES/simulated_rirs/{small,medium,large}room/RoomNNN/RoomNNN-NNNNN.wav (+ rir_list)
    OUT/speaker_voices.json                                         parameters, voices, speaker map

Every wav is 16 kHz mono 16-bit PCM. `datasets.voxceleb.layout.find_layout(OUT/voxceleb1)` reads the
corpus (split-folder layout); `datasets.augment_sources.musan_files / rir_files` read the other two.

Corpus. The base voices are the CMU ARCTIC / diphone recordings behind Debian's synthesizers: flite
kal, kal16, awb, rms, slt and festival kal_diphone, ked_diphone (festvox-kdlpc16k),
cmu_us_slt_arctic_hts, as far as installed (flite's awb_time is time-of-day only and not used). They
come from five people: kal (flite kal, kal16, festival kal_diphone), awb, rms, slt (flite slt,
festival slt HTS) and ked. A pseudo-speaker is one base voice shifted by a fixed number of cents (sox
`pitch`; shifts spread evenly over -max..+max cents, so copies of one voice ~100 cents apart or more
are different "speakers"). A session (one "video") is a speaking rate (sox `tempo -s`, 0.85-1.15), a
mild channel (sox `highpass` 50-300 Hz, `lowpass` 3.4-7.6 kHz, peak level -12..-3 dBFS via `gain -n`)
and white noise at 20-40 dB SNR; an utterance is one of SENTENCES (~60 English sentences, 2.5-4.7 s
before the tempo change, so 2-6 s after it), each speaker's utterances all different sentences.

Test speakers never share a PERSON with training speakers where the installed voices allow it: the
test people are taken in the order ked, rms, awb, slt, kal until there are min(2, n_test) test base
voices, always leaving one person for training. With everything installed: test = ked_diphone + rms
(2 voices x 4 shifts = 8 speakers), training = the other six voices x 8 shifts = 48 speakers. If only
one person's voices are installed, that is impossible; then test and training use DISJOINT PITCH BANDS
of the same voices (training |cents| in [max/2, max], test within +-max/4; with few voices the shifts
then lie closer together, e.g. 29 cents apart for 48 speakers over three kal voices) and the manifest
says so (`held_out`).
Trials: `make_trials` of datasets/synthetic/speakers.py (all cross-session target pairs, as many
non-target pairs), written by `datasets.voxceleb.layout.write_trials`.

MUSAN. noise/free-sound = the scratch package's sound effects (Media/Sounds/{Animal, Effects,
Electronic, Human, Percussion}, CC-BY-SA-3.0); music/fma = sonic-pi-samples loops (loop_*, ambi_*,
guit_*; flac) and scratch's Music Loops and Instruments; speech/librivox = espeak-ng (formant
synthesis, none of the corpus's voices) reading SENTENCES with seeded English dialects and variants.
Clips are concatenated (noise with short silent gaps) until each file reaches 4-10 s (always >= 3 s).
The packages' files are read from --sounds (a folder where `dpkg-deb -x` unpacked them), /, or
~/.cache/openset_ray/debian-sounds (--fetch-sounds fills it with `apt-get download` + `dpkg-deb -x`).

RIRS_NOISES. This project's own room impulse responses from Polack's statistical model (not the
published image-method set): a unit direct-path impulse after the source-distance delay (small rooms
1-3 m, medium 2-6 m, large 3-12 m, at 343 m/s), then from the next sample on Gaussian noise times
exp(-6.91 t / RT60) with RT60 drawn per room (small 0.2-0.4 s, medium 0.4-0.7 s, large 0.7-1.2 s) and
the tail's energy set by a direct-to-reverberant ratio drawn per response (small 0..10 dB, medium
-3..6, large -6..3); length delay + RT60, peak-normalised. rir_list lines follow Kaldi's
(`--rir-id smallroom-Room001-00001 --room-id smallroom-Room001 simulated_rirs/smallroom/...wav`).

Deterministic: every random choice comes from a numpy Generator seeded by (seed, indices), and the
synthesizers and sox effects used are deterministic, so one seed gives byte-identical files on one
machine (the set of installed voices changes the corpus; the manifest records it). Built in a hidden
temporary folder beside OUT (.OUT.partial-*) and renamed to OUT last: an interrupted run never looks
complete (Ctrl-C removes the partial folder; after a SIGKILL delete it by hand). A rerun with the same
parameters into a finished OUT is a no-op; other parameters into a non-empty OUT are refused.

    python scripts/speaker_voices.py --out /data/tts --seed 0
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from a checkout

from datasets.atomic import write_bytes, write_json, write_text  # noqa: E402
from datasets.audio import encode_wav  # noqa: E402
from datasets.synthetic.speakers import TRIALS_FILE, YT_ALPHABET, make_trials  # noqa: E402
from datasets.voxceleb.layout import write_trials  # noqa: E402

SR = 16000
FORMAT_VERSION = 1  # bump when the output changes for the same parameters
MANIFEST = "speaker_voices.json"
APT = ("apt-get install -y --no-install-recommends flite festival festvox-kallpc16k festvox-kdlpc16k "
       "festvox-us-slt-hts sox espeak-ng")
SOUNDS_CACHE = Path.home() / ".cache" / "openset_ray" / "debian-sounds"
SCRATCH_SOUNDS = "usr/share/scratch/Media/Sounds"
SONIC_PI_SAMPLES = "usr/share/sonic-pi/samples"

# (name, engine, engine's voice name, person, sex). Order = speaker numbering order.
VOICES = (
    ("flite-kal", "flite", "kal", "kal", "m"),
    ("flite-kal16", "flite", "kal16", "kal", "m"),
    ("flite-awb", "flite", "awb", "awb", "m"),
    ("flite-rms", "flite", "rms", "rms", "m"),
    ("flite-slt", "flite", "slt", "slt", "f"),
    ("festival-kal_diphone", "festival", "kal_diphone", "kal", "m"),
    ("festival-ked_diphone", "festival", "ked_diphone", "ked", "m"),
    ("festival-cmu_us_slt_arctic_hts", "festival", "cmu_us_slt_arctic_hts", "slt", "f"),
)
VOICE_PACKAGE = {"flite": "flite", "kal_diphone": "festvox-kallpc16k", "ked_diphone": "festvox-kdlpc16k",
                 "cmu_us_slt_arctic_hts": "festvox-us-slt-hts"}
TEST_PEOPLE = ("ked", "rms", "awb", "slt", "kal")  # preference order for held-out people

# Session nuisance ranges.
TEMPO = (0.85, 1.15)
HIGHPASS = (50.0, 300.0)
LOWPASS = (3400.0, 7600.0)
PEAK_DB = (-12.0, -3.0)
SNR_DB = (20.0, 40.0)

# Augmentation sources.
NOISE_DIRS = ("Animal", "Effects", "Electronic", "Human", "Percussion")          # scratch
MUSIC_DIRS = ("Music Loops", "Instruments")                                      # scratch
MUSIC_PREFIXES = ("loop_", "ambi_", "guit_")                                     # sonic-pi-samples
ESPEAK_DIALECTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
                   "en-gb-x-gbclan", "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "croak", "grandma", "grandpa", "ed", "john", "linda",
                   "steph", "david", "paul", "rob", "travis", "victor", "shelby", "norbert")
MUSAN_DUR = (4.0, 10.0)  # seconds per MUSAN file
ROOMS = {  # size -> (RT60 range s, source distance range m, direct-to-reverberant ratio range dB)
    "smallroom": ((0.2, 0.4), (1.0, 3.0), (0.0, 10.0)),
    "mediumroom": ((0.4, 0.7), (2.0, 6.0), (-3.0, 6.0)),
    "largeroom": ((0.7, 1.2), (3.0, 12.0), (-6.0, 3.0)),
}

SENTENCES = (
    "The morning train was late again because of the snow.",
    "Please put the blue folder on the top shelf.",
    "My grandmother grew tomatoes and beans behind her small house.",
    "We watched the storm roll in across the open fields.",
    "Could you tell me where the nearest pharmacy is?",
    "The committee will announce its decision early next week.",
    "He forgot his umbrella, so he waited under the bridge.",
    "A quiet library is the best place to finish a report.",
    "The children built a tall tower out of wooden blocks.",
    "Turn left at the bakery and walk two more blocks.",
    "Fresh coffee smells wonderful on a cold winter morning.",
    "She played the violin at the concert last Saturday.",
    "Our flight to Denver was cancelled at the last minute.",
    "The old clock in the hallway stopped at half past nine.",
    "Remember to water the plants while I am away.",
    "The river was much higher than anyone had expected.",
    "Several engineers checked the bridge before it reopened.",
    "I would like a window seat near the front, please.",
    "The museum has a new exhibit about ancient sailing ships.",
    "Dinner will be ready in about twenty minutes.",
    "The puppy chased its tail around the kitchen table.",
    "Heavy traffic slowed everyone down on the way home.",
    "They painted the fence bright yellow last summer.",
    "The doctor said I should get more sleep and exercise.",
    "A small boat drifted slowly toward the rocky shore.",
    "Nobody knew who had left the back door open.",
    "The students asked thoughtful questions after the lecture.",
    "We need three more chairs for the meeting room.",
    "The mountain path was steep, narrow, and covered in loose stones.",
    "Her brother fixes old radios in his spare time.",
    "The bakery sells warm bread every morning at seven.",
    "Please speak a little louder, the room is very noisy.",
    "The farmer sold apples and honey at the weekend market.",
    "A sudden gust of wind blew the papers off the desk.",
    "The printer on the second floor is out of paper again.",
    "Our neighbours are planning a big party for the holidays.",
    "The report shows that sales rose by ten percent.",
    "I found an old photograph hidden inside the book.",
    "The city council voted to build a new public park.",
    "Wash the vegetables before you cut them into pieces.",
    "The lighthouse keeper watched the ships pass in the fog.",
    "Most birds fly south before the first frost arrives.",
    "The team celebrated their victory with a long dinner.",
    "He read the instructions twice but still felt confused.",
    "The bus stops right outside the hospital entrance.",
    "Thick clouds covered the valley for most of the afternoon.",
    "She keeps a notebook full of recipes from her travels.",
    "The engine made a strange noise when we started the car.",
    "Tickets for the show sold out within an hour.",
    "We walked along the beach and collected smooth grey pebbles.",
    "The teacher wrote the answer on the board in large letters.",
    "A friendly stranger helped us carry the boxes upstairs.",
    "Every spring the garden fills with tulips and daffodils.",
    "The soup needs a little more salt and pepper.",
    "The pilot announced that we would land in ten minutes.",
    "My phone battery died in the middle of the call.",
    "The orchestra rehearsed the new piece until late at night.",
    "Do not forget to lock the gate when you leave.",
    "The price of fuel has gone up again this month.",
    "A thin layer of dust covered the piano keys.",
)


class UsageError(Exception):
    """Reported as one `error:` line, exit status 2."""


def log(msg: str) -> None:
    print(msg, flush=True)


def _run(cmd: list[str], data: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=data, capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-400:]}")
    return proc.stdout


# ----------------------------------------------------------------------------- voices

def _tts(engine: str, voice: str, text: str, out: Path) -> None:
    """One sentence to a wav file (the engine's own rate: flite kal 8 kHz, slt HTS 32 kHz, others 16 kHz)."""
    if engine == "flite":
        _run(["flite", "-voice", voice, "-t", text, "-o", str(out)])
    else:  # festival; an unknown voice prints a SIOD error, exits 0 and writes nothing
        _run(["text2wave", "-eval", f"(voice_{voice})", "-o", str(out)], text.encode())
    if not out.is_file() or out.stat().st_size <= 44:
        raise RuntimeError(f"{engine} voice {voice} wrote no audio for {text!r}")


def available_voices(work: Path) -> tuple[list[tuple], list[str]]:
    """The VOICES that synthesize here, and a note per missing one."""
    listed = _run(["flite", "-lv"]).decode()
    flite_voices = set(listed.split(":", 1)[-1].split())
    found, notes = [], []
    for v in VOICES:
        name, engine, voice = v[:3]
        if engine == "flite" and voice not in flite_voices:
            notes.append(f"flite voice {voice} not in `flite -lv`; skipped")
            continue
        try:
            _tts(engine, voice, "Testing.", work / f"probe-{name}.wav")
        except (RuntimeError, subprocess.TimeoutExpired):
            pkg = VOICE_PACKAGE.get(voice, engine)
            notes.append(f"{engine} voice {voice} does not synthesize (apt-get install {pkg}); skipped")
            continue
        found.append(v)
    return found, notes


def plan_speakers(voices: list[tuple], n_train: int, n_test: int, max_cents: int) -> tuple[list[dict], str]:
    """[{split, voice, engine, engine_voice, person, sex, cents}] (training first), and how test was held out."""
    people = list(dict.fromkeys(v[3] for v in voices))
    test_people: list[str] = []
    want = min(2, n_test)
    for p in TEST_PEOPLE:
        n_test_voices = sum(v[3] in test_people for v in voices)
        if p in people and n_test_voices < want and len(people) - len(test_people) > 1:
            test_people.append(p)
    if test_people:
        train_v = [v for v in voices if v[3] not in test_people]
        test_v = [v for v in voices if v[3] in test_people]
        train_c = _grid(-max_cents, max_cents, math.ceil(n_train / len(train_v)))
        test_c = _grid(-max_cents, max_cents, math.ceil(n_test / len(test_v)))
        how = f"disjoint people: test = {', '.join(test_people)}"
    else:  # one person only: disjoint pitch bands of the same voices
        train_v = test_v = list(voices)
        k = math.ceil(n_train / len(voices))
        train_c = sorted(_grid(-max_cents, -max_cents / 2, (k + 1) // 2) + _grid(max_cents / 2, max_cents, k // 2))
        test_c = _grid(-max_cents / 4, max_cents / 4, math.ceil(n_test / len(voices)))
        how = (f"one person ({people[0]}) only: disjoint pitch bands, training |cents| in "
               f"[{max_cents / 2:g}, {max_cents}], test within +-{max_cents / 4:g}")
    plan = []
    for split, vs, cents, n in (("dev", train_v, train_c, n_train), ("test", test_v, test_c, n_test)):
        for i in range(n):
            name, engine, voice, person, sex = vs[i % len(vs)]
            plan.append({"split": split, "voice": name, "engine": engine, "engine_voice": voice,
                         "person": person, "sex": sex, "cents": cents[i // len(vs)]})
    return plan, how


def _grid(lo: float, hi: float, k: int) -> list[int]:
    if k <= 0:
        return []
    return [int(round((lo + hi) / 2))] if k == 1 else [int(round(c)) for c in np.linspace(lo, hi, k)]


# ----------------------------------------------------------------------------- corpus workers

def _synth_job(job: tuple) -> str:
    engine, voice, sentence, out = job
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}")
    _tts(engine, voice, SENTENCES[sentence], tmp)
    os.replace(tmp, out)
    return str(out)


def _sox_f32(src: str | None, effects: list[str], data: bytes | None = None, in_fmt: list[str] = ()) -> np.ndarray:
    """sox (file or stdin) -> float32 mono 16 kHz samples, with `effects` before the final rate change."""
    cmd = ["sox", "-R", "-V1", *in_fmt, src or "-", "-t", "f32", "-c", "1", "-r", str(SR), "-", *effects]
    return np.frombuffer(_run(cmd, data), dtype=np.float32).copy()


def _utterance_job(job: dict) -> str:
    rng = np.random.default_rng(job["rng"])
    effects = ["rate", "-v", str(SR)]
    if job["cents"]:
        effects += ["pitch", str(job["cents"])]
    # pitch leaves the signal at another rate (it is tempo + rate); resample before the channel filters
    effects += ["tempo", "-s", f"{job['tempo']:.4f}", "rate", "-v", str(SR), "highpass", f"{job['highpass']:.1f}",
                "lowpass", f"{job['lowpass']:.1f}", "gain", "-n", f"{job['peak_db']:.2f}"]
    x = _sox_f32(job["src"], effects).astype(np.float64)
    rms = np.sqrt(np.mean(x ** 2)) + 1e-9
    x += rng.standard_normal(len(x)) * rms * 10 ** (-job["snr"] / 20)
    write_bytes(job["out"], encode_wav(x.astype(np.float32), SR))
    return job["out"]


# ----------------------------------------------------------------------------- MUSAN workers

@lru_cache(maxsize=512)
def _load_clip(path: str) -> np.ndarray:
    """A source clip at 16 kHz mono float32: wav/flac through sox, mp3 (sox here lacks it) decoded by
    soundfile and resampled by sox."""
    if path.endswith(".mp3"):
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        raw = np.ascontiguousarray(x.mean(axis=1), dtype=np.float32).tobytes()
        y = _sox_f32(None, ["rate", "-v", str(SR)], raw, ["-t", "f32", "-r", str(sr), "-c", "1"])
    else:
        y = _sox_f32(path, ["rate", "-v", str(SR)])
    return y


def _fill(pool: list[str], rng: np.random.Generator, dur: float, gap: tuple[float, float]) -> tuple[np.ndarray, list]:
    """Seeded clips of `pool`, each peak-normalised to a random level, with silent gaps, until `dur` s."""
    parts, used, n = [], [], 0
    for _ in range(10000):
        if n >= dur * SR:
            break
        path = pool[int(rng.integers(len(pool)))]
        clip = _load_clip(path)
        peak = float(np.max(np.abs(clip))) if clip.size else 0.0
        if peak <= 0:  # a silent source clip is skipped
            continue
        parts.append(clip * (rng.uniform(0.3, 0.9) / peak))
        parts.append(np.zeros(int(rng.uniform(*gap) * SR), dtype=np.float32))
        used.append(Path(path).name)
        n += len(parts[-1]) + len(parts[-2])
    if n < dur * SR:
        raise RuntimeError(f"the MUSAN sources ({pool[0]} ...) are silent")
    return np.concatenate(parts)[: int(dur * SR)], used


def _musan_job(job: dict) -> tuple[str, list]:
    rng = np.random.default_rng(job["rng"])
    dur = rng.uniform(*MUSAN_DUR)
    if job["kind"] == "speech":
        x, used = _espeak(rng, dur)
    else:
        gap = (0.05, 0.6) if job["kind"] == "noise" else (0.0, 0.0)
        x, used = _fill(job["pool"], rng, dur, gap)
    write_bytes(job["out"], encode_wav(x.astype(np.float32), SR))
    return job["out"], used


def _espeak(rng: np.random.Generator, dur: float) -> tuple[np.ndarray, list]:
    voice = f"{ESPEAK_DIALECTS[int(rng.integers(len(ESPEAK_DIALECTS)))]}+" \
            f"{ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]}"
    pitch, speed = int(rng.integers(25, 76)), int(rng.integers(140, 191))
    order = rng.permutation(len(SENTENCES))
    x, m = np.zeros(0, dtype=np.float32), 0
    while len(x) < dur * SR:
        m += 2
        text = " ".join(SENTENCES[i] for i in np.resize(order, m))
        wav = _run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text])
        x = _sox_f32(None, ["rate", "-v", str(SR)], wav, ["-t", "wav"])
    return x[: int(dur * SR)], [f"espeak-ng -v {voice} -p {pitch} -s {speed}"]


# ----------------------------------------------------------------------------- RIRs

def polack_rir(rng: np.random.Generator, rt60: float, dist_m: float, drr_db: float) -> np.ndarray:
    """Polack's model: a unit impulse at the direct-path delay, then Gaussian noise decaying by 60 dB in
    RT60 (envelope exp(-6.91 t / RT60)), scaled so direct/tail energy = drr_db; peak-normalised."""
    delay = int(round(dist_m / 343.0 * SR))
    t = np.arange(int(round(rt60 * SR))) / SR
    env = np.exp(-6.91 * t / rt60)
    tail = rng.standard_normal(len(t)) * env
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail ** 2))
    h = np.zeros(delay + 1 + len(t))
    h[delay] = 1.0
    h[delay + 1:] = tail
    return (h / np.max(np.abs(h))).astype(np.float32)


def write_rirs(root: Path, seed: int, rooms: int, per_room: int) -> int:
    n = 0
    for c, (size, (rt_r, dist_r, drr_r)) in enumerate(ROOMS.items()):
        lines = []
        for r in range(1, rooms + 1):
            rt60 = float(np.random.default_rng([seed, 3, c, r]).uniform(*rt_r))
            for m in range(1, per_room + 1):
                rng = np.random.default_rng([seed, 3, c, r, m])
                h = polack_rir(rng, rt60, rng.uniform(*dist_r), rng.uniform(*drr_r))
                rel = f"simulated_rirs/{size}/Room{r:03d}/Room{r:03d}-{m:05d}.wav"
                write_bytes(root / rel, encode_wav(h, SR))
                lines.append(f"--rir-id {size}-Room{r:03d}-{m:05d} --room-id {size}-Room{r:03d} {rel}\n")
                n += 1
        write_text(root / "simulated_rirs" / size / "rir_list", "".join(lines))
    return n


# ----------------------------------------------------------------------------- sound sources

def find_sounds(explicit: str | None = None) -> dict[str, Path]:
    """{'scratch': .../Media/Sounds, 'sonic-pi': .../samples} for the unpacked packages found."""
    roots = [Path(explicit)] if explicit else []
    roots += [Path(p) for p in filter(None, [os.environ.get("SPEAKER_VOICES_SOUNDS")])] + [Path("/"), SOUNDS_CACHE]
    found: dict[str, Path] = {}
    for root in roots:
        for key, rel in (("scratch", SCRATCH_SOUNDS), ("sonic-pi", SONIC_PI_SAMPLES)):
            if key not in found and (root / rel).is_dir():
                found[key] = root / rel
    return found


def fetch_sounds() -> None:
    """apt-get download scratch sonic-pi-samples; dpkg-deb -x both into SOUNDS_CACHE."""
    SOUNDS_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        log(f"fetching scratch and sonic-pi-samples (apt-get download) into {SOUNDS_CACHE}")
        proc = subprocess.run(["apt-get", "download", "scratch", "sonic-pi-samples"], cwd=d,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise UsageError(f"apt-get download scratch sonic-pi-samples failed: {proc.stderr.strip()[-300:]}")
        for deb in sorted(Path(d).glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(SOUNDS_CACHE)])


def sound_pools(sounds: dict[str, Path]) -> dict[str, list[str]]:
    exts = (".wav", ".flac", ".mp3")
    pools: dict[str, list[str]] = {"noise": [], "music": []}
    if "scratch" in sounds:
        for kind, dirs in (("noise", NOISE_DIRS), ("music", MUSIC_DIRS)):
            pools[kind] += [str(p) for d in dirs for p in sorted((sounds["scratch"] / d).glob("*"))
                            if p.suffix.lower() in exts]
    if "sonic-pi" in sounds:
        pools["music"] += [str(p) for p in sorted(sounds["sonic-pi"].glob("*.flac"))
                           if p.name.startswith(MUSIC_PREFIXES)]
    return pools


# ----------------------------------------------------------------------------- build

def _pool_map(pool, fn, jobs: list, what: str, t0: float):
    results, step = [], max(1, len(jobs) // 10)
    for i, r in enumerate(pool.map(fn, jobs, chunksize=1), 1):
        results.append(r)
        if i % step == 0 or i == len(jobs):
            log(f"[{what}] {i}/{len(jobs)} ({time.perf_counter() - t0:.1f} s)")
    return results


def build(tmp: Path, a: argparse.Namespace, pools: dict[str, list[str]], t0: float) -> dict:
    work = tmp / ".work"
    work.mkdir(parents=True)
    voices, notes = available_voices(work)
    for note in notes:
        log(f"note: {note}")
    if not voices:
        raise UsageError(f"no TTS voice synthesizes here: as root, {APT}")
    log(f"base voices: {', '.join(v[0] for v in voices)}")
    plan, how = plan_speakers(voices, a.n_train_speakers, a.n_test_speakers, a.max_cents)
    log(f"test speakers held out by {how}")

    corpus = tmp / "voxceleb1"
    synth: dict[tuple[str, int], str] = {}
    utt_jobs, test_utts, speakers = [], {}, {}
    n_per = a.sessions * a.utts
    for s, spk in enumerate(plan):
        spk_id = f"id{10001 + s:05d}"
        speakers[spk_id] = spk
        order = np.random.default_rng([a.seed, 1, s]).permutation(len(SENTENCES))
        seen: set[str] = set()
        for j in range(a.sessions):
            rng = np.random.default_rng([a.seed, 1, s, j])
            yt = "".join(rng.choice(YT_ALPHABET, size=11))
            while yt in seen:
                yt = "".join(rng.choice(YT_ALPHABET, size=11))
            seen.add(yt)
            ses = {"tempo": rng.uniform(*TEMPO), "highpass": rng.uniform(*HIGHPASS),
                   "lowpass": rng.uniform(*LOWPASS), "peak_db": rng.uniform(*PEAK_DB)}
            for k in range(a.utts):
                sentence = int(order[(j * a.utts + k) % len(SENTENCES)])
                src = synth.setdefault((spk["voice"], sentence), str(work / spk["voice"] / f"{sentence:03d}.wav"))
                rel = f"{spk_id}/{yt}/{k + 1:05d}"
                utt_jobs.append({**ses, "src": src, "cents": spk["cents"], "rng": [a.seed, 1, s, j, k],
                                 "snr": float(np.random.default_rng([a.seed, 2, s, j, k]).uniform(*SNR_DB)),
                                 "out": str(corpus / spk["split"] / "wav" / f"{rel}.wav")})
                if spk["split"] == "test":
                    test_utts.setdefault(spk_id, []).append((j, rel))
    engine = {v[0]: v[1:3] for v in voices}
    synth_jobs = [(*engine[voice], sentence, path) for (voice, sentence), path in sorted(synth.items())]

    musan_jobs = []
    for kind, subset, n in (("noise", "free-sound", a.n_noise), ("music", "fma", a.n_music),
                            ("speech", "librivox", a.n_speech)):
        for i in range(n):
            musan_jobs.append({"kind": kind, "pool": pools.get(kind, []), "rng": [a.seed, 4, len(musan_jobs)],
                               "out": str(tmp / "musan" / kind / subset / f"{kind}-{subset}-{i:04d}.wav")})

    with cf.ProcessPoolExecutor(max_workers=a.jobs) as pool:
        log(f"synthesizing {len(synth_jobs)} (voice, sentence) pairs for {len(plan)} speakers x {n_per} utterances")
        _pool_map(pool, _synth_job, synth_jobs, "tts", t0)
        _pool_map(pool, _utterance_job, utt_jobs, "utterances", t0)
        musan = _pool_map(pool, _musan_job, musan_jobs, "musan", t0) if musan_jobs else []

    trials = make_trials(test_utts, np.random.default_rng([a.seed, 5]))
    write_trials(corpus / TRIALS_FILE, trials)
    n_rirs = write_rirs(tmp / "RIRS_NOISES", a.seed, a.rooms, a.rirs_per_room)
    log(f"[rirs] {n_rirs} ({time.perf_counter() - t0:.1f} s)")
    shutil.rmtree(work)

    counts = {"train_speakers": a.n_train_speakers, "test_speakers": a.n_test_speakers,
              "utterances": len(utt_jobs), "trials": len(trials),
              "target_trials": sum(t.label for t in trials), "musan_noise": a.n_noise, "musan_music": a.n_music,
              "musan_speech": a.n_speech, "rirs": n_rirs}
    manifest = {"params": params(a), "counts": counts, "base_voices": [v[0] for v in voices], "notes": notes,
                "held_out": how, "speakers": speakers,
                "musan_sources": {Path(p).name: used for p, used in musan}}
    write_json(tmp / MANIFEST, manifest)
    return manifest


def params(a: argparse.Namespace) -> dict:
    keys = ("seed", "n_train_speakers", "n_test_speakers", "sessions", "utts", "max_cents", "n_noise", "n_music",
            "n_speech", "rooms", "rirs_per_room")
    return {"format": FORMAT_VERSION, **{k: getattr(a, k) for k in keys}}


def check(a: argparse.Namespace) -> dict[str, list[str]]:
    """Refuse bad arguments and missing tools before any work; returns the MUSAN source pools."""
    if a.seed < 0 or a.n_train_speakers < 1 or a.n_test_speakers < 2 or a.sessions < 1 or a.utts < 1:
        raise UsageError("need --seed >= 0, >= 1 training and >= 2 test speakers, >= 1 session and utterance")
    if a.sessions * a.utts < 2:
        raise UsageError("need >= 2 utterances per speaker (--sessions x --utts) to form target trials")
    if min(a.n_noise, a.n_music, a.n_speech, a.rooms, a.rirs_per_room) < 0 or a.max_cents < 0 or a.jobs < 1:
        raise UsageError("sizes, --max-cents and --jobs must not be negative (--jobs >= 1)")
    missing = [t for t in ("flite", "festival", "text2wave", "sox") if shutil.which(t) is None]
    if a.n_speech and shutil.which("espeak-ng") is None:
        missing.append("espeak-ng")
    if missing:
        raise UsageError(f"{', '.join(missing)} not found on PATH: as root, {APT}")
    if a.fetch_sounds and not find_sounds(a.sounds).keys() >= {"scratch", "sonic-pi"}:
        fetch_sounds()
    sounds = find_sounds(a.sounds)
    pools = sound_pools(sounds)
    for kind, n in (("noise", a.n_noise), ("music", a.n_music)):
        if n and not pools[kind]:
            raise UsageError(
                f"no MUSAN {kind} sources (scratch / sonic-pi-samples sounds) under --sounds, /, or {SOUNDS_CACHE}: "
                "rerun with --fetch-sounds, or `apt-get download scratch sonic-pi-samples` and `dpkg-deb -x` "
                f"both into a folder passed as --sounds (or set --n-{kind} 0)")
    return pools


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train-speakers", type=int, default=48)
    p.add_argument("--n-test-speakers", type=int, default=8)
    p.add_argument("--sessions", type=int, default=3, help="sessions (videos) per speaker")
    p.add_argument("--utts", type=int, default=3, help="utterances per session")
    p.add_argument("--max-cents", type=int, default=400, help="pitch shifts span -max..+max cents")
    p.add_argument("--n-noise", type=int, default=40, help="MUSAN noise files")
    p.add_argument("--n-music", type=int, default=30, help="MUSAN music files")
    p.add_argument("--n-speech", type=int, default=30, help="MUSAN speech files")
    p.add_argument("--rooms", type=int, default=4, help="simulated rooms per room size")
    p.add_argument("--rirs-per-room", type=int, default=5)
    p.add_argument("--sounds", help="folder where scratch / sonic-pi-samples .debs were unpacked (dpkg-deb -x)")
    p.add_argument("--fetch-sounds", action="store_true", help=f"apt-get download them into {SOUNDS_CACHE}")
    p.add_argument("--jobs", type=int, default=2, help="synthesis processes")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(a.out).resolve()
    try:
        pools = check(a)
        if (out / MANIFEST).is_file():
            old = json.loads((out / MANIFEST).read_text())
            if old.get("params") == params(a):
                log(f"{out} already holds this build ({MANIFEST}); nothing to do")
                return 0
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"{out} exists and is not an empty folder or a build of these parameters: "
                             "delete it or choose another --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would become OUT's
        try:
            manifest = build(tmp, a, pools, t0)
            if out.exists():
                out.rmdir()
            os.rename(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # a synthesizer or sox failed
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: nothing written to {out}", file=sys.stderr)
        return 130
    c = manifest["counts"]
    log(f"done in {time.perf_counter() - t0:.1f} s; base voices: {', '.join(manifest['base_voices'])}")
    log(f"  {out / 'voxceleb1'}: {c['train_speakers']} training + {c['test_speakers']} test speakers, "
        f"{c['utterances']} utterances, {c['trials']} trials ({c['target_trials']} target) in {TRIALS_FILE}")
    log(f"  {out / 'musan'}: noise {c['musan_noise']}, music {c['musan_music']}, speech {c['musan_speech']}")
    log(f"  {out / 'RIRS_NOISES'}: {c['rirs']} simulated RIRs ({', '.join(ROOMS)} x {a.rooms} rooms)")
    log(f"  {out / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
