"""PostgreSQL, server level: databases as a whole, their settings, the connection cap.

Part of the PostgreSQL driver (:mod:`tenantctl.drivers.postgres`); every
function takes an admin session on the server's maintenance database, or on
the database it talks about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import DatabaseError
from ..plan import MARKER_SETTING
from .base import Session
from .pg_session import quote_ident
from .pg_version import CloneStrategy, ServerVersion, create_database_sql, drop_database_sql


async def create_database(admin: Session, name: str, template: str | None = None, *,
                          strategy: CloneStrategy | None = None) -> bool:
    """CREATE DATABASE, alone in its own execute(). True if created, False if it existed.

    ``strategy`` (resolved for the server by :func:`pg_version.clone_strategy`)
    says how a template is copied; None leaves it to the server."""
    sql = create_database_sql(quote_ident(name), quote_ident(template) if template else None,
                              strategy)
    try:
        await admin.execute(sql)
    except DatabaseError as exc:
        if exc.sqlstate == "42P04":
            return False
        if exc.sqlstate == "23505" and "pg_database_datname_index" in str(exc) + str(exc.detail):
            return False  # lost a race with a concurrent CREATE of the same name
        raise
    return True


async def drop_database(admin: Session, name: str) -> None:
    await admin.execute(drop_database_sql(quote_ident(name)))


async def server_version(admin: Session) -> ServerVersion:
    """The server's version, read once per server at the start of a run."""
    return ServerVersion(int(await admin.fetch_value(
        "SELECT current_setting('server_version_num')::int")))


async def existing_databases(admin: Session, names: list[str]) -> set[str]:
    rows = await admin.fetch_as(
        _Name, "SELECT datname AS name FROM pg_database WHERE datname = ANY($1::text[])", names
    )
    return {r.name for r in rows}


async def read_markers(admin: Session) -> dict[str, str]:
    """Every database's tenantctl schema marker on this server, in one query."""
    return await read_setting(admin, MARKER_SETTING)


async def read_purposes(admin: Session) -> dict[str, str]:
    """Every database's purpose tag (``tenant:7``, ``shared``, ``template``, ``control``,
    ``scratch``)."""
    return await read_setting(admin, PURPOSE_SETTING)


async def read_setting(admin: Session, name: str) -> dict[str, str]:
    """A per-database setting of every database on this server, in one query."""
    rows = await admin.fetch_as(
        _Setting, "SELECT d.datname AS database, substr(c, length($1) + 2) AS value "
        "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, "
        "unnest(s.setconfig) AS c WHERE s.setrole = 0 AND c LIKE $1 || '=%'",
        name,
    )
    return {r.database: r.value for r in rows}


# What tenantctl created a database for, kept in the database's own settings
# (a shared catalog, read for a whole server in one query). A database that
# carries another purpose, or none and holds someone else's objects, is never
# migrated, seeded or dropped by tenantctl.
PURPOSE_SETTING = "tenantctl.purpose"
_PURPOSE_SAFE = re.compile(r"(?:(?:tenant|moving|moved):[0-9]{1,5}|shared|template|control|scratch)")
_MARKER_SAFE = re.compile(r"[0-9a-z.:_-]{1,200}")


async def write_purpose(session: Session, purpose: str, database: str | None = None, *,
                        marker: str | None = None) -> bool:
    """Tag a database with its purpose (and, given one, its schema marker, in the
    same transaction: one commit per new tenant); False when not permitted."""
    if not _PURPOSE_SAFE.fullmatch(purpose):
        raise ValueError(f"unexpected purpose {purpose!r}")
    target = quote_ident(database or session.database)
    sql = f"ALTER DATABASE {target} SET {PURPOSE_SETTING} = '{purpose}'"
    if marker is not None:
        if not _MARKER_SAFE.fullmatch(marker):
            raise ValueError(f"unexpected marker {marker!r}")
        sql += f"; ALTER DATABASE {target} SET {MARKER_SETTING} = '{marker}'"
    return await _alter_database(session, sql)


async def write_marker(session: Session, marker: str | None, database: str | None = None) -> bool:
    """Set (or clear, with None) the marker of the connected database.

    ALTER DATABASE takes no bind parameters; the marker is built by tenantctl
    from version digits and hex and checked against a strict pattern before it
    is quoted. ``database`` names another database than the connected one (the
    setting lives in a shared catalog). Returns False when not permitted (not a
    superuser, nor the owner with SET on the parameter, which PostgreSQL 15+ asks
    of a placeholder setting): that tenant simply gets a full check on every run.
    """
    return await _alter_database(session, marker_sql(database or session.database, marker))


def marker_sql(database: str, marker: str | None) -> str:
    """ALTER DATABASE setting (None: resetting) ``database``'s schema marker."""
    target = quote_ident(database)
    if marker is None:
        return f"ALTER DATABASE {target} RESET {MARKER_SETTING}"
    if not _MARKER_SAFE.fullmatch(marker):
        raise ValueError(f"unexpected marker {marker!r}")
    return f"ALTER DATABASE {target} SET {MARKER_SETTING} = '{marker}'"


async def _alter_database(session: Session, sql: str) -> bool:
    """Run ALTER DATABASE; False when not permitted (tenantctl is not the owner)."""
    try:
        await session.execute(sql)
    except DatabaseError as exc:
        if exc.sqlstate == "42501":
            return False
        raise
    return True


async def available_extensions(admin: Session) -> set[str]:
    """The extensions this server's installation can create (pg_available_extensions)."""
    names = await admin.fetch_value("SELECT array_agg(name) FROM pg_available_extensions")
    return set(names or ())


async def max_connections(admin: Session) -> int:
    value = await admin.fetch_value(
        "SELECT current_setting('max_connections')::int "
        "- current_setting('superuser_reserved_connections')::int"
    )
    return int(value)




@dataclass(frozen=True)
class _Name:
    name: str


@dataclass(frozen=True)
class _Setting:
    database: str
    value: str
