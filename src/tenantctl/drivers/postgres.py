"""The PostgreSQL driver: tenantctl's operations, as SQL, over :mod:`pg_session`.

:data:`DRIVER` (a :class:`PostgresDriver`) is what the engine and the use
cases are given. It takes the per-tenant migration lock by polling
``pg_try_advisory_lock`` (a blocked ``pg_advisory_lock`` waiter can deadlock
with a concurrent CREATE INDEX CONCURRENTLY in the other session), reads and
writes the history table, applies migrations, creates and tags databases.
It imports no asyncpg: connections and error translation live in
:mod:`tenantctl.drivers.pg_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any

from ..errors import DatabaseError, LockLost, LockNotAcquired
from ..migrations import Migration, Script
from ..plan import KIND_BASELINE, KIND_DOWN, KIND_REPAIR, KIND_SEED, KIND_UP, HistoryRow
from ..sqltree import statement_node
from ..statements import Statement
from .base import Session
from .pg_server import (
    PURPOSE_SETTING,
    available_extensions,
    create_database,
    drop_database,
    existing_databases,
    marker_sql,
    max_connections,
    read_markers,
    read_purposes,
    read_setting,
    server_version,
    write_marker,
    write_purpose,
)
from .pg_session import PgSession, connect, milliseconds, quote_ident, quote_literal

__all__ = [
    "DRIVER", "PURPOSE_SETTING", "PgSession", "PostgresDriver", "connect", "milliseconds",
    "quote_ident", "read_setting",
]

HISTORY_TABLE = "tenantctl_schema_history"
# One advisory-lock key for "tenantctl is migrating this database". Advisory
# locks are per database, so the same key in every tenant database is correct.
MIGRATION_LOCK_KEY = 0x74656E616E7463  # "tenantc"


# installed_rank is assigned as max + 1 by every insert (made with the tenant's
# lock held), never by a sequence: a clone or a crash can leave an identity
# sequence behind the table, and a rolled-back migration would leave a gap.
# Tables created by earlier versions keep their identity column; inserts
# override it (OVERRIDING SYSTEM VALUE), so both shapes behave the same.
HISTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS public.{HISTORY_TABLE} (
    installed_rank  integer     PRIMARY KEY,
    version         text        NOT NULL,
    description     text        NOT NULL,
    kind            text        NOT NULL DEFAULT 'up'
                    CHECK (kind IN ('up', 'down', 'baseline', 'seed', 'repair')),
    script          text        NOT NULL,
    checksum        text        NOT NULL,
    installed_by    text        NOT NULL DEFAULT current_user,
    installed_on    timestamptz NOT NULL DEFAULT now(),
    execution_ms    integer     NOT NULL,
    success         boolean     NOT NULL,
    statements_done integer,
    run_id          uuid
)"""

_READ_HISTORY = f"""
SELECT installed_rank AS rank, version, description, kind, checksum, success, statements_done
FROM public.{HISTORY_TABLE} ORDER BY installed_rank"""


def lock_held_sql(key: int = MIGRATION_LOCK_KEY) -> str:
    """SQL condition: this session still holds the session-level advisory lock ``key``.

    A migration can release it (``pg_advisory_unlock_all()``); every history
    write is conditional on it, so a lost lock fails the tenant instead of
    letting a concurrent run apply the same migration twice.

    Three lock-manager calls, in an order CASE guarantees: take ``key`` at
    transaction level (granted at once when this session holds it; refused when
    another session does), release one session-level hold (false when there was
    none), take that hold again (granted: the transaction-level lock keeps
    everyone else out in between). Held, the session ends as it began;
    not held, the condition is false. Reading ``pg_locks`` instead collects
    every lock of the server: measured at ~0.4 ms of server CPU per history write.
    """
    key = int(key)
    return (
        f"CASE WHEN pg_catalog.pg_try_advisory_xact_lock({key}) "
        f"THEN CASE WHEN pg_catalog.pg_advisory_unlock({key}) "
        f"THEN pg_catalog.pg_try_advisory_lock({key}) ELSE false END ELSE false END"
    )


_LOCK_HELD = lock_held_sql()



