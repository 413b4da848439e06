"""The control database: registry mirror and run ledger.

Tenant databases hold the truth about their own schema (their history table);
the control database holds what no single tenant can: which tenants exist (a
mirror of tenants.yaml, refreshed at every run), every run, and per run and
tenant the outcome, attempts, duration and error, so the nightly job can be
audited and its failures re-run.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import __version__, purpose
from .config import TenantSpec
from .drivers.base import Driver, Session
from .errors import BadInputError, DatabaseError, ServerError
from .outcome import RunResult, TenantResult
from .redact import redact_argv

SCHEMA_LOCK_KEY = 0x74656E616E7464  # serialises control-schema DDL between runs

CONTROL_DDL = """
CREATE TABLE IF NOT EXISTS tenantctl_tenants (
    clnt_id        smallint    PRIMARY KEY,
    name           text        NOT NULL,
    mode           text        NOT NULL,
    server         text        NOT NULL,
    database       text        NOT NULL,
    wave           text,
    sites          smallint[]  NOT NULL,
    in_config      boolean     NOT NULL DEFAULT true,
    provisioned_on timestamptz,
    version        text,
    last_status    text,
    last_run_id    uuid,
    last_error     jsonb,
    updated_on     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS tenantctl_runs (
    run_id       uuid        PRIMARY KEY,
    command      text        NOT NULL,
    argv         text[]      NOT NULL,
    clnt_ids     smallint[]  NOT NULL,
    host         text,
    os_user      text,
    db_user      text        NOT NULL DEFAULT current_user,
    tool_version text,
    started_on   timestamptz NOT NULL DEFAULT now(),
    finished_on  timestamptz,
    status       text        NOT NULL DEFAULT 'running',
    summary      jsonb
);
CREATE TABLE IF NOT EXISTS tenantctl_run_tenants (
    run_id       uuid        NOT NULL REFERENCES tenantctl_runs ON DELETE CASCADE,
    clnt_id      smallint    NOT NULL,
    database     text        NOT NULL,
    status       text        NOT NULL,
    from_version text,
    to_version   text,
    applied      text[]      NOT NULL DEFAULT '{}',
    attempts     integer     NOT NULL DEFAULT 0,
    duration_ms  integer     NOT NULL DEFAULT 0,
    error        jsonb,
    finished_on  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, clnt_id)
);
-- added later; control databases made before get them on their next run
ALTER TABLE tenantctl_run_tenants ADD COLUMN IF NOT EXISTS reverted text[] NOT NULL DEFAULT '{}';
ALTER TABLE tenantctl_runs ADD COLUMN IF NOT EXISTS dry_run boolean NOT NULL DEFAULT false;
ALTER TABLE tenantctl_runs ADD COLUMN IF NOT EXISTS pid integer;
ALTER TABLE tenantctl_runs ADD COLUMN IF NOT EXISTS lock_key bigint;
ALTER TABLE tenantctl_runs ADD COLUMN IF NOT EXISTS report json;
ALTER TABLE tenantctl_run_tenants ADD COLUMN IF NOT EXISTS position integer;
ALTER TABLE tenantctl_run_tenants ADD COLUMN IF NOT EXISTS report json;
CREATE INDEX IF NOT EXISTS tenantctl_runs_started_on ON tenantctl_runs (started_on DESC);
-- offboarding (registry.py): when a tenant was deprovisioned, and where its archive went
ALTER TABLE tenantctl_tenants ADD COLUMN IF NOT EXISTS deprovisioned_on timestamptz,
                              ADD COLUMN IF NOT EXISTS archive text;
