"""The summary of a folder of benchmark results: what they were measured on, the stages of a check
run (``scripts/gpu_check.sh``), every figure, and every target met or not, as Markdown and JSON.

Stages file (written by ``scripts/gpu_check.sh``): one line per stage, tab-separated: name, exit
status of its command (``skipped`` when no time was left for it), seconds taken, seconds allowed,
path of its log. Exit status 124 or 137 is a command stopped at its time limit.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

from .results import display, environment, markdown_table, read_results, shown
from .targets import MET, TARGETS, check

FIGURES = ("bench", "case", "backend", "shape", "dtype", "median_ms", "ratio", "ratio_of", "recall", "note")
TIMED_OUT = ("124", "137")


def last_line(path: str | Path) -> str:
    """The last non-empty line of a text file ("" when it is absent or empty): a stage's outcome,
    e.g. pytest's ``12 passed, 3 skipped in 40.1s``."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def read_stages(path: str | Path) -> list[dict]:
    """The stages of a stages file (see the module docstring) as ``{"stage", "status", "ok",
    "seconds", "budget_s", "detail"}``; ValueError naming the line when one is malformed."""
    stages = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5 or not fields[2].isdigit() or not fields[3].isdigit():
            raise ValueError(
                f"{path}, line {number}: expected name, exit status, seconds, budget and log "
                f"separated by tabs, got {line!r}"
            )
        name, code, seconds, budget, log = fields
        if code == "skipped":
            status = "skipped: no time left"
        elif code == "0":
            status = "passed"
        elif code in TIMED_OUT:
            status = f"timed out ({budget} s)"
        else:
            status = f"failed (exit {code})"
        stages.append(
            {
                "stage": name,
                "status": status,
                "ok": code == "0",
                "seconds": int(seconds),
                "budget_s": int(budget),
                "detail": last_line(log),
            }
        )
    return stages


def collect(results: str | Path) -> tuple[list[dict], list[dict], list[str]]:
    """``(environments, rows, unread)`` of the result files (``*.json``, sorted) in the folder
    ``results``: each file's environment, its rows with the ``device_type`` of that environment
    added, and ``"name: why"`` for every JSON file that is not a result file."""
    environments, rows, unread = [], [], []
    for path in sorted(Path(results).glob("*.json")):
        try:
            payload = read_results(path)
        except ValueError as error:
            unread.append(str(error))
            continue
        environments.append(payload["environment"])
        rows += [dict(row, device_type=payload["environment"].get("device_type")) for row in payload["rows"]]
    return environments, rows, unread


def summarize(
    results: str | Path,
    stages: str | Path | None = None,
    title: str | None = None,
    device: str | None = None,
    targets=TARGETS,
) -> dict:
    """The summary of the folder ``results`` (and of the ``stages`` file, if any): ``{"title",
    "date", "devices", "environment", "stages", "targets", "rows", "unread", "ok"}``. ``ok``: every
    stage passed, and every target is met or does not apply to the device the rows come from (a
    target whose figure is missing is not ok). ``environment`` is that of a GPU result if there is
    one, else of the first result, else (no result read) that of ``device`` on this machine, if given.
    """
    environments, rows, unread = collect(results)
    if not environments and device is not None:
        environments = [environment(device)]
    stage_list = read_stages(stages) if stages else []
    checked = check(rows, targets)
    gpu = [env for env in environments if env.get("device_type") == "cuda"]
    ok = all(s["ok"] for s in stage_list) and all(t["status"] == MET or t["status"].startswith("n/a") for t in checked)
    return {
        "title": title or "fastwnll benchmark summary",
        "date": datetime.date.today().isoformat(),
        "devices": sorted({env["device"] for env in environments}),
        "environment": (gpu or environments or [{}])[0],
        "stages": stage_list,
        "targets": checked,
        "rows": rows,
        "unread": unread,
        "ok": ok,
    }


def device_slug(summary: dict) -> str:
    """A file-name form of the summary's device: ``nvidia_h200`` for an "NVIDIA H200", ``cpu`` for a
    CPU, ``unknown`` when no result was read."""
    env = summary["environment"]
    if not env:
        return "unknown"
    if env.get("device_type") != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "_", env["device"].lower()).strip("_")


def markdown(summary: dict) -> str:
    """The summary as a Markdown document: environment, stages, targets, figures."""
    env = summary["environment"]
    lines = [
        f"# {summary['title']}",
        "",
        f"- device: {', '.join(summary['devices']) or 'none (no result was read)'}",
        f"- date: {summary['date']}",
    ]
    if env:
        lines.append(
            f"- python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
            f"triton {env.get('triton')}, fastwnll {env.get('fastwnll')}"
        )
    lines += [f"- all stages passed and all targets met: {'yes' if summary['ok'] else 'NO'}", ""]
    if summary["stages"]:
        lines += [
            "## Stages",
            "",
            markdown_table(
                [dict(s, seconds=f"{s['seconds']} / {s['budget_s']}") for s in summary["stages"]],
                ["stage", "status", "seconds", "detail"],
            ),
            "",
        ]
    lines += [
        "## Targets",
        "",
        markdown_table(
            [{k: shown(v) for k, v in t.items()} for t in summary["targets"]],
            ["target", "limit", "value", "shape", "status"],
        ),
        "",
    ]
    if summary["rows"]:
        lines += ["## Figures (times in ms, medians)", "", display(summary["rows"], FIGURES), ""]
    if summary["unread"]:
        lines += ["Not read: " + "; ".join(summary["unread"]), ""]
    return "\n".join(lines)


def summary_paths(pattern: str | Path, summary: dict) -> list[Path]:
    """The Markdown path ``pattern`` with ``{device}`` replaced by :func:`device_slug`, and the JSON
    path beside it."""
    md = Path(str(pattern).replace("{device}", device_slug(summary)))
    if md.suffix != ".md":
        raise ValueError(f"the summary file must end in .md, got {md}")
    return [md, md.with_suffix(".json")]


def write_summary(paths, summary: dict) -> None:
    """Write the Markdown and JSON of ``summary`` to ``paths`` (from :func:`summary_paths`)."""
    md, js = paths
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(summary))
    js.write_text(json.dumps(summary, indent=1) + "\n")
