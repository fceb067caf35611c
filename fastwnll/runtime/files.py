"""Output files of the commands: nothing that exists is replaced unless the caller says so."""

from __future__ import annotations

import os
from pathlib import Path


def check_outputs(paths, overwrite: bool, what: str = "the output") -> list[Path]:
    """Check, before any work, that ``what`` may be written to ``paths``; returns those that exist
    (to be replaced). An existing path is a FileExistsError naming it and the ways out
    (``overwrite=True``, CLI ``--overwrite``, or another location) unless ``overwrite``; a
    directory where a file goes is an error either way."""
    existing = [Path(p) for p in paths if os.path.lexists(p)]
    folders = [p for p in existing if p.is_dir()]
    if folders:
        raise FileExistsError(f"{', '.join(map(str, folders))}: a directory where {what} writes a file")
    if existing and not overwrite:
        one = len(existing) == 1
        raise FileExistsError(
            f"{', '.join(map(str, existing))} already exist{'s' if one else ''}: replace "
            f"{'it' if one else 'them'} with overwrite=True (--overwrite) or write {what} elsewhere"
        )
    return existing