"""

# columns added after the first release: (table, column); readers select NULL for absent ones
LATER_COLUMNS = (("tenantctl_run_tenants", "reverted"), ("tenantctl_runs", "dry_run"),
                 ("tenantctl_runs", "pid"), ("tenantctl_runs", "lock_key"),
                 ("tenantctl_runs", "report"), ("tenantctl_run_tenants", "position"),
                 ("tenantctl_run_tenants", "report"))

# Is the ledger there, and at the current shape? One round trip per run.
_LEDGER_SHAPE = f"""
SELECT to_regclass('tenantctl_run_tenants') IS NOT NULL
       AND (SELECT count(*) FROM pg_attribute
            WHERE attrelid IN (to_regclass('tenantctl_runs'), to_regclass('tenantctl_run_tenants'))
              AND attname IN ({", ".join(f"'{c}'" for _, c in LATER_COLUMNS)}) AND NOT attisdropped)
           = {len(LATER_COLUMNS)}
       AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('tenantctl_tenants')
                   AND attname = 'archive' AND NOT attisdropped)"""

_SYNC = """
INSERT INTO tenantctl_tenants (clnt_id, name, mode, server, database, wave, sites)
SELECT t.clnt_id::smallint, t.name, t.mode, t.server, t.database, t.wave,
       string_to_array(t.sites, ',')::smallint[]
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
     AS t(clnt_id, name, mode, server, database, wave, sites)
ON CONFLICT (clnt_id) DO UPDATE SET
    name = excluded.name, mode = excluded.mode, server = excluded.server,
    database = excluded.database, wave = excluded.wave, sites = excluded.sites,
    in_config = true, deprovisioned_on = NULL, updated_on = now()
WHERE (tenantctl_tenants.name, tenantctl_tenants.mode, tenantctl_tenants.server,
       tenantctl_tenants.database, tenantctl_tenants.wave, tenantctl_tenants.sites,
       tenantctl_tenants.in_config, tenantctl_tenants.deprovisioned_on IS NULL)
      IS DISTINCT FROM
      (excluded.name, excluded.mode, excluded.server, excluded.database, excluded.wave,
       excluded.sites, true, true)
"""

# registered tenants no longer in tenants.yaml (orphans, or deprovisioned ones)
_UNLIST = """
UPDATE tenantctl_tenants SET in_config = false, updated_on = now()
WHERE in_config AND clnt_id <> ALL($1::text[]::smallint[])
"""

_RECORD = """
WITH outcome AS (
    INSERT INTO tenantctl_run_tenants
        (run_id, clnt_id, database, status, from_version, to_version, applied, attempts,
         duration_ms, error, reverted, position, report)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $12, $13, $14::json)
    ON CONFLICT (run_id, clnt_id) DO UPDATE SET
        status = excluded.status, to_version = excluded.to_version,
        applied = excluded.applied, reverted = excluded.reverted, attempts = excluded.attempts,
        duration_ms = excluded.duration_ms, error = excluded.error, finished_on = now(),
        position = excluded.position, report = excluded.report
)
UPDATE tenantctl_tenants SET
    -- a run that could not read the version (a refusal, an unreachable server) keeps the
    -- known one: it is also what says data was placed there (placement.Registered.placed)
    version = CASE WHEN $4 = 'skipped' THEN version ELSE coalesce($6, version) END,
    last_status = $4, last_run_id = $1, last_error = $10::jsonb,
    provisioned_on = CASE WHEN $11 THEN coalesce(provisioned_on, now()) ELSE provisioned_on END,
    updated_on = now()
WHERE clnt_id = $2
"""

# A dry run changes no tenant: its outcomes go to the ledger, not to the registry mirror.
_RECORD_DRY = """
INSERT INTO tenantctl_run_tenants
    (run_id, clnt_id, database, status, from_version, to_version, applied, attempts,
     duration_ms, error, reverted, position, report)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13::json)
