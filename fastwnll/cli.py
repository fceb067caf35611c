"""The ``fastwnll`` command line (``python -m fastwnll`` is the same).

Subcommands come from modules: ``info`` is defined here, and every subpackage ``fastwnll/<pkg>/``
that contains a ``commands.py`` module adds its own through that module's
``register(subparsers)`` function. ``register`` calls ``subparsers.add_parser(...)`` for each command
and sets ``handler=function(args) -> int`` with ``set_defaults``; handlers import heavy modules
lazily. (``fastwnll/train/commands.py`` adds ``train``, ``evaluate`` and ``demo``.)

Exit statuses: 0 on success; 2 for a usage error (an unknown flag, a missing argument, a value
out of its range: argparse's message and convention); 1 for an error in the user's input found
while running (ValueError, TypeError, OSError, RuntimeError raised by the library with a message),
printed as ``fastwnll <command>: error: ...`` (set ``FASTWNLL_TRACEBACK=1`` to see the traceback
instead); 130 when interrupted by Ctrl-C (one line, no traceback; ``train`` says how to resume).
``--help`` and ``--version`` exit with 0.

Under ``torchrun`` (``WORLD_SIZE`` > 1) only the commands that share their work between processes
run (``train``, ``evaluate``, ``attack``: their parsers are marked by
:func:`fastwnll.runtime.distributed.add_distributed_flags`); the others exit with 1 and say so
rather than run once per process and write the same files.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path


def command_modules() -> list[str]:
    """Names of the modules that register subcommands: ``fastwnll.<pkg>.commands``, sorted."""
    root = Path(__file__).resolve().parent
    return [
        f"fastwnll.{entry.name}.commands"
        for entry in sorted(root.iterdir())
        if (entry / "__init__.py").is_file() and (entry / "commands.py").is_file()
    ]


def _info(args: argparse.Namespace) -> int:
    from fastwnll.extension.info import print_info

    print_info()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fastwnll import __version__

    parser = argparse.ArgumentParser(
        prog="fastwnll",
        description="Fast, exact WNLL graph interpolation, TV minimization and adversarial training.",
    )
    parser.add_argument("--version", action="version", version=f"fastwnll {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = subparsers.add_parser("info", help="versions and which backends (C++, CUDA, faiss, Triton) are live")
    info.set_defaults(handler=_info)
    for name in command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)  # argparse: 2 after a usage error, 0 after --help / --version
    if args.command is None:
        parser.print_help()
        return 2
    if "WORLD_SIZE" in os.environ and not getattr(args, "distributed", False):
        from fastwnll.runtime.distributed import launched_world_size

        if launched_world_size() > 1:
            print(
                f"fastwnll {args.command}: error: runs in one process, but torchrun launched "
                f"{launched_world_size()}: launch it without torchrun (train, evaluate and attack share their "
                "work between processes)",
                file=sys.stderr,
            )
            return 1
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"fastwnll {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT  # the shell's status of a command stopped by Ctrl-C
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        if os.environ.get("FASTWNLL_TRACEBACK") == "1":
            raise
        print(f"fastwnll {args.command}: error: {error}", file=sys.stderr)
        return 1
