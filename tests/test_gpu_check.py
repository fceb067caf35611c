"""scripts/gpu_check.sh: well-formed, its stages fit its time, and its CPU dry run goes through every stage
to the summary (the GPU run itself needs a GPU; the summary's logic is tested in test_bench.py)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
STAGES = [
    "build",
    "extension",
    "tests-cuda",
    "tests-triton",
    "bench-wnll",
    "bench-knn",
    "bench-bank",
    "bench-tv",
    "bench-training",
]


def run(*args, seconds=None, timeout=300):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    if seconds is not None:
        env["GPU_CHECK_SECONDS"] = str(seconds)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def stage_lines() -> list[tuple[str, int]]:
    return [(m[1], int(m[2])) for m in re.finditer(r"^stage ([\w-]+) (\d+) ", SCRIPT.read_text(), re.M)]


def test_the_script_parses_and_explains_itself():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert os.access(SCRIPT, os.X_OK)
    done = run("--help")
    assert done.returncode == 0 and "--cpu-dry-run" in done.stdout and "gpu_check_<device>.md" in done.stdout
    done = run("--no-such-flag")
    assert done.returncode == 2 and "unknown argument --no-such-flag" in done.stderr


def test_the_stages_fit_in_eight_minutes():
    text = SCRIPT.read_text()
    total = int(re.search(r"^TOTAL_S=\$\{GPU_CHECK_SECONDS:-(\d+)\}", text, re.M)[1])
    summary = int(re.search(r"^SUMMARY_S=(\d+)", text, re.M)[1])
    assert [name for name, _ in stage_lines()] == STAGES
    assert total <= 480 and sum(budget for _, budget in stage_lines()) + summary <= total


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU this would start the real check")
def test_without_a_gpu_the_script_says_so(tmp_path):
    done = run("--work", str(tmp_path))
    assert done.returncode == 2 and "sees no CUDA device" in done.stderr and "--cpu-dry-run" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    torch.version.cuda is None or importlib.util.find_spec("triton") is None,
    reason="the dry run goes through the GPU check's build (FASTWNLL_CUDA=1) and Triton stages: it needs a CUDA "
    "build of torch and triton, as a GPU machine has",
)
def test_cpu_dry_run_goes_through_every_stage_to_the_summary(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "results").mkdir(parents=True)
    (work / "results" / "wnll_cuda.json").write_text("{}")  # left by an earlier run: removed first
    done = run("--cpu-dry-run", "--work", str(work), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "gpu_check_cpu.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == STAGES
    assert all(s["status"] == "passed" for s in summary["stages"]), summary["stages"]
    assert {t["status"] for t in summary["targets"]} == {"n/a on cpu"} and summary["ok"]
    assert {r["bench"] for r in summary["rows"]} == {"wnll", "knn", "bank", "tv", "training"}
    assert summary["title"].startswith("fastwnll GPU check: CPU dry run")
    assert "| bench-training | passed |" in (out / "gpu_check_cpu.md").read_text()
    assert "| bench-training | passed |" in done.stdout
    log = (work / "gpu_check.log").read_text()
    assert all(f"[{name}] exit status 0" in log for name in STAGES)
    assert sorted(p.name for p in (work / "results").iterdir()) == sorted(
        f"{b}_cpu.{ext}" for b in ("wnll", "knn", "bank", "tv", "training") for ext in ("csv", "json")
    )


@pytest.mark.slow
def test_stages_are_cut_to_the_time_left(tmp_path):
    done = run("--cpu-dry-run", "--work", str(tmp_path), seconds=40)  # 15 s for the stages
    assert done.returncode == 1
    summary = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    stages = {s["stage"]: s for s in summary["stages"]}
    assert list(stages) == STAGES and not summary["ok"]
    assert all(stages[name]["status"] == "skipped: no time left" for name in STAGES[-4:])
    assert sum(s["seconds"] for s in summary["stages"]) <= 15
    assert stages["build"]["budget_s"] <= 10
