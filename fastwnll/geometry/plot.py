"""The picture: one panel per model with its projected clean and adversarial features, coloured by
true class, and arrows from clean to adversarial for a sample of images."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import torch

# Inches per panel (width, height), the legend strip below the panels, the title strip above, and
# the resolution: a PNG is exactly (columns * PANEL_SIZE[0]) * DPI pixels wide. Panels per row
# when not given: all of them, up to MAX_COLUMNS.
PANEL_SIZE = (4.6, 4.4)
LEGEND_HEIGHT = 0.9
TITLE_HEIGHT = 0.7
DPI = 100
MAX_COLUMNS = 4
# Characters of the caption per inch of figure width (it is wrapped to fit).
CAPTION_CHARS_PER_INCH = 13


def grid_shape(panels: int, columns: int | None = None) -> tuple[int, int]:
    """``(rows, columns)`` of the panel grid: ``columns`` per row (default ``min(panels, MAX_COLUMNS)``)."""
    if columns is None:
        columns = min(panels, MAX_COLUMNS)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an integer >= 1, got {columns!r}")
    columns = min(columns, panels)
    return math.ceil(panels / columns), columns


def figure_size(panels: int, columns: int | None = None) -> tuple[float, float]:
    """Figure size in inches for ``panels`` panels, ``columns`` per row (see :func:`grid_shape`)."""
    rows, columns = grid_shape(panels, columns)
    return columns * PANEL_SIZE[0], rows * PANEL_SIZE[1] + LEGEND_HEIGHT + TITLE_HEIGHT


def class_colors(num_classes: int) -> list:
    """One colour per class: matplotlib's tab10 up to 10 classes, tab20 up to 20, else a hue wheel."""
    from matplotlib import colormaps

    if num_classes <= 10:
        return [colormaps["tab10"](i) for i in range(num_classes)]
    if num_classes <= 20:
        return [colormaps["tab20"](i) for i in range(num_classes)]
    return [colormaps["hsv"](i / num_classes) for i in range(num_classes)]


def plot_panels(
    panels: list[dict],
    path: str | Path | None,
    *,
    title: str,
    caption: str,
    num_classes: int,
    columns: int | None = None,
):
    """Draw the panels, ``columns`` per row (see :func:`grid_shape`), and save the PNG at ``path`` (not
    saved when None); returns the matplotlib Figure.

    Each panel is a dict with ``title`` (str), ``clean`` and ``adversarial`` (``[N, 2]`` projected
    features, row ``i`` of both = image ``i``), ``labels`` (``[N]`` int64 true classes), ``arrows``
    (``[A]`` int64 rows that get an arrow) and ``axes`` (the two axis labels).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not panels:
        raise ValueError("nothing to draw: no panels")
    colors = class_colors(num_classes)
    rows, columns = grid_shape(len(panels), columns)
    fig = Figure(figsize=figure_size(len(panels), columns), layout="constrained")
    grid = fig.subplots(rows, columns, squeeze=False)
    for ax in grid.flat[len(panels) :]:
        ax.remove()
    for ax, panel in zip(grid.flat, panels):
        clean, adv = panel["clean"].numpy(), panel["adversarial"].numpy()
        point_colors = [colors[int(c)] for c in panel["labels"]]
        ax.scatter(clean[:, 0], clean[:, 1], c=point_colors, s=7, marker="o", alpha=0.45, linewidths=0)
        ax.scatter(adv[:, 0], adv[:, 1], c=point_colors, s=12, marker="x", alpha=0.75, linewidths=0.8)
        rows = panel["arrows"].numpy()
        if rows.size:
            start, delta = clean[rows], adv[rows] - clean[rows]
            ax.quiver(
                start[:, 0],
                start[:, 1],
                delta[:, 0],
                delta[:, 1],
                angles="xy",
                scale_units="xy",
                scale=1,
                color="black",
                alpha=0.65,
                width=0.004,
                headwidth=4,
                headlength=5,
            )
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(panel["title"], fontsize="small")
        ax.set_xlabel(panel["axes"][0], fontsize="small")
        ax.set_ylabel(panel["axes"][1], fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(alpha=0.25)
    handles = [Line2D([], [], linestyle="", marker="o", color=colors[c], label=str(c)) for c in range(num_classes)]
    handles += [
        Line2D([], [], linestyle="", marker="o", color="grey", alpha=0.6, label="clean"),
        Line2D([], [], linestyle="", marker="x", color="grey", label="adversarial"),
        Line2D([], [], color="black", marker=">", markersize=4, label="clean -> adversarial"),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 8),
        fontsize="small",
        title="true class",
        title_fontsize="small",
    )
    caption = textwrap.fill(caption, width=int(columns * PANEL_SIZE[0] * CAPTION_CHARS_PER_INCH))
    fig.suptitle(f"{title}\n{caption}", fontsize="medium")
    if path is not None:
        fig.savefig(path, dpi=DPI)
    return fig


def arrow_rows(n: int, count: int, seed: int) -> torch.Tensor:
    """``min(count, n)`` distinct rows of ``range(n)``, a seeded random sample (sorted): the images
    whose displacement is drawn, the same in every panel."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"arrows must be an integer >= 0, got {count!r}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(count, n)].sort().values
