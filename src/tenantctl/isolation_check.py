"""check-isolation: audit a shared database's catalog and probe it live.

Catalog checks: RLS enabled and forced with a tenant-bound policy on every
``clnt_id`` table, the app role's attributes, memberships, ownership and
privileges, views without ``security_invoker``, SECURITY DEFINER functions,
keys without ``clnt_id``. The live probe connects as the app role with two
real tenants, inside a transaction that is always rolled back.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from . import postgres
from .errors import DatabaseError
from .isolation import (
    _NOT_EXT,
    _RISKY,
    _USER_NS,
    APP_PRIVILEGES,
    TENANT_SETTING,
    _Rel,
    _Tables,
    _tables,
)
from .postgres import Session


@dataclass(frozen=True)
class IsolationFinding:
    check: str  # stable id, e.g. "rls-not-forced", "probe-cross-tenant-read"
    table: str | None  # schema.name when the finding is about one relation
    message: str
    severity: Literal["error", "warning"] = "error"  # warnings are reported, not failures

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "table": self.table, "message": self.message,
                "severity": self.severity}


class _Findings(list[IsolationFinding]):
    def add(self, check: str, table: str | None, message: str,
            severity: Literal["error", "warning"] = "error") -> None:
        self.append(IsolationFinding(check, table, message, severity))


def role_dsn(dsn: str, role: str) -> str:
    """``dsn`` with the user replaced by ``role`` and the password dropped."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k not in ("user", "password")]
    netloc = f"{urllib.parse.quote(role, safe='')}@{parts.netloc.rpartition('@')[2]}"
    q = parts.query if len(kept) == len(query) else urllib.parse.urlencode(kept)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, q, parts.fragment))


async def check_isolation(admin_dsn: str, database: str, *, app_role: str, owner_role: str,
                          global_tables: frozenset[str], probe_tenants: tuple[int, int] | None,
                          probe_dsn: str | None = None) -> list[IsolationFinding]:
    """Audit the shared database's catalog; with two tenants, probe live as the app role.

    The probe logs in as the app role (``probe_dsn``, else ``admin_dsn`` with the
    user replaced) and runs in one transaction that is rolled back.
    """
    out = _Findings()
    admin = await postgres.connect(admin_dsn, database)
    try:
        tables = await _tables(admin, app_role, global_tables)
        app_exists = await _role_checks(admin, out, app_role, owner_role, tables.tenant)
        await _table_checks(admin, out, app_role, tables)
    finally:
        await admin.close()
    if probe_tenants is not None and tables.tenant and app_exists:
        await _probe(out, probe_dsn or role_dsn(admin_dsn, app_role), database, tables.tenant,
                     probe_tenants)
    return list(out)


async def _role_checks(s: Session, out: _Findings, app_role: str, owner_role: str,
                       tenant: list[_Rel]) -> bool:
    app = await s.fetchrow("SELECT oid, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", app_role)
    if app is None:
        out.add("app-role-missing", None, f"app role {app_role} does not exist")
        return False
    for attr, what in (("rolsuper", "superuser"), ("rolbypassrls", "bypassrls")):
        if app[attr]:
            out.add(f"app-role-{what}", None, f"{app_role} is {what.upper()}: RLS never applies to it")
    for r in await s.fetch(  # NOINHERIT does not stop SET ROLE
        "SELECT r.rolname, r.rolsuper, r.rolbypassrls FROM pg_roles r WHERE r.oid <> $1 "
        "AND (r.rolsuper OR r.rolbypassrls OR r.rolname = $2 OR r.oid = ANY($3::oid[])) "
        "AND pg_has_role($1, r.oid, 'MEMBER') ORDER BY 1",
        app["oid"], owner_role, list({t.owner for t in tenant}),
    ):
        what = "a superuser" if r["rolsuper"] else "BYPASSRLS" if r["rolbypassrls"] else "a table owner"
        out.add("app-role-membership", None,
                f"{app_role} is a member of {r['rolname']} ({what}): SET ROLE escapes the tenant policy")
    owned = await s.fetch(
        "SELECT 'table ' || c.oid::regclass FROM pg_class c WHERE c.relowner = $1 "
        "UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p WHERE p.proowner = $1 "
        "UNION ALL SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE n.nspowner = $1 "
        "ORDER BY 1 LIMIT 20", app["oid"])
    if owned:
        out.add("app-role-owns-objects", None, f"{app_role} owns objects (an owner can disable RLS): "
                + ", ".join(r[0] for r in owned))
    return True


