"""The numbers of a geometry run as a Markdown table and a JSON file, and the output directory's files."""

from __future__ import annotations

import json
from pathlib import Path

from .upstream import check_outputs

PLOT_NAME, JSON_NAME, MARKDOWN_NAME = "geometry.png", "geometry.json", "geometry.md"
OUTPUT_NAMES = (PLOT_NAME, JSON_NAME, MARKDOWN_NAME)

DEFINITIONS = {
    "spread": "intra-class spread s: RMS distance of a clean feature to its class centroid (pooled over all images)",
    "inter_class_mean": "inter-class distance D: mean distance between two class centroids (clean features), "
    "over all pairs of classes",
    "inter_class_min": "smallest distance between two class centroids",
    "spread_ratio": "s / D (smaller: tighter, better separated clusters)",
    "displacement": "mean distance between an image's clean and adversarial features",
    "relative_displacement": "displacement / D (± its standard error over the images)",
    "knn_true_clean": "share of clean features whose k nearest templates hold the true class more than k/2 times",
    "knn_true_adversarial": "the same share for the adversarial features",
}


def output_paths(out: str | Path) -> dict:
    """``{"plot", "json", "markdown"}``: the files a run writes into ``out``."""
    out = Path(out)
    return {"plot": out / PLOT_NAME, "json": out / JSON_NAME, "markdown": out / MARKDOWN_NAME}


def check_output(out: str | Path, overwrite: bool) -> None:
    """Raise FileExistsError when ``out`` already holds one of the output files and ``overwrite`` is
    False, and NotADirectoryError when ``out`` is a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    check_outputs(output_paths(out).values(), overwrite, "the geometry report")


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(result: dict) -> str:
    """The table of one run (one line per model) with the attack, the projection and the definitions."""
    header = [
        "model",
        "head",
        "protocol",
        "clean acc. %",
        "adv. acc. %",
        "spread s",
        "inter-class D (min)",
        "s / D",
        "displacement",
        "displacement / D",
        "kNN-true clean %",
        "kNN-true adv. %",
    ]
    lines = [
        f"# {result['title']}",
        "",
        f"Attack: {result['attack_description']}; {result['n']} {result['dataset']} test images "
        f"(seed {result['seed']}); k = {', '.join(sorted({str(m['k']) for m in result['models']}))} "
        "nearest templates.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for m in result["models"]:
        g = m["metrics"]
        lines.append(
            "| "
            + " | ".join(
                [
                    m["name"],
                    m["head"],
                    m["protocol"],
                    _percent(m["clean_accuracy"]),
                    _percent(m["adversarial_accuracy"]),
                    f"{g['spread']:.3g}",
                    f"{g['inter_class_mean']:.3g} ({g['inter_class_min']:.3g})",
                    f"{g['spread_ratio']:.3f}",
                    f"{g['displacement']:.3g}",
                    f"{g['relative_displacement']:.3f} ± {g['relative_displacement_se']:.3f}",
                    _percent(g["knn_true_clean"]),
                    _percent(g["knn_true_adversarial"]),
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Definitions (features = the head's input; D and s from the clean features; distances Euclidean):",
        "",
    ]
    lines += [f"- `{name}`: {text}" for name, text in DEFINITIONS.items()]
    lines += ["", "Attacks and template banks:", ""]
    for m in result["models"]:
        chosen = (
            ""
            if "chosen" not in m
            else " (worst case per image: " + ", ".join(f"{v} from {k}" for k, v in m["chosen"].items()) + ")"
        )
        lines.append(
            f"- {m['name']} (`{m['checkpoint']}`): {' | '.join(m['attacks'])}{chosen}; "
            f"{m['templates']} templates ({m['template_source']}), k = {m['k']}"
        )
    lines += ["", f"Picture: {result['projection_description']}", ""]
    return "\n".join(lines)


def write_outputs(result: dict, out: str | Path) -> dict:
    """Write ``geometry.json`` and ``geometry.md`` of ``result`` into ``out`` (created if missing);
    returns the paths of all three output files as strings."""
    paths = output_paths(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(markdown(result))
    return {k: str(v) for k, v in paths.items()}
