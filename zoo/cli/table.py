"""The command table (``COMMANDS``) and the importer registry (``IMPORTERS``): what registers a ``zoo``
subcommand, and what registers a source format of ``zoo import`` under one protocol (``Importer``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..registry import Registry

Arguments = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[argparse.Namespace], Mapping[str, Any]]


@dataclass(frozen=True)
class Command:
    """One ``zoo`` subcommand: what ``zoo --help`` says of it, the arguments it adds, what it runs (exit code)."""

    name: str
    help: str
    arguments: Arguments
    run: Callable[[argparse.Namespace], int]


#: Every subcommand, in the order ``zoo --help`` lists them.
COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, arguments: Arguments) -> Callable:  # noqa: A002 - argparse's word
    """Decorator: register the function as the ``run`` of command ``name``."""

    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.register(name, Command(name, help, arguments, fn))
        return fn

    return wrap


@runtime_checkable
class Importer(Protocol):
    """A source format of ``zoo import NAME SRC STORE``.

    ``SRC``, ``STORE``, ``--quiet`` and ``--json`` are every importer's; ``add_arguments`` adds its own options.
    ``run`` imports ``args.src`` into ``args.store`` and returns the report ``zoo import`` prints: the keys of
    ``builders.importers.ImportReport.to_dict()`` (at least ``store``, ``zoo``, ``source`` and ``models``).
    """

    @property
    def name(self) -> str:
        """The word after ``zoo import``; the key it is registered under."""

    @property
    def help(self) -> str:
        """The line ``zoo import --help`` shows for it."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this source's own options; the shared ones are already on ``parser``."""

    def run(self, args: argparse.Namespace) -> Mapping[str, Any]:
        """Import ``args.src`` into ``args.store``; the report described above, or a ``ZooError``."""


@dataclass(frozen=True)
class LazyImporter:
    """An ``Importer`` whose implementation is imported inside ``run`` (so parsing needs no torch)."""

    name: str
    help: str
    arguments: Arguments
    runner: Runner

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """See ``Importer.add_arguments``; must import nothing heavy (it runs for every ``zoo`` call)."""
        self.arguments(parser)

    def run(self, args: argparse.Namespace) -> Mapping[str, Any]:
        """See ``Importer.run``; the heavy imports happen here."""
        return self.runner(args)


#: ``zoo import``'s source formats: the one registry of importers.
IMPORTERS: Registry[Importer] = Registry("importer")


def importer(name: str, help: str, arguments: Arguments) -> Callable:  # noqa: A002 - argparse's word
    """Decorator: register the function as the ``run`` of import source ``name``."""

    def wrap(fn: Runner) -> Runner:
        IMPORTERS.register(name, LazyImporter(name, help, arguments, fn))
        return fn

    return wrap
