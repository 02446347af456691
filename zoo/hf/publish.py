"""Publish a store on the Hugging Face Hub: check the token and the Hub first, then export and upload."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zoo import __version__
from zoo.errors import ZooError
from zoo.store import Zoo, open_zoo

from .export import export_hf
from .sources import REPO_ID, hub_client


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def check_hub_access(api: Any, token: str | None, endpoint: str) -> str:
    """Fail in one line before any work: no token, an unreachable Hub, or a refused token. Returns the user."""
    if not token:
        raise ZooError("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was exported")
    try:
        who = api.whoami(token=token)
    except Exception as e:  # the client's network and HTTP errors, told apart by whether a response came back
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise ZooError(f"the Hub at {endpoint} refused the token (HTTP {status}): check HF_TOKEN or run "
                           "`hf auth login`; nothing was exported") from None
        if status is not None:
            raise ZooError(f"the Hub at {endpoint} answered HTTP {status} to the token check ({_first_line(e)}); "
                           "nothing was exported") from None
        raise ZooError(f"the Hub at {endpoint} is unreachable ({_first_line(e)}): check the network, or "
                       "HF_ENDPOINT; nothing was exported") from None
    return str(who.get("name", "")) if isinstance(who, Mapping) else ""


def push(store: str | Path | Zoo, repo_id: str, *, private: bool = False, token: str | None = None,
         endpoint: str | None = None, api: Any = None, quiet: bool = True, **export_options: Any) -> str:
    """Export ``store`` to a temporary folder and upload it as the Hub dataset ``repo_id``.

    The store, the repository id, the token (``token``, else ``HF_TOKEN`` / ``hf auth login``) and the Hub's
    reachability (``endpoint``, else ``HF_ENDPOINT``) are checked first, so a push that cannot succeed fails in
    one line before exporting anything. Returns the repository URL."""
    if not REPO_ID.fullmatch(repo_id):
        raise ZooError(f"repo id {repo_id!r}: expected user/name (letters, digits, '-', '_', '.')")
    z = store if isinstance(store, Zoo) else open_zoo(store)
    # read here, not from huggingface_hub's constants, which are fixed when it is first imported
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    if api is None or token is None:
        hf = hub_client()
        token = token or hf.get_token()
        if api is None:
            api = hf.HfApi(endpoint=endpoint, token=token)
    check_hub_access(api, token, endpoint)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = Path(tmp) / "export"
        export_hf(z, folder, quiet=quiet, repo_id=repo_id, **export_options)
        try:
            url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                              commit_message=f"Upload model zoo with weightzoo {__version__}")
        except Exception as e:  # permissions, quota, network lost mid-way: one line, the export is discarded
            raise ZooError(f"{repo_id}: the upload to {endpoint} failed ({_first_line(e)})") from None
    return str(url)
