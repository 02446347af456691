"""Weight-space tasks (issue #23): declarations, frozen splits, result files, the statnn baseline, tasks.run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_tasks_is_light():
    code = "import sys, tasks\nprint(sorted(m for m in ('torch', 'sklearn', 'zarr', 'pyarrow', 'builders', " \
           "'loaders') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