def _tenant_bound(expr: str | None) -> bool:
    return expr is not None and "clnt_id" in expr and TENANT_SETTING in expr


async def _table_checks(s: Session, out: _Findings, app_role: str, tables: _Tables) -> None:
    tenant = {t.oid: t for t in tables.tenant}
    oids = list(tenant)
    pols = await s.fetch(  # permissive policies that reach the app role (they are OR-ed)
        "SELECT polrelid, polname, polcmd::text AS cmd, pg_get_expr(polqual, polrelid) AS qual, "
        "pg_get_expr(polwithcheck, polrelid) AS chk FROM pg_policy WHERE polpermissive "
        "AND polrelid = ANY($1::oid[]) AND (0 = ANY(polroles) OR EXISTS (SELECT FROM unnest(polroles) "
        "pr WHERE pg_has_role($2::name, pr, 'MEMBER'))) ORDER BY polname", oids, app_role)
    for t in tables.tenant:
        if not t.rls:
            out.add("rls-disabled", t.label, f"{t.label} has clnt_id but row-level security is disabled")
        if not t.force:
            out.add("rls-not-forced", t.label, f"{t.label}: row-level security is not forced, so its "
                    "owner (and members of the owner role) bypass it")
        missing, loose = [], set()
        for cmd, code in (("SELECT", "r"), ("INSERT", "a"), ("UPDATE", "w"), ("DELETE", "d")):
            applies = [p for p in pols if p["polrelid"] == t.oid and p["cmd"] in ("*", code)]
            missing += [] if applies else [cmd]
            for p in applies:
                check = p["chk"] or p["qual"]  # without WITH CHECK, USING checks new rows
                exprs = {"r": [p["qual"]], "d": [p["qual"]], "a": [check], "w": [p["qual"], check]}
                if not all(_tenant_bound(e) for e in exprs[code]):
                    loose.add(p["polname"])
        if missing:
            out.add("policy-missing", t.label, f"{t.label}: no permissive policy for "
                    f"{', '.join(missing)} reaches the app role")
        for name in sorted(loose):
            out.add("policy-not-tenant-bound", t.label, f"{t.label}: permissive policy {name} does not "
                    f"compare clnt_id with {TENANT_SETTING}; permissive policies are OR-ed, so it opens "
                    "the table")
        if risky := sorted(t.effective & set(_RISKY)):
            out.add("app-role-excess-privilege", t.label, f"{app_role} has {', '.join(risky)} on "
                    f"{t.label}" + (" (TRUNCATE ignores RLS)" if "TRUNCATE" in risky else ""))
    for t in tables.unprotected + tables.bookkeeping:
        if t.effective & set(APP_PRIVILEGES):
            out.add("unprotected-table", t.label, f"{app_role} can access {t.label}, which has no "
                    "clnt_id and is not listed in global_tables")
    for r in await s.fetch(
        "SELECT i.indrelid, ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'clnt_id' "
        "WHERE i.indisunique AND i.indrelid = ANY($1::oid[]) "
        "AND NOT a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1]) ORDER BY 2", oids):
        label = tenant[r["indrelid"]].label
        out.add("unique-without-clnt_id", label, f"{label}: unique index {r['relname']} does not have "
                "clnt_id in its key; a duplicate in another tenant shows up as a 23505")
    for r in await s.fetch(
        "SELECT c.conrelid, c.conname, c.confrelid::regclass::text AS parent FROM pg_constraint c "
        "JOIN pg_attribute ca ON ca.attrelid = c.conrelid AND ca.attname = 'clnt_id' "
        "JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attname = 'clnt_id' "
        "WHERE c.contype = 'f' AND c.conrelid = ANY($1::oid[]) AND NOT EXISTS (SELECT FROM "
        "generate_subscripts(c.conkey, 1) k WHERE c.conkey[k] = ca.attnum AND c.confkey[k] = pa.attnum) "
        "ORDER BY 2", oids):
        label = tenant[r["conrelid"]].label
        out.add("fk-without-clnt_id", label, f"{label}: foreign key {r['conname']} to {r['parent']} "
                "does not pair clnt_id with clnt_id; RI checks ignore RLS, so rows can point into "
                "another tenant")
    for r in await s.fetch(  # views reading tenant tables, directly or through other views
        "WITH RECURSIVE reads(oid) AS (SELECT unnest($1::oid[]) UNION SELECT w.ev_class FROM pg_depend d "
        "JOIN pg_rewrite w ON w.oid = d.objid JOIN reads ON d.refobjid = reads.oid "
        "WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND w.ev_class <> d.refobjid) "
        "SELECT n.nspname || '.' || c.relname AS label, c.relkind::text AS kind, "
        "coalesce(c.reloptions, '{}') AS opts FROM reads JOIN pg_class c ON c.oid = reads.oid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {_USER_NS} "
        "ORDER BY 1", oids):
        if r["kind"] == "m":
            out.add("materialized-view", r["label"], f"materialized view {r['label']} stores rows of "
                    "tenant tables and has no row-level security")
        elif not any(o.partition("=")[::2] in _INVOKER_ON for o in r["opts"]):
            out.add("view-not-security-invoker", r["label"], f"view {r['label']} reads tenant tables "
                    "with its owner's rights; set security_invoker = true")
    for r in await s.fetch(
        "SELECT p.oid::regprocedure::text AS fn FROM pg_proc p JOIN pg_namespace n "
        f"ON n.oid = p.pronamespace WHERE p.prosecdef AND {_USER_NS} AND "
        + _NOT_EXT.format(cls="'pg_proc'", oid="p.oid") + " ORDER BY 1"):
        out.add("security-definer", None, f"function {r['fn']} is SECURITY DEFINER: it runs with its "
                "owner's rights; make sure it filters by tenant", "warning")


