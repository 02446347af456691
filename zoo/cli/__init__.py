"""The ``zoo`` command.

Exit codes: 0 success; 1 a check failed (``verify`` found damage); 2 bad input
(a manifest, store or argument error, printed as one line naming what is wrong);
141 the reader of the output went away (``zoo ... | head``). Commands that a
program reads take ``--json``; ``--quiet`` hides progress bars, never the summary.

One table drives the parser and the dispatch: ``COMMANDS`` (name, help, how the
command adds its arguments, what it runs), and ``zoo import`` reads its sources
from one importer registry, ``IMPORTERS``, under one protocol (``Importer``).
Parsing imports nothing heavy: a command reaches ``builders``, ``loaders`` and
torch only inside its ``run``, so ``zoo --help`` answers at once.

This package holds ``main`` and the parser; one module per command family (``build``: build, plan; ``store``:
info, status, verify, compact; ``architectures``: architectures and --check; ``report``; ``interop``: import,
export, push and the importers' arguments; ``task``: split, run and compare over weight-space tasks); the table
they register in (``table``) and their shared helpers (``common``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ZooError
from .common import parse_storage_options
from .table import COMMANDS, IMPORTERS, Arguments, Command, Importer, LazyImporter, Runner, command, importer

#: The command modules, in the order ``zoo --help`` lists their commands: importing one registers its commands
#: (and ``interop`` its importers) in ``COMMANDS``, which keeps registration order.
FAMILIES = ("build", "store", "architectures", "report", "interop", "task")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")
del _family

from .architectures import CHECK_TOLERANCE  # noqa: E402 - after the loop above, which fixes the order of commands

__all__ = ["CHECK_TOLERANCE", "COMMANDS", "FAMILIES", "IMPORTERS", "Arguments", "Command", "Importer",
           "LazyImporter", "Runner", "build_parser", "command", "importer", "main", "parse_storage_options"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in ``COMMANDS``."""
    parser = argparse.ArgumentParser(prog="zoo", description="Build, store and load model zoos.")
    parser.add_argument("--version", action="version", version=f"weightzoo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        cmd.arguments(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``zoo``; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `zoo ... | head`: the reader left; say nothing more, and never again (at exit)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS.get(args.command).run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except ZooError as e:
        print(f"zoo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; rerun the same command to continue" if args.command in ("build", "import") else ""
        print(f"zoo {args.command}: interrupted{hint}", file=sys.stderr)
        return 130

