"""The published speed targets, one entry each, and how a set of benchmark rows meets them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A bound on one figure of one row: the row of ``bench`` with ``case`` (and ``size`` and
    ``backend`` when given) measured on a ``device_type`` device; its ``figure`` (``"median_ms"`` or
    ``"ratio"``) must be at most ``limit`` (``at_most``) or at least ``limit``."""

    name: str
    bench: str
    case: str
    figure: str
    limit: float
    at_most: bool = True
    size: int | None = None
    backend: str | None = None
    device_type: str = "cuda"

    def describe(self) -> str:
        """The bound in words, e.g. ``<= 1 ms`` or ``>= 10x``."""
        unit = " ms" if self.figure == "median_ms" else "x"
        return f"{'<=' if self.at_most else '>='} {self.limit:g}{unit}"

    def selects(self, row: dict) -> bool:
        return (
            row.get("bench") == self.bench
            and row.get("case") == self.case
            and (self.size is None or row.get("size") == self.size)
            and (self.backend is None or row.get("backend") == self.backend)
        )

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


# The GPU targets (an H100/H200-class GPU). Adding a target is one entry.
TARGETS = (
    Target("WNLL forward, n = 6,000", "wnll", "forward", "median_ms", 1.0, size=6000),
    Target("WNLL forward, n = 50,000", "wnll", "forward", "median_ms", 5.0, size=50000),
    Target("WNLL forward+backward / forward, n = 6,000", "wnll", "forward+backward", "ratio", 2.5, size=6000),
    Target("WNLL forward+backward / forward, n = 50,000", "wnll", "forward+backward", "ratio", 2.5, size=50000),
    Target(
        "TV fused kernel vs eager torch, tv_denoise, CIFAR 512x3x32x32",
        "tv",
        "tv_denoise CIFAR",
        "ratio",
        10.0,
        at_most=False,
        size=512,
        backend="triton",
    ),
    Target(
        "TV fused kernel vs eager torch, tvm, CIFAR 512x3x32x32",
        "tv",
        "tvm CIFAR",
        "ratio",
        10.0,
        at_most=False,
        size=512,
        backend="triton",
    ),
    Target(
        "PGD epoch, WNLL head / linear head (stage 2)", "training", "PGD epoch", "ratio", 1.2, backend="wnll, stage 2"
    ),
)

MET, NOT_MET, MISSING = "met", "NOT MET", "missing"


def check(rows: list[dict], targets=TARGETS) -> list[dict]:
    """For each target: ``{"target", "limit", "value", "shape", "device", "status"}``. Rows carry the
    ``device_type`` they were measured on (see :func:`fastwnll.bench.summary.collect`).

    ``status``: :data:`MET` or :data:`NOT_MET` for the last row of the target's device type that the
    target selects and that has the figure; ``"n/a on <type>"`` when the target's benchmark ran on
    another device type only (a CPU run of a GPU target; the value shown is the selected row's, if
    any); :data:`MISSING` otherwise (the benchmark did not run, failed, or not at the target's size).
    """
    results = []
    for target in targets:
        bench_types = {row.get("device_type") for row in rows if row.get("bench") == target.bench}
        selected = [row for row in rows if target.selects(row) and row.get(target.figure) is not None]
        own = [row for row in selected if row.get("device_type") == target.device_type]
        row = (own or selected or [None])[-1]
        if own:
            status = MET if target.met(row[target.figure]) else NOT_MET
        elif bench_types and target.device_type not in bench_types:
            status = f"n/a on {', '.join(sorted(map(str, bench_types)))}"
        else:
            status = MISSING
        results.append(
            {
                "target": target.name,
                "limit": target.describe(),
                "value": None if row is None else row[target.figure],
                "shape": None if row is None else row.get("shape"),
                "device": None if row is None else row.get("device"),
                "status": status,
            }
        )
    return results