ON CONFLICT (run_id, clnt_id) DO NOTHING
"""


def run_lock_key(run_id: str) -> int:
    """The advisory lock key a run holds in the control database while it lives:
    the first 64 bits of its id (a signed bigint)."""
    return int.from_bytes(uuid.UUID(run_id).bytes[:8], "big", signed=True)


def text_array(ids: Iterable[int]) -> list[str]:
    """clnt_ids as a text[] parameter (the SQL casts it to smallint[]).

    The PostgreSQL driver decodes text[] and oid[] without asking the server;
    any other array type (smallint[] among them) costs it an introspection
    query, and three round trips, on each new connection: on the control
    session, a few milliseconds of every run. Arrays read back are cast to
    text[] for the same reason.
    """
    return [str(int(i)) for i in ids]


async def open_control(driver: Driver, admin: Session, dsn: str, database: str, *,
                       before_create: Callable[[], None] | None = None) -> Session:
    """Connect to the control database, creating it and its schema when missing
    (``before_create`` runs first, and may refuse by raising).

    The caller owns the returned session (``async with`` or ``close()``)."""
    try:
        session = await driver.connect(dsn, database)
    except DatabaseError as exc:
        if exc.sqlstate != "3D000":
            raise
        if before_create is not None:
            before_create()
        if await driver.create_database(admin, database):
            await driver.write_purpose(admin, purpose.CONTROL, database)
        session = await driver.connect(dsn, database)
    try:
        current = bool(await session.fetch_value(_LEDGER_SHAPE))
        exists = current or bool(await session.fetch_value(
            "SELECT to_regclass('tenantctl_run_tenants') IS NOT NULL"))
        tag = (await driver.read_purposes(admin)).get(database)
        if tag != purpose.CONTROL:
            await _adopt_control(driver, session, database, tag, exists)
        if not current:
            async with session.transaction():
                # Poll, never block: two first runs at once must not race on DDL.
                while not await session.fetch_value(
                    "SELECT pg_try_advisory_xact_lock($1)", SCHEMA_LOCK_KEY
                ):
                    await asyncio.sleep(0.05)
                await session.execute(CONTROL_DDL)
    except BaseException:
        await session.close()
        raise
    return session


async def _adopt_control(driver: Driver, session: Session, database: str, tag: str | None,
                         ledger: bool) -> None:
    """An untagged control database is adopted when it already holds the ledger
    (made by a tenantctl from before purpose tags) or is empty; never otherwise."""
    refusal = purpose.mismatch(database, purpose.CONTROL, tag)
    if refusal is None and not ledger:
        has_objects = (await driver.database_contents(session))[1]
        if has_objects:
            refusal = (f"control_database {database} exists and holds objects, but tenantctl did "
                       "not create it: refusing to put the run ledger in it")
    if refusal is not None:
        raise ServerError(refusal, hint="set control_database in tenants.yaml to a database of "
                          "its own (tenantctl creates it)")
    await driver.write_purpose(session, purpose.CONTROL)


async def connect_existing(driver: Driver, dsn: str, database: str) -> Session | None:
    """The control database if it exists (read-only commands never create it)."""
    try:
        session = await driver.connect(dsn, database)
    except DatabaseError as exc:
        if exc.sqlstate == "3D000":
            return None
        raise
    if not await session.fetch_value("SELECT to_regclass('tenantctl_tenants') IS NOT NULL"):
        await session.close()
        return None
    return session


async def read_placements(driver: Driver, dsn: str,
                          database: str) -> dict[tuple[str, str], tuple[int, ...]]:
    """:func:`placements` from an existing control database ({} when there is none)."""
    session = await connect_existing(driver, dsn, database)
    if session is None:
        return {}
    async with session:
        return await placements(session)


async def later_columns(session: Session) -> set[tuple[str, str]]:
    """Which of :data:`LATER_COLUMNS` this control database has (a reader never
    alters the ledger; a control database made by an older tenantctl lacks some)."""
    rows = await session.fetch_as(
        _Column, "SELECT attrelid::regclass::text AS tbl, attname::text AS col FROM pg_attribute "
        "WHERE attrelid IN (to_regclass('tenantctl_runs'), to_regclass('tenantctl_run_tenants')) "
        "AND attnum > 0 AND NOT attisdropped")
    present = {(r.tbl, r.col) for r in rows}
    return {c for c in LATER_COLUMNS if c in present}


@dataclass(frozen=True)
class _Column:
    tbl: str
    col: str


def _error_json(result: TenantResult) -> str | None:
    return json.dumps(result.error.to_json()) if result.error else None


class Ledger:
    """Writes one run to the control database; one connection, calls serialised.

    Tenant outcomes are group-committed: each caller queues its row and whoever
    holds the connection next writes every queued row in one pipelined,
    atomic ``executemany``. With a few outcomes a second this is one write per
    outcome; with hundreds (marker-skipped tenants) the batches grow instead
    of a queue of single commits. Every caller still waits until its row is
    written. A row lost to a crash only makes that tenant look unfinished to
    ``--only-failed``/``--resume``, which re-runs it harmlessly.
    """

    def __init__(self, session: Session, *, dry_run: bool = False) -> None:
        self._session = session
        self._lock = asyncio.Lock()
        self._queued: list[tuple[Any, ...]] = []
        self._dry_run = dry_run
        self._position: dict[int, int] = {}  # clnt_id -> its place in the run's report

    async def sync_registry(self, tenants: tuple[TenantSpec, ...],
                            listed: tuple[int, ...] | None = None) -> None:
        """Write tenants.yaml's view; ``listed`` (every clnt_id in the file) also marks
        registered tenants missing from it as no longer in the configuration."""
        async with self._lock:
            await self._session.execute(
                _SYNC,
                text_array(t.clnt_id for t in tenants),
                [t.name for t in tenants],
                [t.mode for t in tenants],
                [t.server for t in tenants],
                [t.database for t in tenants],
                [t.wave for t in tenants],
                [",".join(map(str, t.sites)) for t in tenants],
            )
            if listed is not None:
                await self._session.execute(_UNLIST, text_array(listed))

    async def start_run(
        self, run_id: str, command: str, clnt_ids: list[int], argv: tuple[str, ...] = ()
    ) -> None:
        """Record a run; ``argv`` is stored with every credential redacted.

        The run first takes a session-level advisory lock keyed by its id
        (:func:`run_lock_key`), held until this session closes: a reader that
        finds the run ``running`` without the lock held knows its process is
        gone (``kill -9``, a lost machine or connection) and shows it abandoned.
        The lock comes before the row, so no reader sees the row without it.
        """
        self._position = {clnt_id: i for i, clnt_id in enumerate(clnt_ids)}
        async with self._lock:
            key = run_lock_key(run_id)
            if not await self._session.fetch_value("SELECT pg_try_advisory_lock($1)", key):
                raise ServerError(f"run {run_id}: its liveness lock is already held")
            await self._session.execute(
                "INSERT INTO tenantctl_runs (run_id, command, argv, clnt_ids, host, os_user, "
                "tool_version, dry_run, pid, lock_key) "
                "VALUES ($1, $2, $3, $4::text[]::smallint[], $5, $6, $7, $8, $9, $10)",
                run_id, command, redact_argv(list(argv)), text_array(clnt_ids),
                socket.gethostname(), _os_user(), __version__, self._dry_run, os.getpid(), key,
            )

    async def record(self, run_id: str, result: TenantResult, *, provisioned: bool) -> None:
        common = (
            run_id, result.clnt_id, result.database, result.status,
            result.from_version, result.to_version, list(result.applied), result.attempts,
            result.duration_ms, _error_json(result))
        position, report = self._position.get(result.clnt_id), json.dumps(result.to_json())
        if self._dry_run:
            self._queued.append((*common, list(result.reverted), position, report))
        else:
            self._queued.append((*common, provisioned and result.status != "failed",
                                 list(result.reverted), position, report))
        async with self._lock:
            if not self._queued:
                return  # an earlier holder wrote this row with its batch
            batch, self._queued = self._queued, []
            await self._session.executemany(_RECORD_DRY if self._dry_run else _RECORD, batch)

    async def finish_run(self, run: RunResult) -> None:
        """Close the run: status, summary and the report's run-level part (the
        tenants' parts were recorded as they finished)."""
        status = "interrupted" if run.interrupted else ("failed" if run.failed else "ok")
        doc = run.to_json()
        header = {key: value for key, value in doc.items() if key != "tenants"}
        async with self._lock:
            await self._session.execute(
                "UPDATE tenantctl_runs SET finished_on = now(), status = $2, summary = $3::jsonb, "
                "report = $4::json WHERE run_id = $1",
                run.run_id, status, json.dumps(doc["summary"]), json.dumps(header, default=str),
            )


