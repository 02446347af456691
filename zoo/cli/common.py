"""Helpers the command modules share: JSON printing, the aligned human table, ``--json`` and
``--storage-option`` (and its parser)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ..errors import ZooError


def print_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON with sorted keys (what ``--json`` prints)."""
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def parse_storage_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``--storage-option``) as fsspec storage options: a value that reads as JSON
    (true, 3, {...}) is that value, anything else a string; a dotted key nests
    (``client_kwargs.region_name=eu-west-1``)."""
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ZooError(f"--storage-option {item!r}: expected KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, leaf = key.split(".")
        target = options
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ZooError(f"--storage-option {item!r}: {part!r} is already set to a value, not options")
        target[leaf] = value
    return options


def add_storage_option(p: argparse.ArgumentParser) -> None:
    """Add ``--storage-option KEY=VALUE`` (repeatable), read by ``parse_storage_options``."""
    p.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="fsspec option for a store URL, repeatable (e.g. endpoint_url=http://127.0.0.1:9000, "
                        "anon=true); credentials usually come from the environment (AWS_ACCESS_KEY_ID, ...)")


def rows_text(rows: Sequence[tuple[str, Any]]) -> str:
    """The human table of a command: one ``label  value`` line per row, labels padded to one width."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)



def json_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--json``: print one JSON object."""
    p.add_argument("--json", action="store_true", help="print one JSON object")

