"""Dataset loaders: IDX reader, MNIST (torchvision raw layout), the fixed mnist10k split of the real
files, CIFAR-10 pickles, sklearn digits, user .npz files; every error. Fixtures are tiny files written
here in the real formats."""

import gzip
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fastwnll.data import DATASET_SPECS, DATASETS, dataset_spec, load_dataset, read_idx
from fastwnll.data.idx import read_idx_bytes
from fastwnll.data.mnist import find_file
from fastwnll.data.splits import fixed_split, stratified_split

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # the 10k test set's classes
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (written independently of the reader under test)."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim])
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)


def mnist_arrays(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def write_mnist(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5):
    """torchvision's raw MNIST files in ``folder``; returns {split: (images, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images, labels = mnist_arrays(n, seed=n)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        out[split] = (images, labels)
    return out


# ------------------------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_every_type(tmp_path, dtype, gz):
    array = (
        (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
        if dtype != np.uint8
        else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    )
    write_idx(tmp_path / "a.idx", array, gz)
    read = read_idx(tmp_path / "a.idx")
    assert read.dtype == np.dtype(dtype) and read.dtype.isnative
    np.testing.assert_array_equal(read, array)


def test_idx_agrees_with_torchvision_reader(tmp_path):
    pytest.importorskip("torchvision")
    from torchvision.datasets.mnist import read_image_file, read_label_file

    data = write_mnist(tmp_path, gz=False)
    images, labels = data["train"]
    np.testing.assert_array_equal(
        read_image_file(str(tmp_path / "train-images-idx3-ubyte")).numpy(),
        read_idx(tmp_path / "train-images-idx3-ubyte"),
    )
    np.testing.assert_array_equal(
        read_label_file(str(tmp_path / "train-labels-idx1-ubyte")).numpy(),
        read_idx(tmp_path / "train-labels-idx1-ubyte"),
    )


def test_idx_reads_the_real_mnist_files(mnist_dir):
    images = read_idx(find_file(mnist_dir, "t10k-images-idx3-ubyte"))
    labels = read_idx(find_file(mnist_dir, "t10k-labels-idx1-ubyte"))
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and images.max() == 255
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
        (b"\x00\x00", "not an IDX file"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", "holds 2 bytes of values but its IDX header"),
    ],
)
def test_idx_rejects_malformed_content(data, message):
    with pytest.raises(ValueError, match=message):
        read_idx_bytes(data, "f.idx")


def test_idx_rejects_corrupt_gzip_and_missing_file(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8)))[:-6])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "none.gz")


# ------------------------------------------------------------------------------------------ splits
def test_fixed_split_is_the_documented_permutation():
    train, test = fixed_split(10)
    perm = np.random.RandomState(0).permutation(10)
    assert train.tolist() == perm[:8].tolist() and test.tolist() == perm[8:].tolist()
    assert [len(p) for p in fixed_split(3)] == [2, 1]
    with pytest.raises(ValueError, match="cannot split 1 examples"):
        fixed_split(1)


def test_stratified_split_per_class():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 20)
    train, test = stratified_split(labels)
    assert np.bincount(labels[test]).tolist() == [2, 1, 4]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(35))


# ------------------------------------------------------------------------------------------- MNIST
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_torchvision_layout(tmp_path, gz):
    data = write_mnist(tmp_path / "MNIST" / "raw", gz)
    for split in ("train", "test"):
        x, y = load_dataset("mnist", data_dir=tmp_path, split=split)
        images, labels = data[split]
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32 and x.device.type == "cpu"
        assert torch.equal(x, torch.from_numpy(images).float()[:, None] / 255)
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()


def test_mnist_data_dir_may_be_the_raw_folder_or_default_root(tmp_path, monkeypatch):
    data = write_mnist(tmp_path / "raw", gz=True)
    x, _ = load_dataset("mnist", data_dir=tmp_path / "raw", split="test")
    assert x.shape[0] == len(data["test"][0])
    x, _ = load_dataset("mnist", data_dir=tmp_path, split="test")  # finds <root>/raw too
    assert x.shape[0] == len(data["test"][0])
    monkeypatch.setenv("FASTWNLL_DATA_DIR", str(tmp_path))
    x, _ = load_dataset("mnist", split="train")
    assert x.shape[0] == len(data["train"][0])


def test_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", data_dir=tmp_path, split="train")
    message = str(info.value)
    for part in (
        "train-images-idx3-ubyte",
        str(tmp_path / "MNIST" / "raw"),
        "download=True",
        "--download",
        "torchvision.datasets.MNIST",
        "https://",
    ):
        assert part in message


def test_mnist_download_goes_through_torchvision(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")

    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_mnist(Path(root) / "MNIST" / "raw", gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    x, y = load_dataset("mnist", data_dir=tmp_path, split="test", download=True)
    assert calls == [(str(tmp_path), False, True)] and x.shape == (5, 1, 28, 28)
    load_dataset("mnist", data_dir=tmp_path, split="train", download=True)
    assert len(calls) == 1  # already there: no second download


def test_mnist_broken_files(tmp_path):
    images, labels = mnist_arrays(6, 0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz=False)
    with pytest.raises(FileNotFoundError, match="not its labels t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path, split="test")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:5], gz=False)
    with pytest.raises(ValueError, match="must hold 6 labels"):
        load_dataset("mnist", data_dir=tmp_path, split="test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images.astype(np.int16), gz=False)
    with pytest.raises(ValueError, match=r"must hold \[N, H, W\] uint8 images"):
        load_dataset("mnist", data_dir=tmp_path, split="test")


# ---------------------------------------------------------------------------------------- mnist10k
@pytest.fixture(scope="module")
def mnist10k(mnist_dir):
    return {split: load_dataset("mnist10k", data_dir=mnist_dir, split=split) for split in ("train", "test")}


def test_mnist10k_fixed_split_of_the_real_files(mnist10k, mnist_dir):
    (x, y), (xt, yt) = mnist10k["train"], mnist10k["test"]
    assert x.shape == (8000, 1, 28, 28) and xt.shape == (2000, 1, 28, 28)
    assert x.dtype == xt.dtype == torch.float32 and y.dtype == yt.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and float(xt.max()) == 1.0
    assert (torch.bincount(y) + torch.bincount(yt)).tolist() == MNIST_TEST_COUNTS
    assert torch.bincount(yt).min() > 150  # every class well represented in the test part
    # the documented split: RandomState(0).permutation(10000), first 8,000 train, last 2,000 test
    images = read_idx(find_file(mnist_dir, "t10k-images-idx3-ubyte"))
    perm = np.random.RandomState(0).permutation(10000)
    assert torch.equal(x[:50, 0], torch.from_numpy(images[perm[:50]]).float() / 255)
    assert torch.equal(xt[-50:, 0], torch.from_numpy(images[perm[-50:]]).float() / 255)


def test_mnist10k_split_ignores_the_training_seed(mnist10k, mnist_dir):
    x, y = load_dataset("mnist10k", data_dir=mnist_dir, split="test", seed=123)
    assert torch.equal(x, mnist10k["test"][0]) and torch.equal(y, mnist10k["test"][1])


def test_mnist10k_directory_from_data_dir_or_env(tmp_path, monkeypatch):
    data = write_mnist(tmp_path, gz=False, n_test=10)
    images, labels = data["test"]
    x, y = load_dataset("mnist10k", data_dir=tmp_path, split="test")
    perm = np.random.RandomState(0).permutation(10)
    assert y.tolist() == labels[perm[8:]].tolist() and x.shape == (2, 1, 28, 28)
    monkeypatch.setenv("FASTWNLL_DATA_DIR", str(tmp_path))
    x, y = load_dataset("mnist10k", split="train")
    assert y.tolist() == labels[perm[:8]].tolist()


def test_mnist10k_is_looked_for_only_where_the_user_says(tmp_path, monkeypatch):
    """Without data_dir and $FASTWNLL_DATA_DIR the package looks in ./data and nowhere else (not
    beside its own source tree, where a checkout may keep test data)."""
    monkeypatch.delenv("FASTWNLL_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist10k", split="test")
    message = str(info.value)
    searched = message[message.index(" in ") + 4 : message.index(". Pass")].split(", ")
    assert searched == [
        str(tmp_path / "data" / "MNIST" / "raw"),
        str(tmp_path / "data" / "raw"),
        str(tmp_path / "data"),
    ]


def test_mnist10k_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist10k", data_dir=tmp_path)
    message = str(info.value)
    for part in (str(tmp_path), "t10k-images-idx3-ubyte", "FASTWNLL_DATA_DIR", "--data-dir", "https://"):
        assert part in message


# ----------------------------------------------------------------------------------------- CIFAR-10
def cifar_batch(n: int, seed: int, bytes_keys: bool = False):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    entry = {
        "batch_label": f"batch {seed}",
        "data": data,
        "labels": labels,
        "filenames": [f"{i}.png" for i in range(n)],
    }
    if bytes_keys:
        entry = {k.encode(): v for k, v in entry.items()}
    return entry


def write_cifar(folder: Path, bytes_keys: bool = False):
    """torchvision's cifar-10-batches-py files (5 train batches of 2, a test batch of 3)."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        batches[name] = cifar_batch(3 if name == "test_batch" else 2, i, bytes_keys)
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    return batches


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_python_pickles(tmp_path, bytes_keys):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", bytes_keys)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    x, y = load_dataset("cifar10", data_dir=tmp_path, split="train")
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    train = [batches[f"data_batch_{j}"] for j in range(1, 6)]
    assert y.tolist() == sum((b[key("labels")] for b in train), [])
    data = np.concatenate([b[key("data")] for b in train])
    # channel-major rows: value (c, h, w) of image i is data[i, 1024 c + 32 h + w]
    i, c, h, w = 7, 2, 5, 30
    assert float(x[i, c, h, w]) == pytest.approx(data[i, 1024 * c + 32 * h + w] / 255)
    assert torch.equal(x.reshape(10, -1), torch.from_numpy(data).float() / 255)
    xt, yt = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py", split="test")
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == batches["test_batch"][key("labels")]


def test_cifar10_missing_or_incomplete(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", data_dir=tmp_path, split="test")
    message = str(info.value)
    for part in (
        "test_batch",
        str(tmp_path / "cifar-10-batches-py"),
        "download=True",
        "torchvision.datasets.CIFAR10",
        "cifar-10-python.tar.gz",
    ):
        assert part in message
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete: missing data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path, split="train")


def test_cifar10_download_goes_through_torchvision(tmp_path, monkeypatch):
    torchvision = pytest.importorskip("torchvision")

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar(Path(root) / "cifar-10-batches-py")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    x, _ = load_dataset("cifar10", data_dir=tmp_path, split="train", download=True)
    assert calls == [(str(tmp_path), True, True)] and x.shape == (10, 3, 32, 32)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a pickle at all", "is not a CIFAR-10 batch pickle"),
        (pickle.dumps([1, 2]), "must hold a dict with 'data' and 'labels', got list"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), r"got keys \['data'\]"),
        (pickle.dumps({"data": np.zeros((2, 3071), np.uint8), "labels": [0, 1]}), r"'data' must be \[N, 3072\] uint8"),
        (
            pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}),
            r"'data' must be \[N, 3072\] uint8",
        ),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "has 1 labels but there are 2 images"),
    ],
)
def test_cifar10_bad_batch_files(tmp_path, content, message):
    (tmp_path / "test_batch").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_dataset("cifar10", data_dir=tmp_path, split="test")


