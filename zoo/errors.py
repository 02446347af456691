"""Typed errors: every user-facing failure is a ``ZooError`` (a ``ValueError``).

Messages name the file, the field, the bad value and what is allowed, so a user
can fix the input without reading this code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZooError(ValueError):
    """Base of every error this library raises on bad input or a bad store."""


class ManifestError(ZooError):
    """A manifest file is malformed or names something that does not exist."""


class StoreError(ZooError):
    """A store is missing, not a weightzoo store, or inconsistent with a request."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The path or URL holds no weightzoo store."""


class UntrustedCodeError(ZooError):
    """Data (a store, an export) names code, such as an architecture factory, and the caller did not opt in to
    running it."""


class UnknownNameError(ZooError, KeyError):
    """A registry lookup failed; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def allowed_text(value: object, allowed: Iterable[str]) -> str:
    """Render ``got 'x'; allowed: a, b, c (did you mean 'a'?)``."""
    allowed = sorted(allowed)
    text = f"got {value!r}; allowed: {', '.join(allowed)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value, allowed, n=1)
        if close:
            text += f" (did you mean {close[0]!r}?)"
    return text
