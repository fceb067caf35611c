"""The ``train``, ``evaluate`` and ``demo`` subcommands of the ``fastwnll`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys

from fastwnll.data import DATASETS
from fastwnll.knn.approximate import APPROXIMATE_METHODS
from fastwnll.knn.search import BACKENDS
from fastwnll.models.heads import HEADS
from fastwnll.nn.head import GRADIENTS
from fastwnll.runtime.config import (
    ADVERSARIES,
    DEFAULT_ADV_TEMPLATES,
    DEFAULT_TEMPLATES,
    FIELD_RANGES,
    TrainConfig,
    knn_backend_spec,
)
from fastwnll.runtime.device import AMP, DEVICES
from fastwnll.runtime.distributed import GRAPHS, add_distributed_flags
from fastwnll.runtime.ranges import COUNT, NON_NEGATIVE_INT, POSITIVE


def _knn_backend(text: str) -> str:
    """``--knn-backend``: a backend name or an approximate spec (argparse type)."""
    try:
        return knn_backend_spec(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("knn_backend: ")) from None


# (TrainConfig field, argparse keywords, help). Every flag defaults to "not given" so that
# `--resume` can tell the flags the user repeated from the ones taken from the checkpoint. Numeric
# flags are parsed with the field's range (``FIELD_RANGES``): a value out of range is a usage error.
_TRAIN_FLAGS = [
    ("dataset", {"choices": DATASETS}, "training data (digits: scikit-learn's, bundled)"),
    ("data_dir", {"metavar": "PATH"}, "where the dataset lies (npz: the .npz file)"),
    ("download", {"action": "store_true"}, "download mnist / cifar10 with torchvision when missing"),
    ("model", {}, "network: resnet20/32/44/56/110, mnist_cnn, digits_cnn (default per dataset)"),
    ("head", {"choices": HEADS}, "output layer; wnll adds the paper's stage 2"),
    ("epochs", {}, "stage-1 epochs per cycle (whole network, linear head)"),
    ("stage2_epochs", {}, "stage-2 epochs per cycle (buffer block, WNLL head; default 2 for wnll)"),
    ("cycles", {}, "repetitions of stage 1 + stage 2"),
    ("adv", {"choices": ADVERSARIES}, "adversarial training"),
    ("eps", {}, "PGD L_inf budget (default per dataset: 0.3 MNIST, 0.031 CIFAR)"),
    ("alpha", {}, "PGD step size (default per dataset)"),
    ("steps", {}, "PGD steps (default per dataset)"),
    ("adv_gradient", {"choices": GRADIENTS}, "WNLL gradient for crafting PGD examples in stage 2"),
    ("wnll_gradient", {"choices": GRADIENTS}, "WNLL gradient for training in stage 2"),
    (
        "adv_templates",
        {},
        "templates for crafting PGD examples in stage 2 "
        f"(default: {DEFAULT_ADV_TEMPLATES}, or the whole training split if smaller)",
    ),
    ("tvm_augment", {"metavar": "FRACTION"}, "fraction of each batch replaced by its TVM"),
    ("batch_size", {}, "stage-1 batch size"),
    ("stage2_batch_size", {}, "stage-2 batch size: templates + queries of one graph (default 1024; digits 256)"),
    ("lr", {}, "stage-1 learning rate (default per dataset)"),
    ("stage2_lr", {}, "stage-2 learning rate (default: stage 1's final one)"),
    ("milestones", {"nargs": "*", "metavar": "EPOCH"}, "stage-1 epochs where lr is multiplied by gamma"),
    ("gamma", {}, "learning-rate decay factor"),
    ("momentum", {}, "SGD momentum"),
    ("weight_decay", {}, "SGD weight decay"),
    ("k", {}, "WNLL graph neighbours"),
    ("k_sigma", {}, "WNLL bandwidth neighbour (counting the point itself; default min(8, k + 1))"),
    ("template_fraction", {}, "fraction of a stage-2 batch used as templates"),
    (
        "templates",
        {},
        "WNLL template bank size for evaluation "
        f"(default: {DEFAULT_TEMPLATES}, or the whole training split if smaller)",
    ),
    ("template_batches", {}, "template chunks whose scores are averaged at evaluation"),
    (
        "knn_backend",
        {"type": _knn_backend, "metavar": "BACKEND"},
        f"kNN search of the WNLL graphs: exact ({', '.join(b for b in BACKENDS if b not in APPROXIMATE_METHODS)}: "
        "the same graph) or approximate (hnsw, ivf: faster, not exact; options as "
        "'hnsw:ef_search=128,hnsw_m=16' or 'ivf:nlist=64,nprobe=8')",
    ),
    ("eval_batch_size", {}, "queries per evaluation forward"),
    ("eval_every", {}, "test every this many epochs (0: only at the end)"),
    ("seed", {}, "random seed"),
    ("device", {"choices": DEVICES}, "auto: CUDA when available"),
    ("amp", {"choices": AMP}, "mixed precision on CUDA (the WNLL solve stays float32)"),
    ("out", {"metavar": "DIR"}, "run directory: checkpoint.pt, log.jsonl, summary.json"),
]


def _default_text(name: str) -> str:
    """`` (default: X)`` for a TrainConfig field with a fixed default; empty for per-dataset ones."""
    default = next(f for f in dataclasses.fields(TrainConfig) if f.name == name).default
    if default is None or default is dataclasses.MISSING or isinstance(default, bool):
        return ""
    return f" (default: {default:.4g})" if isinstance(default, float) else f" (default: {default})"


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a network (natural or PGD; linear or WNLL head)",
        description="Train a network with a linear or WNLL head, naturally or with PGD adversarial training, "
        "on CPU or CUDA. Writes OUT/checkpoint.pt, OUT/log.jsonl and OUT/summary.json.",
    )
    for name, keywords, text in _TRAIN_FLAGS:
        if name in FIELD_RANGES:
            keywords = {"type": FIELD_RANGES[name].parse, **keywords}
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,
            help=text + _default_text(name),
            **keywords,
        )
    fresh_or_resumed = parser.add_mutually_exclusive_group()
    fresh_or_resumed.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (its configuration is reused; only --device may change)",
    )
    fresh_or_resumed.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that holds an earlier run (its checkpoint, log "
        "and summary are replaced); without it such a directory is refused",
    )
    parser.add_argument(
        "--stop-after",
        type=COUNT.parse,
        metavar="EPOCHS",
        help="stop after this many epochs of this call (continue later with --resume)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    add_distributed_flags(parser)
    parser.add_argument(
        "--graph",
        choices=GRAPHS,
        default=None,
        help="under torchrun: the WNLL training graph over the whole batch (global, the default) or "
        "over each process's share (local)",
    )
    parser.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fastwnll.runtime import CHECKPOINT_NAME, load_checkpoint
    from fastwnll.runtime.distributed import is_main_process

    from .trainer import TrainingInterrupted, train

    given = {name: getattr(args, name) for name, _, _ in _TRAIN_FLAGS if hasattr(args, name)}
    if args.resume:
        out = Path(given.get("out", TrainConfig.out))
        saved = load_checkpoint(out / CHECKPOINT_NAME)["config"]
        config = TrainConfig.from_dict({**saved, **given})
    else:
        config = TrainConfig(**given)
    try:
        summary = train(
            config,
            resume=args.resume,
            overwrite=args.overwrite,
            stop_after_epochs=args.stop_after,
            progress=not args.quiet,
            backend=args.backend,
            graph=args.graph,
        )
    except TrainingInterrupted as stop:
        if not is_main_process():
            return 128 + signal.SIGINT
        if stop.checkpoint is None:
            print(
                "fastwnll train: interrupted before the first epoch ended; nothing to resume: run the command again",
                file=sys.stderr,
            )
        elif stop.finished:
            print(
                f"fastwnll train: interrupted after the last epoch; the finished run is in {stop.checkpoint}",
                file=sys.stderr,
            )
        else:
            print(f"fastwnll train: interrupted; resume with: {_resume_command(config.out)}", file=sys.stderr)
        return 128 + signal.SIGINT  # the shell's status of a command stopped by Ctrl-C
    if not is_main_process():
        return 0
    if "stopped_after_epoch" in summary:
        print(
            f"stopped after epoch {summary['stopped_after_epoch']}/{summary['epochs']}; "
            f"continue with: {_resume_command(config.out)}"
        )
        return 0
    line = f"test accuracy {summary['test_accuracy']:.4f}"
    if "test_accuracy_linear" in summary:
        line = (
            f"test accuracy: WNLL head {summary['test_accuracy']:.4f}, "
            f"linear read-out {summary['test_accuracy_linear']:.4f}"
        )
    print(f"{line} ({summary['test_n']} images, {summary['train_time_s']:.1f} s training)")
    print(f"checkpoint: {summary['checkpoint']}")
    return 0


def _resume_command(out: str) -> str:
    return f"fastwnll train --resume --out {shlex.quote(out)}"


def _add_demo(subparsers) -> None:
    from .demo import DEMO_DEFAULTS

    parser = subparsers.add_parser(
        "demo",
        help="linear vs WNLL head on digits: PGD training, natural and IFGSM accuracy",
        description="Train the digits CNN with a linear head and with a WNLL head (PGD adversarial training, "
        "a few epochs, CPU-friendly) on scikit-learn's digits, then print natural accuracy and "
        "accuracy under IFGSM (surrogate and exact WNLL gradients) in a table.",
    )
    d = DEMO_DEFAULTS
    parser.add_argument(
        "--epochs", type=COUNT.parse, default=d["epochs"], help=f"stage-1 epochs (default {d['epochs']})"
    )
    parser.add_argument(
        "--stage2-epochs",
        type=COUNT.parse,
        default=d["stage2_epochs"],
        help=f"WNLL stage-2 epochs (default {d['stage2_epochs']})",
    )
    parser.add_argument(
        "--eps", type=POSITIVE.parse, default=d["eps"], help=f"L_inf budget of training and attack (default {d['eps']})"
    )
    parser.add_argument(
        "--steps", type=COUNT.parse, default=d["steps"], help=f"PGD training steps (default {d['steps']})"
    )
    parser.add_argument(
        "--attack-steps", type=COUNT.parse, default=d["attack_steps"], help=f"IFGSM steps (default {d['attack_steps']})"
    )
    parser.add_argument("--no-exact", action="store_true", help="skip the exact-gradient attack on the WNLL model")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT.parse, default=0)
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--out", metavar="DIR", help="keep the two runs here (default: a temporary directory)")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    rows = run_demo(
        epochs=args.epochs,
        stage2_epochs=args.stage2_epochs,
        eps=args.eps,
        steps=args.steps,
        attack_steps=args.attack_steps,
        exact=not args.no_exact,
        seed=args.seed,
        device=args.device,
        out=args.out,
        progress=not args.quiet,
    )
    sys.stdout.write(format_table(rows, eps=args.eps, attack_steps=args.attack_steps))
    return 0


def register(subparsers) -> None:
    """Add ``train`` and ``demo`` to the ``fastwnll`` command line."""
    _add_train(subparsers)
    _add_demo(subparsers)
