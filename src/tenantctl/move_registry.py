"""The registry side of placements and moves, in the control database.

- :func:`registered` reads where each tenant lives (``tenantctl_tenants``),
  the input of :mod:`tenantctl.placement`.
- The move journal (``tenantctl_moves``): one row per tenant being moved,
  with its source and target placement and the phase it reached, written
  before anything is changed. A re-run after a crash reads it and finishes
  the move (the registry already points at the target: ``cutover``) or undoes
  it (``copying``: the partial target is removed, the source reopened).
- :func:`cut_over` changes a tenant's registered placement and the journal's
  phase in one transaction.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

from .drivers.base import Driver, Session
from .placement_check import Placement, Registered

MOVES_LOCK_KEY = 0x74656E616E746D  # serialises the journal's DDL between runs
MOVE_LOCK_CLASS = 0x746D7631  # with a clnt_id: one move of a tenant at a time (control database)

JOURNAL_DDL = """
CREATE TABLE IF NOT EXISTS tenantctl_moves (
    clnt_id          smallint    PRIMARY KEY,
    run_id           uuid        NOT NULL,
    phase            text        NOT NULL CHECK (phase IN ('copying', 'cutover')),
    source_mode      text        NOT NULL,
    source_server    text        NOT NULL,
    source_database  text        NOT NULL,
    target_mode      text        NOT NULL,
    target_server    text        NOT NULL,
    target_database  text        NOT NULL,
    keep_source      boolean     NOT NULL,
    source_connlimit integer,
    target_created   boolean     NOT NULL DEFAULT false,
    started_on       timestamptz NOT NULL DEFAULT now(),
    updated_on       timestamptz NOT NULL DEFAULT now()
)"""


class Phase(StrEnum):
    COPYING = "copying"  # before cutover: the source is the tenant's; undo on re-run
    CUTOVER = "cutover"  # the registry points at the target; finish on re-run


@dataclass(frozen=True)
class JournalEntry:
    clnt_id: int
    run_id: str
    phase: Phase
    source: Placement
    target: Placement
    keep_source: bool
    source_connlimit: int | None
    target_created: bool


@dataclass(frozen=True)
class _Row:
    clnt_id: int
    mode: str
    server: str
    database: str
    placed: bool


@dataclass(frozen=True)
class _JournalRow:
    clnt_id: int
    run_id: str
    phase: str
    source_mode: str
    source_server: str
    source_database: str
    target_mode: str
    target_server: str
    target_database: str
    keep_source: bool
    source_connlimit: int | None
    target_created: bool


async def registered(session: Session) -> dict[int, Registered]:
    """Every registered tenant's placement; {} when the registry has no table yet."""
    if not await session.fetch_value("SELECT to_regclass('tenantctl_tenants') IS NOT NULL"):
        return {}
    rows = await session.fetch_as(
        _Row, "SELECT clnt_id, mode, server, database, "
        "(provisioned_on IS NOT NULL OR version IS NOT NULL) AS placed FROM tenantctl_tenants")
    return {r.clnt_id: Registered(r.clnt_id, Placement(r.mode, r.server, r.database), r.placed)
            for r in rows}


async def read_registered(driver: Driver, dsn: str, database: str) -> dict[int, Registered]:
    """:func:`registered` of an existing control database ({} when there is none)."""
    from .ledger import connect_existing

    session = await connect_existing(driver, dsn, database)
    if session is None:
        return {}
    async with session:
        return await registered(session)


async def ensure_journal(session: Session) -> None:
    if await session.fetch_value("SELECT to_regclass('tenantctl_moves') IS NOT NULL"):
        return
    async with session.transaction():
        while not await session.fetch_value("SELECT pg_try_advisory_xact_lock($1)", MOVES_LOCK_KEY):
            await asyncio.sleep(0.05)
        await session.execute(JOURNAL_DDL)


