"""CLI commands ``fastwnll evaluate`` (natural accuracy of a checkpoint), ``fastwnll attack`` (one attack on
one checkpoint) and ``fastwnll report`` (a grid)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastwnll.attacks.registry import ATTACKS, NORMS, PROTOCOLS
from fastwnll.data import DATASETS
from fastwnll.nn.head import INFERENCE
from fastwnll.runtime.device import DEVICES
from fastwnll.runtime.distributed import add_distributed_flags
from fastwnll.runtime.ranges import COUNT, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE

from .targets import HEADS

DEFAULT_N = 500
# The registry's attacks by how --eps applies to them (for the help texts).
BOUNDED = [name for name, spec in ATTACKS.items() if not spec.minimum_norm]
MINIMUM_NORM = [name for name, spec in ATTACKS.items() if spec.minimum_norm]


def _radius_help() -> str:
    bounded = ", ".join(f"{name} ({NORMS[ATTACKS[name].norm]})" for name in BOUNDED)
    unbounded = ", ".join(f"{name} ({NORMS[ATTACKS[name].norm]})" for name in MINIMUM_NORM)
    return f"radius of {bounded}; for {unbounded} an optional radius applied to the smallest perturbation found"


def _none_or_float(text: str):
    """A radius >= 0, or None for "none"/"unbounded" (an unbounded CW-L2 attack)."""
    if text.lower() in ("none", "null", "unbounded", "inf"):
        return None
    try:
        return NON_NEGATIVE.parse(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a radius >= 0 or 'unbounded', got {text!r}") from None


def _setting(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` (VALUE read as JSON when it parses, e.g. 1000, 0.5, true, null; else a string)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _model_spec(text: str) -> dict:
    """``NAME=PATH`` or ``NAME=PATH:HEAD`` (HEAD one of auto, linear, wnll) -> a grid model entry."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH or NAME=PATH:HEAD, got {text!r}")
    head = "auto"
    base, colon, suffix = path.rpartition(":")
    if colon and suffix in HEADS:
        path, head = base, suffix
    return {"name": name, "checkpoint": path, "head": head}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (CUDA if available), cpu or cuda (default auto)")
    p.add_argument(
        "--seed",
        type=NON_NEGATIVE_INT.parse,
        default=None,
        help="seed of the test subset and of the TVM masks (default 0)",
    )
    p.add_argument(
        "--batch-size",
        type=COUNT.parse,
        default=None,
        help="rows per attack batch; WNLL heads interpolate the rows of a batch together (default 500)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist (default: refuse)")


def _add_evaluate(subparsers) -> None:
    from .natural import EVAL_HEADS

    parser = subparsers.add_parser(
        "evaluate",
        help="natural accuracy of a checkpoint, through its linear or WNLL head",
        description="Natural accuracy of a training checkpoint on a dataset split, read through the linear head, "
        "the WNLL head, or both.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint.pt or a run directory")
    parser.add_argument("--dataset", choices=DATASETS, help="default: the training dataset")
    parser.add_argument("--data-dir", metavar="PATH", help="default: the training data directory")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--head", choices=EVAL_HEADS, help="default: the checkpoint's own head (both for a WNLL model)")
    parser.add_argument(
        "--templates",
        type=COUNT.parse,
        metavar="N",
        help="rebuild the WNLL template bank from N training examples (needed for a linear-head "
        "checkpoint read through WNLL; default: the saved bank)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--batch-size", type=COUNT.parse, help="queries per forward (default: the training config's)")
    parser.add_argument(
        "--inference",
        choices=INFERENCE,
        default=None,
        help="WNLL heads: transductive (the rows of a batch share one graph; the saved default) or inductive "
        "(each image against the template bank alone)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_distributed_flags(parser)
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from fastwnll.runtime.distributed import is_main_process

    from .natural import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        head=args.head,
        templates=args.templates,
        device=args.device,
        batch_size=args.batch_size,
        backend=args.backend,
        inference=args.inference,
    )
    if not is_main_process():
        return 0
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['model']} ({result['trained_head']} head) on {result['dataset']} {result['split']}, "
        f"{result['n']} images"
    )
    for head, value in result["accuracy"].items():
        extra = f" ({result['templates']} templates)" if head == "wnll" else ""
        print(f"  {head:<6} head accuracy {value:.4f}{extra}")
    return 0


