"""Face corpora on disk -> identity-labelled images, LFW verification pairs, and face shard sets.

Accepted layouts:
  * training (CASIA-WebFace, VGGFace2):  root/<identity>/<image>.jpg|.jpeg|.png
    one folder per identity, images directly inside (hidden entries skipped).
  * LFW verification:  <images root>/<name>/<name>_<n:04d>.jpg  and the standard `pairs.txt`:
    first line `<folds> <pairs>` (10 300 for LFW View 2), then per fold `<pairs>` same-person
    lines `name n1 n2` followed by `<pairs>` different-person lines `name1 n1 name2 n2`.
  * both under one root (`find_face_layout`, what workflows/face.py reads):
    root/train/<identity>/<image>, root/lfw/<name>/<name>_NNNN.jpg, root/pairs.txt
    (the three names are parameters).

Keys: the image path relative to the root without its extension, "/"-separated, with "%" and
"." escaped as in `datasets.voxceleb.relpath_to_key` (WebDataset splits key and extension at the
first dot), e.g. "0000045/001" or "Aaron_Peirsol/Aaron_Peirsol_0001".

Unreadable images are not detected by the readers here: `decode_face` raises ValueError naming
the file, which `build_shards` reports (or records with `skip_bad`).
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

from datasets.atomic import write_text
from datasets.errors import LayoutError
from datasets.shards import build_shards
from datasets.voxceleb.layout import relpath_to_key

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
EXPECTED = "<identity>/<image>.jpg"
PAIRS_FILE = "pairs.txt"


@dataclass(frozen=True)
class FaceImage:
    key: str       # e.g. "0000045/001": relative path, no extension, no "."
    path: str      # absolute path of the image file
    identity: str  # e.g. "0000045"


@dataclass(frozen=True)
class FacePair:
    fold: int      # 0-based fold index
    label: int     # 1 = same person, 0 = different persons
    left_key: str  # image key, e.g. "Abel_Pacheco/Abel_Pacheco_0001"
    right_key: str


# ----------------------------------------------------------------------------- identity folders

def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTS)


def find_identity_folders(root: str | os.PathLike) -> tuple[list[FaceImage], list[str]]:
    """All images of `root/<identity>/<image>.(jpg|jpeg|png)`, sorted by key, and the sorted identities."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"face root {root} does not exist or is not a folder: pass the folder holding "
                          f"one sub-folder per identity ({EXPECTED})")
    base = os.path.abspath(root)
    with os.scandir(base) as it:
        entries = sorted(it, key=lambda e: e.name)
    identities = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if not identities:
        stray = next((e.name for e in entries if e.is_file() and _is_image(e.name)), None)
        hint = (f" (found image {stray} directly in the root: move it into a folder named by its identity)"
                if stray else "")
        raise LayoutError(f"no identity folders under {root}: expected layout {EXPECTED}{hint}")
    items: dict[str, FaceImage] = {}
    for ident in identities:
        folder = os.path.join(base, ident)
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if e.is_file() and _is_image(e.name))
        if not names:
            raise LayoutError(f"identity folder {folder} holds no images ({', '.join(IMAGE_EXTS)}): "
                              f"expected layout {EXPECTED}; add images or delete the folder")
        for name in names:
            key = relpath_to_key(f"{ident}/{name}")
            if key in items:
                raise LayoutError(f"{folder}: {name} and {Path(items[key].path).name} share the key {key!r} "
                                  "(same name, different extension); rename or delete one")
            items[key] = FaceImage(key=key, path=os.path.join(folder, name), identity=ident)
    return [items[k] for k in sorted(items)], identities


# ----------------------------------------------------------------------------- LFW pairs

def lfw_relpath(name: str, number: int, ext: str = ".jpg") -> str:
    """('Aaron_Peirsol', 1) -> 'Aaron_Peirsol/Aaron_Peirsol_0001.jpg' (LFW's file naming)."""
    return f"{name}/{name}_{number:04d}{ext}"


def lfw_key(name: str, number: int) -> str:
    return relpath_to_key(lfw_relpath(name, number, ""))


def _find_image(images_root: Path, name: str, number: int) -> Path | None:
    for ext in IMAGE_EXTS:
        path = images_root / lfw_relpath(name, number, ext)
        if path.is_file():
            return path
    return None


def _positive(s: str) -> int | None:
    return int(s) if s.isdigit() and int(s) > 0 else None


