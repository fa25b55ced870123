"""A small generated paired voice-face corpus in the VoxCeleb1 + vox1_meta.csv + VGGFace layouts, for the
voice-guided face morphing demo and tests.

    root/voices/wav/idNNNNN/<11-char video id>/NNNNN.wav   16-bit mono (VoxCeleb1 layout)
    root/voices/vox1_meta.csv                                VoxCeleb1 id -> VGGFace1 name, gender, nationality, set
    root/faces/<VGGFace1 name>/NNNNNNNN.jpg                  VGGFace layout (names may hold dots: "A.J._...")

Why synthetic: VoxCeleb and VGGFace cannot be shipped or downloaded here, and a morphing model can only learn
a voice-face correlation that exists. Each identity draws three latent attributes that drive BOTH modalities:
gender (voice: pitch range and formant scale; face: face height and hair), body size s in [0, 1] (voice: lower
pitch and longer vocal tract, i.e. lower formants; face: a wider face) and tone t in [0, 1] (voice: spectral
tilt and breathiness; face: skin tone). Everything else of the voice (colouring, bandwidths, rate, intonation)
and of the face (eyes, nose, mouth, hair colour, iris) is drawn independently per identity, so the voice tells
only part of the face. Voices and faces come from the speaker and face generators (datasets/synthetic/
speakers.py, faces.py) with those attributes set: session nuisance for voices, pose/lighting for faces.

Names: test identities (names starting with A-E, the earlier work's split) and training identities (F-W).
Deterministic per (seed, indices); `.complete` (written last) records the parameters.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from datasets.atomic import write_bytes
from datasets.audio import encode_wav
from datasets.morph import META_FILE, write_vox1_meta
from datasets.synthetic import faces as face_gen
from datasets.synthetic import speakers as voice_gen
from datasets.synthetic.marker import already_generated, mark_complete, refuse_strays

FORMAT_VERSION = 1
FIRST = {"A": "Ada", "B": "Bruno", "C": "Cleo", "D": "Dario", "E": "Elena", "F": "Felix", "G": "Greta",
         "H": "Hugo", "I": "Ines", "J": "Jonas", "K": "Kira", "L": "Lorenzo", "M": "Mara", "N": "Nils",
         "O": "Olga", "P": "Pavel", "R": "Rosa", "S": "Sven", "T": "Tess", "W": "Walt"}
TEST_LETTERS, TRAIN_LETTERS = "ABCDE", "FGHIJKLMNOPRSTW"


def identity_name(i: int, test: bool) -> str:
    """Name of the i-th test or training identity; every 5th gets VGGFace's dotted initials ("A.J._Synth003")."""
    letters = TEST_LETTERS if test else TRAIN_LETTERS
    letter = letters[i % len(letters)]
    first = f"{letter}.J." if i % 5 == 4 else FIRST[letter]
    return f"{first}_Synth{i + 1:03d}"


def attributes(rng: np.random.Generator) -> dict:
    """The latent identity attributes shared by voice and face."""
    return {"female": bool(rng.random() < 0.5), "size": float(rng.uniform()), "tone": float(rng.uniform())}


def voice_of(attr: dict, rng: np.random.Generator) -> dict:
    """The speaker generator's voice parameters, with pitch, formant scale, tilt and breathiness set by
    the attributes (the rest drawn independently)."""
    spk = voice_gen._speaker(rng)
    lo, hi = (165.0, 255.0) if attr["female"] else (90.0, 145.0)
    spk["f0"] = float(np.exp(np.log(hi) - attr["size"] * (np.log(hi) - np.log(lo))))   # bigger: lower pitch
    vlo, vhi = (1.06, 1.22) if attr["female"] else (0.9, 1.04)
    spk["vtl"] = float(vhi - attr["size"] * (vhi - vlo))                                # bigger: lower formants
    spk["tilt"] = float(0.2 + 0.5 * attr["tone"])
    spk["breath"] = float(0.02 + 0.2 * attr["tone"])
    return spk


