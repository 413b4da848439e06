"""Pure: how a tenant is moved, in what order its tables are copied, what a kept source is called.

- dedicated -> dedicated: the whole database, with PostgreSQL's own
  ``pg_dump -Fc | pg_restore`` (schema, history, sequences, every table);
- shared -> dedicated and dedicated -> shared: the target schema is brought
  to the source's version by tenantctl's migrations, then every table with
  the tenant column is copied with ``COPY … WHERE <tenant column> = id``,
  parents before children (foreign keys).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from .config import Project
from .errors import TenantctlError
from .modes import Mode
from .placement_check import Placement

MAX_IDENTIFIER_BYTES = 63


def tenant_column(project: Project) -> str:
    """The column that says which tenant a row of a shared table belongs to."""
    return project.file.tenant_column


class Method(StrEnum):
    DUMP = "dump"  # pg_dump -Fc | pg_restore of the whole database
    COPY = "copy"  # schema by migrations, then COPY of the tenant's rows per table


class MoveError(TenantctlError):
    """A move that cannot be done as asked (that tenant fails; the others go on)."""


def method_for(source: Placement, target: Placement) -> Method:
    if source.mode == Mode.DATABASE and target.mode == Mode.DATABASE:
        return Method.DUMP
    if Mode.SHARED in (source.mode, target.mode) and source.mode != target.mode:
        return Method.COPY
    raise MoveError(
        f"cannot move from {source.describe()} to {target.describe()}: moving the shared "
        "database itself is not a tenant move",
        hint="revert shared.server / shared.database in tenants.yaml")


def dependency_order(tables: Iterable[str], references: Iterable[tuple[str, str]]) -> list[str]:
    """Tables ordered so that every referenced table comes before the tables that
    reference it; ``references`` holds (child, parent) pairs. Self-references are
    fine (COPY checks foreign keys at the end of the statement). Ties keep the
    input order. A cycle between tables cannot be copied one table at a time."""
    names = list(dict.fromkeys(tables))
    known = set(names)
    parents: dict[str, set[str]] = {n: set() for n in names}
    for child, parent in references:
        if child in known and parent in known and child != parent:
            parents[child].add(parent)
    ordered: list[str] = []
    done: set[str] = set()
    while len(ordered) < len(names):
        ready = [n for n in names if n not in done and parents[n] <= done]
        if not ready:
            stuck = sorted(n for n in names if n not in done)
            raise MoveError(f"foreign keys form a cycle between {', '.join(stuck)}: their rows "
                            "cannot be copied table by table",
                            hint="make one of those foreign keys DEFERRABLE, or move the tenant "
                                 "by hand")
        for n in ready:
            ordered.append(n)
            done.add(n)
    return ordered


def kept_name(database: str, when: datetime) -> str:
    """The name a source database kept by ``--keep-source`` is renamed to:
    ``<database>_moved_<UTC timestamp>``, the database part shortened to fit 63 bytes."""
    suffix = f"_moved_{when.strftime('%Y%m%d%H%M%S')}"
    room = MAX_IDENTIFIER_BYTES - len(suffix)
    head = database.encode("utf-8")[:room].decode("utf-8", "ignore")
    return head + suffix