def register(subparsers) -> None:
    _add_evaluate(subparsers)
    attack = subparsers.add_parser(
        "attack",
        help="robust accuracy of a checkpoint under one attack (white-box or transfer)",
        description="Attack a training checkpoint on a fixed subset of its test split and print the robust "
        "accuracy. The paper protocol uses the WNLL linear surrogate gradient and ignores TVM in the "
        "attack; the adaptive protocol uses the exact WNLL gradient and BPDA + EOT through TVM; "
        "worst-case (default) runs both and counts an image as robust only if it survives both "
        "(the exact WNLL gradient can be the weaker attack: it masks itself). Attacks designed against "
        "the WNLL head (wnll_*) run under the adaptive protocol only; masking diagnostics are printed.",
    )
    attack.add_argument("--checkpoint", required=True, help="training checkpoint (file or run directory)")
    attack.add_argument("--attack", required=True, help=", ".join(ATTACKS))
    attack.add_argument("--eps", type=_none_or_float, default=None, help=_radius_help())
    attack.add_argument(
        "--steps", type=COUNT.parse, default=None, help="iterations (default: the paper's for the dataset)"
    )
    attack.add_argument(
        "--alpha", type=POSITIVE.parse, default=None, help="IFGSM/PGD step (default: paper's ratio x eps)"
    )
    attack.add_argument("--restarts", type=COUNT.parse, default=1, help="PGD random restarts")
    attack.add_argument("--c", type=POSITIVE.parse, default=None, help="CW-L2 constant (default 10)")
    attack.add_argument("--lr", type=POSITIVE.parse, default=None, help="CW-L2 Adam learning rate (default 0.01)")
    attack.add_argument("--binary-search-steps", type=COUNT.parse, default=None, help="CW-L2 rounds (default 1)")
    attack.add_argument(
        "--set",
        action="append",
        type=_setting,
        default=None,
        metavar="NAME=VALUE",
        help="an attack setting of the registry (repeatable), e.g. n_queries=1000 for square, k=60 for wnll_smooth",
    )
    attack.add_argument("--defense", default="none", help="none or tvm")
    attack.add_argument("--protocol", default="worst-case", help=f"worst-case (default), {' or '.join(PROTOCOLS)}")
    attack.add_argument("--gradient", default=None, help="WNLL gradient: surrogate or exact (default: protocol's)")
    attack.add_argument("--eot", type=COUNT.parse, default=None, help="EOT samples through TVM (adaptive, default 8)")
    attack.add_argument("--head", default="auto", help="read the checkpoint through its auto/linear/wnll head")
    attack.add_argument(
        "--inference",
        choices=INFERENCE,
        default=None,
        help="WNLL heads: transductive (the rows of a batch share one graph; the saved default) or inductive "
        "(each image against the template bank alone)",
    )
    attack.add_argument(
        "--transfer-from",
        default=None,
        help="craft on this checkpoint (black box for the target), evaluate on --checkpoint",
    )
    attack.add_argument("--transfer-head", default="auto", help="head of the transfer source (auto/linear/wnll)")
    attack.add_argument(
        "--images",
        "--n",
        dest="n",
        type=COUNT.parse,
        default=None,
        help=f"test images (a fixed seeded subset; default {DEFAULT_N} or the whole split if smaller; "
        "--images under torchrun, which takes --n for its own --nnodes)",
    )
    attack.add_argument("--tvm-iters", type=COUNT.parse, default=None, help="TVM iterations (default 100)")
    attack.add_argument(
        "--json",
        default=None,
        help="also write the result as JSON to this file (an existing one is refused unless --overwrite)",
    )
    _add_common(attack)
    add_distributed_flags(attack)
    attack.set_defaults(handler=attack_command)

    report = subparsers.add_parser(
        "report",
        help="robustness grid: heads x defences x attacks x eps x protocols, plus transfer attacks",
        description="Run a grid of attacks and write results.md, results.json and robustness.png into --out. "
        "Give a JSON grid with --config (see fastwnll.evaluation.grid.GridConfig) or the models with "
        "--model NAME=PATH[:HEAD]; other flags override the JSON's values.",
    )
    report.add_argument("--config", default=None, help="grid configuration (JSON)")
    report.add_argument(
        "--model",
        action="append",
        type=_model_spec,
        default=None,
        metavar="NAME=PATH[:HEAD]",
        help="a checkpoint to evaluate (repeatable); HEAD auto, linear or wnll",
    )
    report.add_argument(
        "--out", required=True, help="output directory (a report already there is refused unless --overwrite)"
    )
    report.add_argument("--defenses", nargs="+", default=None, help="none and/or tvm")
    report.add_argument("--attacks", nargs="+", default=None, help=" ".join(ATTACKS))
    report.add_argument("--eps", nargs="+", type=NON_NEGATIVE.parse, default=None, help="L_inf radii")
    report.add_argument(
        "--cw-eps", nargs="+", type=_none_or_float, default=None, help="CW-L2 L2 radii ('unbounded' for none)"
    )
    report.add_argument("--protocols", nargs="+", default=None, help=" and/or ".join(PROTOCOLS))
    report.add_argument("--n", type=COUNT.parse, default=None, help="test images (default 500)")
    report.add_argument("--cw-n", type=COUNT.parse, default=None, help="test images for CW-L2 (default n)")
    report.add_argument("--steps", type=COUNT.parse, default=None, help="IFGSM/PGD iterations")
    report.add_argument("--alpha", type=POSITIVE.parse, default=None, help="IFGSM/PGD step")
    report.add_argument("--eot", type=COUNT.parse, default=None, help="EOT samples of the adaptive attack on TVM")
    report.add_argument(
        "--transfer-from",
        action="append",
        type=_model_spec,
        default=None,
        metavar="NAME=PATH[:HEAD]",
        help="craft transfer attacks on this checkpoint (IFGSM at the largest eps)",
    )
    report.add_argument("--title", default=None, help="report title")
    _add_common(report)
    report.set_defaults(handler=report_command)