def _history_insert(values: str, *, fail_unless_held: bool = False) -> str:
    """INSERT of one history row from ``values`` (version, description, kind,
    script, checksum, execution_ms, success, statements_done, run_id), made only
    while the tenant's lock is held.

    By default a lost lock inserts no row (the caller checks the count). With
    ``fail_unless_held`` it fails the statement instead: the rank is then NULL,
    which the primary key refuses, so that nothing after it in the same query
    string runs (an INSERT of no row would let a COMMIT later in the string
    commit the script). An error at run time only: nothing a setting or a
    missing language could change.
    """
    # max + 1 as the last row's rank: the same value (installed_rank is the primary
    # key), planned as one index probe; max() is planned twice (as an aggregate, then
    # as that probe), about 10 µs of server CPU per row
    rank = (f"coalesce((SELECT h.installed_rank FROM public.{HISTORY_TABLE} h "
            f"ORDER BY h.installed_rank DESC LIMIT 1), 0) + 1")
    head = f"""
INSERT INTO public.{HISTORY_TABLE}
    (installed_rank, version, description, kind, script, checksum, execution_ms, success,
     statements_done, run_id)
OVERRIDING SYSTEM VALUE
"""
    if fail_unless_held:  # one VALUES row: cheaper to plan than INSERT ... SELECT
        return head + f"VALUES (CASE WHEN {_LOCK_HELD} THEN {rank} END,\n        {values})"
    return head + f"SELECT {rank},\n       {values}\nWHERE {_LOCK_HELD}"


_INSERT_HISTORY = _history_insert("$1, $2, $3, $4, $5, $6, $7, $8, $9::uuid")
_INSERT_HISTORY_RANK = _INSERT_HISTORY + " RETURNING installed_rank"

# Sent after every migration, seed and down script (in the same round trip and
# transaction for transactional ones), so the next one starts from the session
# state the connection opened with (search_path, role, GUCs a script SET at
# session level, temp tables, prepared statements, cursors, LISTENs). A fresh
# session starts there, and every script ends with this reset, so nothing is
# needed ahead of a script. RESET ALL returns to the values of the startup
# packet (lock_timeout, statement_timeout). Not DISCARD ALL: it would also
# release the tenant's advisory lock.
SESSION_RESET = (
    "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; DISCARD TEMP; "
    "DEALLOCATE ALL; CLOSE ALL; UNLISTEN *; "
)


# ------------------------------------------------------------ tenant level


async def database_contents(session: Session) -> tuple[bool, bool]:
    """(has tenantctl's history table, has any other relation of its own).

    What decides whether an untagged database may be adopted: one that
    tenantctl migrated before purpose tags existed, or an empty one.
    """
    row = await session.fetch_one_as(
        _Contents, f"SELECT to_regclass('public.{HISTORY_TABLE}') IS NOT NULL AS history, EXISTS ("
        "SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
        "AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%' "
        f"AND NOT (n.nspname = 'public' AND c.relname LIKE '{HISTORY_TABLE}%')) AS objects"
    )
    assert row is not None
    return row.history, row.objects




async def acquire_migration_lock(
    session: Session, wait_s: float, *, key: int | None = None, poll_s: float = 0.05,
    poll_max_s: float = 1.0,
) -> float:
    """Poll pg_try_advisory_lock until held or ``wait_s`` passed; never block.

    A blocked ``pg_advisory_lock`` waiter would deadlock with a concurrent
    CREATE INDEX CONCURRENTLY in the other session (docs/design.md).
    Returns the seconds waited.
    """
    key = MIGRATION_LOCK_KEY if key is None else int(key)
    # the result is read from the command tag ("SELECT 1": taken): a simple
    # query, one round trip, where fetching a value costs two
    waited, _ = await _poll_lock(
        session, wait_s, f"SELECT WHERE pg_catalog.pg_try_advisory_lock({key})", poll_s, poll_max_s)
    return waited


