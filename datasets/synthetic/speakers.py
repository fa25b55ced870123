"""A small generated multi-speaker corpus in exactly the VoxCeleb1 layout, for tests and demos.

    root/wav/idNNNNN/<11-char video id>/NNNNN.wav   16-bit mono
    root/veri_test2.txt                              trials among the test speakers only

Why synthetic: VoxCeleb cannot be shipped or downloaded here, but the speaker-verification
pipeline needs a corpus where speaker identity is learnable yet not trivial. Each speaker is a
source-filter voice (glottal pulse train at the speaker's pitch, the speaker's vocal-tract
scaling, formant bandwidths, spectral tilt, breathiness, a static spectral colouring, speaking
rate). Each session (one "video") adds nuisance a speaker model must ignore: a random channel
EQ and band limit, room reverb, background noise at 12-30 dB SNR, a pitch and level offset. Each
utterance is random "syllables" (vowel formant targets, optional consonant noise bursts) with
its own intonation. Target trials always cross sessions, so channel variation is present.

Deterministic: every speaker / session / utterance draws from its own numpy Generator seeded by
(seed, indices), so the same seed gives byte-identical files. `.complete` (written last) records
the parameters; a rerun with the same parameters is a no-op.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import signal

from datasets.atomic import write_bytes
from datasets.audio import encode_wav
from datasets.synthetic.marker import already_generated, mark_complete, refuse_strays
from datasets.voxceleb.layout import Trial, write_trials

TRIALS_FILE = "veri_test2.txt"
FORMAT_VERSION = 1  # bump when the generated audio changes, so old markers stop matching

# Difficulty knobs, tuned so that cosine scoring of time-averaged 80-dim fbank (the long-term
# spectrum, i.e. what an untrained encoder mostly sees) lands near 20-35% EER on the default
# corpus: speaker identity must survive session nuisance, but not trivially. Levels in dB.
COLOR_DB = 15.0            # speaker's static colouring: +-dB at each of COLOR_BANDS (Hz)
COLOR_BANDS = (300, 600, 1100, 1900, 3000, 4500, 6500)
EQ_DB, N_EQ = 4.0, (2, 5)  # session channel EQ: +-dB per band, [lo, hi) number of bands
LOWPASS, HIGHPASS = (4500, 7600), (50, 250)  # session band limits (Hz)
SNR = (12.0, 30.0)         # session background-noise SNR; wider/lower ranges drown speaker cues
NOISE_POLE = (0.8, 0.85)   # two-pole low-pass on white noise ~ speech-shaped room noise; a wide
                           # range here makes the high bands pure session identity
TILT = (0.2, 0.7)          # speaker's glottal spectral tilt (one-pole coefficient)
LEVEL_DB = 3.0             # session level: -24 +- LEVEL_DB dBFS
PAUSE = (0.08, 0.3, 0.12)  # pause length range (s) and probability after a syllable
FLOOR = 10 ** (-45 / 20)   # electronic noise floor relative to the signal RMS
YT_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"))

# Adult-male vowel formants F1-F3 (Hz, Peterson & Barney style); F4 added per speaker.
_VOWELS = np.array([
    [270, 2290, 3010], [400, 2000, 2550], [530, 1840, 2480], [660, 1720, 2410],
    [730, 1090, 2440], [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240], [490, 1350, 1690],
], dtype=np.float64)


# ----------------------------------------------------------------------------- speaker / session

def _speaker(rng: np.random.Generator) -> dict:
    female = rng.random() < 0.5
    lo, hi = (160.0, 260.0) if female else (90.0, 150.0)
    return {
        "f0": float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        "vtl": float(rng.uniform(1.06, 1.22) if female else rng.uniform(0.9, 1.04)),  # formant scale
        "bw": float(rng.uniform(0.7, 1.6)),                   # formant bandwidth scale
        "tilt": float(rng.uniform(*TILT)),                   # one-pole low-pass: spectral tilt
        "oq": float(rng.uniform(0.4, 0.75)),                  # glottal open quotient (harmonic richness)
        "breath": float(rng.uniform(0.02, 0.25)),             # aspiration noise level
        "f4": float(rng.uniform(3300, 4200)),
        # Static vocal-tract / nasal colouring: (Hz, dB, Q) peaks applied to all the speech.
        "color": [(float(f * rng.uniform(0.85, 1.15)), float(rng.uniform(-COLOR_DB, COLOR_DB)), 1.4)
                  for f in COLOR_BANDS],
        "vowel_bias": rng.normal(1.0, 0.05, size=_VOWELS.shape),  # personal vowel realisation
        "syl": float(rng.uniform(0.13, 0.26)),                # mean syllable duration (s)
        "into": float(rng.uniform(0.04, 0.18)),               # intonation depth
        "jitter": float(rng.uniform(0.003, 0.02)),
    }


def _session(rng: np.random.Generator, sr: int) -> dict:
    nyq = sr / 2
    sos = [signal.butter(2, min(rng.uniform(*HIGHPASS), 0.4 * nyq) / nyq, "highpass", output="sos"),
           signal.butter(2, min(rng.uniform(*LOWPASS), 0.9 * nyq) / nyq, "lowpass", output="sos")]
    for _ in range(int(rng.integers(*N_EQ))):  # random EQ: the "microphone / codec" colouring
        sos.append(_peaking(min(rng.uniform(150, 5000), 0.8 * nyq), rng.uniform(-EQ_DB, EQ_DB),
                            rng.uniform(0.5, 2.0), sr))
    rir = None
    if rng.random() < 0.6:
        rt60 = rng.uniform(0.1, 0.45)
        n = int(rt60 * sr)
        rir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * rng.uniform(0.05, 0.3)
        rir[0] = 1.0
    return {
        "sos": np.concatenate(sos),
        "rir": rir,
        "snr": float(rng.uniform(*SNR)),
        "noise_pole": float(rng.uniform(*NOISE_POLE)),
        "hum": float(rng.choice([0.0, 50.0, 60.0], p=[0.6, 0.2, 0.2])),
        "pitch": float(np.exp(rng.normal(0, 0.05))),
        "rate": float(rng.uniform(0.9, 1.1)),
        "level_db": float(rng.uniform(-LEVEL_DB, LEVEL_DB) - 24),
        "yt": "".join(rng.choice(YT_ALPHABET, size=11)),
    }


def _peaking(f: float, gain_db: float, q: float, sr: int) -> np.ndarray:
    # RBJ audio-EQ-cookbook peaking biquad as one sos row.
    a, w = 10 ** (gain_db / 40), 2 * np.pi * f / sr
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def _resonators(freqs, bws, sr: int) -> np.ndarray:
    # Klatt cascade resonators (unity DC gain) as sos rows.
    rows = []
    for f, b in zip(freqs, bws):
        f = min(f, 0.45 * sr)
        r = np.exp(-np.pi * b / sr)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / sr), r * r
        rows.append([1 + a1 + a2, 0, 0, 1, a1, a2])
    return np.array(rows)


@lru_cache(maxsize=32)
def _consonant_sos(kind: int, sr: int) -> np.ndarray:
    nyq = sr / 2
    band = [(4000, 7000), (2200, 4000), (1000, 6500), (1500, 3000)][kind]
    lo, hi = min(band[0], 0.7 * nyq), min(band[1], 0.95 * nyq)
    return signal.butter(2, [lo / nyq, hi / nyq], "bandpass", output="sos")


# ----------------------------------------------------------------------------- one utterance

def _utterance(spk: dict, ses: dict, rng: np.random.Generator, sr: int, dur: float) -> np.ndarray:
    n = int(dur * sr)
    # Syllable plan: (start, length) with short gaps and occasional pauses.
    plan, t = [], int(rng.uniform(0.02, 0.1) * sr)
    while t < n - int(0.05 * sr):
        length = int(spk["syl"] * ses["rate"] * rng.lognormal(0, 0.25) * sr)
        length = min(length, n - t)
        plan.append((t, length))
        # Mostly connected speech (syllables overlap a little), occasional pauses.
        gap = rng.uniform(PAUSE[0], PAUSE[1]) if rng.random() < PAUSE[2] else rng.uniform(-0.03, 0.01)
        t = max(t + length + int(gap * sr), t + length // 2)

    # Pitch: speaker x session, declination, slow wander, per-syllable accents, jitter.
    tt = np.arange(n) / sr
    wander = sum(rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * tt + rng.uniform(0, 6.3))
                 for _ in range(2))
    f0 = spk["f0"] * ses["pitch"] * np.exp(rng.uniform(-0.08, 0.08)) * (
        1 + spk["into"] * (0.5 * wander + np.linspace(0.5, -0.5, n) * rng.uniform(0.3, 1.0)))
    for s, length in plan:
        f0[s:s + length] *= 1 + spk["into"] * rng.normal(0, 0.5) * np.hanning(length)
    f0 *= 1 + spk["jitter"] * signal.lfilter([1.0], [1, -0.9], rng.standard_normal(n)) * 0.3
    f0 = np.clip(f0, 50, 0.2 * sr)

    # Glottal source: Rosenberg pulse per period, differentiated (flow derivative), then tilt.
    frac = np.cumsum(f0 / sr) % 1.0
    oq = spk["oq"]
    tp, tn = 0.6 * oq, 0.4 * oq
    flow = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                    np.where(frac < tp + tn, np.cos(0.5 * np.pi * np.clip((frac - tp) / tn, 0, 1)), 0.0))
    src = np.diff(flow, prepend=0.0)
    src = signal.lfilter([1 - spk["tilt"]], [1, -spk["tilt"]], src) * 20
    src += spk["breath"] * 0.1 * rng.standard_normal(n) * (flow + 0.2)

    out = np.zeros(n + int(0.05 * sr))
    bws = np.array([60, 90, 130, 180]) * spk["bw"]
    color = np.concatenate([_peaking(min(f, 0.4 * sr), g, q, sr) for f, g, q in spk["color"]])
    for s, length in plan:
        v = int(rng.integers(len(_VOWELS)))
        formants = np.append(_VOWELS[v] * spk["vowel_bias"][v], spk["f4"]) * spk["vtl"] * rng.normal(1, 0.03, 4)
        sos = np.concatenate([_resonators(formants, bws, sr), color])
        att = max(2, min(length // 3, int(rng.uniform(0.015, 0.04) * sr)))
        env = np.ones(length)
        env[:att] = np.linspace(0, 1, att)
        env[-att:] = np.linspace(1, 0, att) ** 2
        seg = signal.sosfilt(sos, np.concatenate([src[s:s + length] * env, np.zeros(int(0.03 * sr))]))
        out[s:s + len(seg)] += seg * rng.lognormal(0, 0.3)
        cl = min(s, int(rng.uniform(0.02, 0.08) * sr))
        if rng.random() < 0.5 and cl > 0:  # consonant noise just before the vowel
            burst = signal.sosfilt(np.concatenate([_consonant_sos(int(rng.integers(4)), sr), color]),
                                   rng.standard_normal(cl))
            out[s - cl:s] += burst * np.hanning(cl) * rng.uniform(0.05, 0.3) * np.std(seg)
    x = out[:n]

    # Session: room reverb, room noise at the session SNR, then the microphone/codec channel
    # (which colours speech and room noise alike), then mains hum and a faint electronic floor.
    if ses["rir"] is not None:
        x = signal.fftconvolve(x, ses["rir"])[:n]
    noise = signal.lfilter([1.0], np.poly([ses["noise_pole"]] * 2), rng.standard_normal(n))
    snr = ses["snr"] + rng.normal(0, 1.5)
    x = x + noise * np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2) / 10 ** (snr / 10))
    x = signal.sosfilt(ses["sos"], x)
    rms = np.sqrt(np.mean(x ** 2))
    if ses["hum"]:
        x += sum(np.sin(2 * np.pi * ses["hum"] * k * tt + k) / k for k in (1, 2, 3)) * rms * 10 ** (-(snr + 6) / 20)
    x += rng.standard_normal(n) * rms * FLOOR
    x *= 10 ** ((ses["level_db"] + rng.normal(0, 1)) / 20) / (np.sqrt(np.mean(x ** 2)) + 1e-12)
    peak = np.max(np.abs(x))
    return (x * (0.95 / peak) if peak > 0.95 else x).astype(np.float32)


# ----------------------------------------------------------------------------- corpus

def _params(**kw) -> dict:
    return {"format": FORMAT_VERSION, **kw}


def generate_corpus(root, *, n_train_speakers: int = 24, n_test_speakers: int = 8,
                    sessions_per_speaker: int = 3, utts_per_session: int = 4,
                    sample_rate: int = 16000, seed: int = 0,
                    min_dur: float = 2.5, max_dur: float = 5.0) -> Path:
    """Write the corpus under `root` (VoxCeleb1 layout, see module docstring); return `root`."""
    root = Path(root)
    params = _params(n_train_speakers=n_train_speakers, n_test_speakers=n_test_speakers,
                     sessions_per_speaker=sessions_per_speaker, utts_per_session=utts_per_session,
                     sample_rate=sample_rate, seed=seed, min_dur=min_dur, max_dur=max_dur)
    if n_train_speakers < 1 or n_test_speakers < 2 or sessions_per_speaker < 1 or utts_per_session < 1:
        raise ValueError("need >= 1 train speaker, >= 2 test speakers, >= 1 session and >= 1 utterance per session")
    if sessions_per_speaker * utts_per_session < 2:
        raise ValueError("need >= 2 utterances per speaker to form target trials")
    if not 0 < min_dur <= max_dur or sample_rate < 8000 or seed < 0:
        raise ValueError("need 0 < min_dur <= max_dur, sample_rate >= 8000 and seed >= 0")

    if already_generated(root, params, TRIALS_FILE, "synthetic corpus"):
        return root

    n_spk = n_train_speakers + n_test_speakers
    wav_dir = root / "wav"
    written: list[Path] = []
    test_utts: dict[str, list[tuple[int, str]]] = {}  # speaker -> [(session, key)]
    for i in range(n_spk):
        spk_id = f"id{10001 + i:05d}"
        spk = _speaker(np.random.default_rng([seed, i]))
        seen: set[str] = set()
        for j in range(sessions_per_speaker):
            ses_rng = np.random.default_rng([seed, i, j])
            ses = _session(ses_rng, sample_rate)
            while ses["yt"] in seen:  # collision is ~impossible, but ids must be unique per speaker
                ses["yt"] = "".join(ses_rng.choice(YT_ALPHABET, size=11))
            seen.add(ses["yt"])
            for k in range(utts_per_session):
                rng = np.random.default_rng([seed, i, j, k])
                x = _utterance(spk, ses, rng, sample_rate, rng.uniform(min_dur, max_dur))
                rel = f"{spk_id}/{ses['yt']}/{k + 1:05d}"
                path = wav_dir / f"{rel}.wav"
                write_bytes(path, encode_wav(x, sample_rate))
                written.append(path)
                if i >= n_train_speakers:
                    test_utts.setdefault(spk_id, []).append((j, rel))

    refuse_strays(root, wav_dir.rglob("*.wav"), written)
    write_trials(root / TRIALS_FILE, make_trials(test_utts, np.random.default_rng([seed, 1 << 20])))
    mark_complete(root, params)
    return root


def make_trials(test_utts: dict[str, list[tuple[int, str]]], rng: np.random.Generator) -> list[Trial]:
    """All cross-session target pairs (all pairs if a speaker has one session), and as many
    distinct random non-target pairs, shuffled."""
    targets = []
    for utts in test_utts.values():
        multi = len({s for s, _ in utts}) > 1
        targets += [(a, b) for (sa, a), (sb, b) in itertools.combinations(utts, 2) if sa != sb or not multi]
    keys = [(spk, key) for spk, utts in test_utts.items() for _, key in utts]
    nontargets: set[tuple[str, str]] = set()
    max_nt = sum(len(a) * len(b) for (_, a), (_, b) in itertools.combinations(test_utts.items(), 2))
    want = min(len(targets), max_nt)
    while len(nontargets) < want:
        (sa, a), (sb, b) = (keys[i] for i in rng.integers(len(keys), size=2))
        if sa != sb:
            nontargets.add((min(a, b), max(a, b)))
    trials = [Trial(1, a, b) for a, b in targets] + [Trial(0, a, b) for a, b in sorted(nontargets)]
    order = rng.permutation(len(trials))
    return [trials[i] for i in order]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m datasets.synthetic.speakers", description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train-speakers", type=int, default=24)
    p.add_argument("--n-test-speakers", type=int, default=8)
    p.add_argument("--sessions-per-speaker", type=int, default=3)
    p.add_argument("--utts-per-session", type=int, default=4)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--min-dur", type=float, default=2.5)
    p.add_argument("--max-dur", type=float, default=5.0)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        root = generate_corpus(a.out_dir, n_train_speakers=a.n_train_speakers, n_test_speakers=a.n_test_speakers,
                               sessions_per_speaker=a.sessions_per_speaker, utts_per_session=a.utts_per_session,
                               sample_rate=a.sample_rate, seed=a.seed, min_dur=a.min_dur, max_dur=a.max_dur)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"synthetic VoxCeleb1-layout corpus at {root} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
