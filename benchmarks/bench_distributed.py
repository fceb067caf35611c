"""Data-parallel stage-2 WNLL training steps: the cost of the global graph's all-gather against the
time of a whole step, one process against several (docs/design.md, section 7).

A step is what ``fastwnll train`` does per stage-2 batch: the frozen trunk (eval mode) and the trained
buffer block on this process's share of the global batch, the WNLL head in training mode
(``graph="global"``: one graph over the whole batch; ``"local"``: one per share), the loss normalized
over the whole batch (``fastwnll.train.steps.batch_loss``), backward (DistributedDataParallel's
gradient all-reduce) and an SGD step. "gather" is what the global graph adds per step, timed alone on
the same shares: the row counts, the labels and the split check (``split_global_batch``) and the
differentiable all-gather of the features with its backward (``gather_rows``; the backward's
all-to-all only runs with the exact WNLL gradient, so for the surrogate gradient this is an upper
bound). "one process, no group" is the single-process step without torch.distributed.

CPU (spawns a gloo group of each size in ``--worlds``; one thread per process is fairest)::

    OMP_NUM_THREADS=1 python benchmarks/bench_distributed.py --worlds 1 2 --out benchmarks/results

GPU (nccl; one process per GPU, launched by torchrun; CUDA-synchronized timings)::

    torchrun --standalone --nproc-per-node 8 benchmarks/bench_distributed.py --device cuda --model resnet20 --batch 6000

``digits_cnn`` takes scikit-learn's digits (1,438 training images); other models take uniform random
images of their input shape (timing only: the graph of random features is as costly to solve).
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from common import OUT_DIR, device_name

GRADIENTS = ("surrogate", "exact")
INPUTS = {"digits_cnn": (1, 8, 8), "mnist_cnn": (1, 28, 28)}  # the others (resnets): (3, 32, 32)


def batch(model_name: str, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` images and labels for ``model_name`` (see the module docstring), CPU."""
    if model_name == "digits_cnn":
        from fastwnll.data.digits import load_digits

        x, y = load_digits("train")
        if rows > x.shape[0]:
            raise SystemExit(f"--batch {rows} exceeds the {x.shape[0]} digits training images")
        return x[:rows], y[:rows]
    generator = torch.Generator().manual_seed(0)
    shape = INPUTS.get(model_name, (3, 32, 32))
    return torch.rand(rows, *shape, generator=generator), torch.randint(0, 10, (rows,), generator=generator)