# ------------------------------------------------------------------------------------------ digits
def test_digits_fixed_stratified_split():
    from sklearn.datasets import load_digits

    reference = load_digits()
    x, y = load_dataset("digits", split="train")
    xt, yt = load_dataset("digits", split="test", seed=7)
    assert x.shape == (1438, 1, 8, 8) and xt.shape == (359, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    counts, test_counts = np.bincount(reference.target), torch.bincount(yt).numpy()
    np.testing.assert_array_equal(test_counts, np.round(0.2 * counts))
    # together the two parts are the whole dataset, each image once
    train_rows, test_rows = stratified_split(reference.target)
    assert len(set(train_rows) | set(test_rows)) == 1797
    assert torch.equal(x[:, 0], torch.from_numpy(reference.images[train_rows]).float() / 16)
    assert y.tolist() == reference.target[train_rows].tolist()
    assert torch.equal(load_dataset("digits", split="test")[0], xt)  # independent of seed


# --------------------------------------------------------------------------------------------- npz
def test_npz_uint8_hw_with_fixed_split(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 5), dtype=np.uint8)
    labels = np.arange(10) % 3
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    x, y = load_dataset("npz", data_dir=tmp_path / "d.npz", split="train")
    xt, yt = load_dataset("npz", path=str(tmp_path / "d.npz"), split="test")
    perm = np.random.RandomState(0).permutation(10)
    assert x.shape == (8, 1, 6, 5) and xt.shape == (2, 1, 6, 5) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(images[perm[:8]]).float() / 255)
    assert (
        y.dtype == torch.int64 and y.tolist() == labels[perm[:8]].tolist() and yt.tolist() == labels[perm[8:]].tolist()
    )


