"""Offboarding a shared-mode tenant: its rows deleted from the shared database.

Every table with the tenant column (tenants.yaml's ``tenant_column``, default
``clnt_id``) loses the tenant's rows, referencing
tables before the tables they reference (foreign keys), in one transaction
with the shared database's migration lock held, deferrable constraints
deferred; passes repeat while triggers (an audit table) write new rows of the
tenant. The tenant's row of the shared registry and its seed record go
with them (the run ledger keeps the audit trail), so listing the tenant again
later provisions and seeds it afresh.

There is no per-tenant archive of shared rows yet: ``deprovision --archive``
refuses shared-mode tenants (plan_deprovision says so).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .drivers.base import Session
from .drivers.postgres import HISTORY_TABLE, quote_ident
from .errors import TenantctlError
from .isolation import REGISTRY_TABLE

_TABLES = f"""
SELECT c.oid::int8 AS oid, format('%I.%I', n.nspname, c.relname) AS qname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $1 AND a.attnum > 0
                    AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT (n.nspname = 'public' AND c.relname IN ('{HISTORY_TABLE}', '{REGISTRY_TABLE}'))"""

MAX_PASSES = 5

_REFERENCES = """
SELECT conrelid::int8 AS child, confrelid::int8 AS parent FROM pg_constraint
WHERE contype = 'f' AND conrelid <> confrelid"""


@dataclass(frozen=True)
class _Table:
    oid: int
    qname: str


@dataclass(frozen=True)
class _Reference:
    child: int
    parent: int


def delete_order(tables: dict[int, str], references: Iterable[tuple[int, int]]) -> list[str]:
    """Tables so that each comes before every table it references (children first);
    tables in a reference cycle come last, by name (deferred constraints settle them)."""
    referenced_by: dict[int, set[int]] = {oid: set() for oid in tables}
    for child, parent in references:
        if child in tables and parent in tables:
            referenced_by[parent].add(child)
    order: list[str] = []
    left = dict(tables)
    while left:
        free = sorted((oid for oid in left if not referenced_by[oid] & left.keys()),
                      key=lambda oid: left[oid])
        if not free:
            order += sorted(left.values())
            break
        for oid in free:
            order.append(left.pop(oid))
    return order


async def delete_tenant_rows(session: Session, clnt_id: int, tenant_column: str) -> dict[str, int]:
    """Delete the tenant's rows from every table with ``tenant_column`` (caller holds the
    shared database's migration lock); rows deleted per table."""
    tables = {t.oid: t.qname for t in await session.fetch_as(_Table, _TABLES, tenant_column)}
    column = quote_ident(tenant_column)
    references = [(r.child, r.parent) for r in await session.fetch_as(_Reference, _REFERENCES)]
    deleted: dict[str, int] = {}
    async with session.transaction():
        await session.execute("SET CONSTRAINTS ALL DEFERRED")
        # an owner-member migrator under FORCE RLS sees only the current tenant's rows
        await session.execute("SELECT set_config('app.current_tenant', $1, true)", str(clnt_id))
        order = delete_order(tables, references)
        # triggers may write rows of the tenant as others go (an audit table): repeat
        # until a pass finds none left
        for _ in range(MAX_PASSES):
            found = 0
            for qname in order:
                status = await session.execute(f"DELETE FROM {qname} WHERE {column} = $1", clnt_id)
                count = int(status.rsplit(" ", 1)[-1])
                deleted[qname] = deleted.get(qname, 0) + count
                found += count
            if not found:
                break
        else:
            raise TenantctlError(f"clnt_id {clnt_id}: triggers kept writing the tenant's rows "
                                 f"after {MAX_PASSES} passes of deletes; nothing was deleted")
        if await session.fetch_value("SELECT to_regclass($1) IS NOT NULL",
                                     f"public.{REGISTRY_TABLE}"):
            await session.execute(f"DELETE FROM public.{REGISTRY_TABLE} WHERE clnt_id = $1",
                                  clnt_id)
        await session.execute(f"DELETE FROM public.{HISTORY_TABLE} WHERE kind = 'seed' "
                              "AND version = $1", str(clnt_id))
    return deleted
