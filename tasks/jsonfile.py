"""Reading the JSON files a task run is handed (split files, result files), which may come from anyone."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from zoo.errors import ZooError


def read_json(path: str | Path, where: str, max_bytes: int) -> Any:
    """The JSON value of the regular file ``path`` of at most ``max_bytes`` bytes; any problem (missing, not a
    regular file, too large, bad UTF-8 or JSON, nested too deeply, a number too long) is a ``ZooError`` naming
    ``where``. A FIFO or device is refused before it is opened (it could block or never end)."""
    try:
        path = Path(path)
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ZooError(f"{where}: not a regular file")
        if st.st_size > max_bytes:
            raise ZooError(f"{where}: larger than {max_bytes:,} bytes")
        return json.loads(path.read_bytes())
    except ZooError:
        raise
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON, bad UTF-8, a 5000-digit number
        raise ZooError(f"{where}: {e}") from None
