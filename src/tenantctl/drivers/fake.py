"""An in-memory :class:`~tenantctl.drivers.base.Driver`, for the engine alone.

It implements the functions the engine calls, with the same contract: one
history per database, an exclusive per-database migration lock that is polled,
atomic transactional migrations, statement-by-statement no-transaction ones,
"already exists" on CREATE DATABASE, schema markers. The contract tests run the
same scenarios against it and against real PostgreSQL so it stays honest; the
benchmark uses it to measure the engine alone at 100,000 tenants.

Faults are injected by the caller (``FakeServer.fail``) or by SQL the fake
recognises: a script containing ``1/0`` fails with 22012, like PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

from ..errors import DatabaseError, LockNotAcquired
from ..migrations import Migration, Script
from ..plan import KIND_DOWN, KIND_REPAIR, KIND_SEED, KIND_UP, HistoryRow
from .base import Session
from .pg_version import CloneStrategy, ServerVersion

R = TypeVar("R")


@dataclass
class FakeDatabase:
    history: list[HistoryRow] = field(default_factory=list)
    has_history: bool = False
    lock_owner: int | None = None
    marker: str | None = None
    purpose: str | None = None
    rank: int = 0
    # (schema, table) -> rows, each a column -> field in COPY text format (\\N is NULL);
    # a table comes into being with its first COPY in
    tables: dict[tuple[str, str], list[dict[str, str]]] = field(default_factory=dict)

    def add(self, version: str, description: str, kind: str, checksum: str, success: bool,
            done: int | None = None) -> HistoryRow:
        self.rank += 1
        row = HistoryRow(self.rank, version, description, kind, checksum, success, done)
        self.history.append(row)
        return row


@dataclass
class FakeServer:
    """Databases by name; ``fail[(database, version)] = sqlstate`` injects errors
    (a transient SQLSTATE fails once, then the retry succeeds)."""

    databases: dict[str, FakeDatabase] = field(default_factory=dict)
    fail: dict[tuple[str, str], str] = field(default_factory=dict)
    latency_s: float = 0.0
    extensions: frozenset[str] = frozenset({"plpgsql", "pgcrypto", "uuid-ossp", "citext"})
    connections: int = 0
    peak_connections: int = 0
    version_num: int = 180000  # server_version_num it reports
    superuser: bool = True  # the role its sessions log in as


class FakeSession:
    _ids = 0

    def __init__(self, server: FakeServer, database: str) -> None:
        FakeSession._ids += 1
        self.id = FakeSession._ids
        self.server = server
        self.database = database
        self.closed = False

    @property
    def superuser(self) -> bool:
        return self.server.superuser

    @property
    def db(self) -> FakeDatabase:
        return self.server.databases[self.database]

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.connections -= 1
            db = self.server.databases.get(self.database)
            if db is not None and db.lock_owner == self.id:
                db.lock_owner = None  # session locks die with the connection

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # The fake runs no SQL: tenantctl's operations are the driver's methods.
    async def execute(self, sql: str, *args: Any) -> str:
        raise _no_sql()

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        raise _no_sql()

    async def fetch_as(self, row: type[R], sql: str, *args: Any) -> list[R]:
        raise _no_sql()

    async def fetch_one_as(self, row: type[R], sql: str, *args: Any) -> R | None:
        raise _no_sql()

    async def fetch_value(self, sql: str, *args: Any) -> Any:
        raise _no_sql()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def copy_rows_out(
        self, schema: str, table: str, columns: Sequence[str],
        sink: Callable[[bytes], Awaitable[None]], *, where_column: str | None = None,
        equals: int | None = None,
    ) -> int:
        rows = self.db.tables.get((schema, table))
        if rows is None:
            raise DatabaseError(f'relation "{schema}.{table}" does not exist', sqlstate="42P01")
        count = 0
        for row in rows:
            if where_column is not None and row.get(where_column) != str(equals):
                continue
            await sink(("\t".join(row.get(c, "\\N") for c in columns) + "\n").encode())
            count += 1
        return count

    async def copy_rows_in(self, schema: str, table: str, columns: Sequence[str],
                           source: AsyncIterable[bytes]) -> int:
        data = b"".join([chunk async for chunk in source]).decode()
        rows = self.db.tables.setdefault((schema, table), [])
        lines = [line for line in data.split("\n") if line]
        for line in lines:
            fields = line.split("\t")
            if len(fields) != len(columns):
                raise DatabaseError("extra or missing data for a column", sqlstate="22P04")
            rows.append(dict(zip(columns, fields, strict=True)))
        return len(lines)


def _no_sql() -> DatabaseError:
    return DatabaseError("the fake driver runs no SQL", sqlstate="0A000")


def _fake(session: Session) -> FakeSession:
    assert isinstance(session, FakeSession), "a FakeDriver only works with its own sessions"
    return session


class FakeDriver:
    """An in-memory :class:`~tenantctl.drivers.base.Driver`."""

    def __init__(self, server: FakeServer | None = None) -> None:
        self.server = server or FakeServer()

    async def _tick(self) -> None:
        if self.server.latency_s:
            await asyncio.sleep(self.server.latency_s)

    async def connect(self, dsn: str, database: str | None = None, *, timeout: float = 10.0,
                      lock_timeout: float | None = None,
                      statement_timeout: float | None = None) -> FakeSession:
        await self._tick()
        name = database or "postgres"
        if name != "postgres" and name not in self.server.databases:
            raise DatabaseError(f'database "{name}" does not exist', sqlstate="3D000")
        self.server.connections += 1
        self.server.peak_connections = max(self.server.peak_connections, self.server.connections)
        return FakeSession(self.server, name)

    async def create_database(self, admin: Session, name: str, template: str | None = None, *,
                              strategy: CloneStrategy | None = None) -> bool:
        await self._tick()
        if name in self.server.databases:
            return False
        if template is not None:
            source = self.server.databases.get(template)
            if source is None:
                raise DatabaseError(f'template database "{template}" does not exist', sqlstate="3D000")
            copy = FakeDatabase(list(source.history), source.has_history, rank=source.rank,
                                tables={k: [dict(r) for r in v] for k, v in source.tables.items()})
            self.server.databases[name] = copy
        else:
            self.server.databases[name] = FakeDatabase()
        return True

    async def acquire_migration_lock(self, session: Session, wait_s: float, *,
                                     key: int | None = None) -> float:
        start = time.monotonic()
        while _fake(session).db.lock_owner not in (None, _fake(session).id):
            if time.monotonic() - start >= wait_s:
                raise LockNotAcquired(session.database, wait_s)
            await asyncio.sleep(0.01)
        _fake(session).db.lock_owner = _fake(session).id
        return time.monotonic() - start

    async def acquire_lock_checking_last(self, session: Session, wait_s: float,
                                         version: str) -> bool:
        await self.acquire_migration_lock(session, wait_s)
        history = _fake(session).db.history if _fake(session).db.has_history else []
        if not history:
            return False
        last = max(history, key=lambda row: row.rank)
        return last.kind == KIND_UP and last.success and last.version == version

    async def open_history(self, session: Session) -> list[HistoryRow]:
        await self._tick()
        _fake(session).db.has_history = True
        return list(_fake(session).db.history)

    async def read_history(self, session: Session, *, missing_ok: bool = True) -> list[HistoryRow]:
        await self._tick()
        if not _fake(session).db.has_history:
            if missing_ok:
                return []
            raise DatabaseError("relation tenantctl_schema_history does not exist", sqlstate="42P01")
        return list(_fake(session).db.history)

    def _maybe_fail(self, session: Session, migration: Migration) -> None:
        state = self.server.fail.get((session.database, migration.version.text))
        if state is None and "1/0" in migration.up.sql.replace(" ", ""):
            state = "22012"
        if state is None:
            return
        error = DatabaseError(f"injected failure {state}", sqlstate=state)
        if error.transient:
            del self.server.fail[(session.database, migration.version.text)]
        raise error

    def marks_in_transaction(self, session: Session) -> bool:
        return session.superuser

    async def apply_transactional(self, session: Session, migration: Migration, run_id: Any,
                                  *, marker: str | None = None) -> int:
        await self._tick()
        self._maybe_fail(session, migration)
        db = _fake(session).db
        db.add(migration.version.text, migration.description, KIND_UP, migration.checksum, True)
        if marker is not None:
            db.marker = marker
        return 0

    async def apply_statements(self, session: Session, migration: Migration, run_id: Any,
                               resume_from: int) -> int:
        """As PostgreSQL's: a ``success = false`` row first (or the partial one left
        by an earlier attempt), completed when every statement ran; an injected
        failure leaves it partial, at the statement whose SQL divides by zero."""
        await self._tick()
        db = _fake(session).db
        statements = migration.up.statements
        index = next((i for i, row in enumerate(db.history) if row.version == migration.version.text
                      and row.kind == KIND_UP and not row.success), None)
        if index is None:
            db.add(migration.version.text, migration.description, KIND_UP, migration.checksum,
                   False, resume_from)
            index = len(db.history) - 1
        try:
            self._maybe_fail(session, migration)
        except DatabaseError:
            failing = next((i for i, st in enumerate(statements)
                            if "1/0" in st.sql.replace(" ", "")), resume_from)
            db.history[index] = replace(db.history[index], statements_done=max(resume_from, failing))
            raise
        db.history[index] = replace(db.history[index], success=True, statements_done=len(statements))
        return 0

    async def apply_seed(self, session: Session, script: Script, clnt_id: int, name: str,
                         sites: tuple[int, ...], run_id: Any) -> None:
        await self._tick()
        _fake(session).db.add(str(clnt_id), f"seed clnt_id {clnt_id}", KIND_SEED, script.checksum, True)

    async def apply_down(self, session: Session, migration: Migration, run_id: Any) -> int:
        await self._tick()
        assert migration.down is not None
        _fake(session).db.add(migration.version.text, migration.description, KIND_DOWN,
                       migration.down.checksum, True)
        return 0

    async def write_purpose(self, session: Session, purpose: str,
                            database: str | None = None, *, marker: str | None = None) -> bool:
        db = self.server.databases[database or session.database]
        db.purpose = purpose
        if marker is not None:
            db.marker = marker
        return True

    async def database_contents(self, session: Session) -> tuple[bool, bool]:
        return _fake(session).db.has_history, False

    async def record_repair(self, session: Session, migration: Migration, run_id: Any) -> None:
        _fake(session).db.add(migration.version.text, migration.description, KIND_REPAIR,
                       migration.checksum, True)

    async def write_marker(self, session: Session, marker: str | None,
                           database: str | None = None) -> bool:
        self.server.databases[database or session.database].marker = marker
        return True

    async def drop_database(self, admin: Session, name: str) -> None:
        self.server.databases.pop(name, None)

    async def existing_databases(self, admin: Session, names: list[str]) -> set[str]:
        return {n for n in names if n in self.server.databases}

    async def server_version(self, admin: Session) -> ServerVersion:
        return ServerVersion(self.server.version_num)

    async def max_connections(self, admin: Session) -> int:
        return 97  # PostgreSQL's default of 100, less the 3 reserved for superusers

    async def available_extensions(self, admin: Session) -> set[str]:
        return set(self.server.extensions)

    async def read_markers(self, admin: Session) -> dict[str, str]:
        return self.markers()

    async def read_purposes(self, admin: Session) -> dict[str, str]:
        return {n: d.purpose for n, d in self.server.databases.items() if d.purpose}

    def markers(self) -> dict[str, str]:
        return {n: d.marker for n, d in self.server.databases.items() if d.marker}