async def acquire_lock_checking_last(
    session: Session, wait_s: float, version: str, *, poll_s: float = 0.05,
    poll_max_s: float = 1.0,
) -> bool:
    """acquire_migration_lock, and in the same round trip, once the lock is held:
    is the history's last row ``version``'s successful ``up`` row?

    The answer rides in the command tag: ``generate_series`` yields no row when
    the lock is refused, one when it is held, two when it is held and the last
    row is that one. CASE evaluates the lock first, so the history is read with
    the lock held. A database without the history table: the lock is taken the
    plain way and the answer is False.
    """
    last_is = (f"(SELECT h.kind = 'up' AND h.success AND h.version = {quote_literal(version)} "
               f"FROM public.{HISTORY_TABLE} h ORDER BY h.installed_rank DESC LIMIT 1)")
    query = (f"SELECT FROM pg_catalog.generate_series(1, CASE WHEN "
             f"pg_catalog.pg_try_advisory_lock({MIGRATION_LOCK_KEY}) "
             f"THEN CASE WHEN {last_is} THEN 2 ELSE 1 END ELSE 0 END)")
    try:
        _, rows = await _poll_lock(session, wait_s, query, poll_s, poll_max_s)
    except DatabaseError as exc:
        if exc.sqlstate != "42P01":  # refused while parsed: no lock was taken
            raise
        await acquire_migration_lock(session, wait_s, poll_s=poll_s, poll_max_s=poll_max_s)
        return False
    return rows == 2


async def _poll_lock(session: Session, wait_s: float, try_lock: str, poll_s: float,
                     poll_max_s: float) -> tuple[float, int]:
    """Run ``try_lock`` (no rows: not taken) with backoff and jitter until it
    returns rows or ``wait_s`` passed; (seconds waited, rows)."""
    start = time.monotonic()
    delay = poll_s
    while True:
        rows = _rows_affected(await session.execute(try_lock))
        if rows >= 1:
            return time.monotonic() - start, rows
        waited = time.monotonic() - start
        if waited >= wait_s:
            raise LockNotAcquired(session.database, waited)
        await asyncio.sleep(min(delay * (0.5 + random.random()), max(wait_s - waited, 0.0)))
        delay = min(delay * 2, poll_max_s)


async def ensure_history(session: Session) -> None:
    """Create the history table if missing."""
    await session.execute(HISTORY_DDL)


async def open_history(session: Session) -> list[HistoryRow]:
    """Read the history, creating the table on first use: one round trip when it exists.

    Called with the migration lock held, so no other tenantctl races the DDL.
    There is no explicit unlock either: the lock is session-level and dies with
    the connection, which the engine closes right after its work.
    """
    try:
        return await read_history(session, missing_ok=False)
    except DatabaseError as exc:
        if exc.sqlstate != "42P01":
            raise
    await ensure_history(session)
    return []


async def read_history(session: Session, *, missing_ok: bool = True) -> list[HistoryRow]:
    try:
        rows = await session.fetch_as(HistoryRow, _READ_HISTORY)
    except DatabaseError as exc:
        if missing_ok and exc.sqlstate == "42P01":
            return []
        raise
    return rows


_TIMEOUT_DIRECTIVES = (("statement-timeout", "statement_timeout"), ("lock-timeout", "lock_timeout"))


async def _apply_timeouts(session: Session, script: Script, *, local: bool) -> None:
    """Per-migration timeouts from header directives (transaction-local or session)."""
    for directive, guc in _TIMEOUT_DIRECTIVES:
        seconds = script.timeout(directive)
        if seconds is not None:
            await session.execute(
                "SELECT set_config($1, $2, $3)", guc, milliseconds(seconds), local
            )


def _local_timeouts_sql(script: Script) -> str:
    """The script's timeout directives as transaction-local settings, as SQL text."""
    return "".join(
        f"SELECT pg_catalog.set_config('{guc}', {quote_literal(milliseconds(seconds))}, true);\n"
        for directive, guc in _TIMEOUT_DIRECTIVES
        if (seconds := script.timeout(directive)) is not None
    )


async def reset_session(session: Session) -> None:
    """Back to the session state the connection opened with; the lock stays held."""
    await session.execute(SESSION_RESET)


async def _insert_history(session: Session, *args: Any) -> None:
    """Insert a history row if, and only if, the tenant's lock is still held."""
    if _rows_affected(await session.execute(_INSERT_HISTORY, *args)) != 1:
        raise LockLost(session.database)


def _rows_affected(status: str) -> int:
    """The row count of a command tag ("INSERT 0 1", "UPDATE 1", "SELECT 0")."""
    count = status.rsplit(" ", 1)[-1]
    return int(count) if count.isdigit() else -1


# the server's milliseconds since the round trip that carries this began
# (statement_timestamp() is when the query message arrived)
_SERVER_ELAPSED_MS = (
    "(extract(epoch FROM pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp())"
    " * 1000)::integer")


