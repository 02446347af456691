"""Paths inside import folders, which come from strangers: never followed through a link, never a FIFO.

An import folder (Model Zoos trial folders, INR sets, the Small CNN Zoo's files, a Tiny-ImageNet folder) is data
(docs/design.md §7). A symbolic link in it can point anywhere on the reader's machine, and a FIFO, socket or
device blocks or has side effects the moment it is opened, so every file is ``os.lstat``-ed before it is opened
and only a regular file is; the open itself refuses a link (``O_NOFOLLOW``) and never blocks (``O_NONBLOCK``), and
``fstat`` checks that the file opened is the one checked (nothing swapped in between). A path built from an entry
of a file (an annotation list) must resolve inside its root.

``Refused`` is a ``ZooError`` (the command line's exit 2) that names the path and says what it is and why it is
not read; ``kind`` gives the word for what a path is.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

#: What the entries of import folders must be, as messages say it.
ONLY_REGULAR = "import folders are read only as real folders and regular files, never through links or special files"
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class Refused(ZooError):
    """A path in an import folder that is not read: a link, a special file, or outside its root."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path, self.why = Path(path), why

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a worker process, re-raised in the importing one
        return type(self), (self.path, self.why)


def kind(mode: int) -> str:
    """What a file of ``mode`` (``st_mode``) is, as messages name it."""
    for test, word in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a file")):
        if test(mode):
            return word
    return "a special file"


def _not_read(path: str | os.PathLike[str], st: os.stat_result, expected: str) -> Refused:
    target = ""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = f" to {os.readlink(path)}"
        except OSError:
            pass
    return Refused(path, f"{kind(st.st_mode)}{target}, not {expected}; not read ({ONLY_REGULAR})")


def why_not_read(path: str | os.PathLike[str], expected: str) -> str:
    """What a path that is not ``expected`` (``a folder``, ``a regular file``) is, and why it is not read."""
    return _not_read(path, os.lstat(path), expected).why


def check_regular(path: str | os.PathLike[str]) -> os.stat_result:
    """``lstat`` of ``path``, which must be a regular file (no link); ``Refused`` otherwise. A missing path raises
    ``FileNotFoundError`` (or ``NotADirectoryError``) as ``os.lstat`` does."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_read(path, st, "a regular file")
    return st


def check_folder(path: str | os.PathLike[str]) -> os.stat_result:
    """``lstat`` of ``path``, which must be a real folder (no link to one); ``Refused`` otherwise."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise _not_read(path, st, "a folder")
    return st


def is_link_or_special(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a real folder (a link, FIFO, socket, device)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def open_regular(path: str | os.PathLike[str]) -> int:
    """A file descriptor of the regular file ``path``, read-only: checked with ``lstat`` before it is opened, opened
    without following a link or blocking, and checked again (``fstat``) to be the file checked."""
    st = check_regular(path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        if e.errno in (getattr(os, "ELOOP", -1), getattr(os, "EMLINK", -1)):  # swapped for a link since the lstat
            raise Refused(path, f"a symbolic link, not a regular file; not read ({ONLY_REGULAR})") from None
        raise
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise Refused(path, f"replaced by {kind(now.st_mode)} while being read; not read ({ONLY_REGULAR})")
    return fd


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The whole regular file ``path`` (``open_regular``), in one read."""
    with os.fdopen(open_regular(path), "rb", buffering=0) as f:
        return f.read()


def read_text(path: str | os.PathLike[str]) -> str:
    """The regular file ``path`` as UTF-8 text (``open_regular``); ``UnicodeDecodeError`` as ``Path.read_text``."""
    return read_regular(path).decode("utf-8")


def inside(root: Path, entry: str, where: str) -> Path:
    """``root / entry`` for a relative ``entry`` read from a file (``where``: the file and line) that resolves
    inside ``root``; an absolute path, or one that leaves ``root`` (``..``, a link), is ``Refused``."""
    if not entry or os.path.isabs(entry) or entry.startswith(("/", "\\")) or (len(entry) > 1 and entry[1] == ":"):
        raise Refused(where, f"entry {entry!r}: expected a file name relative to {root}")
    path = root / entry
    try:
        resolved, base = path.resolve(), root.resolve()
    except (OSError, RuntimeError) as e:  # a link loop
        raise Refused(where, f"entry {entry!r}: cannot be resolved ({e})") from None
    if resolved != base and base not in resolved.parents:
        raise Refused(where, f"entry {entry!r}: resolves to {resolved}, outside {root}")
    return path
