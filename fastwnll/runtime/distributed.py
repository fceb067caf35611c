"""The processes of a run under PyTorch's distributed engine (``torchrun``, ``torch.distributed``).

A run launched by ``torchrun`` (its environment holds ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) joins one process group (:func:`process_group`): ``nccl`` on
CUDA, ``gloo`` on the CPU, or the backend asked for. Every process computes; only process 0 writes
files (:func:`main_result` runs file work there and hands its result, or its failure, to every
process). Work made of batches is shared out in whole batches (:func:`shard_batches`), so every
batch is the batch a single process would run, with the random numbers of its own seed
(:func:`batch_seed`), and the results are gathered back in batch order (:func:`gather_batches`):
a sharded evaluation gives the numbers of one process. Without ``torchrun`` (or with one process)
nothing here communicates and a run is the single-process run.
"""

from __future__ import annotations

import gc
import inspect
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from fastwnll.nn.distributed_graph import GRAPHS, communication_device, gather_rows

__all__ = [
    "BACKENDS",
    "GRAPHS",
    "Processes",
    "ProcessZeroError",
    "SINGLE",
    "add_distributed_flags",
    "all_sum",
    "batch_seed",
    "choose_backend",
    "current",
    "gather_batches",
    "gather_objects",
    "is_main_process",
    "launched_world_size",
    "main_result",
    "process_device",
    "process_group",
    "shard_batches",
    "shard_rows",
    "sync_buffers",
    "wrap_model",
]

BACKENDS = ("auto", "nccl", "gloo")
T = TypeVar("T")
# How long a process that stops with an error waits for the others to stop too before it leaves the
# group (gloo), so that what it sent last still reaches them.
SETTLE_TIMEOUT = timedelta(seconds=60)
# DistributedDataParallel without buffer broadcasts before every forward: newer torch (2.14) names the
# option forward_sync_buffers and deprecates broadcast_buffers, which older releases have.
NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


@dataclass(frozen=True)
class Processes:
    """This process's place in the run: ``rank`` in ``[0, world_size)``, ``local_rank`` on its
    machine, and the process group's ``backend`` (None for a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when the run has several processes (then the collectives below communicate)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True for process 0, the one that writes files and prints results."""
        return self.rank == 0


SINGLE = Processes()


class ProcessZeroError(RuntimeError):
    """Raised on every process but 0 when work that only process 0 does (:func:`main_result`) failed there."""


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"the environment variable {name}={text!r} is not an integer (set by torchrun)") from None
    if value < 0:
        raise ValueError(f"the environment variable {name}={value} is negative")
    return value


def launched_world_size() -> int:
    """The number of processes ``torchrun`` launched (``$WORLD_SIZE``), 1 without ``torchrun``."""
    return max(_env_int("WORLD_SIZE", 1), 1)


def is_main_process() -> bool:
    """False only in a process other than 0 of the initialized process group or, before or after it,
    of a ``torchrun`` launch (``$RANK``): the processes that print nothing and write nothing."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0 or launched_world_size() == 1


def current() -> Processes:
    """The processes of the initialized default process group, or :data:`SINGLE` when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Processes(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK", dist.get_rank()),
        backend=str(dist.get_backend()),
    )


