"""Image classification corpora in their published layouts -> one `ImageSet` API.

    CIFAR-10 (python version)  root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
                               (or root is that folder): pickled dicts, b'data' N x 3072 uint8
                               channel-major, b'labels' a list of ints, batches.meta b'label_names'
    MNIST / Fashion-MNIST IDX  root/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    SVHN (format 2)            root/{train,test}_32x32.mat: X 32 x 32 x 3 x N, y N x 1 with 10 meaning 0

CIFAR-10's batches are pickles, and unpickling runs whatever the file names: `_CifarUnpickler`
refuses every global but the few numpy needs to rebuild an array, so a planted pickle fails before
anything it names is called. Every reader checks shapes, dtypes and label ranges and raises
`LayoutError` naming the file and what to do.
"""
from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from datasets.errors import LayoutError

KINDS = ("cifar10", "mnist", "fashion-mnist", "svhn")
SPLITS = ("train", "test")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGITS = tuple(str(d) for d in range(10))
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
IDX_PREFIX = {"train": "train", "test": "t10k"}
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")   # Debian's dataset-fashion-mnist


@dataclasses.dataclass
class ImageSet:
    """images: N x H x W x C uint8; labels: N int64 in [0, len(classes))."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def load_images(kind: str, root: str | Path, split: str) -> ImageSet:
    if kind not in KINDS:
        raise ValueError(f"unknown image corpus {kind!r}; choose one of: {', '.join(KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose train or test")
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{kind} root {root} is not a folder")
    if kind == "cifar10":
        return read_cifar10(root, split)
    if kind == "svhn":
        return read_svhn(root / f"{split}_32x32.mat")
    return read_idx_pair(root, split, FASHION_CLASSES if kind == "fashion-mnist" else DIGITS)


def _checked(images: np.ndarray, labels: np.ndarray, classes, source: str) -> ImageSet:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise LayoutError(f"{source}: images must be N x H x W x (1 or 3) uint8, got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise LayoutError(f"{source}: {len(images)} images but {len(labels)} labels")
    bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
    if bad.size:
        raise LayoutError(f"{source}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
                          f"0..{len(classes) - 1}; the file is corrupt or of another dataset")
    return ImageSet(np.ascontiguousarray(images), labels.astype(np.int64), tuple(classes), source)


# ----------------------------------------------------------------------------- CIFAR-10

class _CifarUnpickler(pickle.Unpickler):
    """Loads only what a CIFAR-10 batch holds: dicts, lists, bytes, str, ints and numpy arrays
    (`_codecs.encode` is how Python 3 writes bytes at protocol 2, a pure str -> bytes function)."""

    ALLOWED = {("_codecs", "encode"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise LayoutError(f"cannot read CIFAR-10 batch {path}: {exc.strerror}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise LayoutError(f"{path} is not a CIFAR-10 python batch ({exc}); nothing in it was executed. "
                          "Download the python version (cifar-10-python.tar.gz) again") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path} holds a {type(data).__name__}, not the dict of a CIFAR-10 batch")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


def read_cifar10(root: Path, split: str) -> ImageSet:
    folder = root / CIFAR_DIR if (root / CIFAR_DIR).is_dir() else root
    meta_path = folder / "batches.meta"
    if not meta_path.is_file():
        raise LayoutError(f"{meta_path} is missing: give the folder that holds {CIFAR_DIR}/ (or {CIFAR_DIR} itself)")
    names = _unpickle(meta_path).get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise LayoutError(f"{meta_path}: b'label_names' must be a list of class names")
    classes = [n.decode() if isinstance(n, bytes) else n for n in names]
    images, labels = [], []
    for name in CIFAR_BATCHES[split]:
        path = folder / name
        if not path.is_file():
            raise LayoutError(f"{path} is missing: the CIFAR-10 python layout has "
                              f"{', '.join(CIFAR_BATCHES['train'] + CIFAR_BATCHES['test'])} and batches.meta")
        batch = _unpickle(path)
        data, lab = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise LayoutError(f"{path}: b'data' must be an N x 3072 uint8 array, got "
                              f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
        if not isinstance(lab, list) or not all(isinstance(v, int) for v in lab):
            raise LayoutError(f"{path}: b'labels' must be a list of ints")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # channel-major -> H x W x C
        labels.append(np.asarray(lab, dtype=np.int64))
        source = str(path)
    return _checked(np.concatenate(images), np.concatenate(labels), classes,
                    str(folder / split) if len(images) > 1 else source)


def write_cifar10_batch(path: Path, images: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
    """One batch in CIFAR-10's python layout (what the generated demo set writes)."""
    from datasets.atomic import write_bytes

    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072), dtype=np.uint8)
    obj = {b"batch_label": batch_label.encode(), b"labels": [int(v) for v in labels], b"data": data,
           b"filenames": [f"{batch_label}_{i:05d}.png".encode() for i in range(len(labels))]}
    write_bytes(path, pickle.dumps(obj, protocol=2))


