"""The README runs as written: every Python block executes on its own (fresh namespace: its imports and
its stand-in data are its own), every shell command is one the project knows, every ``fastwnll``
command parses with the real argument parser, and the command-line walkthrough runs end to end on a
small stand-in (scikit-learn's digits for MNIST, one epoch, few test images and attack steps); only the
CIFAR-10 training, which needs that dataset, is parsed without running. The example report grid
(``examples/grid.json``) parses and runs against the checkpoints the walkthrough writes."""

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastwnll.cli import build_parser, main
from fastwnll.evaluation import GridConfig
from fastwnll.evaluation.grid import WORST

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
EXAMPLE_GRID = REPO / "examples" / "grid.json"
# The build's tools, as pyproject.toml's [build-system] lists them (the README installs them for
# --no-build-isolation), and the index of torch's CPU-only wheels.
BUILD_TOOLS = re.findall(
    r'"([^"]+)"', re.search(r"^requires = \[(.*?)\]", (REPO / "pyproject.toml").read_text(), flags=re.M).group(1)
)
CPU_TORCH_INDEX = ["--index-url", "https://download.pytorch.org/whl/cpu"]
# Environment variables that a README command may set: those setup.py or a set-up script reads.
BUILD_SOURCES = "".join(
    path.read_text()
    for path in [REPO / "setup.py", *sorted((REPO / "scripts").iterdir())]
    if path.suffix in (".py", ".sh")
)


def blocks(language: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of every fenced block of ``language`` in the README."""
    found = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M):
        found.append((README[: match.start()].count("\n") + 1, match.group(1)))
    return found


def commands() -> list[tuple[int, list[str]]]:
    """``(line number, argv)`` of every command line of the README's bash blocks (comments removed)."""
    found = []
    for start, text in blocks("bash"):
        for offset, line in enumerate(text.splitlines()):
            argv = shlex.split(line, comments=True)
            if argv:
                found.append((start + 1 + offset, argv))
    return found


def fastwnll_argv(argv: list[str]) -> list[str] | None:
    """The arguments after ``fastwnll`` / ``python -m fastwnll`` / ``torchrun ... -m fastwnll`` (whose
    torchrun options must parse with torchrun's own parser); None for another program."""
    if argv[0] == "fastwnll":
        return argv[1:]
    if argv[:3] == ["python", "-m", "fastwnll"]:
        return argv[3:]
    if argv[0] == "torchrun":
        from torch.distributed.run import get_args_parser

        launched = get_args_parser().parse_args(argv[1:])
        assert launched.module and launched.training_script == "fastwnll", argv
        return launched.training_script_args
    return None


PYTHON = blocks("python")
COMMANDS = commands()
# Commands quoted inline: `fastwnll <subcommand> ...` up to the end of the quote (or of a command quoted
# inside a message, at ';' or ':'); placeholders such as `fastwnll <command> --help` are left out.
PROSE = re.sub(r"^```.*?^```", "", README, flags=re.S | re.M)
INLINE = [
    shlex.split(text)
    for span in re.findall(r"`([^`]*)`", PROSE)
    for text in re.findall(r"(?:python -m )?fastwnll [a-z][^<;:]*", span)
]


def test_the_readme_has_blocks_and_commands():
    assert len(PYTHON) >= 3 and len(COMMANDS) >= 10 and len(INLINE) >= 3


@pytest.mark.parametrize("line, code", PYTHON, ids=[f"README.md:{line}" for line, _ in PYTHON])
def test_python_block_runs_as_written(line, code):
    for node in ast.walk(ast.parse(code)):  # an optional package the block imports may be missing here
        names = (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module]
            if isinstance(node, ast.ImportFrom) and node.module
            else []
        )
        for name in names:
            pytest.importorskip(name.split(".")[0])
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_{line}"})


@pytest.mark.parametrize("line, argv", COMMANDS, ids=[f"README.md:{line}" for line, _ in COMMANDS])
def test_command_is_known(line, argv):
    """``fastwnll`` commands parse with the real parser (a wrong flag or value fails here); scripts
    exist; pip installs torch (from PyPI or its CPU-only index), the build's tools or the project, and
    builds its wheel; variables set before a command are ones the build or a script reads; nothing else
    appears."""
    while re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", argv[0]):
        name = argv[0].split("=")[0]
        assert re.search(rf"\b{name}\b", BUILD_SOURCES), f"README.md:{line}: {name} is read by no build script"
        argv = argv[1:]
    args = fastwnll_argv(argv)
    if args is not None:
        build_parser().parse_args(args)
    elif argv[0] == "bash":
        assert (REPO / argv[1]).is_file(), argv
    elif argv[:2] == ["pip", "install"]:
        tools = {tool for tool in BUILD_TOOLS if not tool.startswith("torch")}
        assert (
            argv[2:]
            in (
                ["torch", "torchvision"],
                ["torch", "torchvision", *CPU_TORCH_INDEX],
                ["--no-build-isolation", "-e", "."],
            )
            or set(argv[2:]) == tools
        ), argv
    elif argv[:2] == ["pip", "wheel"]:
        assert argv[2:] == ["--no-build-isolation", "--no-deps", "-w", "dist", "."], argv
    else:
        pytest.fail(f"README.md:{line}: unknown command {argv}")