_INVOKER_ON = {("security_invoker", v) for v in ("true", "on", "1", "yes", "t", "y")}


class _Undo(Exception):
    """Raised inside a transaction block to roll it back."""


async def _attempt(s: Session, sql: str, *args: Any) -> tuple[int, DatabaseError | None]:
    """Run one statement in a savepoint that is always rolled back: (rows affected, error)."""
    status = ""
    try:
        async with s.transaction():
            status = await s.execute(sql, *args)
            raise _Undo
    except _Undo:
        return int(status.rsplit(" ", 1)[-1]), None
    except DatabaseError as exc:
        return 0, exc


async def _probe(out: _Findings, dsn: str, database: str, tables: list[_Rel],
                 tenants: tuple[int, int]) -> None:
    try:
        s = await postgres.connect(dsn, database, lock_timeout=5, statement_timeout=60)
    except DatabaseError as exc:
        out.add("probe-connect", None, f"could not log in as the app role for the live probe: "
                f"{exc.message} (give a probe DSN)")
        return
    try:
        who = await s.fetchrow("SELECT current_user AS u, rolsuper OR rolbypassrls AS bypass "
                               "FROM pg_roles WHERE rolname = current_user")
        if who["bypass"]:
            out.add("probe-wrong-role", None, f"the probe logged in as {who['u']}, which bypasses RLS")
            return
        async with s.transaction():
            await _probe_tables(s, out, tables, *tenants)
            raise _Undo  # never keep anything the probe did
    except _Undo:
        pass
    finally:
        await s.close()


async def _probe_tables(s: Session, out: _Findings, tables: list[_Rel], a: int, b: int) -> None:
    failed: set[str] = set()

    async def count(t: _Rel, where: str, *args: Any) -> int:
        try:
            async with s.transaction():
                return int(await s.fetchval(f"SELECT count(*) FROM {t.qname} {where}", *args))
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
        if n := await count(t, "WHERE clnt_id IS DISTINCT FROM $1", a):
            out.add("probe-cross-tenant-read", t.label, f"{t.label}: with tenant {a} set, {n} row(s) "
                    "of other tenants are visible")
        probes = (
            (f"updated tenant {b}'s rows", f"UPDATE {t.qname} SET clnt_id = clnt_id WHERE clnt_id = $1", (b,)),
            (f"deleted tenant {b}'s rows", f"DELETE FROM {t.qname} WHERE clnt_id = $1", (b,)),
            (f"moved a row to tenant {b}", f"UPDATE {t.qname} SET clnt_id = $1 WHERE ctid = ANY(ARRAY("
             f"SELECT ctid FROM {t.qname} WHERE clnt_id = $2 LIMIT 1))", (b, a)),
            (f"inserted a row for tenant {b}", f"INSERT INTO {t.qname} (clnt_id) VALUES ($1)", (b,)),
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