async def journal(session: Session) -> dict[int, JournalEntry]:
    """Every unfinished move (the journal table must exist: :func:`ensure_journal`)."""
    rows = await session.fetch_as(
        _JournalRow, "SELECT clnt_id, run_id::text AS run_id, phase, source_mode, source_server, "
        "source_database, target_mode, target_server, target_database, keep_source, "
        "source_connlimit, target_created FROM tenantctl_moves")
    return {r.clnt_id: JournalEntry(
        r.clnt_id, r.run_id, Phase(r.phase), Placement(r.source_mode, r.source_server,
                                                       r.source_database),
        Placement(r.target_mode, r.target_server, r.target_database), r.keep_source,
        r.source_connlimit, r.target_created) for r in rows}


async def read_journal(driver: Driver, dsn: str, database: str) -> dict[int, JournalEntry]:
    """Unfinished moves of an existing control database (read-only: status)."""
    from .ledger import connect_existing

    session = await connect_existing(driver, dsn, database)
    if session is None:
        return {}
    async with session:
        if not await session.fetch_value("SELECT to_regclass('tenantctl_moves') IS NOT NULL"):
            return {}
        return await journal(session)


async def hold_tenant(session: Session, clnt_id: int, wait_s: float) -> bool:
    """Poll the control database's per-tenant move lock for up to ``wait_s``; it is held
    until the session ends, so a second ``move`` of the tenant never undoes a running one."""
    waited = 0.0
    while not await session.fetch_value("SELECT pg_try_advisory_lock($1::int4, $2::int4)",
                                        MOVE_LOCK_CLASS, clnt_id):
        if waited >= wait_s:
            return False
        await asyncio.sleep(0.2)
        waited += 0.2
    return True


async def release_tenant(session: Session, clnt_id: int) -> None:
    await session.fetch_value("SELECT pg_advisory_unlock($1::int4, $2::int4)", MOVE_LOCK_CLASS,
                              clnt_id)


async def begin(session: Session, entry: JournalEntry) -> None:
    """Record a move before anything is changed (replacing a finished or undone one)."""
    s, t = entry.source, entry.target
    await session.execute(
        "INSERT INTO tenantctl_moves (clnt_id, run_id, phase, source_mode, source_server, "
        "source_database, target_mode, target_server, target_database, keep_source) "
        "VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10) "
        "ON CONFLICT (clnt_id) DO UPDATE SET run_id = excluded.run_id, phase = excluded.phase, "
        "source_mode = excluded.source_mode, source_server = excluded.source_server, "
        "source_database = excluded.source_database, target_mode = excluded.target_mode, "
        "target_server = excluded.target_server, target_database = excluded.target_database, "
        "keep_source = excluded.keep_source, source_connlimit = NULL, target_created = false, "
        "started_on = now(), updated_on = now()",
        entry.clnt_id, entry.run_id, Phase.COPYING.value, s.mode, s.server, s.database,
        t.mode, t.server, t.database, entry.keep_source)


async def note(session: Session, clnt_id: int, *, source_connlimit: int | None = None,
               target_created: bool | None = None) -> None:
    """Record what a move changed, before changing it, so an undo knows what to restore."""
    await session.execute(
        "UPDATE tenantctl_moves SET source_connlimit = coalesce($2, source_connlimit), "
        "target_created = coalesce($3, target_created), updated_on = now() WHERE clnt_id = $1",
        clnt_id, source_connlimit, target_created)


async def cut_over(session: Session, clnt_id: int, target: Placement) -> None:
    """The registry now says the tenant lives at ``target``; the journal says so too."""
    async with session.transaction():
        await session.execute(
            "UPDATE tenantctl_tenants SET mode = $2, server = $3, database = $4, "
            "updated_on = now() WHERE clnt_id = $1", clnt_id, target.mode, target.server,
            target.database)
        await session.execute(
            "UPDATE tenantctl_moves SET phase = $2, updated_on = now() WHERE clnt_id = $1",
            clnt_id, Phase.CUTOVER.value)


async def finish(session: Session, clnt_id: int) -> None:
    """The move is done or undone: forget it."""
    await session.execute("DELETE FROM tenantctl_moves WHERE clnt_id = $1", clnt_id)