@pytest.mark.parametrize("argv", INLINE, ids=[" ".join(a) for a in INLINE])
def test_inline_command_parses(argv):
    """A quoted command parses; a quoted command name alone (`fastwnll report`) is a subcommand."""
    args = fastwnll_argv(argv)
    parser = build_parser()
    if len(args) == 1:
        assert args[0] in parser._subparsers._group_actions[0].choices
    else:
        parser.parse_args(args)


def small(args: list[str]) -> list[str] | None:
    """The walkthrough command ``args`` made small enough for a test, or None when it needs data that a
    test does not have (CIFAR-10): MNIST becomes scikit-learn's digits, trainings one epoch per stage
    and a bank of 300 templates, attacks and reports a few test images and steps, everything on the
    CPU without progress bars."""
    args = list(args)
    option = {flag: i for i, flag in enumerate(args) if flag.startswith("--")}
    command = args[0]
    if command == "train":
        if args[option["--dataset"] + 1] == "cifar10":
            return None
        args[option["--dataset"] + 1] = "digits"
        del args[option["--data-dir"] : option["--data-dir"] + 2]
        option = {flag: i for i, flag in enumerate(args) if flag.startswith("--")}
        for flag in ("--epochs", "--stage2-epochs", "--milestones"):
            if flag in option:
                args[option[flag] + 1] = "1"
        return args + ["--templates", "300", "--eval-every", "0", "--device", "cpu", "--quiet"]
    if command == "evaluate":
        return args + ["--device", "cpu"]
    if command == "attack":
        return args + ["--n", "16", "--steps", "2", "--device", "cpu", "--no-progress"]
    if command == "report":
        return args + ["--n", "12", "--cw-n", "3", "--steps", "2", "--eot", "2", "--device", "cpu", "--no-progress"]
    return args


def test_command_line_walkthrough_runs(tmp_path, monkeypatch, capsys):
    """The ``Command line`` block, in order, in a fresh folder holding ``examples/``: the trainings
    write ``runs/``, which the evaluation, the attacks and the example report grid then read."""
    walkthrough = next(text for _, text in blocks("bash") if "fastwnll report" in text)
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    ran = []
    for line in walkthrough.splitlines():
        args = small(fastwnll_argv(shlex.split(line, comments=True)))
        if args is None:
            continue
        assert main(args) == 0, (line, capsys.readouterr().err)
        ran.append(args[0])
    assert ran == ["info", "train", "train", "evaluate", "attack", "attack", "attack", "report"]
    result = json.loads((tmp_path / "report" / "results.json").read_text())
    grid = json.loads(EXAMPLE_GRID.read_text())
    assert {m["name"] for m in result["models"]} == {m["name"] for m in grid["models"]} | {"oracle"}
    protocols = {r["protocol"] for r in result["rows"]}
    assert protocols == {"paper", "adaptive", "worst-case", "transfer"}
    assert {r["attack"] for r in result["rows"]} - set(WORST.values()) == set(grid["attacks"])
    assert (tmp_path / "report" / "robustness.png").is_file()


def test_example_grid_is_valid_and_reads_the_readme_runs():
    """``examples/grid.json`` parses as a GridConfig, and its checkpoints are the ``--out`` folders of
    the README's training commands."""
    config = GridConfig.from_dict(json.loads(EXAMPLE_GRID.read_text()))
    outs = {
        args[args.index("--out") + 1] for _, argv in COMMANDS if (args := fastwnll_argv(argv)) and args[0] == "train"
    }
    checkpoints = {m["checkpoint"] for m in config.models} | {t["source"]["checkpoint"] for t in config.transfer}
    assert checkpoints <= outs and "examples/grid.json" in README


def test_subpackages_are_reachable_after_a_bare_import():
    """In a fresh interpreter, ``import fastwnll`` alone gives ``fastwnll.nn.TVM`` (the README's TV block)
    and every other subpackage, imported on first use."""
    code = (
        "import sys, fastwnll\n"
        "assert 'fastwnll.nn' not in sys.modules\n"
        "assert fastwnll.nn.TVM.__name__ == 'TVM' and 'digits' in fastwnll.data.DATASET_SPECS\n"
        "assert all(getattr(fastwnll, name).__name__ == 'fastwnll.' + name for name in fastwnll.SUBPACKAGES)\n"
        "assert set(fastwnll.SUBPACKAGES) <= set(dir(fastwnll))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