def attack_command(args: argparse.Namespace) -> int:
    """``fastwnll attack``; under torchrun every process attacks its share of the batches and process 0
    prints (and writes) the result, the same as one process's."""
    from fastwnll.attacks import attack_spec
    from fastwnll.attacks.checks import check_eps
    from fastwnll.runtime import resolve_device
    from fastwnll.runtime.distributed import process_device, process_group
    from fastwnll.runtime.files import check_outputs

    from .defense import check_defense

    if args.json:
        check_outputs([args.json], args.overwrite, "the result")
    spec = attack_spec(args.attack)
    if check_eps(args.eps) is None and not spec.minimum_norm:
        raise ValueError(f"attack {args.attack!r} needs an {NORMS[spec.norm]} radius: pass --eps")
    spec.check_available()
    check_defense(args.defense)
    with process_group(resolve_device(args.device or "auto"), args.backend) as processes:
        return _attack(args, spec, process_device(resolve_device(args.device or "auto"), processes), processes)


def _attack(args: argparse.Namespace, spec, device, processes) -> int:
    """The body of :func:`attack_command` on this process's ``device``."""
    from .diagnostics import diagnose
    from .robustness import Evaluator
    from .targets import check_same_data, eval_data, load_target

    target = load_target(args.checkpoint, name=args.checkpoint, head=args.head, device=device, inference=args.inference)
    source = None
    if args.transfer_from is not None:
        source = load_target(args.transfer_from, name=args.transfer_from, head=args.transfer_head, device=device)
        check_same_data(source, target)
    settings = _settings(
        args, target if source is None else source, "none" if source is not None else args.defense, spec.protocols
    )
    seed = 0 if args.seed is None else args.seed
    n = args.n if args.n is not None else min(DEFAULT_N, eval_data(target)[1].shape[0])
    x, y = eval_data(target, n, seed)
    tvm = {} if args.tvm_iters is None else {"iters": args.tvm_iters}
    evaluator = Evaluator(
        x,
        y,
        dataset=target.dataset,
        tvm=tvm,
        seed=seed,
        batch_size=args.batch_size or 500,
        device=device,
        progress=not args.no_progress,
        processes=processes,
    )
    overrides = {
        "pgd": {"restarts": args.restarts},
        "cw_l2": {
            k: v
            for k, v in (("c", args.c), ("lr", args.lr), ("binary_search_steps", args.binary_search_steps))
            if v is not None
        },
    }.get(args.attack, {})
    overrides.update(dict(args.set or []))
    rows, entries, survived = [], [], None
    for setting in settings:
        row, mask = evaluator.evaluate_with_mask(
            target,
            args.attack,
            args.eps,
            args.defense,
            setting,
            source=source,
            steps=args.steps,
            alpha=args.alpha,
            settings=overrides,
        )
        rows.append(row)
        entries.append((row, mask))
        survived = mask if survived is None else survived & mask
    if not processes.is_main:
        return 0
    origin = "white box" if source is None else f"transfer from {source.name}"
    print(
        f"model {target.name} ({target.config.model}, {target.head} head) on {rows[0]['n']} {target.dataset} test "
        f"images, defence {args.defense}"
    )
    print(f"clean accuracy  {rows[0]['clean_accuracy']:.4f}")
    graph = rows[0].get("wnll_graph")
    if graph:
        queries = (
            "1 query per graph (inductive)"
            if graph["inference"] == "inductive"
            else f"up to {graph['queries_per_graph']} queries per graph (transductive: the rows of a batch share "
            "one graph, so predictions depend on --batch-size)"
        )
        print(f"WNLL graphs: {graph['templates']} templates + {queries}")
    for setting, row in zip(settings, rows):
        print(f"attack {row['budget']}; {origin}; {setting.for_attack(spec).describe()}")
        if "median_l2" in row and row["median_l2"] is not None:
            print(f"  median L2 of the changed images {row['median_l2']:.4f} ({100 * row['changed']:.1f}% changed)")
        if len(rows) > 1:
            print(f"  robust accuracy ({setting.protocol}) {row['robust_accuracy']:.4f}")
    row = (
        rows[0]
        if len(rows) == 1
        else dict(
            rows[-1],
            protocol="worst-case" if source is None else "transfer",
            gradient=None,
            robust_accuracy=float(survived.float().mean()),
            protocols={s.protocol: r for s, r in zip(settings, rows)},
        )
    )
    label = "" if len(rows) == 1 else " (worst case: survived both attacks)"
    print(f"robust accuracy {row['robust_accuracy']:.4f}{label}")
    row["diagnostics"] = diagnose(entries) if source is None else []
    for diagnostic in row["diagnostics"]:
        print(f"warning ({diagnostic['check']}): {diagnostic['message']}")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n")
    return 0