async def placements(session: Session) -> dict[tuple[str, str], tuple[int, ...]]:
    """(server, database) -> the registered tenants that live there."""
    rows = await session.fetch_as(
        _Placement, "SELECT server, database, array_agg(clnt_id ORDER BY clnt_id)::text[] AS ids "
        "FROM tenantctl_tenants GROUP BY server, database")
    return {(r.server, r.database): tuple(int(i) for i in r.ids) for r in rows}


@dataclass(frozen=True)
class _Placement:
    server: str
    database: str
    ids: list[str]  # text[]: see text_array


@dataclass(frozen=True)
class LastOutcome:
    """A tenant's last outcome, as the ledger knows it."""

    clnt_id: int
    last_status: str | None
    last_run_id: str | None
    last_error: str | None  # JSON text

    @property
    def error(self) -> dict[str, Any] | None:
        parsed: dict[str, Any] | None = json.loads(self.last_error) if self.last_error else None
        return parsed


async def last_outcomes(session: Session) -> dict[int, LastOutcome]:
    """Per clnt_id: last status, run and error, as the ledger knows them."""
    rows = await session.fetch_as(
        LastOutcome, "SELECT clnt_id, last_status, last_run_id::text AS last_run_id, "
        "last_error::text AS last_error FROM tenantctl_tenants")
    return {r.clnt_id: r for r in rows}


