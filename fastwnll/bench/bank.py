"""Template-bank microbenchmark: a WNLL forward of ``q`` queries against a fixed bank of ``m``
templates, rebuilt from scratch (``fastwnll.wnll_interpolate``) against :class:`fastwnll.TemplateBank`
(its kNN lists computed once), transductive and inductive."""

from __future__ import annotations

import torch

from .data import CLASSES, DIM, clustered_features
from .results import make_row
from .timing import interleaved_times, median_time, warmup_rounds

QUICK_CASES = ((5000, 50),)
FULL_CASES = ((5000, 1), (5000, 50), (5000, 500), (20000, 50), (1000, 30000))
K, K_SIGMA = 15, 8


def run(device: str | torch.device, cases, repeats: int, env: dict) -> list[dict]:
    """Rows ``full rebuild``, ``bank`` (transductive) and ``bank, inductive`` for every ``(m, q)`` of
    ``cases``, plus ``index`` (the one-off cost of building the bank's index).

    Points: :func:`~fastwnll.bench.data.clustered_features` ``[m + q, 64]`` float32 on ``device``,
    the first ``m`` templates of 10 classes, ``k = 15``, ``k_sigma = 8``, every other option at its
    default. ``ratio``: the full rebuild's time over the row's (the speed-up of the index); the
    transductive bank gives the full rebuild's scores exactly, the inductive one its own (each query
    against the bank alone). The three are timed in turn.
    """
    from fastwnll import TemplateBank, wnll_interpolate

    rows = []
    for m, q in cases:
        x, y = clustered_features(m + q, device=device)
        templates, labels, queries = x[:m], y[:m], x[m:]
        options = {"k": K, "k_sigma": K_SIGMA, "num_classes": CLASSES}
        index_s = median_time(lambda: TemplateBank(templates, labels, **options).interpolate(queries[:1]), 1, device, 0)
        bank = TemplateBank(templates, labels, **options)
        times = interleaved_times(
            [
                lambda: wnll_interpolate(templates, labels, queries, **options),
                lambda: bank.interpolate(queries),
                lambda: bank.interpolate(queries, inductive=True),
            ],
            repeats,
            device,
            warmup_rounds(device),
        )
        shape, note = (m + q, DIM), f"{m} templates, {q} queries, k={K}"
        rows.append(make_row(env, "bank", "index (once per bank)", "auto", m, shape, x.dtype, index_s, 1, note=note))
        for case, seconds in zip(("full rebuild", "bank", "bank, inductive"), times):
            rows.append(
                make_row(
                    env,
                    "bank",
                    case,
                    "auto",
                    m,
                    shape,
                    x.dtype,
                    seconds,
                    repeats,
                    ratio=times[0] / seconds,
                    ratio_of="full rebuild / this",
                    note=note,
                )
            )
    return rows
