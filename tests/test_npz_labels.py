"""A user's ``.npz`` file: the wrong kind of file and labels that are not the classes 0..C-1 give a clear
error (never a 100,001-class model or a wrapped uint64 label)."""

import numpy as np
import pytest

from fastwnll.cli import main
from fastwnll.data import load_dataset

IMAGES = (np.random.default_rng(0).random((40, 8, 8)) * 255).astype(np.uint8)


def npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_a_npy_file_is_refused(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, IMAGES)
    with pytest.raises(
        ValueError,
        match=r"images.npy is a .npy file \(one array of shape \[40, 8, 8\]\), not a .npz "
        r"archive: save the images and labels together with numpy.savez",
    ):
        load_dataset("npz", data_dir=path)


@pytest.mark.parametrize(
    "labels, message",
    [
        (
            np.array([0, 100000] * 20),
            r"2 distinct values in \[0, 100000\], so 99999 class\(es\) below the largest never",
        ),
        (np.array([0, 2**40] * 20, dtype=np.uint64), r"so 1099511627775 class\(es\) below the largest never occur"),
        (np.array([0, 1, 3, 4] * 10), r"4 distinct values in \[0, 4\], so 1 class\(es\)"),
    ],
)
def test_sparse_labels_are_refused_with_the_way_to_renumber(tmp_path, labels, message):
    path = npz(tmp_path, x=IMAGES, y=labels)
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=message) as info:
            load_dataset("npz", data_dir=path, split=split)
        assert "numpy.unique(y, return_inverse=True)" in str(info.value) and str(path) in str(info.value)


def test_uint64_labels_beyond_int64_are_refused(tmp_path):
    path = npz(tmp_path, x=IMAGES, y=np.array([0, 2**64 - 1] * 20, dtype=np.uint64))
    with pytest.raises(ValueError, match="labels up to 18446744073709551615, beyond int64"):
        load_dataset("npz", data_dir=path)


def test_classes_are_counted_over_both_splits(tmp_path):
    """With x_test/y_test, every class must occur in y or y_test; renumbered labels load as they are."""
    y = np.arange(40) % 4
    path = npz(tmp_path, x=IMAGES, y=y, x_test=IMAGES[:8], y_test=np.full(8, 9))
    with pytest.raises(ValueError, match=r"5 distinct values in \[0, 9\]"):
        load_dataset("npz", data_dir=path, split="test")
    classes, renumbered = np.unique(np.array([0, 100000] * 20), return_inverse=True)
    path = npz(tmp_path, x=IMAGES, y=renumbered)
    _, labels = load_dataset("npz", data_dir=path, split="train")
    assert set(labels.tolist()) == {0, 1} and list(classes) == [0, 100000]


def test_train_command_reports_sparse_labels_before_building_a_model(tmp_path, capsys):
    path = npz(tmp_path, x=IMAGES, y=np.array([0, 100000] * 20))
    assert (
        main(
            [
                "train",
                "--dataset",
                "npz",
                "--data-dir",
                str(path),
                "--model",
                "digits_cnn",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 1
    )
    assert "below the largest never occur" in capsys.readouterr().err
