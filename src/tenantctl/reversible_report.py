"""Pure: check-reversible's findings grouped per object, one text line each.

A down script that forgets a table leaves the table, each of its columns,
constraints, indexes, triggers and owned sequences behind: dozens of
findings for one mistake. The text output shows one line per object
(``v1.2.0_x.sql: down: table public.t: left behind by down: relkind r (with
12 column(s), 1 constraint(s))``); the JSON output keeps every finding, each
naming its ``object``, plus these lines as ``objects``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .reversible import Difference

_PLURAL = {"index": "index(es)", "policy": "policy(-ies)", "statistics": "statistics object(s)"}


def _count(kind: str, n: int) -> str:
    return f"{n} {_PLURAL.get(kind, kind + '(s)')}"


@dataclass(frozen=True)
class ObjectGroup:
    """The findings of one migration and phase that belong to one object."""

    migration: str
    phase: str
    object: str | None  # None: an error or missing-down finding, alone in its group
    differences: tuple[Difference, ...]

    @property
    def summary(self) -> str:
        first = self.differences[0]
        if self.object is None or len(self.differences) == 1:
            state = f" [{first.sqlstate}]" if first.sqlstate else ""
            return f"{first.kind} {first.name}{state}: {first.detail}"
        kind, _, name = self.object.partition(" ")
        own = [d for d in self.differences if (d.kind, d.name) == (kind, name)]
        children = [d for d in self.differences if (d.kind, d.name) != (kind, name)]
        # per change (in order of appearance): kind -> count
        counts: dict[str, dict[str, int]] = {}
        wording: dict[str, str] = {}
        for d in children:
            change = d.change or ""
            counts.setdefault(change, {})
            counts[change][d.kind] = counts[change].get(d.kind, 0) + 1
            wording[change] = d.detail.split(": ", 1)[0]
        parts: list[str] = []
        if own:
            same = set(counts) <= {own[0].change or ""}
            with_children = ", ".join(_count(k, n) for k, n in counts.get(own[0].change or "", {}).items())
            parts.append(own[0].detail + (f" (with {with_children})" if with_children else ""))
            if same:
                counts = {}
            else:
                counts.pop(own[0].change or "", None)
        for change, by_kind in counts.items():
            parts.append(", ".join(_count(k, n) for k, n in by_kind.items()) + f" {wording[change]}")
        return f"{self.object}: {'; '.join(parts)}"

    @property
    def line(self) -> str:
        return f"{self.migration}: {self.phase}: {self.summary}"

    def to_json(self) -> dict[str, Any]:
        return {"migration": self.migration, "phase": self.phase, "object": self.object,
                "differences": len(self.differences), "summary": self.summary}


def group_differences(found: list[Difference]) -> list[ObjectGroup]:
    """Findings per (migration, phase) in the order found; within those, one group per
    object, sorted by object."""
    blocks: dict[tuple[str, str], dict[str | None, list[Difference]]] = {}
    order: list[tuple[str, str] | ObjectGroup] = []
    for d in found:
        if d.object is None:
            group = ObjectGroup(d.migration, d.phase, None, (d,))
            order.append(group)
            continue
        key = (d.migration, d.phase)
        if key not in blocks:
            blocks[key] = {}
            order.append(key)
        blocks[key].setdefault(d.object, []).append(d)
    out: list[ObjectGroup] = []
    for item in order:
        if isinstance(item, ObjectGroup):
            out.append(item)
            continue
        for obj, diffs in sorted(blocks[item].items(), key=lambda kv: kv[0] or ""):
            out.append(ObjectGroup(item[0], item[1], obj, tuple(diffs)))
    return out
