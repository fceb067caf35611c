"""Feature-space geometry of the MNIST models of run.py: linear vs WNLL head, natural vs PGD training.

    python experiments/mnist_robustness/geometry.py --train     # trains the four models if missing

Trains (with ``--train``, only the checkpoints that are missing) the natural and PGD-trained
``mnist_cnn`` pairs of run.py with run.py's own plan and ``train_pair`` into runs/ (git-ignored),
then runs ``fastwnll.geometry.feature_geometry`` (the code behind ``fastwnll geometry``) on the four
models for each ``--eps`` (IFGSM, worst-case protocol, the 500 test images run.py attacks) and
writes geometry/eps<E>/geometry.{png,json,md} and geometry/training.json next to this file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from fastwnll.geometry import feature_geometry  # noqa: E402


def load_run_module():
    """run.py of this directory as a module (its ``PLAN`` and ``train_pair``)."""
    spec = importlib.util.spec_from_file_location("mnist_robustness_run", HERE / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_configs(run) -> dict:
    """The natural and PGD training configurations of run.py's main(), built from its PLAN."""
    plan = run.PLAN
    common = {
        "dataset": plan["dataset"],
        "head": "wnll",
        "stage2_epochs": plan["stage2_epochs"],
        "templates": plan["templates"],
        "device": "cpu",
        "seed": 0,
    }
    return {
        "natural": run.TrainConfig(**common, epochs=plan["natural_epochs"]),
        "pgd": run.TrainConfig(
            **common,
            epochs=plan["pgd_epochs"],
            adv="pgd",
            eps=plan["pgd_eps"],
            alpha=plan["pgd_alpha"],
            steps=plan["pgd_steps"],
        ),
    }


def models(runs: Path) -> list[dict]:
    """The four models (paths relative to the working directory): each stage-1 checkpoint read
    through its linear head, each full run through its WNLL head."""
    return [
        {"name": f"{head}-{name}", "checkpoint": os.path.relpath(runs / run), "head": head}
        for name in ("natural", "pgd")
        for head, run in (("linear", f"{name}_stage1"), ("wnll", name))
    ]


def train_missing(runs: Path, out: Path) -> None:
    """Train, with run.py's plan and ``train_pair``, the pairs whose checkpoints are missing; record
    their test accuracies and times in ``out/training.json``."""
    run = load_run_module()
    runs.mkdir(parents=True, exist_ok=True)
    path = out / "training.json"
    record = json.loads(path.read_text()) if path.exists() else {"plan": run.PLAN, "runs": {}}
    for name, config in training_configs(run).items():
        if (runs / name / "checkpoint.pt").exists() and (runs / f"{name}_stage1" / "checkpoint.pt").exists():
            continue
        print(f"[{time.strftime('%H:%M:%S')}] training {name}", flush=True)
        record["runs"][name] = run.train_pair(name, config, runs)
        for entry in record["runs"][name].values():
            entry["checkpoint"] = os.path.relpath(entry["checkpoint"])
        print(f"  {json.dumps(record['runs'][name])}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(HERE / "runs"), help="where the checkpoints are (git-ignored)")
    parser.add_argument("--out", default=str(HERE / "geometry"), help="output directory")
    parser.add_argument("--train", action="store_true", help="train the checkpoints that are missing")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.3, 0.1], help="IFGSM L_inf radii")
    parser.add_argument("--n", type=int, default=500, help="test images (run.py's PLAN['n'])")
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs, out = Path(args.runs), Path(os.path.relpath(args.out))  # results name relative paths
    if args.train:
        started = time.perf_counter()
        train_missing(runs, out)
        print(f"training done in {time.perf_counter() - started:.0f} s", flush=True)
    for eps in args.eps:
        result = feature_geometry(
            models(runs),
            attack="ifgsm",
            eps=eps,
            n=args.n,
            out=out / f"eps{eps:g}",
            overwrite=args.overwrite,
            protocol="worst-case",
            batch_size=args.n,
            device="cpu",
            columns=2,
            progress=not args.no_progress,
            title=f"MNIST (mnist10k) mnist_cnn under IFGSM eps {eps:g}: linear vs WNLL head (columns), "
            "natural vs PGD training (rows)",
        )
        print(
            f"[{time.strftime('%H:%M:%S')}] eps {eps:g}: {result['time_s']:.0f} s; "
            f"{', '.join(result['files'].values())}",
            flush=True,
        )
        for m in result["models"]:
            print(f"  {m['name']}: {json.dumps(m['metrics'])}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