# ----------------------------------------------------------------------------- MNIST / Fashion-MNIST IDX

def _open_idx(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except OSError as exc:
        raise LayoutError(f"cannot read IDX file {path}: {exc}") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or not) of unsigned bytes: 1 dim (labels) or 3 dims (images)."""
    data = _open_idx(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise LayoutError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise LayoutError(f"{path}: IDX element type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise LayoutError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(shape)):
        raise LayoutError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but {len(data) - header} "
                          "bytes follow; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (root / name).is_file():
            return root / name
    raise LayoutError(f"{root / stem}[.gz] is missing: the IDX layout has train-/t10k-images-idx3-ubyte and "
                      "train-/t10k-labels-idx1-ubyte (gzipped or not)")


def read_idx_pair(root: Path, split: str, classes) -> ImageSet:
    images_path = _idx_file(root, f"{IDX_PREFIX[split]}-images-idx3-ubyte")
    labels_path = _idx_file(root, f"{IDX_PREFIX[split]}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise LayoutError(f"{images_path}: images must have 3 dims (N, H, W), got {images.shape}")
    if labels.ndim != 1:
        raise LayoutError(f"{labels_path}: labels must have 1 dim, got {labels.shape}")
    return _checked(images[..., None], labels.astype(np.int64), classes, str(images_path))


# ----------------------------------------------------------------------------- SVHN

def read_svhn(path: Path) -> ImageSet:
    import scipy.io

    if not path.is_file():
        raise LayoutError(f"{path} is missing: SVHN format 2 has train_32x32.mat and test_32x32.mat")
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except (OSError, ValueError, NotImplementedError) as exc:
        raise LayoutError(f"{path} is not a readable MATLAB file ({exc})") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise LayoutError(f"{path} must hold variables X and y")
    if x.ndim != 4 or x.shape[2] != 3:
        raise LayoutError(f"{path}: X must be H x W x 3 x N, got {x.shape}")
    y = np.asarray(y).reshape(-1).astype(np.int64)
    y[y == 10] = 0   # SVHN writes digit 0 as label 10
    return _checked(np.asarray(x, dtype=np.uint8).transpose(3, 0, 1, 2), y, DIGITS, str(path))


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes, gzipped when the name ends in .gz (for fixtures)."""
    from datasets.atomic import write_bytes

    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + \
        np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    write_bytes(path, gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def describe(images: ImageSet) -> str:
    counts = np.bincount(images.labels, minlength=len(images.classes))
    return f"{len(images)} images {images.images.shape[1:]} from {images.source}, per class {counts.tolist()}"


# ----------------------------------------------------------------------------- scikit-learn's bundled digits

def read_sklearn_digits(split: str, test_fraction: float = 0.2, seed: int = 0) -> ImageSet:
    """scikit-learn's bundled 8 x 8 digits (1797 real handwritten images, values 0..16 scaled to 0..255):
    the fallback real image set where Fashion-MNIST is not installed; a seeded split into train and test."""
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose train or test")
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(round(len(images) * (1 - test_fraction)))
    keep = np.sort(order[:cut] if split == "train" else order[cut:])
    return _checked(images[keep], digits.target[keep].astype(np.int64), DIGITS, f"sklearn-digits[{split}]")