def _history_insert_sql(migration: Migration, kind: str, script: Script, run_id: Any) -> str:
    """The history row of a script run in the same round trip, as SQL text.

    Every value is quoted by :func:`quote_literal`; ``execution_ms`` is the
    server's time since the round trip began. It fails when the lock is gone;
    held, the check leaves a transaction-level hold that keeps every other
    session out until COMMIT.
    """
    run = "NULL" if run_id is None else f"{quote_literal(str(run_id))}::uuid"
    values = ", ".join((
        quote_literal(migration.version.text), quote_literal(migration.description),
        quote_literal(kind), quote_literal(script.path.name), quote_literal(script.checksum),
        _SERVER_ELAPSED_MS, "true", "NULL", run))
    return _history_insert(values, fail_unless_held=True)


async def _run_and_record(session: Session, migration: Migration, kind: str, script: Script,
                          run_id: Any, *, marker: str | None = None) -> None:
    """A transactional script and its history row, committed, in one round trip.

    One query string: BEGIN, the script's timeouts (transaction-local), the
    script, the session reset, the history row (refused when the lock is gone),
    COMMIT. The reset lets the row be written as tenantctl's own user whatever
    the script SET (a role, a statement_timeout); the newline ends a trailing
    ``--`` comment; an empty or comment-only script sends no statement of its own.

    Any error stops the string with the transaction aborted (PostgreSQL runs
    nothing after a failed statement of a query string): it is rolled back,
    then the lock is checked on its own. Lost, the failure is ``LockLost``
    (the row's, or the script's after it released the lock); held, the
    error is the script's (or COMMIT's: a deferred constraint), its line
    found from the error's position past what was sent ahead of the script.

    With ``marker``, the database's schema marker is set after the history row,
    as tenantctl's own user (after the reset), in the same transaction.
    """
    prologue = "BEGIN;\n" + _local_timeouts_sql(script)
    body = script.sql + "\n;" + SESSION_RESET if script.statements else ""
    record = _history_insert_sql(migration, kind, script, run_id) + ";\n"
    if marker is not None:
        record += marker_sql(session.database, marker) + ";\n"
    record += "COMMIT"
    try:
        await session.execute(prologue + body + record)
    except DatabaseError as exc:
        await _roll_back(session)
        if not await _lock_still_held(session):
            raise LockLost(session.database) from exc
        exc.line = _line_of(script.sql, exc.position, offset=len(prologue))
        raise
    except BaseException:
        await _roll_back(session)
        raise


async def _roll_back(session: Session) -> None:
    """End a transaction that failed; a connection already gone has none to end."""
    with contextlib.suppress(DatabaseError):
        await session.execute("ROLLBACK")


async def _lock_still_held(session: Session) -> bool:
    """After a failure: does the session still hold its migration lock? True
    when that cannot be asked (a lost connection): its error is the one to report."""
    try:
        return _rows_affected(await session.execute(f"SELECT WHERE {_LOCK_HELD}")) == 1
    except DatabaseError:
        return True


async def _run_statement(session: Session, stmt: Statement) -> None:
    """One statement of a no-transaction script; a failure names its line."""
    try:
        await session.execute(stmt.sql)
    except DatabaseError as exc:
        exc.line = _line_of(stmt.sql, exc.position, first_line=stmt.line) or stmt.line
        raise


def _line_of(sql: str, position: int | None, *, offset: int = 0, first_line: int = 1) -> int | None:
    """The line of ``sql`` (starting at ``first_line``) that a PostgreSQL error
    position points at; ``offset`` characters were sent ahead of ``sql``."""
    if position is None:
        return None
    index = position - 1 - offset
    if not 0 <= index <= len(sql):
        return None
    return first_line + sql.count("\n", 0, index)


def marks_in_transaction(session: Session) -> bool:
    """A superuser session: ALTER DATABASE ... SET of the marker cannot be refused
    (an owner without superuser may lack SET on the parameter, PostgreSQL 15+)."""
    return session.superuser


async def apply_transactional(session: Session, migration: Migration, run_id: Any, *,
                              marker: str | None = None) -> int:
    """Run the migration and insert its history row in one transaction (one round
    trip); with ``marker``, set the database's schema marker in it too."""
    started = time.monotonic()
    await _run_and_record(session, migration, KIND_UP, migration.up, run_id, marker=marker)
    return int((time.monotonic() - started) * 1000)