def test_npz_float_nchw_with_test_arrays(tmp_path):
    rng = np.random.default_rng(1)
    x_train, x_test = rng.random((7, 3, 4, 4)), rng.random((3, 3, 4, 4)).astype(np.float32)
    np.savez(
        tmp_path / "d.npz",
        x=x_train,
        y=np.arange(7, dtype=np.int32) % 2,
        x_test=x_test,
        y_test=np.array([1, 0, 1], dtype=np.uint8),
    )
    x, y = load_dataset("npz", data_dir=str(tmp_path / "d.npz"))
    assert x.shape == (7, 3, 4, 4) and torch.allclose(x, torch.from_numpy(x_train).float())
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 0, 1, 0, 1, 0]
    xt, yt = load_dataset("npz", data_dir=tmp_path / "d.npz", split="test")
    assert torch.equal(xt, torch.from_numpy(x_test)) and yt.tolist() == [1, 0, 1]


GOOD_X, GOOD_Y = np.zeros((4, 5, 5), np.uint8), np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    "arrays, error, message",
    [
        ({"x": np.full((4, 5, 5), 1.5), "y": GOOD_Y}, ValueError, r"x of .*values in \[1.5, 1.5\].*\[0, 1\]"),
        ({"x": np.full((4, 5, 5), -0.1, np.float32), "y": GOOD_Y}, ValueError, r"x of .*must lie in \[0, 1\]"),
        ({"x": np.full((4, 5, 5), np.nan), "y": GOOD_Y}, ValueError, "x of .*NaN"),
        (
            {"x": np.zeros((4, 5, 5), np.int16), "y": GOOD_Y},
            TypeError,
            "x of .*must be uint8 or floating point, got int16",
        ),
        (
            {"x": np.zeros((4, 25), np.uint8), "y": GOOD_Y},
            ValueError,
            r"x of .*\[N, H, W\] or \[N, C, H, W\], got \[4, 25\]",
        ),
        ({"x": np.zeros((0, 5, 5), np.uint8), "y": GOOD_Y[:0]}, ValueError, "x of .*holds no images"),
        ({"x": GOOD_X, "y": GOOD_Y.astype(np.float32)}, TypeError, "y of .*integer class labels, got dtype float32"),
        ({"x": GOOD_X, "y": GOOD_Y.astype(bool)}, TypeError, "y of .*integer class labels, got dtype bool"),
        ({"x": GOOD_X, "y": GOOD_Y[:3]}, ValueError, "y of .*has 3 labels but there are 4 images"),
        ({"x": GOOD_X, "y": GOOD_Y[:, None]}, ValueError, r"y of .*shape \[N\], got \[4, 1\]"),
        ({"x": GOOD_X, "y": GOOD_Y - 1}, ValueError, "y of .*negative labels"),
        ({"x": GOOD_X}, ValueError, "lacks the array.s. y"),
        ({"x": GOOD_X, "y": GOOD_Y, "x_test": GOOD_X}, ValueError, "only one of x_test / y_test"),
        (
            {"x": GOOD_X, "y": GOOD_Y, "x_test": np.zeros((2, 4, 5), np.uint8), "y_test": GOOD_Y[:2]},
            ValueError,
            r"x images are \[1, 5, 5\] but x_test images are \[1, 4, 5\]",
        ),
        (
            {"x": GOOD_X, "y": GOOD_Y, "x_test": np.full((2, 5, 5), 2.0), "y_test": GOOD_Y[:2]},
            ValueError,
            r"x_test of .*must lie in \[0, 1\]",
        ),
        (
            {"x": GOOD_X, "y": GOOD_Y, "x_test": GOOD_X[:2], "y_test": GOOD_Y},
            ValueError,
            "y_test of .*has 4 labels but there are 2 images",
        ),
        ({"x": np.array([None] * 4, dtype=object), "y": GOOD_Y}, ValueError, "not a readable .npz archive"),
    ],
)
def test_npz_errors_name_the_problem(tmp_path, arrays, error, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(error, match=message):
        load_dataset("npz", data_dir=tmp_path / "d.npz", split="test")


def test_npz_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no .npz file at .*numpy.savez"):
        load_dataset("npz", data_dir=tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz archive"):
        load_dataset("npz", data_dir=tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="needs the file"):
        load_dataset("npz")
    with pytest.raises(ValueError, match="got two files"):
        load_dataset("npz", data_dir=tmp_path / "a.npz", path=tmp_path / "b.npz")


# ------------------------------------------------------------------------------------ load_dataset
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"name": "imagenet"}, ValueError, "unknown dataset 'imagenet'"),
        ({"name": "digits", "split": "val"}, ValueError, "split must be one of"),
        ({"name": "digits", "seed": 1.5}, TypeError, "seed must be an int"),
        ({"name": "digits", "download": True}, ValueError, "bundled with scikit-learn"),
        ({"name": "mnist10k", "download": True}, ValueError, "'mnist10k' cannot be downloaded"),
        ({"name": "npz", "download": True, "path": "a.npz"}, ValueError, "download=True applies to"),
        ({"name": "mnist", "path": "a.npz"}, ValueError, "path= is for the 'npz' dataset only"),
        ({"name": "digits", "data_dir": "somewhere"}, ValueError, "takes no data_dir"),
    ],
)
def test_load_dataset_argument_errors(kwargs, error, message):
    name = kwargs.pop("name")
    with pytest.raises(error, match=message):
        load_dataset(name, **kwargs)


