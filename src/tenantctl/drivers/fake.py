"""An in-memory stand-in for the PostgreSQL driver (the ``postgres`` module).

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
from dataclasses import dataclass, field
from typing import Any

from ..errors import DatabaseError, LockNotAcquired
from ..migrations import Migration, Script
from ..plan import KIND_DOWN, KIND_REPAIR, KIND_SEED, KIND_UP, HistoryRow


@dataclass
class FakeDatabase:
    history: list[HistoryRow] = field(default_factory=list)
    has_history: bool = False
    lock_owner: int | None = None
    marker: str | None = None
    purpose: str | None = None
    rank: int = 0

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
    connections: int = 0
    peak_connections: int = 0


class FakeSession:
    _ids = 0

    def __init__(self, server: FakeServer, database: str) -> None:
        FakeSession._ids += 1
        self.id = FakeSession._ids
        self.server = server
        self.database = database
        self.closed = False

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


class FakeDriver:
    """Drop-in for the ``postgres`` module inside the engine."""

    def __init__(self, server: FakeServer | None = None) -> None:
        self.server = server or FakeServer()

    async def _tick(self) -> None:
        if self.server.latency_s:
            await asyncio.sleep(self.server.latency_s)

    async def connect(self, dsn: str, database: str | None = None, **_: Any) -> FakeSession:
        await self._tick()
        name = database or "postgres"
        if name != "postgres" and name not in self.server.databases:
            raise DatabaseError(f'database "{name}" does not exist', sqlstate="3D000")
        self.server.connections += 1
        self.server.peak_connections = max(self.server.peak_connections, self.server.connections)
        return FakeSession(self.server, name)

    async def create_database(self, admin: FakeSession, name: str, template: str | None = None) -> bool:
        await self._tick()
        if name in self.server.databases:
            return False
        if template is not None:
            source = self.server.databases.get(template)
            if source is None:
                raise DatabaseError(f'template database "{template}" does not exist', sqlstate="3D000")
            copy = FakeDatabase(list(source.history), source.has_history, None, None, source.rank)
            self.server.databases[name] = copy
        else:
            self.server.databases[name] = FakeDatabase()
        return True

    async def acquire_migration_lock(self, session: FakeSession, wait_s: float, **_: Any) -> float:
        start = time.monotonic()
        while session.db.lock_owner not in (None, session.id):
            if time.monotonic() - start >= wait_s:
                raise LockNotAcquired(session.database, wait_s)
            await asyncio.sleep(0.01)
        session.db.lock_owner = session.id
        return time.monotonic() - start

    async def open_history(self, session: FakeSession) -> list[HistoryRow]:
        await self._tick()
        session.db.has_history = True
        return list(session.db.history)

    async def read_history(self, session: FakeSession, *, missing_ok: bool = True) -> list[HistoryRow]:
        await self._tick()
        if not session.db.has_history:
            if missing_ok:
                return []
            raise DatabaseError("relation tenantctl_schema_history does not exist", sqlstate="42P01")
        return list(session.db.history)

    def _maybe_fail(self, session: FakeSession, migration: Migration) -> None:
        state = self.server.fail.get((session.database, migration.version.text))
        if state is None and "1/0" in migration.up.sql.replace(" ", ""):
            state = "22012"
        if state is None:
            return
        error = DatabaseError(f"injected failure {state}", sqlstate=state)
        if error.transient:
            del self.server.fail[(session.database, migration.version.text)]
        raise error

    async def apply_transactional(self, session: FakeSession, migration: Migration, run_id: Any) -> int:
        await self._tick()
        self._maybe_fail(session, migration)
        session.db.add(migration.version.text, migration.description, KIND_UP,
                       migration.checksum, True)
        return 0

    async def apply_statements(self, session: FakeSession, migration: Migration, run_id: Any,
                               resume_from: int) -> int:
        await self._tick()
        self._maybe_fail(session, migration)
        session.db.add(migration.version.text, migration.description, KIND_UP,
                       migration.checksum, True, len(migration.up.statements))
        return 0

    async def apply_seed(self, session: FakeSession, script: Script, clnt_id: int, name: str,
                         sites: tuple[int, ...], run_id: Any) -> None:
        await self._tick()
        session.db.add(str(clnt_id), f"seed clnt_id {clnt_id}", KIND_SEED, script.checksum, True)

    async def apply_down(self, session: FakeSession, migration: Migration, run_id: Any) -> int:
        await self._tick()
        assert migration.down is not None
        session.db.add(migration.version.text, migration.description, KIND_DOWN,
                       migration.down.checksum, True)
        return 0

    async def write_purpose(self, session: FakeSession, purpose: str,
                            database: str | None = None) -> bool:
        self.server.databases[database or session.database].purpose = purpose
        return True

    async def database_contents(self, session: FakeSession) -> tuple[bool, bool]:
        return session.db.has_history, False

    async def reset_session(self, session: FakeSession) -> None:
        await self._tick()

    async def record_repair(self, session: FakeSession, migration: Migration, run_id: Any) -> None:
        session.db.add(migration.version.text, migration.description, KIND_REPAIR,
                       migration.checksum, True)

    async def write_marker(self, session: FakeSession, marker: str | None,
                           database: str | None = None) -> bool:
        self.server.databases[database or session.database].marker = marker
        return True

    def markers(self) -> dict[str, str]:
        return {n: d.marker for n, d in self.server.databases.items() if d.marker}