def _settings(args: argparse.Namespace, crafter, defense: str, protocols: tuple[str, ...]) -> list:
    """The attack settings that ``--protocol`` asks for: one, or for worst-case every protocol of
    ``protocols`` (the attack's: paper + adaptive for most)."""
    from .protocol import resolve

    if args.protocol not in (*PROTOCOLS, "worst-case"):
        raise ValueError(f"unknown protocol {args.protocol!r}; choose one of worst-case, {', '.join(PROTOCOLS)}")
    if args.protocol != "worst-case":
        return [resolve(args.protocol, crafter.model, defense, gradient=args.gradient, eot=args.eot)]
    if args.gradient is not None:
        raise ValueError(
            "--gradient picks one WNLL gradient, but --protocol worst-case runs both (paper: "
            "surrogate, adaptive: exact); use --protocol paper or adaptive with --gradient"
        )
    return [
        resolve(p, crafter.model, defense, eot=args.eot if p == "adaptive" else None)
        for p in PROTOCOLS
        if p in protocols
    ]


def report_command(args: argparse.Namespace) -> int:
    from fastwnll.runtime.files import check_outputs

    from .grid import GridConfig, run_grid
    from .report import report_paths, write_report

    if args.config is None and not args.model:
        raise ValueError("give a grid with --config FILE or the models with --model NAME=PATH")
    check_outputs(report_paths(args.out).values(), args.overwrite, "the report")
    values = GridConfig.from_file(args.config).to_dict() if args.config else {}
    overrides = {
        "models": args.model,
        "defenses": args.defenses,
        "attacks": args.attacks,
        "eps": args.eps,
        "cw_eps": args.cw_eps,
        "protocols": args.protocols,
        "n": args.n,
        "cw_n": args.cw_n,
        "steps": args.steps,
        "alpha": args.alpha,
        "eot": args.eot,
        "title": args.title,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    if args.transfer_from:
        values["transfer"] = [{"source": spec} for spec in args.transfer_from]
    config = GridConfig.from_dict(values)
    result = run_grid(config, progress=not args.no_progress)
    paths = write_report(result, args.out, overwrite=args.overwrite)
    print(Path(paths["markdown"]).read_text())
    print(f"wrote {paths['markdown']}, {paths['json']}, {paths['plot']} ({result['time_s']:.0f} s)")
    return 0
