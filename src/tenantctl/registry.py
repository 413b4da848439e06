"""The placement registry as tenantctl reads it: where each tenant actually is.

``tenantctl_tenants`` in the control database (its DDL is ledger.py's) records
each tenant's server, database and mode, whether tenants.yaml still lists it,
and, once offboarded, when and into which archive. This module reads it into
typed rows (tolerating a control database from an older tenantctl, whose
table lacks the newer columns), pins placements under a lock, and marks
tenants deprovisioned or restored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import ledger, move_registry, placement_check
from .config import Project, TenantSpec
from .drivers.base import Driver, Session
from .placement import Placement, place

PLACEMENT_LOCK_KEY = 0x74656E616E7470  # one placement decision at a time per control database


@dataclass(frozen=True)
class RegistryRow:
    clnt_id: int
    name: str
    mode: str
    server: str
    database: str
    version: str | None
    last_status: str | None
    in_config: bool
    deprovisioned: bool
    archive: str | None

    @property
    def active(self) -> bool:
        """Counts as a tenant living somewhere (not offboarded)."""
        return not self.deprovisioned


@dataclass(frozen=True)
class _Json:
    doc: str


def _row(doc: dict[str, Any]) -> RegistryRow:
    return RegistryRow(
        clnt_id=int(doc["clnt_id"]), name=str(doc["name"]), mode=str(doc["mode"]),
        server=str(doc["server"]), database=str(doc["database"]), version=doc.get("version"),
        last_status=doc.get("last_status"), in_config=bool(doc.get("in_config", True)),
        deprovisioned=doc.get("deprovisioned_on") is not None, archive=doc.get("archive"))


async def read(session: Session) -> dict[int, RegistryRow]:
    """Every registered tenant by clnt_id (whole rows as JSON: older shapes read too)."""
    rows = await session.fetch_as(
        _Json, "SELECT to_jsonb(t)::text AS doc FROM tenantctl_tenants t ORDER BY clnt_id")
    return {r.clnt_id: r for r in (_row(json.loads(x.doc)) for x in rows)}


async def read_existing(driver: Driver, dsn: str, database: str) -> dict[int, RegistryRow]:
    """:func:`read` from an existing control database; {} when there is none."""
    session = await ledger.connect_existing(driver, dsn, database)
    if session is None:
        return {}
    async with session:
        return await read(session)


async def pin(session: Session, recorder: ledger.Ledger, project: Project) -> Placement:
    """Place every tenant of tenants.yaml and write the placements to the registry,
    under a lock, so two runs placing new tenants at once cannot overfill a server."""
    async with session.transaction():
        await session.execute("SELECT pg_advisory_xact_lock($1)", PLACEMENT_LOCK_KEY)
        placed = place(project, await read(session))
        # a tenant whose data is elsewhere keeps its registered placement: only a move changes it
        kept = placement_check.reconcile(placed.tenants, await move_registry.registered(session), {})
        await recorder.sync_registry(kept.syncable(), tuple(t.clnt_id for t in project.tenants))
    return placed


async def mark_deprovisioned(session: Session, clnt_id: int, archive: str | None) -> None:
    await session.execute(
        "UPDATE tenantctl_tenants SET deprovisioned_on = now(), archive = $2, in_config = false, "
        "last_status = 'deprovisioned', updated_on = now() WHERE clnt_id = $1", clnt_id, archive)


async def mark_restored(session: Session, tenant: TenantSpec, version: str | None,
                        run_id: str) -> None:
    """The tenant lives at its declared placement again, at ``version``."""
    await session.execute(
        "UPDATE tenantctl_tenants SET deprovisioned_on = NULL, in_config = true, server = $2, "
        "database = $3, mode = $4, version = $5, last_status = 'restored', "
        "last_run_id = $6::uuid, last_error = NULL, updated_on = now() WHERE clnt_id = $1",
        tenant.clnt_id, tenant.server, tenant.database, tenant.mode, version, run_id)
