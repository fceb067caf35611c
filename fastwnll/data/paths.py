"""Where the loaders look for data files when the caller names no directory: ``$FASTWNLL_DATA_DIR``,
else ``./data``. The package looks nowhere else (in particular not beside its own installation)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "FASTWNLL_DATA_DIR"


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, else ``$FASTWNLL_DATA_DIR``, else ``./data`` (torchvision's usual root)."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get(DATA_DIR_ENV, "data"))
