"""Verification: every committed checkpoint's bytes match its recorded checksum.

Deliberately reads through zarr's own API (which also checks each shard
index's crc32c), not the fast row reader, so the two paths check each other;
each shard's index also goes through the fast reader's checks, so a store
``verify`` passes is one ``read_rows`` reads.
Unfinished units are not damage: they have no metadata, hence no checkpoint.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..errors import StoreError
from . import format as fmt
from .reader import Zoo, open_zoo
from .rows import row_checksums


@dataclass
class Damage:
    """One damaged checkpoint: where it is and why (a checksum mismatch, an unreadable shard, a bad row)."""

    model_id: int
    epoch: int
    arch: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"model {self.model_id} epoch {self.epoch} ({self.arch} row {self.row}): {self.reason}"


@dataclass
class VerifyReport:
    """What ``verify`` found: damaged checkpoints, store-wide problems, and notes that are not damage."""

    store: str
    checked: int = 0
    damaged: list[Damage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (notes, such as unfinished units, are not damage)."""
        return not self.damaged and not self.problems

    def to_dict(self) -> dict:
        """The report as JSON-ready data (``zoo verify --json``)."""
        return {"store": self.store, "ok": self.ok, "checked": self.checked,
                "damaged": [d.__dict__ for d in self.damaged], "problems": self.problems, "notes": self.notes}


def verify(store: str | Zoo) -> VerifyReport:
    """Check every committed checkpoint of a store against its recorded checksum and its planned row.
    (``zoo.open(path, verify=True)`` checks the rows a program reads, as it reads them.)"""
    zoo = store if isinstance(store, Zoo) else open_zoo(store)
    zoo.refresh()
    report = VerifyReport(zoo.url)
    meta = zoo.metadata
    plan = zoo.plan
    units = {u: plan.unit(u) for u in set(meta.column("unit").to_pylist())
             if isinstance(u, int) and 0 <= u < plan.unit_count}  # only the units the metadata names
    g = plan.group_size

    keys = Counter(zip(meta.column("model_id").to_pylist(), meta.column("epoch").to_pylist()))
    for (model_id, epoch), n in keys.items():
        if n > 1:
            report.problems.append(f"model {model_id} epoch {epoch}: {n} metadata rows")

    columns = {c: meta.column(c).to_pylist() for c in ("model_id", "epoch", "arch", "row", "unit", "crc32", "status")}
    by_shard: dict[tuple[str, int], list[int]] = {}
    for i, (mid, ep, arch, row, unit_id) in enumerate(zip(*(columns[c] for c in
                                                             ("model_id", "epoch", "arch", "row", "unit")))):
        unit = units.get(unit_id)
        expected = None
        if unit is not None and mid in unit.model_ids and unit.epoch == ep and unit.arch_id == arch:
            expected = unit.row_start + unit.model_ids.index(mid)
        if expected != row:
            report.damaged.append(Damage(mid, ep, arch, row, f"metadata names row {row}, the plan puts it at "
                                                            f"{expected}"))
            continue
        if columns["status"][i] not in fmt.STATUSES:
            report.problems.append(f"model {mid} epoch {ep}: status {columns['status'][i]!r}")
        by_shard.setdefault((arch, row // g), []).append(i)

    for (arch, shard), idx in sorted(by_shard.items()):
        reason = ""
        try:
            array = zoo.weights(arch)
            block: np.ndarray | None = np.asarray(array[shard * g:(shard + 1) * g])
            # the fast reader's own checks (an index entry out of its place) refuse what zarr would read
            zoo.reader(arch).check_shard(shard)
        except StoreError as e:
            block, reason = None, str(e)
        except Exception as e:  # a corrupt shard index or truncated file: every row in it is damaged
            block, reason = None, f"shard unreadable ({type(e).__name__}: {e})"
        for i in idx:
            mid, ep, row = columns["model_id"][i], columns["epoch"][i], columns["row"][i]
            report.checked += 1
            if block is None:
                report.damaged.append(Damage(mid, ep, arch, row, reason))
                continue
            if not 0 <= row - shard * g < len(block):
                report.damaged.append(Damage(mid, ep, arch, row, f"outside the array's {array.shape[0]} rows"))
                continue
            crc = row_checksums(block[row - shard * g][None])[0]
            if crc != columns["crc32"][i]:
                report.damaged.append(Damage(mid, ep, arch, row, f"checksum {crc} != recorded {columns['crc32'][i]}"))

    fs, root = zoo.fs
    try:
        tmp = [n for n in fs.ls(f"{root}/{fmt.METADATA_DIR}", detail=False)
               if n.rsplit("/", 1)[-1].startswith(fmt.TMP_PREFIX)]
    except FileNotFoundError:
        tmp = []
    if tmp:
        report.notes.append(f"{len(tmp)} temporary metadata file(s) from an interrupted commit (ignored)")
    done = len(set(columns["unit"]))
    report.notes.append(f"{done} of {len(units)} units committed")
    return report
