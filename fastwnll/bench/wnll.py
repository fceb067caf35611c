"""WNLL interpolation microbenchmark: ``fastwnll.wnll_interpolate`` forward, and forward with the
backward of a loss on the queries (the exact adjoint, docs/design.md, section 2.3), at several n."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import CLASSES, DIM, clustered_features
from .results import make_row
from .timing import interleaved_times, warmup_rounds

QUICK_SIZES = (2000, 6000)
FULL_SIZES = (2000, 6000, 10000, 50000)
K, K_SIGMA = 15, 8


def run(device: str | torch.device, sizes, repeats: int, env: dict) -> list[dict]:
    """Rows ``forward`` and ``forward+backward`` (ratio: its time over the forward's) for every ``n``
    of ``sizes``.

    Points: :func:`~fastwnll.bench.data.clustered_features` ``[n, 64]`` float32 on ``device``, the
    first third templates (n/m = 3, the paper's stage-2 graph), 10 classes, ``k = 15``,
    ``k_sigma = 8``, every other option at its default (native kNN on the CPU, the torch search on
    CUDA, Jacobi-PCG at tol 1e-5). The backward is that of the mean negative log-probability of the
    queries' true classes with respect to both feature sets. Both cases are timed in turn.
    """
    from fastwnll import wnll_interpolate

    rows = []
    for n in sizes:
        x, y = clustered_features(n, device=device)
        m = n // 3
        templates, queries, labels, truth = x[:m], x[m:], y[:m], y[m:]

        def forward():
            return wnll_interpolate(templates, labels, queries, k=K, k_sigma=K_SIGMA, num_classes=CLASSES)

        def forward_backward():
            t, q = templates.detach().requires_grad_(), queries.detach().requires_grad_()
            u = wnll_interpolate(t, labels, q, k=K, k_sigma=K_SIGMA, num_classes=CLASSES)
            F.nll_loss(u.clamp_min(1e-8).log(), truth).backward()

        t_fwd, t_both = interleaved_times([forward, forward_backward], repeats, device, warmup_rounds(device))
        graph = f"{m} templates, k={K}"
        rows.append(make_row(env, "wnll", "forward", "auto", n, (n, DIM), x.dtype, t_fwd, repeats, note=graph))
        rows.append(
            make_row(
                env,
                "wnll",
                "forward+backward",
                "auto",
                n,
                (n, DIM),
                x.dtype,
                t_both,
                repeats,
                ratio=t_both / t_fwd,
                ratio_of="forward+backward / forward",
                note=graph,
            )
        )
    return rows
