"""The command line's registry of subcommands: every package with a ``commands.py`` module is found,
registers commands with handlers, and every command answers ``--help``."""

import argparse
import importlib

import pytest

from fastwnll.cli import command_modules, main


def registered() -> dict[str, list[tuple[str, argparse.ArgumentParser]]]:
    """``{module: [(command, its parser), ...]}`` for every module of :func:`command_modules`."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    found = {}
    for module in command_modules():
        before = set(subparsers.choices)
        importlib.import_module(module).register(subparsers)
        found[module] = [(name, subparsers.choices[name]) for name in sorted(set(subparsers.choices) - before)]
    return found


REGISTERED = registered()
COMMANDS = ["info"] + [name for commands in REGISTERED.values() for name, _ in commands]


def test_command_modules_are_the_packages_with_a_commands_module():
    assert command_modules() == [
        "fastwnll.bench.commands",
        "fastwnll.evaluation.commands",
        "fastwnll.geometry.commands",
        "fastwnll.train.commands",
    ]
    assert sorted(COMMANDS) == ["attack", "bench", "demo", "evaluate", "geometry", "info", "report", "train"]


@pytest.mark.parametrize("module", list(REGISTERED))
def test_every_command_module_registers_commands_with_handlers(module):
    assert REGISTERED[module]
    for name, parser in REGISTERED[module]:
        assert callable(parser.get_default("handler")), f"{module} registers {name!r} without a handler"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: fastwnll {command}" in capsys.readouterr().out
