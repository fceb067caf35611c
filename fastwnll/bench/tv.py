"""TV microbenchmark: ``fastwnll.tv_denoise`` and ``fastwnll.tvm`` per backend at a fixed iteration
count, the Triton kernels (CUDA) against the eager torch iteration."""

from __future__ import annotations

import warnings

import torch

from .data import images
from .results import make_row
from .timing import failure, interleaved_times, warmup_rounds

# (name, shape) of the image batches: a CIFAR-10 batch, an MNIST batch, an ImageNet-sized one.
QUICK_BATCHES = (("CIFAR", (128, 3, 32, 32)), ("MNIST", (256, 1, 28, 28)))
FULL_BATCHES = (("CIFAR", (512, 3, 32, 32)), ("MNIST", (1024, 1, 28, 28)), ("ImageNet", (32, 3, 224, 224)))
ITERS = 100
LAM = 0.03
DROP_RATE = 0.5
OPS = ("tv_denoise", "tvm")


def default_backends(device: str | torch.device) -> tuple[str, ...]:
    """``("torch", "triton")`` on CUDA, ``("torch",)`` on the CPU (where the Triton kernels run only
    under the Triton interpreter, for testing)."""
    return ("torch", "triton") if torch.device(device).type == "cuda" else ("torch",)


def call(op: str, x: torch.Tensor, backend: str, iters: int) -> torch.Tensor:
    """One timed call: ``tv_denoise(x, 0.03)`` or ``tvm(x, drop_rate=0.5, lam=0.03)`` (mask drawn in
    the call) with ``backend``, ``iters`` iterations, no tolerance."""
    import fastwnll

    if op == "tv_denoise":
        return fastwnll.tv_denoise(x, LAM, iters=iters, tol=None, backend=backend)
    return fastwnll.tvm(x, drop_rate=DROP_RATE, lam=LAM, iters=iters, tol=None, backend=backend)


def run(device: str | torch.device, batches, repeats: int, env: dict, iters: int = ITERS, backends=None) -> list[dict]:
    """One row per batch, operation (:data:`OPS`, see :func:`call`) and backend, on
    :func:`~fastwnll.bench.data.images` of each ``(name, shape)`` of ``batches``, float32 on
    ``device``. The backends of one operation are timed in turn; every backend but ``torch`` gets the
    ratio eager torch time / its time (when torch is among ``backends``, default
    :func:`default_backends`). A backend that cannot run gives a row saying why."""
    from fastwnll.tv.denoise import TVConvergenceWarning

    backends = backends or default_backends(device)
    rows = []
    with warnings.catch_warnings():  # a fixed iteration count on purpose: the gap left is not the point here
        warnings.simplefilter("ignore", TVConvergenceWarning)
        for name, shape in batches:
            x = images(shape, device=device)
            for op in OPS:
                fns = {b: (lambda b=b: call(op, x, b, iters)) for b in backends}
                errors = {b: failure(fn) for b, fn in fns.items()}  # also the first warm-up call
                running = [b for b in backends if errors[b] is None]
                times = (
                    dict(
                        zip(
                            running,
                            interleaved_times([fns[b] for b in running], repeats, device, warmup_rounds(device) - 1),
                        )
                    )
                    if running
                    else {}
                )
                for b in backends:
                    seconds = times.get(b)
                    speedup = times["torch"] / seconds if "torch" in times and seconds and b != "torch" else None
                    rows.append(
                        make_row(
                            env,
                            "tv",
                            f"{op} {name}",
                            b,
                            shape[0],
                            shape,
                            x.dtype,
                            seconds,
                            repeats if seconds is not None else 0,
                            ratio=speedup,
                            ratio_of="eager torch / this" if speedup else "",
                            note=f"did not run: {errors[b]}" if errors[b] else f"{iters} iterations",
                            iters=iters,
                        )
                    )
    return rows