async def unfinished(session: Session, command: str, run_id: str | None) -> set[int]:
    """Tenants a run did not finish: failed, skipped, or never reached (kill -9).

    With ``run_id`` that run; otherwise the latest run of ``command`` plus every
    tenant whose last outcome anywhere was failed or skipped.
    """
    dry_run = "dry_run" if ("tenantctl_runs", "dry_run") in await later_columns(session) \
        else "false"
    if run_id is None:
        run_id = await session.fetch_value(
            f"SELECT run_id::text FROM tenantctl_runs WHERE command = $1 AND NOT {dry_run} "
            "ORDER BY started_on DESC LIMIT 1", command,
        )
        rows = await session.fetch_as(
            _Id, "SELECT clnt_id AS id FROM tenantctl_tenants "
            "WHERE last_status IN ('failed', 'skipped')")
        out = {r.id for r in rows}
        if run_id is None:
            return out
    else:
        out = set()
        try:
            run_id = str(uuid.UUID(run_id))
        except ValueError:
            raise BadInputError(f"--resume {run_id}: not a run id (a UUID)") from None
        dry = await session.fetch_value(
            f"SELECT {dry_run} FROM tenantctl_runs WHERE run_id = $1::uuid", run_id)
        if dry is None:
            raise BadInputError(f"--resume {run_id}: no such run in the ledger")
        if dry:
            raise BadInputError(f"--resume {run_id}: that was a dry run; it changed nothing "
                                "to resume", hint="resume the real run, or use --only-failed")
    rows = await session.fetch_as(
        _Id, "SELECT id FROM tenantctl_runs r, unnest(r.clnt_ids) AS id WHERE r.run_id = $1::uuid "
        "AND NOT EXISTS (SELECT 1 FROM tenantctl_run_tenants t WHERE t.run_id = r.run_id "
        "AND t.clnt_id = id AND t.status IN ('applied', 'reverted', 'up_to_date'))",
        run_id,
    )
    return out | {r.id for r in rows}


@dataclass(frozen=True)
class _Id:
    id: int


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return None
