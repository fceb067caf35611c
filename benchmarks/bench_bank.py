"""The template-bank index: one WNLL forward and one attack step against a fixed bank, today's full
rebuild (``wnll_interpolate`` on the bank and the queries) vs ``TemplateBank`` (its kNN lists indexed
once), side by side.

For each bank size m and query count q, the points are real MNIST PCA-64 features (see
common.mnist_pca), the first m the labelled templates, the next q the queries, k = 15, 10 classes,
float32. Rows, all timed in the same run (median of --repeats):
  forward   scores of the q queries: ``wnll_interpolate(bank, labels, queries)`` vs
            ``bank.interpolate(queries)`` (transductive: the same graph and scores, checked bit for
            bit here; from ``REBUILD_QUERIES_PER_TEMPLATE`` queries per template on it is the full
            rebuild itself), the bank's own transductive path whatever q ("own path": where the
            switch lies) and ``bank.interpolate(queries, inductive=True)``;
  attack step  forward + backward of a cross-entropy to the queries (the exact WNLL gradient an
            adaptive attack takes at each iteration), the same three ways;
  index     building the index once (the bank's own kNN graph), paid on the first call (wall time).
Each time is the median wall time and the median process CPU time (steadier on a shared machine:
it does not count waiting for a core); speedups are against the full rebuild in the same run.

Usage:  python benchmarks/bench_bank.py [--banks 2000 5000 20000] [--queries 1 50 500] [--repeats 7] [--out DIR]
Writes OUT/bank_<device>_<threads>threads.csv (times in seconds; OUT defaults to benchmarks/out/,
which git ignores) and prints a Markdown table (times in milliseconds). On a shared CPU,
OMP_NUM_THREADS=1 gives the steadiest numbers.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import add_io_options, device_name, markdown_table, mnist_pca, timings, write_csv

import fastwnll
from fastwnll.wnll import bank as bank_module

K, CLASSES, DIM = 15, 10, 64


def own_path(interpolate):
    """``interpolate`` with the bank's own transductive path for any number of queries."""

    def run(queries):
        saved = bank_module.REBUILD_QUERIES_PER_TEMPLATE
        bank_module.REBUILD_QUERIES_PER_TEMPLATE = float("inf")
        try:
            return interpolate(queries)
        finally:
            bank_module.REBUILD_QUERIES_PER_TEMPLATE = saved

    return run


def step(interpolate, queries: torch.Tensor, labels: torch.Tensor) -> None:
    """One attack step: the gradient of a cross-entropy of the WNLL scores to the queries."""
    x = queries.clone().requires_grad_(True)
    scores = interpolate(x).clamp_min(1e-8)
    F.nll_loss(torch.log(scores / scores.sum(1, keepdim=True)), labels).backward()


def measure(m: int, q: int, repeats: int, device: str, data_dir) -> list[dict]:
    x, y = mnist_pca(DIM, m + q, data_dir=data_dir)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    templates, labels, queries, truth = x[:m], y[:m], x[m:], y[m:]
    full = lambda v: fastwnll.wnll_interpolate(templates, labels, v, k=K, num_classes=CLASSES)  # noqa: E731
    build = lambda: fastwnll.TemplateBank(templates, labels, k=K, num_classes=CLASSES)  # noqa: E731
    bank = build()
    index_s = (
        timings(lambda: build().interpolate(queries[:1], inductive=True), max(3, repeats // 2), device)[0]
        - timings(lambda: bank.interpolate(queries[:1], inductive=True), repeats, device)[0]
    )
    with torch.no_grad():
        expected = full(queries)
        identical = torch.equal(bank.interpolate(queries), expected)
        identical_own = torch.equal(own_path(bank.interpolate)(queries), expected)
    methods = [
        ("today: full rebuild", full),
        ("bank, transductive", bank.interpolate),
        ("bank, transductive, own path", own_path(bank.interpolate)),
        ("bank, inductive", lambda v: bank.interpolate(v, inductive=True)),
    ]
    rows = []
    slow_repeats = max(3, repeats // 2) if m >= 20000 else repeats
    for name, interpolate in methods:
        runs = slow_repeats if name.startswith("today") else repeats
        with torch.no_grad():
            forward_s, forward_cpu_s = timings(lambda: interpolate(queries), runs, device)
            accuracy = float((interpolate(queries).argmax(1) == truth).float().mean())
        step_s, step_cpu_s = timings(lambda: step(interpolate, queries, truth), runs, device)
        rows.append(
            {
                "m": m,
                "q": q,
                "method": name,
                "forward_s": forward_s,
                "attack_step_s": step_s,
                "forward_cpu_s": forward_cpu_s,
                "attack_step_cpu_s": step_cpu_s,
                "index_s": index_s if name.startswith("bank") else None,
                "accuracy": accuracy,
                "identical_to_full": (identical_own if "own path" in name else identical)
                if "transductive" in name
                else None,
            }
        )
    for row in rows:
        for key in ("forward_s", "attack_step_s", "forward_cpu_s", "attack_step_cpu_s"):
            row[key[:-2] + "_speedup"] = rows[0][key] / row[key]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, nargs="+", default=[2000, 5000, 20000])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 50, 500])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    add_io_options(parser)
    args = parser.parse_args()
    rows = []
    for m in args.banks:
        for q in args.queries:
            rows += measure(m, q, args.repeats, args.device, args.data_dir)
            print(f"m={m} q={q} done", flush=True)
    suffix = f"_{torch.get_num_threads()}threads" if args.device == "cpu" else ""
    path = args.out / f"bank_{args.device}{suffix}.csv"
    write_csv(path, rows)
    print(f"{device_name(args.device)}; wrote {path}\n")
    shown = [
        {
            **r,
            "m": f"{r['m']:,}",
            "index ms": "" if r["index_s"] is None else f"{1e3 * r['index_s']:.0f}",
            "accuracy": f"{r['accuracy']:.3f}",
            "same scores": {None: "", True: "bit for bit", False: "NO"}[r["identical_to_full"]],
            **{
                f"{what} ms ({clock})": f"{1e3 * r[key + suffix + '_s']:.2f} ({r[key + suffix + '_speedup']:.1f}x)"
                for what, key in (("forward", "forward"), ("attack step", "attack_step"))
                for clock, suffix in (("wall", ""), ("CPU", "_cpu"))
            },
        }
        for r in rows
    ]
    print(
        markdown_table(
            shown,
            [
                "m",
                "q",
                "method",
                "forward ms (wall)",
                "forward ms (CPU)",
                "attack step ms (wall)",
                "attack step ms (CPU)",
                "index ms",
                "accuracy",
                "same scores",
            ],
        )
    )


if __name__ == "__main__":
    main()
