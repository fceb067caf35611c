"""The ``geometry`` subcommand of the ``fastwnll`` command line."""

from __future__ import annotations

import argparse

from fastwnll.runtime.ranges import COUNT, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE

from .report import OUTPUT_NAMES

HEAD_CHOICES = ("auto", "linear", "wnll")


def model_argument(text: str) -> dict:
    """``[NAME=]PATH[:HEAD]`` -> ``{"name", "checkpoint", "head"}`` (name: the path when not given;
    HEAD auto, linear or wnll)."""
    name, sep, path = text.partition("=")
    if not sep:
        name, path = "", text
    if not path or (sep and not name):
        raise argparse.ArgumentTypeError(f"expected PATH, PATH:HEAD, NAME=PATH or NAME=PATH:HEAD, got {text!r}")
    head = "auto"
    base, colon, suffix = path.rpartition(":")
    if colon and suffix in HEAD_CHOICES:
        path, head = base, suffix
    return {"name": name or path, "checkpoint": path, "head": head}


def _eps(text: str):
    if text.lower() in ("none", "unbounded"):
        return None
    try:
        return NON_NEGATIVE.parse(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a radius >= 0 or 'unbounded', got {text!r}") from None


def register(subparsers) -> None:
    """Add ``geometry`` to the ``fastwnll`` command line."""
    from .adversarial import PROTOCOL_CHOICES
    from .projection import PROJECTIONS

    p = subparsers.add_parser(
        "geometry",
        help="feature-space geometry of clean and adversarial images: picture and numbers",
        description="Collect the penultimate features (the head's input) of test images and of their adversarial "
        "versions for one or more checkpoints, and write a picture (a 2-D projection per model, "
        "coloured by true class, with displacement arrows) and the numbers (intra-class spread / "
        "inter-class distance, displacement / inter-class distance, share of adversarial features whose "
        f"k nearest templates are mostly of the true class) into --out: {', '.join(OUTPUT_NAMES)}.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=model_argument,
        metavar="[NAME=]PATH[:HEAD]",
        help="training checkpoint (file or run directory); HEAD auto (default), linear or wnll",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        type=model_argument,
        default=[],
        metavar="[NAME=]PATH[:HEAD]",
        help="more checkpoints trained on the same data: one panel and one table line each",
    )
    p.add_argument("--attack", default="ifgsm", help="a registered attack, as for fastwnll attack (default ifgsm)")
    p.add_argument(
        "--eps", type=_eps, default=None, help="L_inf radius (fgsm, ifgsm, pgd); optional L2 radius for cw_l2"
    )
    p.add_argument("--steps", type=COUNT.parse, default=None, help="iterations (default: the paper's for the dataset)")
    p.add_argument("--alpha", type=POSITIVE.parse, default=None, help="IFGSM/PGD step (default: paper's ratio x eps)")
    p.add_argument("--restarts", type=COUNT.parse, default=1, help="PGD random restarts")
    p.add_argument(
        "--protocol",
        choices=PROTOCOL_CHOICES,
        default="worst-case",
        help="WNLL heads: paper (surrogate gradient), adaptive (exact gradient) or worst-case (default: "
        "per image, the example that fools the model among both)",
    )
    p.add_argument(
        "--n", type=COUNT.parse, default=None, help="test images (a fixed seeded subset; default 500 or all)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace the output files already in --out")
    p.add_argument(
        "--projection",
        choices=PROJECTIONS,
        default="pca",
        help="2-D projection of every panel: pca (default; fitted on the model's clean features) or tsne",
    )
    p.add_argument("--arrows", type=COUNT.parse, default=40, help="displacement arrows per panel (default 40)")
    p.add_argument("--columns", type=COUNT.parse, default=None, help="panels per row (default: all, up to 4)")
    p.add_argument(
        "--templates",
        type=COUNT.parse,
        default=None,
        help="training features for the kNN share of a checkpoint without a WNLL template bank "
        "(default: the training config's bank size)",
    )
    p.add_argument("--k", type=COUNT.parse, default=None, help="nearest templates (default: the WNLL head's k, 15)")
    p.add_argument(
        "--seed", type=NON_NEGATIVE_INT.parse, default=0, help="seed of the test subset, the arrows and the attacks"
    )
    p.add_argument(
        "--batch-size",
        type=COUNT.parse,
        default=500,
        help="rows per attack batch; a WNLL head interpolates the rows of a batch together (default 500)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--title", default=None, help="title of the picture and the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=geometry_command)


def geometry_command(args: argparse.Namespace) -> int:
    from .analysis import feature_geometry
    from .report import markdown

    result = feature_geometry(
        [args.checkpoint, *args.compare],
        attack=args.attack,
        eps=args.eps,
        n=args.n,
        out=args.out,
        overwrite=args.overwrite,
        protocol=args.protocol,
        steps=args.steps,
        alpha=args.alpha,
        restarts=args.restarts,
        projection=args.projection,
        arrows=args.arrows,
        columns=args.columns,
        templates=args.templates,
        k=args.k,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        title=args.title,
    )
    print(markdown(result))
    print(f"wrote {', '.join(result['files'].values())} ({result['time_s']:.0f} s)")
    return 0
