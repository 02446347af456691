"""Where an export comes from: a local folder or a Hub dataset, named explicitly, and its descriptor checked.

Sources are explicit, because a name that merely looks like ``user/name`` must never download a stranger's
data: a local path (a store, or an export folder holding ``weightzoo.json``; a path that does not exist is an
error), ``hf://user/name[@revision]`` or a bare ``user/name`` with ``hub=True`` (an exported dataset repository,
downloaded with ``huggingface_hub``), or a store URL read in place through fsspec (``s3://``, ``https://``, and
``hf://datasets/user/repo/path.zoo``: a first component ``datasets`` is a store uploaded as files). The
descriptor comes from whoever published the export, so every data file it names must lie inside the export
folder (no absolute path, no ``..``, no symlink leading out), checked before anything is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote

from zoo.errors import StoreNotFoundError, ZooError
from zoo.paths import is_url, local_path
from zoo.store import Zoo
from zoo.store.attributes import check_split

from .export import DESCRIPTOR

HUB_SCHEME = "hf://"
#: ``user/name`` as the Hub spells repository ids (each part starts with a letter or digit).
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
SPELLINGS = ("an exported dataset repository is hf://user/name[@revision] (or user/name with hub=True / --hub); "
             "a store uploaded as files is hf://datasets/user/repo/path.zoo")


def hub_client() -> ModuleType:
    """``huggingface_hub``, imported only by what talks to the Hub (it is the ``hf`` extra)."""
    try:
        import huggingface_hub
    except ModuleNotFoundError:
        raise ZooError("the Hugging Face Hub needs huggingface_hub, which is not installed: install weightzoo with "
                       "its hf extra (pip install -e \".[hf]\" in a clone of its repository)") from None
    return huggingface_hub


@dataclass(frozen=True)
class HubRef:
    """An exported dataset repository on the Hub: ``repo_id`` at ``revision`` (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    @property
    def url(self) -> str:
        """``hf://repo_id[@revision]``: the form ``hub_ref`` reads back."""
        return HUB_SCHEME + self.repo_id + (f"@{self.revision}" if self.revision else "")

    @property
    def cache_name(self) -> str:
        """The cache folder of this (id, revision): readable, never hidden (an id starts with a letter or
        digit), one folder level (``/`` in a revision such as ``refs/pr/1`` is quoted)."""
        name = self.repo_id.replace("/", "--")
        return f"{name}@{quote(self.revision, safe='')}.zoo" if self.revision else f"{name}.zoo"


def hub_ref(src: str | Path | Zoo, *, hub: bool = False, revision: str | None = None) -> HubRef | None:
    """The Hub export ``src`` names (``hf://user/name[@revision]``, or ``user/name[@revision]`` with ``hub``),
    or None for a local path or a store URL (``hf://datasets/...`` included)."""
    if isinstance(src, Zoo):
        if hub:
            raise ZooError(f"hub=True: {src.url} is an open store, not a Hub dataset id")
        return None
    text = str(src)
    if text.startswith(HUB_SCHEME):
        rest = text[len(HUB_SCHEME):]
        if rest.split("/", 1)[0] == "datasets":
            if hub:
                raise ZooError(f"{text}: a store URL read through fsspec; hub=True takes user/name")
            return None  # a store uploaded as files, read in place by fsspec's HfFileSystem
    elif hub:
        rest = text
    else:
        return None
    repo_id, at, named = rest.rstrip("/").partition("@")
    if not REPO_ID.fullmatch(repo_id) or (at and not named):
        raise ZooError(f"{text}: not a Hub source; {SPELLINGS}")
    rev = unquote(named) if named else None
    if rev is not None and revision is not None and rev != revision:
        raise ZooError(f"{text}: names revision {rev!r}, but revision={revision!r} was given; give one")
    rev = rev or revision
    if rev is not None and (not rev.strip() or any(c.isspace() or not c.isprintable() for c in rev)):
        raise ZooError(f"revision {rev!r}: expected a branch, tag or commit (no spaces)")
    return HubRef(repo_id, rev)


@dataclass(frozen=True)
class Export:
    """An export folder on this machine; ``root`` bounds where its files may resolve (the folder itself, or
    for a Hub download the repository's cache folder, whose snapshot files are symlinks into its blobs)."""

    folder: Path
    root: Path
    ref: HubRef | None = None


def download_export(ref: HubRef, download: Callable[..., str] | None) -> Export:
    """Download ``ref`` (with ``download``, else ``huggingface_hub.snapshot_download``); it must hold a descriptor."""
    if download is None:
        download = hub_client().snapshot_download
    try:
        folder = Path(download(repo_id=ref.repo_id, repo_type="dataset", revision=ref.revision))
    except Exception as e:  # the Hub client's many network/auth errors, reported in one voice
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ZooError(f"{ref.url}: could not download the Hub dataset: {type(e).__name__}: {first}") from None
    if not (folder / DESCRIPTOR).is_file():
        raise ZooError(f"{ref.url}: the Hub dataset has no {DESCRIPTOR}; not a weightzoo export (zoo export hf / "
                       "zoo push make one)")
    snapshots = folder.parent
    root = snapshots.parent if snapshots.name == "snapshots" else folder  # huggingface_hub's cache layout
    return Export(folder, root, ref)


def local_export(src: str | Path) -> Export | None:
    """The export folder ``src`` names, None for a store; a path that does not exist is an error, never a
    download."""
    path = local_path(src)
    if not path.exists():
        raise StoreNotFoundError(f"{src}: no such file or folder (a store, or an export folder with {DESCRIPTOR}); "
                                 f"{SPELLINGS}")
    return Export(path, path) if (path / DESCRIPTOR).is_file() else None


def resolve_source(src: str | Path, *, hub: bool = False, revision: str | None = None,
                   download: Callable[..., str] | None = None) -> Path:
    """The export folder of ``src``: a local export folder, or a Hub export (``hf://user/name[@revision]``, or
    ``user/name`` with ``hub``) downloaded with ``huggingface_hub``."""
    return resolve(src, hub=hub, revision=revision, download=download).folder


def resolve(src: str | Path, *, hub: bool, revision: str | None, download: Callable[..., str] | None) -> Export:
    """The export ``src`` names, downloaded if it is a Hub one; a store (path or URL) is refused."""
    ref = hub_ref(src, hub=hub, revision=revision)
    if ref is not None:
        return download_export(ref, download)
    if is_url(src):
        raise ZooError(f"{src}: a store URL; an export to import is a local folder with {DESCRIPTOR} or a Hub "
                       f"dataset ({SPELLINGS})")
    if revision is not None:
        raise ZooError(f"revision={revision!r} applies to Hub sources; {src} is a local path ({SPELLINGS})")
    export = local_export(src)
    if export is None:
        raise ZooError(f"{src}: no {DESCRIPTOR}; not a weightzoo export (zoo export hf STORE OUTDIR makes one)")
    return export


def read_descriptor(folder: Path) -> dict[str, Any]:
    """``weightzoo.json`` of an export folder, with the fields the import relies on checked for type."""
    path = folder / DESCRIPTOR
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZooError(f"{path}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != "weightzoo-hf" or not isinstance(
            data.get("store_attributes"), dict):
        raise ZooError(f"{path}: not a weightzoo export descriptor (format 'weightzoo-hf' with store_attributes)")
    for key in ("files", "rows", "splits"):
        if not isinstance(data.get(key), dict):
            raise ZooError(f"{path}: field {key!r} must be an object, got {type(data.get(key)).__name__}")
    check_split(data["splits"], f"{path}: field 'splits'")
    for arch, splits in data["files"].items():
        if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
            raise ZooError(f"{path}: files[{arch!r}] must map split names to lists of file names")
    return data


def data_files(export: Export, desc: Mapping[str, Any]) -> list[Path]:
    """The data files the descriptor names, each checked to lie inside the export folder.

    The descriptor is the publisher's: an absolute path, a ``..`` or a symlink leading out would make the import
    read any file of this machine into the new store."""
    path = export.folder / DESCRIPTOR
    root = export.root.resolve()
    out = []
    for arch, splits in desc["files"].items():
        for split, names in splits.items():
            for name in names:
                where = f"{path}: files[{arch!r}][{split!r}] entry {name!r}"
                if not isinstance(name, str) or not name:
                    raise ZooError(f"{where}: expected a relative file name inside the export folder")
                rel = PurePosixPath(name)
                if (rel.is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive
                        or "\\" in name or ".." in rel.parts):
                    raise ZooError(f"{where}: outside the export folder {export.folder}; only relative paths "
                                   "below it are allowed (no absolute path, no '..')")
                full = export.folder / rel
                if not full.resolve().is_relative_to(root):
                    raise ZooError(f"{where}: a symlink leading out of the export folder {export.folder} (to "
                                   f"{full.resolve()}); only files inside it are allowed")
                if not full.is_file():
                    raise ZooError(f"{where}: missing; the export is incomplete")
                out.append(full)
    return out
