"""Where the loaders look for data files when the caller names no directory."""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "FASTWNLL_DATA_DIR"
MNIST10K_DIR_ENV = "FASTWNLL_MNIST10K_DIR"
# The real MNIST test split shipped beside the repository: <repo>/../shared/data/mnist.
REPO_MNIST10K_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, else ``$FASTWNLL_DATA_DIR``, else ``./data`` (torchvision's usual root)."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get(DATA_DIR_ENV, "data"))


def mnist10k_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Directories searched for the 10k MNIST test files: ``data_dir`` alone when given, else
    ``$FASTWNLL_MNIST10K_DIR`` (when set) and then ``<repo>/../shared/data/mnist``."""
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = [Path(os.environ[MNIST10K_DIR_ENV])] if os.environ.get(MNIST10K_DIR_ENV) else []
    return dirs + [REPO_MNIST10K_DIR]
