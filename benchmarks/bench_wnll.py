"""WNLL interpolation: fastwnll vs the published algorithm and graphlearning.

For each n, the points are real MNIST PCA-64 features (see common.mnist_pca), the first third
templates and the rest queries (n/m = 3, as in the paper's training), k = 15, 10 classes.

Rows, all timed in the same run (median of --repeats):
  fastwnll   forward split into kNN / weights / solve, forward total, and forward+backward
             (gradient of a cross-entropy on the queries with respect to all features);
  fastwnll, faiss kNN  (CPU) the kNN and the forward with backend="faiss" instead of the native kernel;
  seed       the published method's algorithm written from the equations: scikit-learn exact kNN
             (its time alone in the kNN column), the same Gaussian weights, and one scipy BiCGSTAB
             per class (tol 1e-7);
  graphlearning  its kNN graph + laplace(reweighting="wnll") (CG), n <= 10,000 only, a different weight kernel
             (exp(-4 d^2 / d_k^2), symmetrised) on the same points.
Accuracy on the queries is reported for each, so speed is compared at equal accuracy.

Usage:  python benchmarks/bench_wnll.py [--sizes 2000 6000 10000 50000] [--device cpu|cuda] [--out DIR]
Writes OUT/wnll_<device>[_<threads>threads].csv (times in seconds; OUT defaults to benchmarks/out/,
which git ignores: pass --out benchmarks/results to replace the committed tables) and prints a
Markdown table (times in milliseconds). On a shared CPU, OMP_NUM_THREADS=1 gives the most stable
numbers (all methods then use one core).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import add_io_options, device_name, markdown_table, mnist_pca, timeit, write_csv

import fastwnll
from fastwnll.wnll.weights import gaussian_weights

K, K_SIGMA, CLASSES, DIM = 15, 8, 10, 64
# graphlearning's exact (k-d tree) kNN in 64 dimensions takes minutes above this size.
GRAPHLEARNING_MAX_N = 10000


def seed_knn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The seed's exact kNN (scikit-learn, brute force with BLAS at d = 64): (dist, idx) [n, K], self dropped."""
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=K + 1).fit(x).kneighbors(x)
    return dist[:, 1:], idx[:, 1:]


