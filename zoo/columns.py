"""Which metadata columns vary across a zoo's checkpoints: one answer for ``zoo report`` and the dataset card.

Kept apart from the report (which needs matplotlib) so that the Hugging Face export asks the same question
without drawing anything: a column a manifest could vary but did not is not "varied".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def distinct_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The distinct values of a column in first-seen order; lists (e.g. hidden widths) compare by content."""
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type):  # arrow cannot unique lists
        seen = dict.fromkeys(None if v is None else tuple(v) for v in column.to_pylist())
        return [None if v is None else list(v) for v in seen]
    return pc.unique(column).to_pylist()


def varied_columns(table: pa.Table, names: Iterable[str]) -> tuple[list[str], dict[str, Any]]:
    """(the columns of ``names`` that take more than one value in ``table``, {column: its value} of those that
    take one). Names the table lacks are in neither."""
    varied: list[str] = []
    fixed: dict[str, Any] = {}
    for name in names:
        if name not in table.column_names:
            continue
        distinct = distinct_values(table.column(name))
        if len(distinct) > 1:
            varied.append(name)
        elif distinct:
            fixed[name] = distinct[0]
    return varied, fixed
