"""Command-line usage: argparse's exit status 2 for usage errors, every numeric option checked against its
range when the command line is parsed, impossible template banks refused before any training."""

import argparse
import re

import pytest

from fastwnll.cli import build_parser, main
from fastwnll.runtime.ranges import Range

pytestmark = pytest.mark.usefixtures("one_thread")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def numeric_options() -> list[tuple[str, str, Range]]:
    """``(command, flag, range)`` for every option of every command parsed with a :class:`Range`."""
    found = []
    for command, parser in subcommands().items():
        for action in parser._actions:
            allowed = getattr(action.type, "__self__", None)
            if isinstance(allowed, Range):
                found.append((command, action.option_strings[-1], allowed))
    return found


NUMERIC = numeric_options()


def below(allowed: Range) -> str:
    """A value just outside ``allowed``, below its lower end."""
    if allowed.integer:
        return str(int(allowed.low) - 1)
    return str(allowed.low) if allowed.low_open else str(allowed.low - 0.5)


def test_every_numeric_option_has_a_range():
    """No option is parsed with a bare int or float: each one's allowed values are stated."""
    for command, parser in subcommands().items():
        for action in parser._actions:
            assert action.type not in (int, float), f"{command} {action.option_strings} has no range"
    flags = {(command, flag) for command, flag, _ in NUMERIC}
    for expected in [
        ("train", "--batch-size"),
        ("train", "--templates"),
        ("train", "--epochs"),
        ("train", "--eps"),
        ("train", "--steps"),
        ("train", "--stop-after"),
        ("evaluate", "--templates"),
        ("evaluate", "--batch-size"),
        ("attack", "--n"),
        ("attack", "--steps"),
        ("attack", "--batch-size"),
        ("report", "--n"),
        ("report", "--eps"),
        ("report", "--eot"),
        ("demo", "--epochs"),
    ]:
        assert expected in flags


@pytest.mark.parametrize("command, flag, allowed", NUMERIC, ids=[f"{c} {f}" for c, f, _ in NUMERIC])
def test_out_of_range_values_are_usage_errors(command, flag, allowed, capsys):
    value = below(allowed)
    assert main([command, flag, value]) == 2
    err = capsys.readouterr().err
    named = rf"argument (--[\w-]+/)*{re.escape(flag)}:"  # an option with aliases: all its names
    assert re.search(rf"{named} must be {re.escape(allowed.describe())}, got '{re.escape(value)}'", err)
    assert main([command, flag, "nan"]) == 2
    assert re.search(named, capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
        (["train", "--templates", "0"], "argument --templates: must be an integer >= 1, got '0'"),
        (["train", "--tvm-augment", "1.5"], "argument --tvm-augment: must be a number in [0, 1], got '1.5'"),
        (["train", "--template-fraction", "1"], "argument --template-fraction: must be a number in (0, 1), got '1'"),
        (["train", "--lr", "inf"], "argument --lr: must be a finite number > 0, got 'inf'"),
        (["train", "--epochs", "two"], "argument --epochs: expected an integer >= 0, got 'two'"),
        (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["train", "--no-such-flag"], "unrecognized arguments"),
        (["evaluate"], "the following arguments are required: --checkpoint"),
        (
            ["attack", "--checkpoint", "x", "--attack", "fgsm", "--eps", "-0.1"],
            "argument --eps: expected a radius >= 0",
        ),
        (["report", "--out", "r", "--cw-eps", "-1"], "argument --cw-eps: expected a radius >= 0 or 'unbounded'"),
        (["demo", "--eps", "0"], "argument --eps: must be a finite number > 0, got '0'"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_usage_errors_exit_with_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "usage: fastwnll" in err


def test_help_and_version_exit_with_0(capsys):
    assert main(["--version"]) == 0 and main(["train", "--help"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--head", "wnll", "--templates", "100000"],
            "templates=100000 (--templates) exceeds the 1438 training images",
        ),
        (["--head", "wnll", "--templates", "5"], "a bank of 5 templates (templates) lacks the class(es)"),
        (
            ["--head", "wnll", "--adv", "pgd", "--adv-templates", "2000"],
            "adv_templates=2000 (--adv-templates) exceeds the 1438 training images",
        ),
    ],
)
def test_impossible_template_banks_are_refused_before_training(tmp_path, argv, message, capsys):
    out = tmp_path / "run"
    assert main(["train", "--device", "cpu", "--quiet", "--out", str(out)] + argv) == 1
    assert message in capsys.readouterr().err
    assert not (out / "checkpoint.pt").exists()


def test_default_template_bank_is_capped_by_the_training_split(tmp_path, capsys):
    """Without --templates a WNLL run on the 1,438 digits uses them all (the default 5,000 is a cap)."""
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--head",
                "wnll",
                "--epochs",
                "1",
                "--stage2-epochs",
                "1",
                "--eval-every",
                "0",
                "--device",
                "cpu",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--templates", "2000", "--device", "cpu"]) == 1
    assert "templates=2000 (--templates) exceeds the 1438 training images" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(out), "--device", "cpu", "--json"]) == 0
    assert '"templates": 1438' in capsys.readouterr().out
