"""Writing a robustness report: a Markdown table, a JSON file and a PNG plot of robust accuracy vs eps.

Rows are the dicts of :meth:`fastwnll.evaluation.robustness.Evaluator.evaluate`. White-box rows
(protocol "paper", "adaptive" or "worst-case") go into the main table, one line per (model,
defence, protocol) and one column per (attack, eps), the worst case over every attack of a cell
in the last columns; transfer rows into a second table; the masking diagnostics into a list.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastwnll.attacks.registry import ATTACKS, NORMS, AttackSpec, attack_spec
from fastwnll.runtime.files import check_outputs

from .grid import WORST

MARKDOWN_NAME, JSON_NAME, PLOT_NAME = "results.md", "results.json", "robustness.png"


def _unique(values):
    seen = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _spec(attack: str) -> AttackSpec | None:
    """The registry entry of ``attack``; None for one the registry does not know (a row of a report
    written by another version)."""
    try:
        return attack_spec(attack)
    except ValueError:
        return None


def attack_label(attack: str) -> str:
    """The registry's label of ``attack`` ("IFGSM"), "worst case" for the worst case over a cell's
    attacks, or the name itself for an unknown one."""
    if attack in WORST.values():
        return "worst case"
    spec = _spec(attack)
    return attack if spec is None else spec.label


def _is_l2(attack: str) -> bool:
    if attack == WORST["l2"]:
        return True
    spec = _spec(attack)
    return spec is not None and spec.norm == "l2"


def column_label(attack: str, eps: float | None) -> str:
    """Header of one (attack, eps) column, e.g. ``IFGSM 0.3``, ``CW-L2 L2<=1.5``, ``CW-L2 unbounded``
    or ``worst case 0.3``."""
    name = attack_label(attack)
    if eps is None:
        return f"{name} unbounded"
    return f"{name} L2<={eps:g}" if _is_l2(attack) else f"{name} {eps:g}"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _columns(rows: list[dict]) -> list[tuple[str, float | None]]:
    """The (attack, eps) columns: the L_inf attacks, then the L2 ones, each in registry order (attacks
    the registry does not know after them), then the worst cases; radii ascending, unbounded last."""
    present = _unique(r["attack"] for r in rows)
    names = list(ATTACKS)
    known = sorted((a for a in present if a in ATTACKS), key=lambda a: (ATTACKS[a].norm != "linf", names.index(a)))
    order = known + [a for a in present if a not in ATTACKS and a not in WORST.values()]
    order += [a for a in WORST.values() if a in present]
    columns = []
    for attack in order:
        values = _unique(r["eps"] for r in rows if r["attack"] == attack)
        numeric = sorted(v for v in values if v is not None)
        columns += [(attack, v) for v in numeric] + ([(attack, None)] if None in values else [])
    return columns


def white_box_table(rows: list[dict]) -> str:
    """Markdown: robust accuracy (%) per (model, defence, protocol) line and (attack, eps) column."""
    rows = [r for r in rows if r["protocol"] != "transfer"]
    if not rows:
        return ""
    columns = _columns(rows)
    header = ["model", "head", "defence", "protocol", "clean"] + [column_label(a, e) for a, e in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = _unique((r["model"], r["defense"], r["protocol"]) for r in rows)
    for model, defense, protocol in keys:
        cells = {
            (r["attack"], r["eps"]): r
            for r in rows
            if (r["model"], r["defense"], r["protocol"]) == (model, defense, protocol)
        }
        first = next(iter(cells.values()))
        clean = max((r for r in cells.values()), key=lambda r: r["n"])["clean_accuracy"]
        values = [_percent(cells[c]["robust_accuracy"]) if c in cells else "-" for c in columns]
        lines.append("| " + " | ".join([model, first["head"], defense, protocol, _percent(clean)] + values) + " |")
    return "\n".join(lines) + "\n"


def transfer_table(rows: list[dict]) -> str:
    """Markdown: robust accuracy (%) of each target (and defence) against examples crafted on a source."""
    rows = [r for r in rows if r["protocol"] == "transfer"]
    if not rows:
        return ""
    columns = _unique((r["source"], r["attack"], r["eps"]) for r in rows)
    header = ["target", "defence", "clean"] + [f"{column_label(a, e)} from {s}" for s, a, e in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, defense in _unique((r["model"], r["defense"]) for r in rows):
        cells = {
            (r["source"], r["attack"], r["eps"]): r for r in rows if (r["model"], r["defense"]) == (model, defense)
        }
        clean = next(iter(cells.values()))["clean_accuracy"]
        values = [_percent(cells[c]["robust_accuracy"]) if c in cells else "-" for c in columns]
        lines.append("| " + " | ".join([model, defense, _percent(clean)] + values) + " |")
    return "\n".join(lines) + "\n"


def budgets_list(rows: list[dict]) -> str:
    """Markdown bullet list of the distinct attack budgets and attack settings used."""
    items = _unique(r["budget"] for r in rows if r.get("budget"))
    settings = _unique((r["protocol"], r["gradient"], r["tvm_attack"], r["eot"]) for r in rows)
    lines = [f"- {b}" for b in items]
    for protocol, gradient, tvm_attack, eot in settings:
        if protocol == "worst-case":
            continue
        parts = [f"protocol {protocol}"]
        if gradient:
            parts.append(f"WNLL gradient {gradient}")
        if tvm_attack:
            parts.append(f"TVM {tvm_attack}" + (f", EOT {eot}" if tvm_attack == "bpda" else ""))
        lines.append("- attack setting: " + ", ".join(parts))
    if any(r["protocol"] == "worst-case" for r in rows):
        lines.append(
            "- worst-case line: under each attack, an example counts as robust only if it survives that "
            "attack under every protocol it ran (each evaluated in its own run); under `worst case`, only if "
            "it survives every white-box attack of the cell (same model, defence, norm and radius), on "
            "the first n images all of them attacked"
        )
    sizes = _unique((r["attack"], r["n"]) for r in rows if r["protocol"] != "worst-case")
    for attack in _unique(a for a, _ in sizes):
        counts = sorted({n for a, n in sizes if a == attack})
        if len(counts) == 1 and counts[0] != max(n for _, n in sizes):
            lines.append(f"- {attack_label(attack)} on the first {counts[0]} images")
    return "\n".join(lines) + "\n"


def diagnostics_list(diagnostics: list[dict]) -> str:
    """Markdown bullet list of the masking diagnostics (see :mod:`fastwnll.evaluation.diagnostics`)."""
    if not diagnostics:
        return "None: no zero gradients, no randomness without EOT, no attack much weaker than another of its cell.\n"
    return "".join(f"- **{d['check']}**: {d['message']}\n" for d in diagnostics)


def markdown(result: dict) -> str:
    """The whole Markdown report of a grid ``result`` (see :func:`fastwnll.evaluation.grid.run_grid`)."""
    rows = result["rows"]
    title = result.get("title") or "Robustness report"
    parts = [
        f"# {title}\n",
        f"Robust accuracy in % on {result['n']} test images of `{result['dataset']}` "
        f"(the L2 attacks on the first {result['cw_n']}); clean = accuracy on the same images behind the same "
        "defence.\n",
    ]
    table = white_box_table(rows)
    if table:
        parts += ["## White-box attacks\n", table]
    table = transfer_table(rows)
    if table:
        parts += ["## Transfer (black-box) attacks\n", table]
    parts += ["## Budgets and settings\n", budgets_list(rows)]
    if "diagnostics" in result:
        parts += ["## Masking diagnostics\n", diagnostics_list(result["diagnostics"])]
    models = result.get("models", [])
    if models:
        parts.append("## Models\n")
        parts.append(
            "".join(
                f"- `{m['name']}`: {m['model']} read through its {m['head']} head, "
                f"{'PGD eps ' + format(m['adv_eps'], 'g') if m['adv_training'] == 'pgd' else 'natural'} "
                f"training, `{m['checkpoint']}`\n"
                for m in models
            )
        )
    parts.append(f"\nTotal time {result['time_s']:.0f} s on {result['device']}.\n")
    return "\n".join(parts)


def plot(rows: list[dict], path: str | Path, title: str | None = None) -> None:
    """PNG of robust accuracy against eps: one panel per (protocol, attack) that has rows (at most four
    per line), one line per (model, defence); eps 0 is the clean accuracy; an unbounded CW-L2 point
    sits right of the radii."""
    from matplotlib.figure import Figure

    rows = [r for r in rows if r["protocol"] != "transfer"]
    if not rows:
        raise ValueError("nothing to plot: the report has no white-box rows")
    attacks = _unique(a for a, _ in _columns(rows))
    panels = [
        (p, a)
        for p in _unique(r["protocol"] for r in rows)
        for a in attacks
        if any(r["protocol"] == p and r["attack"] == a for r in rows)
    ]
    lines = _unique((r["model"], r["defense"]) for r in rows)
    models = _unique(m for m, _ in lines)
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = [f"C{i % 10}" for i in range(len(models))]
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (protocol, attack) in zip(axes.flat, panels):
        cells = [r for r in rows if r["protocol"] == protocol and r["attack"] == attack]
        numeric = sorted({r["eps"] for r in cells if r["eps"] is not None})
        unbounded_x = max(numeric) * 1.3 if numeric else 1.0
        for model, defense in lines:
            mine = [r for r in cells if (r["model"], r["defense"]) == (model, defense)]
            if not mine:
                continue
            points = sorted((unbounded_x if r["eps"] is None else r["eps"], r["robust_accuracy"]) for r in mine)
            points = [(0.0, max(mine, key=lambda r: r["n"])["clean_accuracy"])] + points
            ax.plot(
                [p[0] for p in points],
                [100 * p[1] for p in points],
                marker="o",
                markersize=3,
                color=colors[models.index(model)],
                linestyle="-" if defense == "none" else "--",
                label=f"{model}" + ("" if defense == "none" else f" + {defense}"),
            )
        ticks = [0.0] + numeric + ([unbounded_x] if any(r["eps"] is None for r in cells) else [])
        ax.set_xticks(ticks, [f"{t:g}" for t in [0.0] + numeric] + ["unb."] * (len(ticks) - len(numeric) - 1))
        ax.set_ylim(-2, 102)
        ax.set_xlabel(f"{NORMS['l2']} radius" if _is_l2(attack) else f"{NORMS['linf']} eps")
        ax.set_ylabel("robust accuracy (%)")
        name = f"{attack_label(attack)} ({NORMS['l2']})" if attack == WORST["l2"] else attack_label(attack)
        ax.set_title(f"{name}, {protocol}")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes.flat[: len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncol=min(4, max(1, len(handles))),
        fontsize="small",
    )
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)


def report_paths(out: str | Path) -> dict[str, Path]:
    """The files a report writes into the directory ``out``: ``{"markdown", "json", "plot"}``."""
    out = Path(out)
    return {"markdown": out / MARKDOWN_NAME, "json": out / JSON_NAME, "plot": out / PLOT_NAME}


def write_report(result: dict, out: str | Path, *, overwrite: bool = False) -> dict:
    """Write ``results.md``, ``results.json`` and ``robustness.png`` of ``result`` into ``out``; returns their
    paths. A report already in ``out`` (any of the three files) is a FileExistsError unless ``overwrite``."""
    paths = report_paths(out)
    check_outputs(paths.values(), overwrite, "the report")
    Path(out).mkdir(parents=True, exist_ok=True)
    paths["markdown"].write_text(markdown(result))
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    plot(result["rows"], paths["plot"], title=result.get("title"))
    return {k: str(v) for k, v in paths.items()}