def face_of(attr: dict, rng: np.random.Generator) -> dict:
    """The face generator's drawing parameters, with width, height, hair and skin set by the attributes."""
    ident = face_gen._identity(rng)
    ident["face_w"] = 0.28 + 0.12 * attr["size"]
    ident["face_h"] = rng.uniform(0.36, 0.40) if attr["female"] else rng.uniform(0.41, 0.46)
    ident["hair_h"] = rng.uniform(0.15, 0.22) if attr["female"] else rng.uniform(0.04, 0.09)
    ident["skin"] = attr["tone"] * np.array([-135.0, -135.0, -130.0]) + np.array([245.0, 205.0, 180.0]) \
        + rng.normal(0, 6, 3)
    return ident


def _jpeg(png: bytes) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(io.BytesIO(png)) as img:
        img.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def generate_morph_corpus(root, *, n_train_ids: int = 40, n_test_ids: int = 12, sessions: int = 2,
                          utts_per_session: int = 2, images_per_id: int = 6, image_size: int = 64,
                          sample_rate: int = 16000, min_dur: float = 1.5, max_dur: float = 2.5,
                          seed: int = 0) -> Path:
    """Write the corpus under `root` (layout in the module docstring); return `root`."""
    root = Path(root)
    params = {"format": FORMAT_VERSION, "n_train_ids": n_train_ids, "n_test_ids": n_test_ids, "sessions": sessions,
              "utts_per_session": utts_per_session, "images_per_id": images_per_id, "image_size": image_size,
              "sample_rate": sample_rate, "min_dur": min_dur, "max_dur": max_dur, "seed": seed}
    if n_train_ids < 2 or n_test_ids < 2 or sessions < 1 or utts_per_session < 1 or images_per_id < 1:
        raise ValueError("need >= 2 training and test identities, >= 1 session, utterance and image per identity")
    if not 0 < min_dur <= max_dur or image_size < 16 or seed < 0:
        raise ValueError("need 0 < min_dur <= max_dur, image_size >= 16 and seed >= 0")
    if already_generated(root, params, f"voices/{META_FILE}", "synthetic paired voice-face corpus"):
        return root
    names = [(identity_name(i, True), True) for i in range(n_test_ids)] + \
        [(identity_name(i, False), False) for i in range(n_train_ids)]
    names.sort()   # VoxCeleb1 numbers its speakers in name order
    written: set[Path] = set()
    meta = []
    for i, (name, test) in enumerate(names):
        vox = f"id{10001 + i:05d}"
        attr = attributes(np.random.default_rng([seed, i, 0]))
        spk = voice_of(attr, np.random.default_rng([seed, i, 1]))
        seen: set[str] = set()
        for j in range(sessions):
            ses_rng = np.random.default_rng([seed, i, 2, j])
            ses = voice_gen._session(ses_rng, sample_rate)
            while ses["yt"] in seen:
                ses["yt"] = "".join(ses_rng.choice(voice_gen.YT_ALPHABET, size=11))
            seen.add(ses["yt"])
            for k in range(utts_per_session):
                rng = np.random.default_rng([seed, i, 3, j, k])
                x = voice_gen._utterance(spk, ses, rng, sample_rate, rng.uniform(min_dur, max_dur))
                path = root / "voices" / "wav" / vox / ses["yt"] / f"{k + 1:05d}.wav"
                write_bytes(path, encode_wav(x, sample_rate))
                written.add(path)
        ident = face_of(attr, np.random.default_rng([seed, i, 4]))
        for k in range(images_per_id):
            path = root / "faces" / name / f"{k + 1:08d}.jpg"
            write_bytes(path, _jpeg(face_gen._draw(ident, np.random.default_rng([seed, i, 5, k]), image_size)))
            written.add(path)
        meta.append((vox, name, "f" if attr["female"] else "m", "Synthland", "test" if test else "dev"))
    refuse_strays(root, (p for sub in ("voices/wav", "faces") for p in (root / sub).rglob("*") if p.is_file()),
                  written)
    write_vox1_meta(root / "voices" / META_FILE, meta)
    mark_complete(root, params)
    return root
