"""kNN graph search: exact backends (native C++, torch, faiss flat) and approximate faiss indexes (HNSW,
IVF-Flat): time, peak memory, recall@k against the exact graph, and WNLL accuracy on the graph.

For each size n the points are 64-d MNIST PCA features (common.mnist_pca): the real digits for
n <= 10,000, above that the 10k digits repeated with 2 % jitter (so labels stay meaningful).
``fastwnll.knn_graph(x, k=15, backend=method)`` on all n points, float32.

Each (n, method) runs in a fresh subprocess, so that its peak memory is its own:
  time_s        median wall time of --repeats calls (one call above 50,000 points; one warm-up
                call first at n <= 10,000);
  extra_mib     peak resident memory during the calls minus the resident memory before them
                (the data, the extension and torch already loaded), Linux's VmHWM after a reset;
  peak_rss_mib  the subprocess's peak resident memory (ru_maxrss);
(each saved as <out>/result_<n>_<method>.json with the graph; --reuse takes them instead of measuring)
then, in the parent:
  recall        mean fraction of the exact graph's k neighbours found per point (the exact graph is
                the first exact method's of the run);
  accuracy      WNLL accuracy on the queries (first third of the points templates, the rest queries,
                k_sigma = 8, the paper's mu) with the method's graph and distances (fastwnll.wnll_solve),
                on the real digits only (n <= 10,000; with jittered repeats a group of copies that
                holds no template can be a component of the graph of its own).

Usage:
  python benchmarks/bench_knn.py --sizes 10000 200000 --methods native torch faiss hnsw ivf --repeats 3
Writes <out>/knn_cpu_<threads>threads.csv (default out: benchmarks/out/, git-ignored; pass
--out benchmarks/results to update the committed numbers) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import markdown_table, mnist_pca, write_csv

K, K_SIGMA, DIM, CLASSES = 15, 8, 64, 10
# Up to this many points the features are real digits (above: jittered repeats).
REAL_DIGITS = 10_000
METHODS = ("native", "torch", "faiss", "hnsw", "ivf")
EXACT = ("native", "torch", "faiss")


def _status(key: str) -> int:
    """A memory figure of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith(key))


def child(n: int, method: str, repeats: int, out: Path) -> None:
    """Time one method on the saved points of size n; save its graph and measurements."""
    import fastwnll

    x = torch.from_numpy(np.load(out / f"points_{n}.npy"))
    fastwnll.knn_graph(x[:1000], K, backend=method)  # loads the extension, faiss and their threads
    if n <= 10_000:
        fastwnll.knn_graph(x, K, backend=method)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    before = _status("VmRSS:")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        idx, dist = fastwnll.knn_graph(x, K, backend=method)
        times.append(time.perf_counter() - start)
    extra = _status("VmHWM:") - before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    np.save(out / f"idx_{n}_{method}.npy", idx.numpy().astype(np.int32))
    np.save(out / f"dist_{n}_{method}.npy", dist.numpy())
    result = dict(time_s=statistics.median(times), extra_mib=extra / 2**20, peak_rss_mib=peak / 2**20)
    (out / f"result_{n}_{method}.json").write_text(json.dumps(result))


def recall(idx: np.ndarray, ref: np.ndarray) -> float:
    """Mean fraction of the rows of ``ref`` found in the same rows of ``idx`` (chunked)."""
    found = 0
    for s in range(0, len(idx), 50_000):
        a, b = idx[s : s + 50_000], ref[s : s + 50_000]
        found += (a[:, :, None] == b[:, None, :]).any(2).sum()
    return found / ref.size


def accuracy(idx: np.ndarray, dist: np.ndarray, labels: np.ndarray):
    """WNLL accuracy on the queries with the given graph (templates: the first third); "" when some
    queries reach no template."""
    import fastwnll

    n = len(labels)
    m = n // 3
    w = fastwnll.weights_from_distances(torch.from_numpy(dist).double(), k_sigma=K_SIGMA)
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels[:m]), CLASSES).double()
    try:
        u = fastwnll.wnll_solve(
            torch.from_numpy(idx).long(), w, onehot, mu=n / m - 1.0, tol=1e-6, max_iter=5000, on_nonconvergence="warn"
        )
    except fastwnll.WNLLUnreachableError as exc:
        print(f"accuracy not measured: {str(exc).split(':')[0]}", flush=True)
        return ""
    return float((u.argmax(1).numpy() == labels[m:]).mean())


def run_size(n: int, methods: list[str], repeats: int, out: Path, reuse: bool) -> list[dict]:
    x, y = mnist_pca(DIM, n)
    np.save(out / f"points_{n}.npy", x)
    rows = []
    for method in methods:
        saved = out / f"result_{n}_{method}.json"
        if not (reuse and saved.exists()):
            cmd = [sys.executable, __file__, "--child", str(n), method, "--repeats", str(repeats), "--out", str(out)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"{method} at n={n} failed:\n{result.stderr}")
        row = dict(n=n, method=method, exact=method in EXACT, **json.loads(saved.read_text()))
        rows.append(row)
        print(f"n={n} {method}: {row['time_s']:.2f} s, +{row['extra_mib']:.0f} MiB", flush=True)
    reference = next((m for m in methods if m in EXACT), None)
    ref = np.load(out / f"idx_{n}_{reference}.npy") if reference else None
    for row in rows:
        idx = np.load(out / f"idx_{n}_{row['method']}.npy")
        row["recall"] = recall(idx, ref) if ref is not None else ""
        real = n <= REAL_DIGITS
        row["accuracy"] = accuracy(idx, np.load(out / f"dist_{n}_{row['method']}.npy"), y) if real else ""
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 200_000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (medians); 1 above 50,000")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the measurements (result_<n>_<method>.json and graphs) already in --out",
    )
    parser.add_argument("--child", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(int(args.child[0]), args.child[1], args.repeats, args.out)
        return
    rows = []
    for n in args.sizes:
        rows += run_size(n, args.methods, args.repeats if n <= 50_000 else 1, args.out, args.reuse)
    threads = torch.get_num_threads()
    write_csv(args.out / f"knn_cpu_{threads}threads.csv", rows)
    fmt = [
        dict(
            r,
            time_s=f"{r['time_s']:.2f}",
            extra_mib=f"{r['extra_mib']:.0f}",
            peak_rss_mib=f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "",
            recall=f"{r['recall']:.4f}" if r["recall"] != "" else "",
            accuracy=f"{r['accuracy']:.4f}" if r["accuracy"] != "" else "",
        )
        for r in rows
    ]
    print(f"{os.cpu_count()} cores, {threads} torch threads")
    print(markdown_table(fmt, ["n", "method", "exact", "time_s", "extra_mib", "peak_rss_mib", "recall", "accuracy"]))


if __name__ == "__main__":
    main()
