"""Training overhead of the WNLL head: a PGD adversarial training epoch of the paper's MNIST CNN with
the WNLL head against one with the linear head, at the same batch size.

The epochs are the trainer's own (``fastwnll.train.steps.train_epoch``), timed in turn by
``fastwnll.bench.training.run`` (its docstring has the details):

- ``linear, stage 1``: the paper's stage 1, the linear head, every parameter trained;
- ``linear, stage 2``: the paper's stage 2 (trunk frozen in eval mode, buffer block trained, attack
  bank refreshed before each PGD) with the head in linear mode;
- ``wnll, stage 2``: stage 2 with the WNLL head (one graph per batch, a third of it templates,
  surrogate gradient; PGD through the WNLL head against a bank of 1,000 training images).

The ratio of the last two is the cost of the head itself; that of the first two what stage 2's
set-up saves or costs. Each timed epoch is ``--steps`` batches of ``--batch`` images with the
paper's MNIST PGD budget (eps 0.3, 40 steps of 0.01); figures are medians over ``--repeats`` epochs.

Data: the real MNIST test files (the ``mnist10k`` training split, 8,000 digits) from ``--data-dir``
(default: ``$FASTWNLL_DATA_DIR``, else ``../shared/data/mnist`` beside the repository), or uniform
random images of the same shape when they are not there (said in the output) or with ``--synthetic``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_training.py --device cpu --batch 256 --steps 2 --repeats 3 \
        --out benchmarks/results
    python benchmarks/bench_training.py --device cuda --batch 6000 --steps 3   # the paper's stage-2 graph

Writes ``<out>/training_<device>.csv`` (one row per epoch, times in ms) and ``.md`` (the table with
the device, the command and the date); ``--out`` defaults to the git-ignored ``benchmarks/out``.
"""

from __future__ import annotations

import argparse
import datetime
import sys

import torch
from common import add_io_options, markdown_table, write_csv

from fastwnll.bench import training
from fastwnll.bench.results import environment, shown
from fastwnll.data import load_dataset
from fastwnll.runtime.ranges import COUNT


def load_digits(data_dir, synthetic: bool):
    """``((x, y), name)``: the mnist10k training split from ``data_dir``, or ``(None, "synthetic")``."""
    if synthetic:
        return None, "synthetic"
    try:
        return load_dataset("mnist10k", data_dir=data_dir, split="train"), "mnist10k"
    except FileNotFoundError as error:
        print(f"no MNIST files ({error}); timing on synthetic images", flush=True)
        return None, "synthetic"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=COUNT.parse, default=256, help="images per batch (default 256)")
    parser.add_argument("--steps", type=COUNT.parse, default=2, help="training steps per timed epoch (default 2)")
    parser.add_argument("--pgd-steps", type=COUNT.parse, default=None, help="PGD steps per batch (default 40)")
    parser.add_argument("--repeats", type=COUNT.parse, default=3, help="timed epochs per head (median; default 3)")
    parser.add_argument("--synthetic", action="store_true", help="uniform random images instead of MNIST")
    add_io_options(parser)
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_training.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data, name = load_digits(args.data_dir, args.synthetic)
    env = environment(args.device)
    rows = training.run(
        args.device, args.batch, args.steps, args.repeats, env, pgd_steps=args.pgd_steps, data=data, data_name=name
    )
    out = args.out / f"training_{args.device}.csv"
    write_csv(out, rows)
    columns = {"cpu_ms": "", "cpu_ratio": ""}  # on the CPU only
    table = markdown_table(
        [dict(columns, **{k: shown(v) for k, v in row.items()}, epoch=row["backend"]) for row in rows],
        ["epoch", "shape", "dtype", "steps", "pgd_steps", "median_ms", "ratio", "cpu_ms", "cpu_ratio", "ratio_of"],
    )
    lines = [
        f"# PGD training epochs, WNLL head vs linear head ({args.device})",
        "",
        f"- device: {env['device']}",
        f"- command: `{command}`",
        f"- date: {datetime.date.today().isoformat()}",
        f"- torch {env['torch']}, fastwnll {env['fastwnll']}; {name} images; medians of {args.repeats} epochs "
        "timed in turn",
        "",
        table,
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
