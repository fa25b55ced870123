"""Paired voice-face corpora (voice-guided face morphing, arXiv 2107.07988) -> identities, splits and shards.

Accepted layouts (the real ones, as distributed):
  * voices: VoxCeleb1  <voice root>/wav/idXXXXX/<video>/NNNNN.wav, or <voice root>/{dev,test}/wav/... (both
    scanned: the morphing split is by name, not VoxCeleb's dev/test)
  * vox1_meta.csv (VoxCeleb1's, tab-separated despite its name):
        VoxCeleb1 ID<TAB>VGGFace1 ID<TAB>Gender<TAB>Nationality<TAB>Set
        id10001<TAB>A.J._Buckley<TAB>m<TAB>Ireland<TAB>dev
    default path: <voice root>/vox1_meta.csv
  * faces: VGGFace (1)  <face root>/<VGGFace1 name>/<image>.jpg, or VGGFace2 <face root>/n000001/<image>.jpg with
    identity_meta.csv (`Class_ID, Name, Sample_Num, Flag, Gender`, names quoted) in the face root or its parent.

Pairing is by name, as the group's earlier voice-to-face code does (VoxCeleb1 id -> VGGFace1 name via the meta
file; the face folder's name, or VGGFace2's Name). Every VoxCeleb1 speaker must be paired: a speaker missing from
vox1_meta.csv, or whose name has no face folder, or a paired identity with no images or no utterances, is named in
one LayoutError listing them all; with `skip_bad` they are left out and listed instead. Face folders of names
with no voice are ignored (VGGFace holds ~2600 identities, VoxCeleb1 1251): counted, not an error.

Split by identity: names whose first letter is in `test_initials` (A-E, as the earlier work) are test identities.
Keys are the relative paths without extension, dots escaped (datasets.voxceleb.layout.relpath_to_key): VGGFace
names hold dots ("A.J._Buckley"). Shards go through the one writer (datasets/shards.py) with one label space:
the index of the identity's name in its split's sorted name list, the same for its voice and its face shards.
"""
from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.errors import LayoutError
from datasets.faces import IMAGE_EXTS, FaceImage, build_face_shards
from datasets.shards import build_shards
from datasets.voxceleb.layout import AUDIO_DIRS, relpath_to_key
from datasets.voxceleb.shards import decode_utterance

META_FILE = "vox1_meta.csv"
META_HEADER = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
VGGFACE2_META = "identity_meta.csv"


@dataclass(frozen=True)
class Voice:
    key: str       # "id10001/1zcIwhmdeo4/00001"
    path: str
    name: str      # the identity's VGGFace1 name


@dataclass
class PairedLayout:
    identities: dict = field(default_factory=dict)   # split -> sorted names
    voices: dict = field(default_factory=dict)       # split -> [Voice], sorted by key
    faces: dict = field(default_factory=dict)        # split -> [FaceImage] (identity = name), sorted by key
    gender: dict = field(default_factory=dict)       # name -> "m" | "f" (from the meta file)
    skipped: list = field(default_factory=list)      # "what: why" of every left-out speaker/identity
    unpaired_faces: int = 0                          # face folders of names with no voice (ignored)


