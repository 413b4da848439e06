"""PostgreSQL connections: the only module that imports asyncpg.

A :class:`PgSession` is one connection bound to one database, dedicated and
never pooled, so a session advisory lock lives exactly as long as it. Every
driver error is translated here, once, into a
:class:`~tenantctl.errors.DatabaseError` carrying the SQLSTATE (class 08 for a
lost or refused connection), with any credentials redacted. Rows leave as
dataclasses (:meth:`PgSession.fetch_as`), never as asyncpg records.
"""

from __future__ import annotations

import asyncio
import math
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import asyncpg

from ..errors import DatabaseError
from ..redact import redact

T = TypeVar("T")
R = TypeVar("R")


def translate(exc: BaseException, context: str = "") -> DatabaseError:
    """Map a driver/OS error to DatabaseError, keeping the SQLSTATE."""
    prefix = f"{context}: " if context else ""
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None)
        detail = getattr(exc, "detail", None)
        hint = getattr(exc, "hint", None)
        # the server's primary message alone: detail and hint travel in their own fields
        message = getattr(exc, "message", None) or str(exc)
        raw_position = getattr(exc, "position", None)
        position = int(raw_position) if raw_position and str(raw_position).isdigit() else None
        return DatabaseError(
            redact(f"{prefix}{message}"), sqlstate=state,
            detail=redact(detail) if detail else None, hint=redact(hint) if hint else None,
            position=position)
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncio.TimeoutError, ConnectionError)):
        # No server-side code for a lost/refused connection: report class 08.
        text = str(exc) or type(exc).__name__
        return DatabaseError(redact(f"{prefix}connection lost or refused: {text}"), sqlstate="08006")
    return DatabaseError(redact(f"{prefix}{type(exc).__name__}: {exc}"), sqlstate=None)


_TRANSLATABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