async def apply_seed(
    session: Session, script: Script, clnt_id: int, name: str, sites: tuple[int, ...], run_id: Any
) -> None:
    """Run the seed script for one tenant; its values arrive as settings, never as SQL text.

    ``tenantctl.clnt_id`` and ``tenantctl.tenant_id`` both hold the tenant's id;
    ``tenantctl.sites`` is the site ids comma-separated, ``''`` for a tenant without sites.
    """
    started = time.monotonic()
    async with session.transaction():
        await session.execute(
            "SELECT set_config('tenantctl.clnt_id', $1, true), "
            "set_config('tenantctl.tenant_id', $1, true), "
            "set_config('tenantctl.tenant_name', $2, true), "
            "set_config('tenantctl.sites', $3, true), "
            # in a shared database the seed writes under the tenant's RLS policy
            "set_config('app.current_tenant', $1, true)",
            str(clnt_id), name, ",".join(map(str, sites)),
        )
        if script.statements:
            try:
                await session.execute(script.sql + "\n;" + SESSION_RESET)
            except DatabaseError as exc:
                exc.line = _line_of(script.sql, exc.position)
                raise
        await _insert_history(
            session,
            str(clnt_id), f"seed clnt_id {clnt_id}", KIND_SEED, script.path.name,
            script.checksum, int((time.monotonic() - started) * 1000), True, None, run_id,
        )


async def apply_statements(
    session: Session,
    migration: Migration,
    run_id: Any,
    resume_from: int,
) -> int:
    """Run a no-transaction migration statement by statement, recording progress.

    A history row with ``success = false`` and ``statements_done = k`` is kept
    up to date, so a failure (or kill -9) leaves a ``partial`` row saying
    exactly where to resume. Before re-running a CREATE INDEX CONCURRENTLY that
    failed, an INVALID index it left behind is dropped. Every progress write
    is conditional on the tenant's lock: a statement that released it stops
    the migration before the next one runs.
    """
    started = time.monotonic()
    statements = migration.up.statements
    await reset_session(session)
    rank = await session.fetch_value(
        f"SELECT installed_rank FROM public.{HISTORY_TABLE} WHERE version = $1 AND kind = 'up' "
        "AND NOT success ORDER BY installed_rank DESC LIMIT 1",
        migration.version.text,
    )
    if rank is None:
        rank = await session.fetch_value(
            _INSERT_HISTORY_RANK, migration.version.text, migration.description, KIND_UP,
            migration.filename, migration.checksum, 0, False, resume_from, run_id,
        )
        if rank is None:
            raise LockLost(session.database)
    await _apply_timeouts(session, migration.up, local=False)
    for index in range(resume_from, len(statements)):
        stmt = statements[index]
        if stmt.kind == "IndexStmt":
            await drop_invalid_index(session, stmt)
        await _run_statement(session, stmt)
        await _update_progress(
            session, "statements_done = $2, run_id = $3::uuid", rank, index + 1, run_id)
    elapsed = int((time.monotonic() - started) * 1000)
    await _update_progress(
        session, "success = true, execution_ms = $2, installed_on = now(), "
        "installed_by = current_user", rank, elapsed)
    await reset_session(session)
    return elapsed


async def _update_progress(session: Session, assignments: str, rank: int, *args: Any) -> None:
    """Record a no-transaction migration's progress as tenantctl's own user,
    leaving the session state the migration's statements SET for the next one."""
    async with session.transaction():
        await session.execute(
            "SET LOCAL SESSION AUTHORIZATION DEFAULT; SET LOCAL ROLE NONE; "
            "SET LOCAL statement_timeout = 0")
        status = await session.execute(
            f"UPDATE public.{HISTORY_TABLE} SET {assignments} WHERE installed_rank = $1 "
            f"AND {_LOCK_HELD}", rank, *args)
    if status.rsplit(" ", 1)[-1] != "1":
        raise LockLost(session.database)


