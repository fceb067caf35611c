"""The WNLL graph of a training batch spread over the processes of a ``torch.distributed`` group.

Under data parallelism (``torchrun`` + ``DistributedDataParallel``) every process holds a slice of
the batch. ``WNLLHead(graph="global")`` builds one graph over the whole batch instead of one per
slice: the rows of every process are gathered in rank order with a differentiable all-gather
(:func:`torch.distributed.nn.functional.all_gather`, whose backward sums the gradients of every
process's loss into the rows' owner), the global batch is split into templates and queries by the
same seeded rule on every process (checked here), and each process keeps the output rows of its own
queries. With the loss of each process scaled to ``world_size / (queries of the global batch)``
times the sum of its rows' losses, DDP's gradient average equals the gradient of one process holding
the whole batch (docs/design.md, section 7).

This module only communicates; it builds no graph and needs an initialized process group.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

# The graph a WNLL head builds in training: over its process's rows only, or over every process's rows.
GRAPHS = ("local", "global")


def group_size() -> int:
    """The world size of the initialized default process group; RuntimeError when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "WNLLHead(graph='global') needs an initialized torch.distributed process group (launch with torchrun "
            "and call torch.distributed.init_process_group, or train with `fastwnll train` under torchrun); in a "
            "single process use graph='local'"
        )
    return dist.get_world_size()


def communication_device(like: torch.device) -> torch.device:
    """Where the default group's collectives run: the current CUDA device for NCCL, else ``like``'s device."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return like


def row_counts(rows: int, device: torch.device) -> list[int]:
    """The number of rows every process of the default group holds (a list in rank order), given this
    process's ``rows``; one all-gather of an int64 scalar on ``device``."""
    mine = torch.tensor([rows], dtype=torch.int64, device=device)
    counts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, mine)
    return [int(c) for c in counts]


def gather_rows(x: torch.Tensor, counts: list[int], *, differentiable: bool = False) -> torch.Tensor:
    """The rows ``x`` [counts[rank], ...] of every process, concatenated in rank order: ``[sum(counts), ...]``
    on ``x``'s device, same dtype.

    Every process must pass tensors of the same trailing shape and dtype; the row counts may differ
    (rows are padded to the largest count for the collective and the padding dropped). With
    ``differentiable`` the gather is :func:`torch.distributed.nn.functional.all_gather`: the gradient of
    the result flows back to each process's own rows, summed over the processes.
    """
    if x.shape[0] != counts[dist.get_rank()]:
        raise ValueError(f"gather_rows got {x.shape[0]} rows but counts says {counts[dist.get_rank()]}")
    home = x.device
    x = x.to(communication_device(home))
    longest = max(counts)
    padded = x if x.shape[0] == longest else torch.cat([x, x.new_zeros(longest - x.shape[0], *x.shape[1:])])
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():  # torch >= 2.14 deprecates it for a private module; it is the public one
            warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather is deprecated", FutureWarning)
            parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)]).to(home)


@dataclass
class GlobalSplit:
    """The template/query split of a batch spread over the processes (see :func:`split_global_batch`).

    Attributes:
        counts: rows of every process, rank order. labels: ``[B]`` int64, every process's labels.
        template_index, query_index: sorted rows of the global batch (``B = sum(counts)``).
        own_queries: positions in ``query_index`` of this process's rows (the rows it outputs).
        local_template_index, local_query_index: the same rows numbered in this process's batch.
    """

    counts: list[int]
    labels: torch.Tensor
    template_index: torch.Tensor
    query_index: torch.Tensor
    own_queries: torch.Tensor
    local_template_index: torch.Tensor
    local_query_index: torch.Tensor


def split_global_batch(
    labels: torch.Tensor, split: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
) -> GlobalSplit:
    """Gather every process's ``labels`` ([rows] int64) and split the global batch with ``split`` (a
    function of the global labels returning ``(template_index, query_index)``, e.g.
    :func:`fastwnll.nn.batch.split_batch` with a generator seeded identically on every process).

    The split must come out the same on every process: it is checked with one all-reduce, and a
    difference (generators seeded differently, other template fractions) is a RuntimeError, never
    a silently inconsistent graph.
    """
    group_size()
    rank = dist.get_rank()
    device = communication_device(labels.device)
    counts = row_counts(labels.shape[0], device)
    all_labels = gather_rows(labels, counts)
    template_index, query_index = split(all_labels)
    is_template = torch.zeros(all_labels.shape[0], dtype=torch.int64, device=device)
    is_template[template_index.to(device)] = 1
    agreed = is_template.clone()
    dist.all_reduce(agreed)
    if not torch.equal(agreed, is_template * dist.get_world_size()):
        raise RuntimeError(
            "the template/query split of the global batch differs between processes: split it with a generator "
            "seeded identically on every process (fastwnll.nn.wnll_batch(..., generator=g)) and the same "
            "template_fraction and split rule"
        )
    start = sum(counts[:rank])
    stop = start + counts[rank]
    own = (query_index >= start) & (query_index < stop)
    mine = (template_index >= start) & (template_index < stop)
    return GlobalSplit(
        counts=counts,
        labels=all_labels,
        template_index=template_index,
        query_index=query_index,
        own_queries=own.nonzero().flatten(),
        local_template_index=template_index[mine] - start,
        local_query_index=query_index[own] - start,
    )