def median_time(fn, repeats: int, device: torch.device, warmup: int = 2) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` (this process) over ``repeats`` runs, every process
    starting each run together. The CPU time leaves out the waits for the other processes and for
    other programs on a shared machine; the wall time holds them."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if dist.is_initialized():
            dist.barrier()
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def measure(model_name: str, rows: int, gradient: str, graph: str, repeats: int, device: torch.device) -> dict:
    """Median step and gather times (seconds) on this process (in the current group, if any)."""
    from fastwnll.models import build
    from fastwnll.nn.batch import split_batch
    from fastwnll.nn.distributed_graph import gather_rows, row_counts, split_global_batch
    from fastwnll.runtime import TrainConfig
    from fastwnll.runtime.distributed import current, shard_rows, wrap_model
    from fastwnll.train.steps import Stage, batch_loss

    processes = current()
    x, y = batch(model_name, rows)
    share = shard_rows(rows, processes)
    xb, yb = x[share].to(device), y[share].to(device)
    torch.manual_seed(0)
    model = build(model_name, 10, head="wnll", in_channels=x.shape[1], gradient=gradient).to(device)
    config = TrainConfig(dataset="digits", head="wnll", lr=0.01).resolve()
    stage = Stage(model, "wnll", config, None)
    stage.set_modes(model)
    if dist.is_initialized():
        model.head.graph = graph  # with one process in a group: the global graph's collectives on their own
    net = wrap_model(model, device, processes)
    generator = torch.Generator().manual_seed(0)  # the WNLL splits: the same draws in every configuration

    def step():
        stage.optimizer.zero_grad(set_to_none=True)
        loss, *_ = batch_loss(net, xb, yb, device, None, processes, generator)
        loss.backward()
        stage.optimizer.step()

    result = dict(zip(("step_s", "step_cpu_s"), median_time(step, repeats, device)))
    if dist.is_initialized() and graph == "global":
        with torch.no_grad():
            features = model.buffer(model.trunk(xb))

        def gather():
            split = split_global_batch(yb, lambda labels: split_batch(labels, 1 / 3, generator=generator))
            everyone = gather_rows(features.requires_grad_(), split.counts, differentiable=True)
            everyone.sum().backward()

        row_counts(1, device)  # the group's first collective is slower: not in the figures
        result.update(zip(("gather_s", "gather_cpu_s"), median_time(gather, repeats, device)))
    return result


def run(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Every configuration in the current group (or none); rank 0's figures."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rows = []
    for gradient in args.gradients:
        graphs = ("global", "local") if dist.is_initialized() else ("local",)
        for graph in graphs:
            if world == 1 and graph == "local" and dist.is_initialized():
                continue  # one process in a group: the local graph is the global one
            found = measure(args.model, args.batch, gradient, graph, args.repeats, device)
            rows.append(
                {
                    "model": args.model,
                    "batch": args.batch,
                    "gradient": gradient,
                    "processes": world if dist.is_initialized() else "1, no group",
                    "graph": graph if dist.is_initialized() else "local (one process)",
                    **found,
                }
            )
    return rows


def _spawned(rank: int, world: int, port: int, args: argparse.Namespace, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo")
    rows = run(args, torch.device("cpu"))
    if rank == 0:
        torch.save(rows, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIELDS = ("step_s", "step_cpu_s", "gather_s", "gather_cpu_s")


def combine(rounds: list[list[dict]]) -> list[dict]:
    """The rows of several rounds of the same configurations, each figure the median over the rounds."""
    combined = []
    for same in zip(*rounds):
        row = dict(same[0])
        for field in FIELDS:
            if field in row:
                row[field] = statistics.median(r[field] for r in same)
        combined.append(row)
    return combined


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table (milliseconds, wall / CPU time of process 0; the last column the
    wall-time ratio to the one-process step of the same gradient)."""
    single = {r["gradient"]: r["step_s"] for r in rows if r["processes"] == "1, no group"}
    lines = [
        "| gradient | processes | graph | step (ms) | gather (ms) | gather / step | step / one process's |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        step = f"{1e3 * r['step_s']:.1f} / {1e3 * r['step_cpu_s']:.1f}"
        gather = share = ""
        if "gather_s" in r:
            gather = f"{1e3 * r['gather_s']:.2f} / {1e3 * r['gather_cpu_s']:.2f}"
            share = f"{100 * r['gather_s'] / r['step_s']:.1f} % / {100 * r['gather_cpu_s'] / r['step_cpu_s']:.1f} %"
        ratio = f"{r['step_s'] / single[r['gradient']]:.2f}" if r["gradient"] in single else ""
        lines.append(f"| {r['gradient']} | {r['processes']} | {r['graph']} | {step} | {gather} | {share} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--batch", type=int, default=1024, help="global stage-2 batch (templates + queries)")
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2], help="CPU: process counts to spawn")
    parser.add_argument("--gradients", nargs="+", choices=GRADIENTS, default=list(GRADIENTS))
    parser.add_argument("--repeats", type=int, default=9, help="timed steps per configuration")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="CPU: times every configuration is run in turn (the figures: medians over rounds)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched by torchrun
        from fastwnll.runtime.distributed import process_device, process_group

        with process_group(torch.device(args.device)) as processes:
            rows = run(args, process_device(torch.device(args.device), processes))
        if processes.rank:
            return
        rounds = 1
    else:
        rounds = []
        for _ in range(args.rounds):
            rows = run(args, torch.device(args.device))  # one process, no group
            for world in args.worlds:
                partial = args.out / f"distributed_{world}.pt"
                mp.spawn(_spawned, args=(world, free_port(), args, partial), nprocs=world, join=True)
                rows += torch.load(partial)
                partial.unlink()
            rounds.append(rows)
        rows, rounds = combine(rounds), len(rounds)
    name = f"distributed_{args.device}_{args.model}_{args.batch}"
    with open(args.out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "batch", "gradient", "processes", "graph", *FIELDS])
        writer.writeheader()
        writer.writerows(rows)
    text = (
        f"{args.model}, global batch {args.batch}, {device_name(args.device)}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, medians of {args.repeats} steps "
        f"(and of {rounds} rounds)\n\n" + table(rows)
    )
    (args.out / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