def seed_algorithm(x: np.ndarray, y_templates: np.ndarray, m: int) -> np.ndarray:
    """Published WNLL algorithm: sklearn exact kNN + one scipy BiCGSTAB per class. Returns scores [n-m, C]."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import bicgstab

    n = len(x)
    dist, idx = seed_knn(x)
    sigma2 = dist[:, K_SIGMA - 2 : K_SIGMA - 1] ** 2
    w = np.exp(-(dist**2) / sigma2)
    rows = np.repeat(np.arange(n), K)
    W = sp.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(n, n))
    S = (W + W.T).tocsr()
    mu = n / m - 1.0
    WLU_T = W[:m, m:].T.tocsr()
    dgr = np.asarray(S[m:].sum(1)).ravel() + mu * np.asarray(WLU_T.sum(1)).ravel()
    A = (sp.diags(dgr) - S[m:, m:]).tocsr()
    Y = np.eye(CLASSES)[y_templates]
    B = (S[m:, :m] + mu * WLU_T) @ Y
    out = np.empty((n - m, CLASSES))
    for c in range(CLASSES):
        out[:, c], info = bicgstab(A, B[:, c], rtol=1e-7, maxiter=10000)
        assert info == 0, f"BiCGSTAB did not converge for class {c}"
    return out


def graphlearning_wnll(x: np.ndarray, y_templates: np.ndarray, m: int) -> np.ndarray:
    """graphlearning's WNLL on its own exact kNN graph (scipy k-d tree; its default, annoy, is approximate
    and an optional dependency). Returns scores [n-m, C]."""
    import graphlearning as gl

    knn_data = gl.weightmatrix.knnsearch(x, K, method="kdtree")
    W = gl.weightmatrix.knn(x, K, knn_data=knn_data)
    u = gl.ssl.laplace(W, reweighting="wnll").fit(np.arange(m), y_templates)
    return u[m:]


def bench_size(n: int, device: str, repeats: int, data_dir) -> list[dict]:
    """The rows of one size ``n`` (see the module docstring); times in seconds."""
    x_np, y_np = mnist_pca(DIM, n, data_dir=data_dir)
    m = n // 3
    y_q = y_np[m:]
    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    xt, xq, yt = x[:m], x[m:], y[:m]
    onehot = torch.nn.functional.one_hot(yt, CLASSES).float()
    mu = n / m - 1.0

    idx, _ = fastwnll.knn_graph(x, K)
    w = gaussian_weights(x, idx, k_sigma=K_SIGMA)
    scores = fastwnll.wnll_interpolate(xt, yt, xq, k=K, k_sigma=K_SIGMA)
    ours_acc = (scores.argmax(1).cpu().numpy() == y_q).mean()

    def forward_backward():
        xt_, xq_ = xt.clone().requires_grad_(), xq.clone().requires_grad_()
        u = fastwnll.wnll_interpolate(xt_, yt, xq_, k=K, k_sigma=K_SIGMA)
        torch.nn.functional.nll_loss(u.clamp_min(1e-8).log(), y[m:]).backward()

    t_knn = timeit(lambda: fastwnll.knn_graph(x, K), repeats, device)
    t_w = timeit(lambda: gaussian_weights(x, idx, k_sigma=K_SIGMA), repeats, device)
    t_solve = timeit(lambda: fastwnll.wnll_solve(idx, w.detach(), onehot, mu=mu), repeats, device)
    t_fwd = timeit(lambda: fastwnll.wnll_interpolate(xt, yt, xq, k=K, k_sigma=K_SIGMA), repeats, device)
    t_fb = timeit(forward_backward, repeats, device)
    base = dict(n=n, device=device_name(device))
    rows = [
        dict(
            base,
            method="fastwnll",
            knn_s=t_knn,
            weights_s=t_w,
            solve_s=t_solve,
            forward_s=t_fwd,
            fwd_bwd_s=t_fb,
            accuracy=ours_acc,
        )
    ]
    if device == "cpu":  # the same forward with faiss's exact search in place of the native kernel
        t_knn_faiss = timeit(lambda: fastwnll.knn_graph(x, K, backend="faiss"), repeats, device)
        t_fwd_faiss = timeit(
            lambda: fastwnll.wnll_interpolate(xt, yt, xq, k=K, k_sigma=K_SIGMA, knn_backend="faiss"), repeats, device
        )
        rows.append(
            dict(
                base,
                method="fastwnll, faiss kNN",
                knn_s=t_knn_faiss,
                weights_s="",
                solve_s="",
                forward_s=t_fwd_faiss,
                fwd_bwd_s="",
                accuracy=ours_acc,
            )
        )
    ref_repeats = max(1, repeats // 2)
    seed_acc = (seed_algorithm(x_np, y_np[:m], m).argmax(1) == y_q).mean()
    t_seed = timeit(lambda: seed_algorithm(x_np, y_np[:m], m), ref_repeats, warmup=0)
    t_seed_knn = timeit(lambda: seed_knn(x_np), ref_repeats, warmup=0)
    rows.append(
        dict(
            base,
            method="seed (sklearn kNN + scipy BiCGSTAB/class)",
            knn_s=t_seed_knn,
            weights_s="",
            solve_s="",
            forward_s=t_seed,
            fwd_bwd_s="",
            accuracy=seed_acc,
        )
    )
    if n <= GRAPHLEARNING_MAX_N:
        gl_acc = (graphlearning_wnll(x_np, y_np[:m], m).argmax(1) == y_q).mean()
        t_gl = timeit(lambda: graphlearning_wnll(x_np, y_np[:m], m), ref_repeats, warmup=0)
        rows.append(
            dict(
                base,
                method="graphlearning laplace(wnll)",
                knn_s="",
                weights_s="",
                solve_s="",
                forward_s=t_gl,
                fwd_bwd_s="",
                accuracy=gl_acc,
            )
        )
    return rows


def display_rows(rows: list[dict]) -> list[dict]:
    """``rows`` for the printed table: every ``*_s`` time (seconds) as ``*_ms`` in milliseconds, the
    accuracy to 4 digits, and the forward speedup over the seed algorithm at the same ``n``."""
    out = []
    for r in rows:
        row = {}
        for key, value in r.items():
            if key.endswith("_s"):
                row[key[:-2] + "_ms"] = "" if value == "" else f"{value * 1e3:.1f}"
            else:
                row[key] = f"{value:.4f}" if key == "accuracy" else value
        seed = next((s for s in rows if s["n"] == r["n"] and s["method"].startswith("seed")), None)
        row["speedup_vs_seed"] = f"{seed['forward_s'] / r['forward_s']:.1f}x" if seed else ""
        out.append(row)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 6000, 10000, 50000])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    add_io_options(parser)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args.device, args.repeats if n <= 10000 else max(1, args.repeats // 2), args.data_dir)
        print(f"n={n} done", flush=True)
    device = args.device.split(":")[0]
    suffix = f"_{torch.get_num_threads()}threads" if device == "cpu" else ""
    out = args.out / f"wnll_{device}{suffix}.csv"
    write_csv(out, rows)
    print(f"device: {rows[0]['device']}")
    print(
        markdown_table(
            display_rows(rows),
            [
                "n",
                "method",
                "knn_ms",
                "weights_ms",
                "solve_ms",
                "forward_ms",
                "fwd_bwd_ms",
                "accuracy",
                "speedup_vs_seed",
            ],
        )
    )
    print(f"(medians; seconds in {out})")


if __name__ == "__main__":
    main()