def read_vox1_meta(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """{VoxCeleb1 id: (VGGFace1 name, gender)} from vox1_meta.csv; a malformed line is named with its number."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path} not found: pass VoxCeleb1's vox1_meta.csv (tab-separated: "
                          f"{' / '.join(META_HEADER)}) with --meta, or put it in the voice root")
    out: dict[str, tuple[str, str]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = f.read().splitlines()
    if not lines or tuple(c.strip() for c in lines[0].split("\t")) != META_HEADER:
        raise LayoutError(f"{path}:1: header is {lines[0]!r} if any; expected the tab-separated "
                          f"{chr(9).join(META_HEADER)!r} of VoxCeleb1's vox1_meta.csv")
    names: dict[str, str] = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        if len(cols) != 5 or not cols[0] or not cols[1]:
            raise LayoutError(f"{path}:{n}: malformed line {line!r}: expected 5 tab-separated columns "
                              f"({', '.join(META_HEADER)})")
        vox, name, gender = cols[0], cols[1], cols[2].lower()
        if vox in out or name in names:
            raise LayoutError(f"{path}:{n}: {vox if vox in out else name} appears twice (also for "
                              f"{out[vox][0] if vox in out else names[name]}); fix the meta file")
        out[vox], names[name] = (name, gender), vox
    return out


def write_vox1_meta(path: str | os.PathLike, rows: list[tuple[str, str, str, str, str]]) -> None:
    """Write rows (id, name, gender, nationality, set) in vox1_meta.csv's tab-separated format, atomically."""
    from datasets.atomic import write_text

    write_text(path, "\n".join("\t".join(r) for r in [META_HEADER, *rows]) + "\n")


def _voice_dirs(root: Path) -> list[Path]:
    dirs = [p / name for p in (root, root / "dev", root / "test") for name in ("wav",) if (p / name).is_dir()]
    if not dirs:
        aac = [p / "aac" for p in (root, root / "dev", root / "test") if (p / "aac").is_dir()]
        hint = (f" (found {aac[0]}: VoxCeleb2's m4a; this workflow reads VoxCeleb1's wav folders)" if aac else "")
        raise LayoutError(f"no wav folder in the voice root {root}: expected VoxCeleb1's "
                          f"{root}/wav/idXXXXX/<video>/NNNNN.wav or {root}/{{dev,test}}/wav/...{hint}")
    return dirs


def scan_voices(root: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """{VoxCeleb1 id: [(key, path)]} of every <id>/<video>/<n>.wav (a speaker folder with none maps to [])."""
    out: dict[str, list[tuple[str, str]]] = {}
    ext = AUDIO_DIRS["wav"]
    for audio in _voice_dirs(Path(root)):
        for spk in sorted(p for p in audio.iterdir() if p.is_dir() and not p.name.startswith(".")):
            utts = out.setdefault(spk.name, [])
            for vid in sorted(p for p in spk.iterdir() if p.is_dir() and not p.name.startswith(".")):
                for f in sorted(vid.iterdir()):
                    if f.is_file() and f.name.endswith(ext) and not f.name.startswith("."):
                        utts.append((relpath_to_key(f"{spk.name}/{vid.name}/{f.name}"), str(f.resolve())))
    return out


def _vggface2_names(face_root: Path) -> dict[str, str] | None:
    """{class id: name} from VGGFace2's identity_meta.csv beside the face folders, None if absent."""
    for path in (face_root / VGGFACE2_META, face_root.parent / VGGFACE2_META):
        if path.is_file():
            with open(path, encoding="utf-8-sig", newline="") as f:
                rows = list(csv.reader(f, skipinitialspace=True))
            if not rows or [c.strip() for c in rows[0][:2]] != ["Class_ID", "Name"]:
                raise LayoutError(f"{path}:1: expected VGGFace2's header 'Class_ID, Name, Sample_Num, Flag, Gender'")
            return {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2}
    return None


def scan_faces(face_root: str | os.PathLike) -> dict[str, list[FaceImage]]:
    """{name: [FaceImage]} of the face folders (VGGFace: folder = name; VGGFace2: via identity_meta.csv).
    A folder with no images is kept with [] (the pairing decides whether that matters)."""
    root = Path(face_root)
    if not root.is_dir():
        raise LayoutError(f"face root {root} does not exist or is not a folder: expected VGGFace's "
                          "<name>/<image>.jpg (or VGGFace2's n000001/<image>.jpg with identity_meta.csv)")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    by_id = _vggface2_names(root)
    out: dict[str, list[FaceImage]] = {}
    for folder in folders:
        name = by_id.get(folder, folder) if by_id is not None else folder
        out[name] = _folder_images(root, folder, name)
    if not out:
        raise LayoutError(f"no identity folders under the face root {root}: expected <name>/<image>.jpg")
    return out


def _folder_images(root: Path, folder: str, name: str) -> list[FaceImage]:
    """One identity folder's images (.jpg/.jpeg/.png, hidden skipped), keyed by path relative to `root`."""
    base = root / folder
    files = sorted(f.name for f in base.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.name.lower().endswith(IMAGE_EXTS))
    return [FaceImage(relpath_to_key(f"{folder}/{f}"), str((base / f).resolve()), name) for f in files]


def find_pairs(voice_root: str | os.PathLike, face_root: str | os.PathLike, meta: str | os.PathLike | None = None,
               *, test_initials: str = "ABCDE", skip_bad: bool = False, max_utts: int = 0, max_images: int = 0,
               seed: int = 0) -> PairedLayout:
    """Pair VoxCeleb1 speakers with face folders by name; split by identity (see the module docstring).
    `max_utts` / `max_images` (> 0): a seeded subset per identity (VoxCeleb1 has ~120 utterances a speaker)."""
    voice_root = Path(voice_root)
    if not voice_root.is_dir():
        raise LayoutError(f"voice root {voice_root} does not exist or is not a folder: expected VoxCeleb1's "
                          "wav/idXXXXX/<video>/NNNNN.wav")
    vox_meta = read_vox1_meta(meta or voice_root / META_FILE)
    voices, faces = scan_voices(voice_root), scan_faces(face_root)
    bad, paired = [], {}
    for vox in sorted(voices):
        if vox not in vox_meta:
            bad.append(f"speaker {voice_root}/…/{vox}: not in {meta or voice_root / META_FILE} (no VGGFace name)")
            continue
        name = vox_meta[vox][0]
        if name not in faces:
            bad.append(f"speaker {vox} ({name}): no face folder {Path(face_root) / name}")
        elif not faces[name]:
            bad.append(f"identity {name}: face folder {Path(face_root) / name} holds no images (.jpg/.jpeg/.png)")
        elif not voices[vox]:
            bad.append(f"identity {name}: speaker folder {vox} holds no .wav utterances")
        else:
            paired[name] = vox
    if bad and not skip_bad:
        raise LayoutError(f"{len(bad)} unpaired or empty identit{'y' if len(bad) == 1 else 'ies'}: "
                          + "; ".join(bad) + " (fix the corpus, or pass --skip-bad to leave them out)")
    initials = tuple(test_initials.upper()) + tuple(test_initials.lower())
    layout = PairedLayout(skipped=bad, unpaired_faces=len(set(faces) - set(paired)))
    split_of = {name: "test" if name.startswith(initials) else "train" for name in paired}
    for split in ("train", "test"):
        names = sorted(n for n in paired if split_of[n] == split)
        if len(names) < 2:
            raise LayoutError(f"{len(names)} paired {split} identit{'y' if len(names) == 1 else 'ies'} (names "
                              f"{'' if split == 'test' else 'not '}starting with {test_initials}): need at least 2; "
                              "check data.test_initials or the corpus")
        layout.identities[split] = names
        voice_list, face_list = [], []
        for i, name in enumerate(names):
            utts = voices[paired[name]]
            imgs = faces[name]
            if max_utts and len(utts) > max_utts:
                utts = [utts[j] for j in sorted(np.random.default_rng([seed, 0, i]).choice(len(utts), max_utts,
                                                                                         replace=False))]
            if max_images and len(imgs) > max_images:
                imgs = [imgs[j] for j in sorted(np.random.default_rng([seed, 1, i]).choice(len(imgs), max_images,
                                                                                         replace=False))]
            voice_list += [Voice(k, p, name) for k, p in utts]
            face_list += imgs
        layout.voices[split] = sorted(voice_list, key=lambda v: v.key)
        layout.faces[split] = sorted(face_list, key=lambda f: f.key)
    layout.gender = {name: vox_meta[vox][1] for name, vox in paired.items()}
    return layout


def build_pair_shards(layout: PairedLayout, out_dir: str | os.PathLike, *, sample_rate: int = 16000,
                      image_size: int = 64, samples_per_shard: int = 256, seed: int = 0, skip_bad: bool = False,
                      voice_root: str | os.PathLike = "", face_root: str | os.PathLike = "") -> dict[str, dict]:
    """{"voice-train", "voice-test", "face-train", "face-test": manifest} under out_dir/<name>, each through the
    one shard writer; `cls` is the identity's index in layout.identities[split] for voices and faces alike."""
    out_dir, manifests = Path(out_dir), {}
    decode = functools.partial(decode_utterance, sample_rate=sample_rate)
    vroot = Path(voice_root).resolve() if voice_root else None
    for split in ("train", "test"):
        names = layout.identities[split]
        index = {n: i for i, n in enumerate(names)}
        items = []
        for v in layout.voices[split]:
            path = Path(v.path)
            rel = str(path.relative_to(vroot)) if vroot and path.is_relative_to(vroot) else str(path)
            items.append({"key": v.key, "path": v.path, "rel": rel, "speaker": v.name, "label": index[v.name]})
        manifests[f"voice-{split}"] = build_shards(
            items, out_dir / f"voice-{split}", corpus="voxceleb1", split=split, decode=decode,
            config={"sample_rate": sample_rate, "format": "wav-pcm16-mono"}, samples_per_shard=samples_per_shard,
            seed=seed, skip_bad=skip_bad, extra={"classes": names})
        manifests[f"face-{split}"] = build_face_shards(
            layout.faces[split], names, out_dir / f"face-{split}", size=image_size,
            samples_per_shard=samples_per_shard, seed=seed, skip_bad=skip_bad, split=split, corpus="vggface",
            root=face_root or None)
    return manifests
