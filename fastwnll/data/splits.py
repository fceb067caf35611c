"""Fixed train/test splits: the same rows for every run and every training seed, so that test
accuracies are comparable. The permutations come from numpy's legacy ``RandomState``, whose
streams numpy keeps stable across versions."""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 0  # seed of every fixed split; independent of the training seed
TEST_FRACTION = 0.2


def fixed_split(n: int, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` by the fixed permutation ``RandomState(SPLIT_SEED).permutation(n)``: its last
    ``round(test_fraction * n)`` entries are the test rows, the others the training rows.

    Returns:
        ``(train_rows, test_rows)``: int64 index arrays, each in permutation order.
    """
    if n < 2:
        raise ValueError(f"cannot split {n} examples into a training and a test part")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    perm = np.random.RandomState(SPLIT_SEED).permutation(n).astype(np.int64)
    return perm[: n - n_test], perm[n - n_test :]


def stratified_split(labels: np.ndarray, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Split the rows of ``labels`` ``[n]`` (integers) class by class: within each class (in
    increasing label order) the rows are permuted by ``RandomState(SPLIT_SEED)`` and the last
    ``round(test_fraction * count)`` of them go to the test part.

    Returns:
        ``(train_rows, test_rows)``: sorted int64 index arrays.
    """
    rng = np.random.RandomState(SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(len(rows))]
        n_test = int(round(test_fraction * len(rows)))
        train.append(rows[: len(rows) - n_test])
        test.append(rows[len(rows) - n_test :])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)
