"""Timing: medians of repeated calls, several functions timed in turn, and what the figures were measured on."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Sequence

import torch


def synchronizer(device: str | torch.device) -> Callable[[], None]:
    """A function that waits for every queued kernel of ``device`` (``torch.cuda.synchronize`` on
    CUDA; nothing on the CPU, where calls return when their work is done)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def measure_in_turn(
    fns: Sequence[Callable[[], object]], repeats: int, device: str | torch.device = "cpu", warmup: int = 1
) -> list[tuple[float, float]]:
    """``(median wall seconds, median CPU seconds of this process)`` of each of ``fns``, timed in turn
    (A B C A B C ...) so that a change of load on a shared machine hits all of them alike.

    ``warmup`` rounds run first and are not timed (compilation, caches, allocator). On CUDA each call
    is bracketed by device synchronizations, so a wall time holds the whole call: its kernels, its
    host work and its host-device waits. The CPU time (``time.process_time``: every thread of this
    process) leaves out the time other programs take from a shared machine; it measures the work of
    a CPU run, not of a GPU one. ``repeats`` >= 1 timed rounds.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    sync = synchronizer(device)
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for round_ in range(warmup + repeats):
        for i, fn in enumerate(fns):
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            if round_ >= warmup:
                wall[i].append(time.perf_counter() - start)
                cpu[i].append(time.process_time() - start_cpu)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu)]


def interleaved_times(
    fns: Sequence[Callable[[], object]], repeats: int, device: str | torch.device = "cpu", warmup: int = 1
) -> list[float]:
    """Median wall seconds of each of ``fns``, timed in turn (see :func:`measure_in_turn`)."""
    return [wall for wall, _ in measure_in_turn(fns, repeats, device, warmup)]


def median_time(fn: Callable[[], object], repeats: int, device: str | torch.device = "cpu", warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones (see
    :func:`interleaved_times`)."""
    return interleaved_times([fn], repeats, device, warmup)[0]


def device_name(device: str | torch.device) -> str:
    """What the figures of ``device`` come from: the GPU's name, or the CPU's with its cores and the
    threads torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def warmup_rounds(device: str | torch.device) -> int:
    """Untimed rounds before the timed ones: one on the CPU, three on CUDA (the first calls there
    also compile Triton kernels, load cuBLAS and grow the caching allocator)."""
    return 3 if torch.device(device).type == "cuda" else 1


def failure(fn: Callable[[], object]) -> str | None:
    """Call ``fn()`` once; None when it ran, else its error (ImportError, RuntimeError or ValueError:
    a backend that is not installed or cannot take this device) as ``"Type: message"``."""
    try:
        fn()
    except (ImportError, RuntimeError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None
