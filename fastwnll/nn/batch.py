"""The labels of a WNLL training batch and its split into templates and queries: :func:`wnll_batch`
hands them to every :class:`~fastwnll.nn.head.WNLLHead` of a model for one forward."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .checks import check_labels
from .distributed_graph import GlobalSplit, split_global_batch
from .network import wnll_heads

SPLITS = ("random", "first")


def split_batch(
    labels: torch.Tensor, template_fraction: float, *, generator: torch.Generator | None = None, split: str = "random"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the rows of a labelled batch into templates and queries.

    ``m = round(template_fraction * n)`` rows (at least 1, at most ``n - 1``) become templates.
    ``split="first"`` takes the first ``m`` rows. ``split="random"`` draws a random permutation
    (from ``generator``, or torch's global generator) and takes, in that random order, one row of
    each class present first (as far as ``m`` allows, so every class present is a template when
    ``m`` >= the number of classes present), then the remaining rows.

    Args:
        labels: ``[n]`` int64 labels, ``n >= 2``, any device.
    Returns:
        ``(template_index, query_index)``: sorted int64 row indices on ``labels``' device that
        partition ``range(n)``.
    """
    check_labels("labels", labels)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = labels.shape[0]
    if n < 2:
        raise ValueError(f"a WNLL training batch needs at least 2 rows (templates and queries), got {n}")
    m = min(max(int(round(template_fraction * n)), 1), n - 1)
    if split == "first":
        rows = torch.arange(n, device=labels.device)
        return rows[:m], rows[m:]
    perm_device = generator.device if generator is not None else "cpu"
    perm = torch.randperm(n, generator=generator, device=perm_device).cpu()
    permuted = labels.cpu()[perm]
    by_class, position = torch.sort(permuted, stable=True)
    first_of_class = torch.ones(n, dtype=torch.bool)
    first_of_class[1:] = by_class[1:] != by_class[:-1]
    firsts = position[first_of_class].sort().values  # positions in the random order, one per class
    others = torch.ones(n, dtype=torch.bool)
    others[firsts] = False
    priority = torch.cat([firsts, torch.arange(n)[others]])
    is_template = torch.zeros(n, dtype=torch.bool)
    is_template[perm[priority[:m]]] = True
    rows = torch.arange(n)
    return rows[is_template].to(labels.device), rows[~is_template].to(labels.device)


class WNLLBatch:
    """The labels of one training batch, shared by all WNLL heads of a model (see :func:`wnll_batch`).

    Attributes:
        labels: ``[B]`` int64 labels of the batch rows.
        template_index, query_index: ``None`` until a WNLL head in training + wnll mode splits the
            batch; then the sorted row indices of the templates and of the queries (the rows the
            head outputs). Every head of the model reuses the same split. With ``graph="global"``
            heads they are this process's rows among the global batch's templates and queries.
        global_split: with ``graph="global"`` heads, the split of the whole batch
            (:class:`fastwnll.nn.distributed_graph.GlobalSplit`); otherwise ``None``.
    """

    def __init__(self, labels: torch.Tensor, generator: torch.Generator | None, split: str):
        self.labels = check_labels("labels", labels)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.generator = generator
        self.split = split
        self.template_index: torch.Tensor | None = None
        self.query_index: torch.Tensor | None = None
        self.global_split: GlobalSplit | None = None

    @property
    def targets(self) -> torch.Tensor:
        """Labels of the model's output rows: the query rows' labels once a WNLL head split the
        batch, otherwise all of ``labels``."""
        return self.labels if self.query_index is None else self.labels[self.query_index]

    def _check_rows(self, rows: int) -> None:
        if rows != self.labels.shape[0]:
            raise ValueError(
                f"wnll_batch was given {self.labels.shape[0]} labels but the WNLL head received {rows} rows"
            )

    def _split_for(self, rows: int, template_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_rows(rows)
        if self.global_split is not None:
            raise RuntimeError("the WNLL heads of one model mix graph='local' and graph='global'")
        if self.query_index is None:
            self.template_index, self.query_index = split_batch(
                self.labels, template_fraction, generator=self.generator, split=self.split
            )
            classes = self.labels[self.template_index].unique()
            if classes.numel() == 1:
                warnings.warn(
                    f"the templates of this WNLL training batch hold one class ({int(classes)}): the "
                    "interpolation gives that class to every query, whatever the features (use larger or "
                    "more varied batches, or split='random', which puts a row of each class first)",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return self.template_index, self.query_index

    def _global_split_for(self, rows: int, template_fraction: float) -> GlobalSplit:
        self._check_rows(rows)
        if self.global_split is None:
            if self.query_index is not None:
                raise RuntimeError("the WNLL heads of one model mix graph='local' and graph='global'")
            self.global_split = split_global_batch(
                self.labels,
                lambda labels: split_batch(labels, template_fraction, generator=self.generator, split=self.split),
            )
            self.template_index = self.global_split.local_template_index
            self.query_index = self.global_split.local_query_index
        return self.global_split


@contextmanager
def wnll_batch(
    model: nn.Module, labels: torch.Tensor, *, generator: torch.Generator | None = None, split: str = "random"
) -> Iterator[WNLLBatch]:
    """Give the batch labels to every :class:`WNLLHead` inside ``model`` for the duration of the block.

    In training + wnll mode each head splits the batch (:func:`split_batch`, ``generator`` and
    ``split`` as there, the fraction from the head's ``template_fraction``) into templates and
    queries and outputs the query rows only; ``batch.targets`` are then their labels. With no such
    head (linear mode, eval mode, or none in the model) the output has all rows and
    ``batch.targets`` is ``labels``. Heads in eval mode ignore the labels.

    Args:
        model: any ``nn.Module`` (a ``WNLLHead`` itself included).
        labels: ``[B]`` int64 labels of the batch, on the model's device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch = WNLLBatch(labels, generator, split)
    heads = wnll_heads(model)
    previous = [(h, h._batch) for h in heads]
    for h in heads:
        h._batch = batch
    try:
        yield batch
    finally:
        for h, old in previous:
            h._batch = old
