"""The live probe of check-isolation, and the findings it shares with the catalog audit.

The probe logs in as the app role with two real tenants, A and B. With no
tenant set, with the tenant setting empty and with A set, it counts what it can
read of every tenant table, then tries to update, delete, move and insert B's
rows; all of it in one transaction that is rolled back, each write in a
savepoint rolled back too. Then, in a read-only transaction also rolled back,
it calls the SECURITY DEFINER functions it can call without guessing
arguments, each call bounded and in a savepoint rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .drivers.base import Driver, Session
from .drivers.postgres import DRIVER, quote_ident
from .errors import DatabaseError
from .isolation import TENANT_SETTING, _Rel
from .rollback import rolled_back


@dataclass(frozen=True)
class IsolationFinding:
    check: str  # stable id, e.g. "rls-not-forced", "probe-cross-tenant-read"
    table: str | None  # schema.name when the finding is about one relation
    message: str
    severity: Literal["error", "warning"] = "error"  # warnings are reported, not failures

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "table": self.table, "message": self.message,
                "severity": self.severity}


class Findings(list[IsolationFinding]):
    def add(self, check: str, table: str | None, message: str,
            severity: Literal["error", "warning"] = "error") -> None:
        self.append(IsolationFinding(check, table, message, severity))


@dataclass(frozen=True)
class Definer:
    """A SECURITY DEFINER function, as the catalog audit found it."""

    sig: str  # regprocedure text, e.g. ordr.peek()
    call: str  # quoted schema.name, to call it
    owner: str
    callable: bool  # the app role has EXECUTE on it and USAGE on its schema
    tenant_column: bool  # its rows have the tenant column
    skip: str | None  # why the probe does not call it; None: it may


@dataclass(frozen=True)
class _Who:
    u: str
    bypass: bool


@dataclass(frozen=True)
class _CallRows:
    n: int  # rows the function returned
    other: int | None  # of them, rows of another tenant (None: its rows have no tenant column)


async def probe(out: Findings, dsn: str, database: str, tables: list[_Rel], tenants: tuple[int, int],
                definers: list[Definer], *, tenant_column: str, definer_timeout: float,
                driver: Driver | None = None) -> None:
    """Probe ``database`` live, logged in with ``dsn`` (the app role); nothing it does is kept.

    ``tables`` are the tables with ``tenant_column``, the column the probe reads and
    writes tenants' ids in.

    ``definer_timeout`` (seconds) bounds each call of a definer function; ``driver``
    opens the connection (None: PostgreSQL).
    """
    try:
        s = await (DRIVER if driver is None else driver).connect(
            dsn, database, lock_timeout=5, statement_timeout=60)
    except DatabaseError as exc:
        out.add("probe-connect", None, f"could not log in as the app role for the live probe: "
                f"{exc.message} (give a probe DSN)")
        return
    async with s:
        who = await s.fetch_one_as(_Who, "SELECT current_user AS u, rolsuper OR rolbypassrls AS bypass "
                                   "FROM pg_roles WHERE rolname = current_user")
        assert who is not None  # the logged-in role is in pg_roles
        if who.bypass:
            out.add("probe-wrong-role", None, f"the probe logged in as {who.u}, which bypasses RLS")
            return
        async with rolled_back(s):  # never keep anything the probe did
            await _probe_tables(s, out, tables, quote_ident(tenant_column), *tenants)
        if definers:
            async with rolled_back(s):
                await s.execute("SET TRANSACTION READ ONLY")  # before anything else in it
                await _probe_definers(s, out, definers, quote_ident(tenant_column), tenants[0],
                                      definer_timeout)


async def _attempt(s: Session, sql: str, *args: Any) -> tuple[int, DatabaseError | None]:
    """Run one statement in a savepoint that is always rolled back: (rows affected, error)."""
    status = ""
    try:
        async with rolled_back(s):
            status = await s.execute(sql, *args)
    except DatabaseError as exc:
        return 0, exc
    return int(status.rsplit(" ", 1)[-1]), None


async def _probe_tables(s: Session, out: Findings, tables: list[_Rel], col: str, a: int, b: int) -> None:
    """``col``: the tenant column, quoted."""
    failed: set[str] = set()

    async def count(t: _Rel, where: str, *args: Any) -> int:
        try:
            async with s.transaction():
                return int(await s.fetch_value(f"SELECT count(*) FROM {t.qname} {where}", *args))
        except DatabaseError as err:
            failed.add(t.label)
            out.add("probe-error", t.label, f"{t.label}: SELECT as the app role failed: "
                    f"{err.sqlstate} {err.message}", "warning")
            return 0

    for value, check, what in ((None, "probe-unset-tenant-reads", "no tenant set"),
                               ("", "probe-empty-tenant-reads", f"{TENANT_SETTING} = ''")):
        if value is not None:
            await s.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, value)
        for t in tables:
            if t.label not in failed and (n := await count(t, "")):
                out.add(check, t.label, f"{t.label}: the app role reads {n} row(s) with {what}")
    await s.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, str(a))
    for t in (t for t in tables if t.label not in failed):
        if n := await count(t, f"WHERE {col} IS DISTINCT FROM $1", a):
            out.add("probe-cross-tenant-read", t.label, f"{t.label}: with tenant {a} set, {n} row(s) "
                    "of other tenants are visible")
        probes = (
            (f"updated tenant {b}'s rows", f"UPDATE {t.qname} SET {col} = {col} WHERE {col} = $1",
             (b,)),
            (f"deleted tenant {b}'s rows", f"DELETE FROM {t.qname} WHERE {col} = $1", (b,)),
            (f"moved a row to tenant {b}", f"UPDATE {t.qname} SET {col} = $1 WHERE ctid = ANY(ARRAY("
             f"SELECT ctid FROM {t.qname} WHERE {col} = $2 LIMIT 1))", (b, a)),
            (f"inserted a row for tenant {b}", f"INSERT INTO {t.qname} ({col}) VALUES ($1)", (b,)),
        )
        for did, sql, args in probes:
            rows, err = await _attempt(s, sql, *args)
            if rows:
                out.add("probe-cross-tenant-write", t.label, f"{t.label}: with tenant {a} set, the app "
                        f"role {did} ({rows} row(s), rolled back)")
            elif err is not None and err.sqlstate in ("23503", "23505"):
                # raised after the RLS check passed: only a constraint stopped the row
                out.add("probe-cross-tenant-write", t.label, f"{t.label}: with tenant {a} set, the policy "
                        f"let the app role try this: {did}; only constraint {err.sqlstate} stopped it")
            elif err is not None and err.sqlstate != "42501":
                out.add("probe-inconclusive", t.label, f"{t.label}: write probe ({did}) ended with "
                        f"{err.sqlstate} before row-level security was reached", "warning")


async def _probe_definers(s: Session, out: Findings, definers: list[Definer], col: str, a: int,
                          call_timeout: float) -> None:
    """Call each definer function the app role can call without arguments, with no tenant set
    and with tenant ``a`` set: rows with no tenant, or rows of another tenant, are a leak.

    The caller's transaction is READ ONLY; each call runs in a savepoint that is rolled back,
    under its own statement_timeout (``call_timeout`` seconds). ``col``: the tenant column, quoted.
    """
    for d in definers:
        if d.skip is not None:
            out.add("probe-definer-skipped", None, f"function {d.sig} was not called by the live probe: "
                    f"{d.skip}", "warning")
    calls = [d for d in definers if d.skip is None]
    failed: set[str] = set()
    timeout = f"{max(1, int(call_timeout * 1000))}ms"
    alias = "tenantctl_probe_row"
    for tenant in (None, a):
        if tenant is not None:
            await s.execute("SELECT set_config($1, $2, true)", TENANT_SETTING, str(tenant))
        for d in (d for d in calls if d.sig not in failed):
            other = (f"count(*) FILTER (WHERE NOT ({alias} IS NULL) AND {alias}.{col} IS DISTINCT FROM $1)"
                     if d.tenant_column else "NULL::bigint")
            sql = (f"SELECT count(*) FILTER (WHERE NOT ({alias} IS NULL)) AS n, {other} AS other "
                   f"FROM {d.call}() AS {alias}")
            try:
                row = await _call(s, timeout, sql, *((tenant,) if d.tenant_column else ()))
            except DatabaseError as err:
                failed.add(d.sig)
                out.add("probe-definer-inconclusive", None, f"function {d.sig}: calling it as the app role "
                        f"failed with {err.sqlstate} {err.message}", "warning")
                continue
            if tenant is None and row.n:
                out.add("probe-definer-cross-tenant-read", None, f"function {d.sig} (owner {d.owner}): "
                        f"with no tenant set, the app role got {row.n} row(s) from it (the tenant policy "
                        "shows none)")
            elif tenant is not None and row.other:
                out.add("probe-definer-cross-tenant-read", None, f"function {d.sig} (owner {d.owner}): "
                        f"with tenant {tenant} set, it returned {row.other} row(s) of other tenants")


async def _call(s: Session, timeout: str, sql: str, *args: Any) -> _CallRows:
    """Run the counting query in a savepoint that is always rolled back, with
    statement_timeout = ``timeout``."""
    row: _CallRows | None = None
    async with rolled_back(s):
        await s.execute("SELECT set_config('statement_timeout', $1, true)", timeout)
        row = await s.fetch_one_as(_CallRows, sql, *args)
    assert row is not None  # an aggregate without GROUP BY returns one row
    return row
