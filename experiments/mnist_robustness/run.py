"""Regenerate the MNIST robustness table: linear- and WNLL-head mnist_cnn, naturally and PGD-trained,
with and without TVM, under FGSM, IFGSM, CW-L2, the attacks designed against the WNLL head
(WNLL-margin, WNLL-smooth, WNLL-margin-L2) and the gradient-free Square, paper protocol and adaptive
attacks and the worst case over all of them, plus a transfer attack from a separately trained
linear-head model and an AutoAttack cross-check on the same 500 images.

    python experiments/mnist_robustness/run.py    # see README.md for the time it took

The data are the real MNIST test files (t10k-*-ubyte.gz) in --data-dir (default: $FASTWNLL_DATA_DIR,
else ../shared/data/mnist beside the repository). Writes results.md, results.json, robustness.png and
training.json next to this file (checkpoints go to runs/, which git ignores). Budgets are reduced
from the paper's to fit a CPU; see PLAN below and README.md, which lists every reduction.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from fastwnll.data.paths import DATA_DIR_ENV  # noqa: E402
from fastwnll.evaluation import GridConfig, run_grid, write_report  # noqa: E402
from fastwnll.evaluation.report import diagnostics_list, markdown, white_box_table  # noqa: E402
from fastwnll.train import TrainConfig, train  # noqa: E402

# Everything that differs from the paper is here (paper values in the comments).
PLAN = {
    "dataset": "mnist10k",  # 8,000 train / 2,000 test images of the real MNIST test set (paper: full MNIST)
    "natural_epochs": 4,  # paper: 100 epochs
    "pgd_epochs": 4,  # paper: 100 epochs
    "stage2_epochs": 1,  # paper: "a few" epochs of the buffer block with the WNLL head
    "pgd_eps": 0.3,  # paper: 0.3
    "pgd_steps": 10,  # paper: 40 steps of 0.01 (random start in both)
    "pgd_alpha": 0.04,
    "templates": 2000,  # paper's MNIST attack code: one batch of 2,000 training images
    "n": 500,  # test images attacked (a fixed seeded subset of the 2,000; paper: all)
    "cw_n": 100,  # of them for CW-L2
    "eps": [0.1, 0.2, 0.3],  # L_inf radii of FGSM and IFGSM (IFGSM: 40 steps of eps/30, the paper's 0.01 at 0.3)
    "cw": {"c": 10.0, "kappa": 0.0, "steps": 100, "lr": 0.1, "binary_search_steps": 1},
    "cw_eps": [1.0, 2.0, None],  # L2 radii at which CW-L2 robust accuracy is read (None: unbounded)
    "eot": 4,  # EOT samples per gradient of the adaptive attack through TVM
    "adaptive_tvm_eps": [0.3],  # the adaptive attack through TVM (BPDA + EOT) only at the paper's radius
    "tvm": {"drop_rate": 0.5, "lam": 0.03, "iters": 100},  # Guo et al.'s defaults
    "transfer_eps": [0.3],
    # Attacks designed against the WNLL head (WNLL models only, adaptive protocol, the IFGSM budget) and
    # the gradient-free Square (torchattacks): new since the first version of this experiment.
    "attacks": ["fgsm", "ifgsm", "wnll_margin", "wnll_smooth", "square", "cw_l2", "wnll_margin_l2"],
    "square": {"n_queries": 1000},  # AutoAttack's standard version gives Square 5,000 queries
    "square_eps": [0.3],  # Square only at the paper's radius, and not through TVM (as deployed)
    # AutoAttack (standard, torchattacks) cross-check: the grid's 500 images, eps 0.3, no defence, the paper's
    # gradient for WNLL heads (the surrogate), against the other attacks on the same images.
    "crosscheck_n": 500,
    "crosscheck_eps": [0.3],
    "crosscheck_attacks": ["ifgsm", "wnll_margin", "wnll_smooth", "square", "autoattack"],
}


def repo_relative(path: str) -> Path:
    """``path`` relative to the repository when it lies inside it, else absolute: the results name
    checkpoints and files the same way on every machine."""
    path = Path(path).resolve()
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def last_test_accuracy(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in records if "test_acc" in r][-1]
    return {k: last[k] for k in ("test_acc", "test_acc_linear") if k in last}


def train_pair(name: str, config: TrainConfig, runs: Path) -> dict:
    """Train ``config`` (head wnll) in two calls: stage 1, whose checkpoint is kept as the linear-head
    model (``<name>_stage1``), then the WNLL stage resumed in a copy (``<name>``)."""
    stage1, full = runs / f"{name}_stage1", runs / name
    for path in (stage1, full):
        if path.exists():
            shutil.rmtree(path)
    started = time.perf_counter()
    train(TrainConfig(**{**config.to_dict(), "out": str(stage1)}), stop_after_epochs=config.epochs, progress=False)
    stage1_time = time.perf_counter() - started
    shutil.copytree(stage1, full)
    summary = train(TrainConfig(**{**config.to_dict(), "out": str(full)}), resume=True, progress=False)
    return {
        "linear": {"checkpoint": str(stage1), "train_time_s": stage1_time, **last_test_accuracy(stage1)},
        "wnll": {
            "checkpoint": str(full),
            "train_time_s": time.perf_counter() - started,
            "test_acc": summary["test_accuracy"],
            "test_acc_linear": summary.get("test_accuracy_linear"),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_DIR_ENV) or str(REPO.parent / "shared" / "data" / "mnist"),
        help=f"folder of the MNIST test files (default: ${DATA_DIR_ENV}, else ../shared/data/mnist)",
    )
    parser.add_argument("--runs", default=str(HERE / "runs"), help="where the checkpoints go (git-ignored)")
    parser.add_argument("--out", default=str(HERE), help="where results.md/json/png and training.json go")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    parser.add_argument("--skip-training", action="store_true", help="reuse the checkpoints in --runs")
    parser.add_argument(
        "--reuse-grid",
        action="store_true",
        help="reuse the grid's result kept in --runs by an earlier run (only the cross-check runs)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.data_dir = str(Path(args.data_dir).resolve())
    runs, out = repo_relative(args.runs), repo_relative(args.out)
    os.chdir(REPO)  # the paths above are relative to the repository
    runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plan = PLAN
    common = {
        "dataset": plan["dataset"],
        "data_dir": args.data_dir,
        "head": "wnll",
        "stage2_epochs": plan["stage2_epochs"],
        "templates": plan["templates"],
        "device": "cpu",
        "seed": 0,
    }
    configs = {
        "natural": TrainConfig(**common, epochs=plan["natural_epochs"]),
        "pgd": TrainConfig(
            **common,
            epochs=plan["pgd_epochs"],
            adv="pgd",
            eps=plan["pgd_eps"],
            alpha=plan["pgd_alpha"],
            steps=plan["pgd_steps"],
        ),
    }
    oracle_config = TrainConfig(
        dataset=plan["dataset"],
        data_dir=args.data_dir,
        head="linear",
        epochs=plan["natural_epochs"],
        device="cpu",
        seed=1,
        out=str(runs / "oracle"),
    )
    training_path = out / "training.json"
    if args.skip_training:
        training = json.loads(training_path.read_text())
    else:
        training = {"plan": plan, "runs": {}}
        cpu0 = time.process_time()
        for name, config in configs.items():
            log(f"training {name} (stage 1 linear head, then stage 2 WNLL head)")
            training["runs"][name] = train_pair(name, config, runs)
            log(f"  {name}: {json.dumps(training['runs'][name])}")
        log("training the transfer oracle (separately trained linear head, seed 1)")
        if Path(oracle_config.out).exists():
            shutil.rmtree(oracle_config.out)
        t0 = time.perf_counter()
        summary = train(oracle_config, progress=False)
        training["runs"]["oracle"] = {
            "checkpoint": oracle_config.out,
            "train_time_s": time.perf_counter() - t0,
            "test_acc": summary["test_accuracy"],
        }
        training["train_time_s"] = time.perf_counter() - started
        training["train_cpu_s"] = time.process_time() - cpu0
        training_path.write_text(json.dumps(training, indent=2) + "\n")
        log(f"training done in {training['train_time_s']:.0f} s ({training['train_cpu_s']:.0f} s CPU)")

    r = training["runs"]
    models = [
        {"name": "linear-natural", "checkpoint": r["natural"]["linear"]["checkpoint"], "head": "linear"},
        {"name": "wnll-natural", "checkpoint": r["natural"]["wnll"]["checkpoint"], "head": "wnll"},
        {"name": "linear-pgd", "checkpoint": r["pgd"]["linear"]["checkpoint"], "head": "linear"},
        {"name": "wnll-pgd", "checkpoint": r["pgd"]["wnll"]["checkpoint"], "head": "wnll"},
    ]
    grid = GridConfig.from_dict(
        {
            "title": "MNIST (mnist10k) robustness: linear vs WNLL head, natural vs PGD training, with and without TVM",
            "models": models,
            "defenses": ["none", "tvm"],
            "attacks": plan["attacks"],
            "eps": plan["eps"],
            "cw_eps": plan["cw_eps"],
            "protocols": ["paper", "adaptive"],
            "n": plan["n"],
            "cw_n": plan["cw_n"],
            "cw": plan["cw"],
            "attack_settings": {"square": plan["square"]},
            "eot": plan["eot"],
            "tvm": plan["tvm"],
            "batch_size": plan["n"],
            "device": "cpu",
            "exclude": [
                {
                    "defense": "tvm",
                    "protocol": "adaptive",
                    "eps": [e for e in plan["eps"] if e not in plan["adaptive_tvm_eps"]],
                },
                {"attack": "square", "eps": [e for e in plan["eps"] if e not in plan["square_eps"]]},
                {"attack": "square", "defense": "tvm", "protocol": "adaptive"},
            ],
            "transfer": [
                {
                    "source": {"name": "oracle", "checkpoint": r["oracle"]["checkpoint"], "head": "linear"},
                    "attacks": ["fgsm", "ifgsm"],
                    "eps": plan["transfer_eps"],
                }
            ],
        }
    )
    crosscheck = GridConfig.from_dict(
        {
            "title": "AutoAttack cross-check",
            "models": models,
            "defenses": ["none"],
            "attacks": plan["crosscheck_attacks"],
            "eps": plan["crosscheck_eps"],
            "protocols": ["paper", "adaptive"],
            "n": plan["crosscheck_n"],
            "attack_settings": {"square": plan["square"]},
            "batch_size": plan["crosscheck_n"],
            "device": "cpu",
            "exclude": [{"attack": "autoattack", "protocol": "adaptive"}],
        }
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    kept = runs / "grid.json"  # the grid's result, kept so that a failed cross-check does not cost the grid
    if args.reuse_grid:
        result = json.loads(kept.read_text())
        t0 -= result["grid_time_s"]
        cpu0 -= result["grid_cpu_s"]
        log(f"reusing the grid of {kept} ({result['grid_time_s']:.0f} s); AutoAttack cross-check")
    else:
        log("attacking (grid)")
        result = run_grid(grid, progress=not args.no_progress)
        result.update(grid_time_s=time.perf_counter() - t0, grid_cpu_s=time.process_time() - cpu0)
        kept.write_text(json.dumps(result) + "\n")
        log(f"grid done in {result['grid_time_s']:.0f} s; AutoAttack cross-check")
    checked = run_grid(crosscheck, progress=not args.no_progress)
    result["crosscheck"] = {key: checked[key] for key in ("n", "settings", "rows", "diagnostics", "time_s")}
    result["training"] = training
    result["evaluation_time_s"] = time.perf_counter() - t0
    result["evaluation_cpu_s"] = time.process_time() - cpu0
    result["total_time_s"] = training.get("train_time_s", 0.0) + result["evaluation_time_s"]
    result["total_cpu_s"] = training.get("train_cpu_s", 0.0) + result["evaluation_cpu_s"]
    paths = write_report(result, out, overwrite=True)  # this script regenerates its own results
    lines = [
        "",
        "## Training (natural = clean test accuracy on all 2,000 test images)",
        "",
        "| run | head | train time (s; WNLL includes its stage 1) | test accuracy |",
        "|---|---|---|---|",
    ]
    for name in ("natural", "pgd"):
        for head in ("linear", "wnll"):
            entry = r[name][head]
            lines.append(f"| {name} | {head} | {entry['train_time_s']:.0f} | {100 * entry['test_acc']:.1f} |")
    lines.append(f"| oracle | linear | {r['oracle']['train_time_s']:.0f} | {100 * r['oracle']['test_acc']:.1f} |")
    lines += [
        "",
        f"Training {training.get('train_time_s', 0):.0f} s + evaluation {result['evaluation_time_s']:.0f} s "
        f"= {result['total_time_s']:.0f} s wall clock; {result['total_cpu_s']:.0f} s of CPU time "
        f"(torch threads: {args.threads}).",
        "",
    ]
    check = [
        "",
        f"## AutoAttack cross-check (first {checked['n']} images, eps 0.3, no defence)",
        "",
        "AutoAttack (standard, torchattacks) with the paper's gradient for the WNLL heads (the surrogate), and "
        "the other attacks again on the same images; `worst case` includes AutoAttack.",
        "",
        white_box_table(checked["rows"]),
        diagnostics_list(checked["diagnostics"]),
    ]
    Path(paths["markdown"]).write_text(markdown(result) + "\n".join(check + lines))
    log(f"wrote {paths['markdown']}, {paths['json']}, {paths['plot']}; total {result['total_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