async def drop_invalid_index(session: Session, create_index: Statement) -> None:
    """If this CREATE INDEX names an index that exists INVALID, drop it first.

    A failed CREATE INDEX CONCURRENTLY leaves an invalid index behind; a retry
    with IF NOT EXISTS would then "succeed" without a usable index. The name
    comes from the statement's syntax tree (parsed here when the statements came
    from the parse cache, which keeps no trees).
    """
    node = create_index.node if create_index.node is not None else statement_node(create_index)
    name = getattr(node, "idxname", None)
    if not name:
        return
    schema = getattr(getattr(node, "relation", None), "schemaname", None)
    row = await session.fetch_one_as(
        _Relation, "SELECT n.nspname AS schema, c.relname AS name FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = $1 AND NOT i.indisvalid "
        "AND ($2::text IS NULL AND n.nspname = ANY(current_schemas(false)) OR n.nspname = $2)",
        name, schema,
    )
    if row is not None:
        await session.execute(
            f"DROP INDEX CONCURRENTLY IF EXISTS {quote_ident(row.schema)}.{quote_ident(row.name)}"
        )


async def apply_down(session: Session, migration: Migration, run_id: Any) -> int:
    """Run a migration's down script and record a ``down`` history row.

    Transactional downs commit with their row; a no-transaction down runs
    statement by statement and records its row after the last one.
    """
    script = migration.down
    if script is None:
        raise ValueError(f"{migration.filename} has no down script")
    started = time.monotonic()
    if script.transactional:
        await _run_and_record(session, migration, KIND_DOWN, script, run_id)
        return int((time.monotonic() - started) * 1000)
    await reset_session(session)
    for stmt in script.statements:
        await _run_statement(session, stmt)
    await reset_session(session)
    elapsed = int((time.monotonic() - started) * 1000)
    await _insert_history(
        session, migration.version.text, migration.description, KIND_DOWN,
        script.path.name, script.checksum, elapsed, True, len(script.statements), run_id,
    )
    return elapsed


async def record_repair(session: Session, migration: Migration, run_id: Any) -> None:
    """Accept the file's current checksum for an applied version (a deliberate edit)."""
    await _insert_history(
        session, migration.version.text, migration.description, KIND_REPAIR,
        migration.filename, migration.checksum, 0, True, None, run_id,
    )


async def record_baseline(session: Session, migrations: tuple[Migration, ...],
                          seed: tuple[Script, int] | None, run_id: Any) -> None:
    """Adopt a database: create the history table and record ``migrations`` as
    ``baseline`` rows (and the seed of ``seed``'s clnt_id as done), none of them
    run; one transaction, the tenant's lock held."""
    async with session.transaction():
        await ensure_history(session)
        for m in migrations:
            await _insert_history(session, m.version.text, m.description, KIND_BASELINE,
                                  m.filename, m.checksum, 0, True, None, run_id)
        if seed is not None:
            script, clnt_id = seed
            await _insert_history(session, str(clnt_id), f"seed clnt_id {clnt_id} (baseline: "
                                  "recorded, not run)", KIND_SEED, script.path.name,
                                  script.checksum, 0, True, None, run_id)


@dataclass(frozen=True)
class _Contents:
    history: bool
    objects: bool


@dataclass(frozen=True)
class _Relation:
    schema: str
    name: str


class PostgresDriver:
    """The :class:`~tenantctl.drivers.base.Driver` for PostgreSQL: this module's
    functions, as one object the engine and the use cases are handed."""

    connect = staticmethod(connect)
    create_database = staticmethod(create_database)
    drop_database = staticmethod(drop_database)
    existing_databases = staticmethod(existing_databases)
    max_connections = staticmethod(max_connections)
    server_version = staticmethod(server_version)
    available_extensions = staticmethod(available_extensions)
    read_markers = staticmethod(read_markers)
    read_purposes = staticmethod(read_purposes)
    write_marker = staticmethod(write_marker)
    write_purpose = staticmethod(write_purpose)
    acquire_migration_lock = staticmethod(acquire_migration_lock)
    acquire_lock_checking_last = staticmethod(acquire_lock_checking_last)
    database_contents = staticmethod(database_contents)
    open_history = staticmethod(open_history)
    read_history = staticmethod(read_history)
    marks_in_transaction = staticmethod(marks_in_transaction)
    apply_transactional = staticmethod(apply_transactional)
    apply_statements = staticmethod(apply_statements)
    apply_seed = staticmethod(apply_seed)
    apply_down = staticmethod(apply_down)
    record_repair = staticmethod(record_repair)


DRIVER = PostgresDriver()