def choose_backend(device: torch.device, backend: str | None = None) -> str:
    """The process-group backend for ``device``: ``backend`` when given (one of :data:`BACKENDS`),
    otherwise (``None`` or ``"auto"``) ``nccl`` on CUDA and ``gloo`` on the CPU. ``nccl`` on the CPU
    is an error."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in (None, "auto"):
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(
            f"backend 'nccl' needs CUDA devices but the run is on {device.type}: use --backend gloo "
            "(or auto), or --device cuda"
        )
    return backend


def process_device(device: torch.device, processes: Processes) -> torch.device:
    """The device of this process: ``device`` itself on the CPU, its own GPU (``cuda:local_rank``,
    made the current CUDA device) when several processes share CUDA."""
    if device.type != "cuda" or not processes.enabled:
        return device
    visible = torch.cuda.device_count()
    if processes.local_rank >= visible:
        raise RuntimeError(
            f"process {processes.rank} has local rank {processes.local_rank} but this machine has "
            f"{visible} visible GPU(s): launch at most {visible} processes per machine "
            "(torchrun --nproc-per-node)"
        )
    torch.cuda.set_device(processes.local_rank)
    return torch.device("cuda", processes.local_rank)


@contextmanager
def process_group(device: torch.device, backend: str | None = None) -> Iterator[Processes]:
    """The run's processes for the duration of the block.

    - A default process group already initialized (by the caller): it is used as it is.
    - Launched by ``torchrun`` with ``WORLD_SIZE > 1``: joins the group (``env://`` rendezvous,
      backend from :func:`choose_backend`), and leaves it (destroys it) at the end of the block, after
      a barrier: no process leaves while the others may still be receiving what it sent. When the
      block raises (every process raising at the same point, as the run's checks do), the barrier is
      a gloo ``monitored_barrier`` bounded by :data:`SETTLE_TIMEOUT` (none with nccl), so that a
      process whose peers are busy elsewhere still leaves.
    - Otherwise a single process (:data:`SINGLE`); an explicit ``backend`` other than ``"auto"``
      is then an error (it would suggest a distributed launch that did not happen).

    ``device``: the run's device type ("cpu" or "cuda"), for the backend and the process's GPU.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if dist.is_available() and dist.is_initialized():
        processes = current()
        if backend not in (None, "auto") and backend != processes.backend:
            raise ValueError(f"backend {backend!r} was asked for but the process group uses {processes.backend!r}")
        process_device(device, processes)
        yield processes
        return
    if launched_world_size() == 1:
        if backend not in (None, "auto"):
            raise ValueError(
                f"backend {backend!r} (--backend) needs a distributed launch, but this is a single "
                "process (no torchrun environment with WORLD_SIZE > 1): launch with torchrun "
                "--nproc-per-node N, or drop --backend"
            )
        yield SINGLE
        return
    if not dist.is_available():
        raise RuntimeError("torchrun launched several processes but this torch build has no torch.distributed")
    chosen = choose_backend(device, backend)
    local = Processes(
        rank=_env_int("RANK", 0), world_size=launched_world_size(), local_rank=_env_int("LOCAL_RANK", 0), backend=chosen
    )
    process_device(device, local)
    dist.init_process_group(chosen, init_method="env://")
    try:
        yield current()
        dist.barrier()
    except BaseException:
        _settle()
        raise
    finally:
        dist.destroy_process_group()


def _settle() -> None:
    """Wait (boundedly, gloo only) for the other processes before leaving the group after an error."""
    if dist.get_backend() != dist.Backend.GLOO:
        return
    try:
        dist.monitored_barrier(timeout=SETTLE_TIMEOUT)
    except RuntimeError:  # the others are elsewhere: leave anyway, the error that brought us here is raised
        pass


def add_distributed_flags(parser) -> None:
    """Mark the argparse ``parser`` of a command as one that runs under torchrun (``distributed=True``
    in its parsed arguments; the command line refuses the others there) and add ``--backend`` (one
    of :data:`BACKENDS`, default None: auto)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="under torchrun: the torch.distributed backend (auto: nccl on CUDA, gloo on the CPU)",
    )
    parser.set_defaults(distributed=True)


def main_result(work: Callable[[], T], processes: Processes) -> T:
    """``work()`` run by process 0 only (file work: checks, reading, removing), its result handed to
    every process. When it raises, process 0 raises that error and every other process a
    :class:`ProcessZeroError` quoting it, so that no process waits for the others forever."""
    if not processes.enabled:
        return work()
    message = [None, None]
    error = None
    if processes.is_main:
        try:
            message = [True, work()]
        except Exception as caught:  # handed to the other processes, then raised here
            error = caught
            message = [False, f"{type(caught).__name__}: {caught}"]
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    ok, value = message
    if not ok:
        raise ProcessZeroError(f"process 0 stopped the run: {value}")
    return value


def gather_objects(value, processes: Processes) -> list:
    """``[value of process 0, value of process 1, ...]`` (picklable values) on every process."""
    if not processes.enabled:
        return [value]
    values = [None] * processes.world_size
    dist.all_gather_object(values, value)
    return values


def all_sum(values: list[float], processes: Processes, device: torch.device) -> list[float]:
    """The element-wise sums over the processes of ``values`` (float64; one all-reduce on ``device``)."""
    if not processes.enabled:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=communication_device(device))
    dist.all_reduce(total)
    return total.tolist()


def shard_rows(rows: int, processes: Processes) -> slice:
    """This process's rows of a batch of ``rows`` rows: a contiguous slice, the sizes of the processes'
    slices differing by at most one (the first ``rows % world_size`` get one more)."""
    share, extra = divmod(rows, processes.world_size)
    start = processes.rank * share + min(processes.rank, extra)
    return slice(start, start + share + (processes.rank < extra))


def shard_batches(n: int, batch_size: int, processes: Processes) -> list[tuple[int, int, int]]:
    """This process's share of the batches of ``range(n)`` cut every ``batch_size`` rows (the last
    may be short), as ``(batch index, start, stop)``: a contiguous run of whole batches, the
    processes' shares differing by at most one batch (a process may get none)."""
    count = -(-n // batch_size)
    mine = shard_rows(count, processes)
    return [(b, b * batch_size, min((b + 1) * batch_size, n)) for b in range(mine.start, mine.stop)]


def gather_batches(parts: list[torch.Tensor], device: torch.device, processes: Processes) -> torch.Tensor:
    """The per-batch results ``parts`` of :func:`shard_batches` of every process (tensors of one trailing
    shape and dtype, one row per row of the batch) concatenated in batch order, on ``device``."""
    local = torch.cat(parts).to(device) if parts else None
    if not processes.enabled:
        if local is None:
            raise ValueError("gather_batches got no batches")
        return local
    facts = gather_objects(None if local is None else (local.shape[0], tuple(local.shape[1:]), local.dtype), processes)
    known = [f for f in facts if f is not None]
    if not known:
        raise ValueError("gather_batches got no batches on any process")
    _, trailing, dtype = known[0]
    if local is None:
        local = torch.empty(0, *trailing, dtype=dtype, device=device)
    return gather_rows(local, [0 if f is None else f[0] for f in facts])


# Odd multiplier of the per-batch seeds (2^32 / golden ratio): seed + b * it (mod 2^32) for batch b.
_SEED_STEP = 0x9E3779B9


def batch_seed(seed: int, batch: int) -> int:
    """The seed of the random numbers of batch ``batch`` (0, 1, ...) of a computation seeded with ``seed``:
    ``seed`` itself for batch 0, and ``seed + batch * 0x9E3779B9`` modulo 2^32 (CPU generators keep 32
    bits of a seed) for the others, so that a batch draws the same numbers whichever process runs it
    and ``seed`` and ``seed + 1`` streams do not meet for any realistic number of batches."""
    return seed if batch == 0 else (seed + batch * _SEED_STEP) % 2**32


def wrap_model(model: nn.Module, device: torch.device, processes: Processes) -> nn.Module:
    """``model`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` for a run of several
    processes (its trainable parameters as they are now; parameters and buffers copied from process 0;
    no buffer broadcast before every forward, see :func:`sync_buffers`), ``model`` itself for a single
    process. Wrap afresh whenever the set of
    trainable parameters changes, after releasing the previous wrapper (``del`` it; its gradient hooks
    are removed when it is collected, which this function forces)."""
    if not processes.enabled:
        return model
    gc.collect()  # a previous wrapper's gradient hooks must be gone before the next one registers its own
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, **NO_FORWARD_BUFFER_SYNC)


def sync_buffers(model: nn.Module, processes: Processes) -> None:
    """Copy process 0's BatchNorm running statistics to every process (one broadcast per buffer).
    With SyncBatchNorm (CUDA) they are already equal; on the CPU each process normalizes with its own
    batch statistics, and this makes the model every process evaluates and saves process 0's."""
    if not processes.enabled:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)