def test_dataset_names():
    assert DATASETS == ("digits", "mnist", "mnist10k", "cifar10", "npz")


@pytest.mark.parametrize("name", DATASETS)
def test_registry_entries_describe_themselves(name, tmp_path):
    from fastwnll.train import TrainConfig

    spec = DATASET_SPECS[name]
    assert dataset_spec(name) is spec and spec.name == name and spec.description
    assert set(spec.defaults) <= set(TrainConfig.__dataclass_fields__)
    if spec.budget is not None:
        assert 0 < spec.budget.alpha <= spec.budget.eps and spec.budget.steps >= 1
    if spec.bundled_with:  # no files: loads as it is, refuses a data_dir
        assert not spec.downloadable and not spec.single_file
        x, y = load_dataset(name, split="test")
        assert x.dim() == 4 and x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[0] == y.shape[0]
    else:  # files: a missing one is a clear error naming where it looked
        missing = tmp_path / ("missing.npz" if spec.single_file else "missing")
        with pytest.raises((FileNotFoundError, ValueError), match=str(missing.name)):
            load_dataset(name, data_dir=missing, split="test")
    if not spec.downloadable:
        with pytest.raises(ValueError, match="download=True applies to"):
            load_dataset(name, download=True)


def test_unknown_dataset_names_the_registry():
    with pytest.raises(ValueError, match=re.escape(f"choose one of {DATASETS}")):
        dataset_spec("imagenet")
