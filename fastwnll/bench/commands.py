"""The ``bench`` subcommand of the ``fastwnll`` command line: ``fastwnll bench {wnll,knn,bank,tv,training}``
times fastwnll on this machine and writes CSV and JSON; ``fastwnll bench summary`` checks the
published targets against what a folder of results holds."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from fastwnll.runtime.device import DEVICES
from fastwnll.runtime.ranges import COUNT, Range

DEFAULT_OUT = "fastwnll-bench"
# The smallest point set a WNLL or kNN benchmark takes: room for k = 15 neighbours and templates of
# every class.
SIZE = Range(64, integer=True)


def _sizes_help(quick, full) -> str:
    return f"point counts (default {' '.join(map(str, quick))}; with --full {' '.join(map(str, full))})"


def _add_common(parser: argparse.ArgumentParser, repeats: int) -> None:
    parser.add_argument("--full", action="store_true", help="the published sizes (slower) instead of quick ones")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto (default): CUDA when available")
    parser.add_argument(
        "--repeats",
        type=COUNT.parse,
        default=repeats,
        help=f"timed calls per figure; the figure is their median (default {repeats})",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder for <bench>_<device>.csv and .json (default ./{DEFAULT_OUT})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace result files already in --out")


def _case(text: str) -> tuple[int, int]:
    """``M:Q`` -> ``(templates, queries)``: at least :data:`SIZE` templates and one query."""
    m, sep, q = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected TEMPLATES:QUERIES such as 5000:50, got {text!r}")
    return SIZE.parse(m), COUNT.parse(q)


def register(subparsers) -> None:
    """Add ``bench`` (with its benchmarks as sub-commands) to the ``fastwnll`` command line."""
    from . import bank, knn, training, tv, wnll

    bench = subparsers.add_parser(
        "bench",
        help="time fastwnll's kernels on this machine (wnll, knn, bank, tv, training) and check the targets",
        description="Microbenchmarks of fastwnll's own code paths on synthetic data (no dataset needed), on "
        "this machine's CPU or GPU: a Markdown table is printed and the rows (device name, "
        "versions, shape, dtype, median time) are written to --out as CSV and JSON, to compare "
        "with the published figures (benchmarks/README.md). 'summary' checks the GPU targets.",
    )
    which = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)

    p = which.add_parser(
        "wnll",
        help="wnll_interpolate forward and forward+backward",
        description="wnll_interpolate on clustered Gaussian features [n, 64] float32, the first third "
        "templates, k = 15: the forward, and the forward with the backward of a loss "
        "on the queries (ratio: its time over the forward's).",
    )
    p.add_argument(
        "--sizes",
        type=SIZE.parse,
        nargs="+",
        default=None,
        metavar="N",
        help=_sizes_help(wnll.QUICK_SIZES, wnll.FULL_SIZES),
    )
    _add_common(p, 5)

    p = which.add_parser(
        "knn",
        help="knn_graph per backend (exact and approximate)",
        description="knn_graph(x, 15) of clustered Gaussian features [n, 64] float32 per backend "
        "(CPU: native, torch, faiss, hnsw, ivf; CUDA: torch, faiss, ivf, native), "
        "with each graph's recall against the first exact one. A backend that cannot "
        "run here gives a row saying why.",
    )
    p.add_argument(
        "--sizes",
        type=SIZE.parse,
        nargs="+",
        default=None,
        metavar="N",
        help=_sizes_help(knn.QUICK_SIZES, knn.FULL_SIZES),
    )
    p.add_argument(
        "--backends",
        nargs="+",
        default=None,
        choices=("native", "torch", "faiss", "hnsw", "ivf"),
        help="backends to time (default: those of the device, see the description)",
    )
    _add_common(p, 5)

    p = which.add_parser(
        "bank",
        help="WNLL forward against a fixed template bank: full rebuild vs TemplateBank",
        description="A WNLL forward of q queries against m templates (clustered Gaussian "
        "features, 64-d float32, k = 15): wnll_interpolate rebuilding the whole graph, "
        "and TemplateBank (the bank's kNN lists computed once), transductive and "
        "inductive (ratio: full rebuild time / this), with the one-off index time.",
    )
    p.add_argument(
        "--cases",
        type=_case,
        nargs="+",
        default=None,
        metavar="M:Q",
        help="templates:queries pairs (default "
        + " ".join(f"{m}:{q}" for m, q in bank.QUICK_CASES)
        + "; with --full "
        + " ".join(f"{m}:{q}" for m, q in bank.FULL_CASES)
        + ")",
    )
    _add_common(p, 5)

    p = which.add_parser(
        "tv",
        help="tv_denoise and tvm per backend (Triton kernels vs eager torch on CUDA)",
        description="tv_denoise and tvm (drop rate 0.5) at a fixed iteration count on CIFAR-, "
        "MNIST- (and with --full ImageNet-) shaped batches of random images, per "
        "backend: eager torch, and on CUDA the Triton kernels (ratio: eager torch "
        "time / kernel time).",
    )
    p.add_argument(
        "--batch",
        type=COUNT.parse,
        default=None,
        help="images per batch for every batch shape (default: CIFAR 128, MNIST 256; with --full "
        "CIFAR 512, MNIST 1024, ImageNet 32)",
    )
    p.add_argument("--iters", type=COUNT.parse, default=tv.ITERS, help=f"iterations per call (default {tv.ITERS})")
    _add_common(p, 5)

    p = which.add_parser(
        "training",
        help="a PGD training epoch, WNLL head vs linear head (MNIST CNN)",
        description="One PGD adversarial training epoch (a fixed number of steps, the paper's "
        "MNIST budget) of the paper's MNIST CNN through the trainer: stage 1 with "
        "the linear head, stage 2 with the WNLL head (surrogate gradient, a third "
        "of each batch templates), same batches (ratio: WNLL time / linear time).",
    )
    p.add_argument(
        "--batch",
        type=COUNT.parse,
        default=None,
        help=f"images per batch (default {training.QUICK[0]}; with --full {training.FULL[0]}, the "
        "paper's stage-2 graph)",
    )
    p.add_argument(
        "--steps",
        type=COUNT.parse,
        default=None,
        help=f"training steps per timed epoch (default {training.QUICK[1]}; with --full {training.FULL[1]})",
    )
    p.add_argument("--pgd-steps", type=COUNT.parse, default=None, help="PGD steps per batch (default: the paper's 40)")
    p.add_argument(
        "--adv-templates",
        type=COUNT.parse,
        default=1000,
        help="templates the stage-2 PGD examples are crafted against (default 1000)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="PATH",
        help="time on the real MNIST test files (the mnist10k dataset) in PATH instead of synthetic images",
    )
    _add_common(p, 3)

    p = which.add_parser(
        "summary",
        help="every figure of a results folder and the targets met or not",
        description="Read the result files (*.json) of --out and print every figure and every "
        "published GPU target (met, NOT MET, missing, or n/a on a CPU); write them "
        "to --summary as Markdown and JSON.",
    )
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"results folder (default ./{DEFAULT_OUT})")
    p.add_argument(
        "--summary",
        default=None,
        metavar="FILE.md",
        help="where to write the summary ({device} becomes the device's name; the JSON goes beside; "
        "default <out>/summary_{device}.md)",
    )
    p.add_argument("--stages", default=None, metavar="FILE", help="stages file of scripts/gpu_check.sh")
    p.add_argument("--title", default=None, help="title of the summary")
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="the device the results were meant to come from: named in the summary when none was read",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 unless every stage passed and every target is met (or n/a)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a summary already there")
    bench.set_defaults(handler=bench_command)


def command_line(args: argparse.Namespace) -> str:
    """The ``fastwnll bench`` command that ``args`` stand for, every setting written out."""
    parts = ["fastwnll", "bench", args.bench]
    for key, value in vars(args).items():
        if key in ("command", "bench", "handler") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, *map(str, value if isinstance(value, list) else [value])]
    return shlex.join(parts)


def bench_command(args: argparse.Namespace) -> int:
    """``fastwnll bench <benchmark>``: time it, print the table, write the files; or the summary."""
    if args.bench == "summary":
        return summary_command(args)
    from fastwnll.runtime import resolve_device

    from . import bank, knn, training, tv, wnll
    from .results import check_paths, display, environment, output_paths, write_results

    device = resolve_device(args.device)
    paths = output_paths(args.out, args.bench, device)
    check_paths(paths, args.overwrite)
    env = environment(device)
    print(
        f"fastwnll bench {args.bench} on {env['device']} (torch {env['torch']}, fastwnll {env['fastwnll']})", flush=True
    )
    if args.bench == "wnll":
        rows = wnll.run(device, args.sizes or (wnll.FULL_SIZES if args.full else wnll.QUICK_SIZES), args.repeats, env)
    elif args.bench == "knn":
        rows = knn.run(
            device, args.sizes or (knn.FULL_SIZES if args.full else knn.QUICK_SIZES), args.repeats, env, args.backends
        )
    elif args.bench == "bank":
        rows = bank.run(device, args.cases or (bank.FULL_CASES if args.full else bank.QUICK_CASES), args.repeats, env)
    elif args.bench == "tv":
        batches = tv.FULL_BATCHES if args.full else tv.QUICK_BATCHES
        if args.batch:
            batches = tuple((name, (args.batch, *shape[1:])) for name, shape in batches)
        rows = tv.run(device, batches, args.repeats, env, iters=args.iters)
    else:
        batch, steps = training.FULL if args.full else training.QUICK
        data, data_name = None, "synthetic"
        if args.data_dir is not None:
            from fastwnll.data import load_dataset

            data, data_name = load_dataset("mnist10k", data_dir=args.data_dir, split="train"), "mnist10k"
        rows = training.run(
            device,
            args.batch or batch,
            args.steps or steps,
            args.repeats,
            env,
            pgd_steps=args.pgd_steps,
            adv_templates=args.adv_templates,
            data=data,
            data_name=data_name,
        )
    write_results(paths, rows, env, args.bench, command_line(args))
    print(display(rows))
    print(f"(medians of {args.repeats}; written to {paths[0]} and {paths[1]})")
    return 0


def summary_command(args: argparse.Namespace) -> int:
    """``fastwnll bench summary``: read the results of --out, print and write the summary."""
    from .results import check_paths
    from .summary import markdown, summarize, summary_paths, write_summary

    if not Path(args.out).is_dir():
        raise FileNotFoundError(f"--out {args.out}: no such folder of benchmark results")
    summary = summarize(args.out, args.stages, args.title, args.device)
    paths = summary_paths(args.summary or str(Path(args.out) / "summary_{device}.md"), summary)
    check_paths(paths, args.overwrite)
    write_summary(paths, summary)
    print(markdown(summary))
    print(f"(written to {paths[0]} and {paths[1]})")
    return 0 if summary["ok"] or not args.check else 1
