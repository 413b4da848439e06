"""The driver seam: what tenantctl needs from a database server, as Protocols.

Everything that touches a database goes through a :class:`Driver` and the
:class:`Session` objects it opens. ``tenantctl.postgres`` is the real driver
(the only module that imports asyncpg); ``tenantctl.fake`` is an in-memory one
for the engine's simulation mode. Both pass one contract suite
(``tests/test_driver_contract.py``), in the spirit of golang-migrate's
``database/testing``: a new driver (a Citus-aware one, a copy/dump step for
tenant moves) is done when it passes that suite.

Rows cross the boundary as dataclasses: ``Session.fetch_as(Row, sql)`` maps
each result column onto the field of the same name, so no driver record type
leaks into the rest of the code.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from ..migrations import Migration, Script
    from ..plan import HistoryRow
    from .pg_version import CloneStrategy, ServerVersion

R = TypeVar("R")


class Session(Protocol):
    """One connection to one database; every error is a ``DatabaseError``.

    ``async with`` closes it. Session-level advisory locks live exactly as
    long as the session, so a session is never pooled or shared.
    """

    database: str

    @property
    def superuser(self) -> bool:
        """The session's role is a superuser (as the server reported at login)."""
        ...

    async def execute(self, sql: str, *args: Any) -> str:
        """Run SQL; returns the command status (``INSERT 0 1``). Without
        arguments several statements may be sent at once."""
        ...

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        """Run one statement once per argument tuple, pipelined, atomically."""
        ...

    async def fetch_as(self, row: type[R], sql: str, *args: Any) -> list[R]:
        """Every result row as ``row(**columns)``."""
        ...

    async def fetch_one_as(self, row: type[R], sql: str, *args: Any) -> R | None:
        """The first result row as ``row(**columns)``, or None."""
        ...

    async def fetch_value(self, sql: str, *args: Any) -> Any:
        """The first column of the first row (None when there is none)."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[None]:
        """A transaction (a savepoint when one is open); rolled back on an exception."""
        ...

    async def copy_rows_out(
        self, schema: str, table: str, columns: Sequence[str],
        sink: Callable[[bytes], Awaitable[None]], *, where_column: str | None = None,
        equals: int | None = None,
    ) -> int:
        """Stream ``columns`` of a table (only the rows whose ``where_column`` equals
        ``equals``, when given) to ``sink`` in COPY text format; the row count."""
        ...

    async def copy_rows_in(self, schema: str, table: str, columns: Sequence[str],
                           source: AsyncIterable[bytes]) -> int:
        """Load COPY text format from ``source`` into ``columns`` of a table; the row count."""
        ...

    @property
    def closed(self) -> bool: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Session: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Driver(Protocol):
    """Opens sessions and performs tenantctl's own operations on them.

    The engine and the use cases call only these; per-tenant operations
    assume the caller holds the tenant's migration lock
    (:meth:`acquire_migration_lock`), and every history write fails with
    ``LockLost`` if the lock was released in the meantime. Every ``apply_*``
    leaves the session in the state it opened with (settings, role, temporary
    tables, prepared statements a script made are gone; the lock stays held),
    so nothing that follows runs in the state a script left.
    """

    async def connect(
        self, dsn: str, database: str | None = None, *, timeout: float = 10.0,
        lock_timeout: float | None = None, statement_timeout: float | None = None,
    ) -> Session:
        """A dedicated session on ``database`` (the server's maintenance
        database when None). A missing database is ``DatabaseError`` 3D000."""
        ...

    # ---------------------------------------------------------------- server level
    async def create_database(self, admin: Session, name: str, template: str | None = None, *,
                              strategy: CloneStrategy | None = None) -> bool:
        """True when created; False when it existed (also after losing a race).
        ``strategy``: how a template is copied (None: the server's default)."""
        ...

    async def server_version(self, admin: Session) -> ServerVersion:
        """The server's ``server_version_num``."""
        ...

    async def drop_database(self, admin: Session, name: str) -> None: ...

    async def existing_databases(self, admin: Session, names: list[str]) -> set[str]: ...

    async def max_connections(self, admin: Session) -> int:
        """Connections the server allows to ordinary users."""
        ...

    async def available_extensions(self, admin: Session) -> set[str]:
        """Extensions the server's installation can create."""
        ...

    async def read_markers(self, admin: Session) -> dict[str, str]:
        """database -> schema marker (``tenantctl.schema``), for the whole server."""
        ...

    async def read_purposes(self, admin: Session) -> dict[str, str]:
        """database -> purpose tag (``tenantctl.purpose``), for the whole server."""
        ...

    async def write_marker(self, session: Session, marker: str | None,
                           database: str | None = None) -> bool:
        """Set (None: clear) a database's marker; False when not permitted."""
        ...

    async def write_purpose(self, session: Session, purpose: str,
                            database: str | None = None, *, marker: str | None = None) -> bool:
        """Tag a database with its purpose (and its schema marker, when given, in the
        same commit); False when not permitted."""
        ...

    # ---------------------------------------------------------------- tenant level
    async def acquire_migration_lock(self, session: Session, wait_s: float, *,
                                     key: int | None = None) -> float:
        """Poll the lock (never block) for up to ``wait_s``; seconds waited, or
        ``LockNotAcquired``."""
        ...

    async def acquire_lock_checking_last(self, session: Session, wait_s: float,
                                         version: str) -> bool:
        """:meth:`acquire_migration_lock`, then (in the same round trip where the
        driver can): True when the history's last row is ``version``'s successful
        ``up`` row, i.e. nothing was recorded since a marker at ``version``."""
        ...

    async def database_contents(self, session: Session) -> tuple[bool, bool]:
        """(holds tenantctl's history, holds other relations)."""
        ...

    async def open_history(self, session: Session) -> list[HistoryRow]:
        """The history, creating its table on first use (lock held)."""
        ...

    async def read_history(self, session: Session, *,
                           missing_ok: bool = True) -> list[HistoryRow]: ...

    def marks_in_transaction(self, session: Session) -> bool:
        """Can this session always set its database's schema marker? Then the marker
        may ride in a migration's transaction (``apply_transactional(marker=...)``),
        where a refusal would fail the migration."""
        ...

    async def apply_transactional(self, session: Session, migration: Migration,
                                  run_id: str | None, *, marker: str | None = None) -> int:
        """The migration and its history row in one transaction; milliseconds taken.
        With ``marker``, the database's schema marker is set in that transaction too
        (only where :meth:`marks_in_transaction` says it cannot be refused)."""
        ...

    async def apply_statements(self, session: Session, migration: Migration,
                               run_id: str | None, resume_from: int) -> int:
        """A no-transaction migration, statement by statement from ``resume_from``,
        its progress recorded after each; milliseconds taken."""
        ...

    async def apply_seed(self, session: Session, script: Script, clnt_id: int, name: str,
                         sites: tuple[int, ...], run_id: str | None) -> None: ...

    async def apply_down(self, session: Session, migration: Migration,
                         run_id: str | None) -> int: ...

    async def record_repair(self, session: Session, migration: Migration,
                            run_id: str | None) -> None: ...