def read_lfw_pairs(path: str | os.PathLike, images_root: str | os.PathLike | None = None) -> list[FacePair]:
    """Parse an LFW `pairs.txt` (see module doc) into pairs in file order.

    With `images_root` (the folder holding `<name>/<name>_NNNN.jpg`), every image a pair names must
    exist (as .jpg, .jpeg or .png); the error names the pairs file, its line and the missing image.
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"LFW pairs file {path} does not exist: pass the standard pairs.txt")
    root = Path(images_root) if images_root is not None else None
    if root is not None and not root.is_dir():
        raise LayoutError(f"LFW images root {root} does not exist or is not a folder (expected <name>/<name>_0001.jpg)")
    with open(path, encoding="utf-8-sig") as f:
        lines = [(n, line.split()) for n, line in enumerate(f, 1)]
    lines = [(n, parts) for n, parts in lines if parts]
    if not lines:
        raise LayoutError(f"{path}: empty pairs file; expected a first line '<folds> <pairs>' such as '10 300'")
    n, head = lines[0]
    folds, per = (_positive(h) for h in head) if len(head) == 2 else (None, None)
    if folds is None or per is None:
        raise LayoutError(f"{path}:{n}: malformed header {' '.join(head)!r}: expected '<folds> <pairs per class "
                          "per fold>' such as '10 300'")
    body = lines[1:]
    if len(body) != 2 * folds * per:
        raise LayoutError(f"{path}: header says {folds} folds x {per} same + {per} different pairs = "
                          f"{2 * folds * per} lines, but the file has {len(body)} pair lines")
    pairs = []
    for i, (n, parts) in enumerate(body):
        fold, same = i // (2 * per), i % (2 * per) < per
        if same:
            ok = len(parts) == 3 and _positive(parts[1]) and _positive(parts[2])
            names = [(parts[0], parts[1]), (parts[0], parts[2])] if ok else None
            expected = "'<name> <n1> <n2>' (a same-person pair)"
        else:
            ok = len(parts) == 4 and _positive(parts[1]) and _positive(parts[3])
            names = [(parts[0], parts[1]), (parts[2], parts[3])] if ok else None
            expected = "'<name1> <n1> <name2> <n2>' (a different-person pair)"
        if names is None:
            raise LayoutError(f"{path}:{n}: malformed pair line {' '.join(parts)!r} in fold {fold + 1}: "
                              f"expected {expected}; fix the line")
        refs = [(name, int(num)) for name, num in names]
        if root is not None:
            for name, num in refs:
                if _find_image(root, name, num) is None:
                    raise LayoutError(f"{path}:{n}: image {root / lfw_relpath(name, num)} does not exist "
                                      "(nor as .jpeg/.png); check the images root or the pairs file")
        pairs.append(FacePair(fold, int(same), lfw_key(*refs[0]), lfw_key(*refs[1])))
    return pairs


def pair_images(pairs: list[FacePair], images_root: str | os.PathLike) -> tuple[list[FaceImage], list[str]]:
    """The distinct images the pairs name (sorted by key) and their sorted identities, for test shards."""
    root = Path(images_root)
    images: dict[str, FaceImage] = {}
    for p in pairs:
        for key in (p.left_key, p.right_key):
            if key in images:
                continue
            name, stem = key.split("/", 1)
            number = int(stem.rsplit("_", 1)[1])
            found = _find_image(root, name.replace("%2E", ".").replace("%25", "%"), number)
            if found is None:
                raise LayoutError(f"image for key {key!r} not found under {root} (as .jpg, .jpeg or .png)")
            images[key] = FaceImage(key=key, path=str(found.resolve()), identity=name)
    return [images[k] for k in sorted(images)], sorted({im.identity for im in images.values()})


def write_lfw_pairs(path: str | os.PathLike, pairs: list[FacePair], folds: int, per: int) -> None:
    """Write pairs (keys as from `lfw_key`) in the LFW pairs.txt format, atomically; fold order as given."""
    def ref(key: str) -> tuple[str, int]:
        name, stem = key.split("/", 1)
        return name, int(stem.rsplit("_", 1)[1])

    lines = [f"{folds}\t{per}"]
    for fold in range(folds):
        for label in (1, 0):
            chosen = [p for p in pairs if p.fold == fold and p.label == label]
            if len(chosen) != per:
                raise ValueError(f"fold {fold}: {len(chosen)} pairs with label {label}, expected {per}")
            for p in chosen:
                (a, na), (b, nb) = ref(p.left_key), ref(p.right_key)
                if label:
                    if a != b:
                        raise ValueError(f"same-person pair names two persons: {p}")
                    lines.append(f"{a}\t{na}\t{nb}")
                else:
                    lines.append(f"{a}\t{na}\t{b}\t{nb}")
    write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- one root: training + LFW

@dataclass
class FaceLayout:
    root: str
    train: list[FaceImage]        # training images, sorted by key
    identities: list[str]         # training identities (class index = position)
    pairs: list[FacePair]         # verification pairs, in file order
    test: list[FaceImage]         # the distinct images the pairs name
    test_identities: list[str]


def find_face_layout(root: str | os.PathLike, train_dir: str = "train", test_dir: str = "lfw",
                     pairs_file: str = PAIRS_FILE) -> FaceLayout:
    """`root/<train_dir>/<identity>/<image>` (training) + `root/<test_dir>/<name>/<name>_NNNN.jpg` and
    `root/<pairs_file>` (LFW verification). Errors name the missing path and the expected layout."""
    root = Path(root)
    expected = (f"expected {root / train_dir}/{EXPECTED} (training), {root / test_dir}/<name>/<name>_0001.jpg "
                f"and {root / pairs_file} (LFW pairs)")
    if not root.is_dir():
        raise LayoutError(f"face data root {root} does not exist or is not a folder: {expected}")
    for path, is_ok in ((root / train_dir, Path.is_dir), (root / test_dir, Path.is_dir),
                        (root / pairs_file, Path.is_file)):
        if not is_ok(path):
            raise LayoutError(f"{path} not found in the face data root: {expected}")
    train, identities = find_identity_folders(root / train_dir)
    if len(identities) < 2:
        raise LayoutError(f"{root / train_dir} holds {len(identities)} identity folder(s); training needs at least 2")
    pairs = read_lfw_pairs(root / pairs_file, root / test_dir)
    test, test_identities = pair_images(pairs, root / test_dir)
    return FaceLayout(str(root), train, identities, pairs, test, test_identities)


# ----------------------------------------------------------------------------- decoding & shards

def decode_face(item: dict, size: int = 112) -> dict:
    """One shard sample: RGB PNG resized to size x size, class index, identity, provenance.

    PIL writes no timestamps into PNGs, so the same image and size give the same bytes.
    Any unreadable / truncated / non-image file raises ValueError naming the file.
    """
    from PIL import Image

    path = item["path"]
    try:
        with Image.open(path) as img:
            img.load()
            width, height, mode = img.width, img.height, img.mode
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"unreadable image {path}: {type(exc).__name__}: {exc}") from exc
    if width < 1 or height < 1:
        raise ValueError(f"unreadable image {path}: empty ({width}x{height})")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", optimize=False, compress_level=6)
    return {"png": buf.getvalue(), "cls": str(item["label"]), "id": item["identity"],
            "json": {"source": item.get("rel", path), "identity": item["identity"],
                     "width": width, "height": height, "mode": mode}}


def build_face_shards(items: list[FaceImage], identities: list[str], out_dir: str | os.PathLike, *,
                      size: int = 112, samples_per_shard: int = 256, seed: int = 0, skip_bad: bool = False,
                      split: str = "train", corpus: str = "faces", root: str | os.PathLike | None = None) -> dict:
    """Build `out_dir/{corpus}-{split}-NNNNNN.tar` (+ manifest, `classes` = identities) via build_shards.

    `cls` is the identity's index in `identities`; `root`, when given, makes the recorded sources relative.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    index = {ident: i for i, ident in enumerate(identities)}
    base = Path(root).resolve() if root is not None else None
    rows = []
    for im in items:
        if im.identity not in index:
            raise ValueError(f"image {im.path} has identity {im.identity!r}, which is not in the identity list")
        path = Path(im.path)
        rel = str(path.relative_to(base)) if base is not None and path.is_relative_to(base) else str(path)
        rows.append({"key": im.key, "path": str(path), "rel": rel, "identity": im.identity,
                     "label": index[im.identity]})
    return build_shards(rows, out_dir, corpus=corpus, split=split, decode=functools.partial(decode_face, size=size),
                        config={"size": size, "format": "png-rgb"}, samples_per_shard=samples_per_shard,
                        seed=seed, skip_bad=skip_bad, extra={"classes": list(identities)})