class PgSession:
    """One connection to one database (the ``Session`` protocol). Every call
    translates driver errors."""

    def __init__(self, conn: asyncpg.Connection, database: str) -> None:
        self._conn = conn
        self.database = database

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return await fn(*args)
        except _TRANSLATABLE as exc:
            raise translate(exc, self.database) from exc

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._call(self._conn.execute, sql, *args)

    async def fetch_as(self, row: type[R], sql: str, *args: Any) -> list[R]:
        records = await self._call(self._conn.fetch, sql, *args)
        return [_make(row, r) for r in records]

    async def fetch_one_as(self, row: type[R], sql: str, *args: Any) -> R | None:
        record = await self._call(self._conn.fetchrow, sql, *args)
        return None if record is None else _make(row, record)

    async def fetch_value(self, sql: str, *args: Any) -> Any:
        return await self._call(self._conn.fetchval, sql, *args)

    async def executemany(self, sql: str, args: list[tuple[Any, ...]]) -> None:
        await self._call(self._conn.executemany, sql, args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        try:
            async with self._conn.transaction():
                yield
        except _TRANSLATABLE as exc:
            raise translate(exc, self.database) from exc

    async def copy_rows_out(
        self, schema: str, table: str, columns: Sequence[str],
        sink: Callable[[bytes], Awaitable[None]], *, where_column: str | None = None,
        equals: int | None = None,
    ) -> int:
        cols = ", ".join(quote_ident(c) for c in columns)
        query = f"SELECT {cols} FROM {quote_ident(schema)}.{quote_ident(table)}"
        args: list[Any] = []
        if where_column is not None:
            query += f" WHERE {quote_ident(where_column)} = $1"
            args.append(equals)
        try:
            status = await self._conn.copy_from_query(query, *args, output=sink, format="text")
        except _TRANSLATABLE as exc:
            raise translate(exc, self.database) from exc
        return _copied(status)

    async def copy_rows_in(self, schema: str, table: str, columns: Sequence[str],
                           source: AsyncIterable[bytes]) -> int:
        try:
            status = await self._conn.copy_to_table(
                table, source=source, columns=list(columns), schema_name=schema, format="text")
        except _TRANSLATABLE as exc:
            raise translate(exc, self.database) from exc
        return _copied(status)

    @property
    def backend_pid(self) -> int:
        return int(self._conn.get_server_pid())

    @property
    def closed(self) -> bool:
        return bool(self._conn.is_closed())

    @property
    def superuser(self) -> bool:
        return bool(self._conn.get_settings().is_superuser == "on")

    async def close(self) -> None:
        if self._conn.is_closed():
            return
        try:
            await asyncio.wait_for(self._conn.close(), timeout=5)
        except Exception:  # closing a broken connection: nothing left to save
            self._conn.terminate()

    async def __aenter__(self) -> PgSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _copied(status: str) -> int:
    """The row count of a ``COPY n`` command status."""
    return int(status.rsplit(" ", 1)[-1])


def _make(row: type[R], record: Any) -> R:
    """A dataclass from a record, by column name (extra columns are an error)."""
    return row(**dict(record.items()))


async def connect(
    dsn: str,
    database: str | None = None,
    *,
    timeout: float = 10.0,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
) -> PgSession:
    """Open a dedicated connection; session timeouts ride on the startup packet."""
    settings = {"application_name": "tenantctl"}
    if lock_timeout is not None:
        settings["lock_timeout"] = milliseconds(lock_timeout)
    if statement_timeout is not None:
        settings["statement_timeout"] = milliseconds(statement_timeout)
    try:
        conn = await asyncpg.connect(
            url_dsn(dsn), database=database, timeout=timeout, server_settings=settings,
            statement_cache_size=0,
        )
    except _TRANSLATABLE as exc:
        raise translate(exc, database or "server") from exc
    except ValueError as exc:  # asyncpg rejects a malformed DSN with ValueError
        raise DatabaseError(redact(f"invalid DSN: {exc}"), sqlstate=None) from None
    return PgSession(conn, database or "server")


def milliseconds(seconds: float) -> str:
    """A timeout setting: whole milliseconds, rounded up (0 alone means none)."""
    return f"{math.ceil(seconds * 1000)}ms"


def url_dsn(dsn: str) -> str:
    """A libpq ``key=value`` connection string as the URL asyncpg reads; URLs as they are.

    Values may be single-quoted, with ``\\'`` and ``\\\\`` escapes (libpq's rules);
    every key travels in the query string, where asyncpg reads host, port, user,
    password, dbname, sslmode and the rest.
    """
    if "://" in dsn or "=" not in dsn:
        return dsn
    pairs: list[tuple[str, str]] = []
    i, n = 0, len(dsn)
    while i < n:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            break
        key_start = i
        while i < n and dsn[i] not in "= \t\r\n":
            i += 1
        key = dsn[key_start:i]
        while i < n and dsn[i].isspace():
            i += 1
        i += 1  # the '=' (check_dsn in config refused anything else at load time)
        while i < n and dsn[i].isspace():
            i += 1
        value: list[str] = []
        quoted = i < n and dsn[i] == "'"
        i += 1 if quoted else 0
        while i < n:
            c = dsn[i]
            if c == "\\" and i + 1 < n:
                value.append(dsn[i + 1])
                i += 2
                continue
            if (quoted and c == "'") or (not quoted and c.isspace()):
                i += 1
                break
            value.append(c)
            i += 1
        pairs.append((key, "".join(value)))
    return "postgresql://?" + urllib.parse.urlencode(pairs)


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident does."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A string constant for SQL text that is read back as exactly ``value``.

    An escape string (``E'...'``) with backslashes and quotes doubled: its
    meaning does not depend on ``standard_conforming_strings``, which a
    database or role may switch off (a plain ``'...'`` literal would then read
    a backslash as an escape). PostgreSQL text cannot hold NUL.
    """
    if "\x00" in value:
        raise ValueError("string constant contains NUL")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
