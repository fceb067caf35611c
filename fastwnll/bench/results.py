"""The rows a microbenchmark produces, what they were measured on, and the files they are written to.

A row is a flat dict with the keys of :data:`COLUMNS` (and a benchmark's own extra ones, such as
``recall``): times in milliseconds (``median_ms``; None when the case could not run, ``note`` says
why), ``ratio`` a dimensionless comparison that ``ratio_of`` explains, and the tags that make a
figure comparable with another machine's: device name, torch and fastwnll versions, shape, dtype.
"""

from __future__ import annotations

import csv
import datetime
import json
import platform
from pathlib import Path

import torch

from fastwnll.runtime.files import check_outputs

from .timing import device_name

COLUMNS = (
    "bench",
    "case",
    "backend",
    "size",
    "shape",
    "dtype",
    "median_ms",
    "ratio",
    "ratio_of",
    "repeats",
    "device",
    "torch",
    "fastwnll",
    "note",
)
# What the terminal table shows of each row (the files hold every column).
SHOWN = ("case", "backend", "shape", "dtype", "median_ms", "ratio", "ratio_of", "recall", "cpu_ms", "cpu_ratio", "note")


def environment(device: str | torch.device) -> dict:
    """What the figures were measured on: device name and type, versions of python, torch (and the
    CUDA it was built for), fastwnll and triton (None when absent), torch's CPU threads."""
    from importlib.metadata import PackageNotFoundError, version

    from fastwnll import __version__

    try:
        triton = version("triton")
    except PackageNotFoundError:
        triton = None
    device = torch.device(device)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "fastwnll": __version__,
        "triton": triton,
        "torch_threads": torch.get_num_threads(),
    }


def make_row(
    env: dict,
    bench: str,
    case: str,
    backend: str,
    size: int,
    shape,
    dtype,
    seconds: float | None,
    repeats: int,
    *,
    ratio: float | None = None,
    ratio_of: str = "",
    note: str = "",
    **extra,
) -> dict:
    """One row (see the module docstring): ``shape`` a sequence of ints (written ``6000x64``),
    ``dtype`` a torch dtype or its name, ``seconds`` the median time (None: not measured)."""
    return {
        "bench": bench,
        "case": case,
        "backend": backend,
        "size": size,
        "shape": "x".join(map(str, shape)),
        "dtype": str(dtype).replace("torch.", ""),
        "median_ms": None if seconds is None else seconds * 1e3,
        "ratio": ratio,
        "ratio_of": ratio_of,
        "repeats": repeats,
        "device": env["device"],
        "torch": env["torch"],
        "fastwnll": env["fastwnll"],
        "note": note,
        **extra,
    }


def output_paths(out: str | Path, bench: str, device: str | torch.device) -> list[Path]:
    """The files of one benchmark run: ``<out>/<bench>_<device type>.csv`` and ``.json``."""
    stem = Path(out) / f"{bench}_{torch.device(device).type}"
    return [stem.with_suffix(".csv"), stem.with_suffix(".json")]


def check_paths(paths, overwrite: bool) -> None:
    """Before any timing: the result files may be written (existing ones only with ``overwrite``)."""
    check_outputs(paths, overwrite, "the benchmark")


def write_results(paths, rows: list[dict], env: dict, bench: str, command: str) -> None:
    """Write ``rows`` to the CSV and JSON ``paths`` (from :func:`output_paths`). The JSON holds
    ``{"bench", "command", "date", "environment", "rows"}``; folders are created."""
    csv_path, json_path = paths
    write_csv(csv_path, rows)
    payload = {
        "bench": bench,
        "command": command,
        "date": datetime.date.today().isoformat(),
        "environment": env,
        "rows": rows,
    }
    json_path.write_text(json.dumps(payload, indent=1) + "\n")


def read_results(path: str | Path) -> dict:
    """A JSON file written by :func:`write_results`; ValueError naming the file when it is not one."""
    try:
        payload = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a benchmark result file ({error})") from None
    if not isinstance(payload, dict) or not {"bench", "environment", "rows"} <= set(payload):
        raise ValueError(f"{path}: not a benchmark result file (no bench, environment and rows)")
    return payload


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write ``rows`` (dicts) to ``path`` as CSV (its folder created); the columns are every key, in order
    of appearance."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], columns) -> str:
    """A Markdown table of the given columns of ``rows`` (each cell ``str(value)``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def shown(value) -> str:
    """A cell of the terminal table: floats to 3 significant digits (no exponent from 100 up), None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def display(rows: list[dict], columns=SHOWN) -> str:
    """The terminal table of ``rows``: the ``columns`` that hold a value in some row."""
    used = [c for c in columns if any(row.get(c) not in (None, "") for row in rows)]
    return markdown_table([{c: shown(row.get(c)) for c in used} for row in rows], used)
