"""Shared-schema mode: tenants isolated by Row-Level Security on ``clnt_id``.

In shared mode many tenants live in one database and every tenant table
carries ``clnt_id``. The application connects as ``app_role`` (LOGIN,
NOSUPERUSER, NOBYPASSRLS, NOINHERIT, owns nothing) and sets the tenant per
transaction with ``set_config('app.current_tenant', $1, true)``. The tables
belong to ``owner_role`` (NOLOGIN) and have RLS enabled *and forced*, with one
policy ``tenantctl_tenant`` that fails closed when no tenant is set (the
setting reads ``''`` after a reset, hence ``nullif``) — DESIGN.md §3.

- :func:`ensure_roles` creates the two cluster-wide roles (admin connection).
- :func:`enforce` brings every table of the shared database to that state;
  run it after every migration run (idempotent: it changes only what differs).
- :func:`ensure_registry` / :func:`register` keep the shared tenant registry.
- :func:`check_isolation` audits the catalog and, given two tenants, probes
  live as the app role inside a transaction that is always rolled back.

Only ``postgres`` talks to the driver; this module uses its Sessions.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import postgres
from .errors import BadInputError, DatabaseError, TenantctlError
from .postgres import Session, quote_ident

OWNER_ROLE_DEFAULT = "cvs_owner"
POLICY_NAME = "tenantctl_tenant"
TENANT_SETTING = "app.current_tenant"
REGISTRY_TABLE = "tenantctl_shared_tenants"
BOOKKEEPING = frozenset({postgres.HISTORY_TABLE, REGISTRY_TABLE})  # in schema public
TENANT_EXPR = "clnt_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::int2)"
# pg_get_expr() of TENANT_EXPR; enforce() also learns the server's own text.
_DEPARSED = ("(clnt_id = ( SELECT (NULLIF(current_setting('app.current_tenant'::text, true), "
             "''::text))::smallint AS \"nullif\"))")
APP_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")  # TRUNCATE ignores RLS: never granted
_RISKY = ("TRUNCATE", "REFERENCES", "TRIGGER")
_USER_NS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
_NOT_EXT = ("NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = {cls}::regclass "
            "AND e.objid = {oid} AND e.deptype = 'e')")

REGISTRY_DDL = f"""
CREATE TABLE IF NOT EXISTS public.{REGISTRY_TABLE} (
    clnt_id       int2        PRIMARY KEY,
    name          text        NOT NULL,
    sites         int2[]      NOT NULL,
    registered_on timestamptz NOT NULL DEFAULT now()
)"""

_RELATIONS = f"""
SELECT c.oid, n.nspname, c.relname, c.relowner, c.relrowsecurity AS rls,
       c.relforcerowsecurity AS force, a.attnum AS tenant_attnum,
       ARRAY(SELECT x.privilege_type FROM aclexplode(c.relacl) x WHERE x.grantee = r.oid) AS granted,
       ARRAY(SELECT p FROM unnest($2::text[]) p WHERE has_table_privilege(r.oid, c.oid, p)) AS effective
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'clnt_id' AND a.attnum > 0
                        AND NOT a.attisdropped
LEFT JOIN pg_roles r ON r.rolname = $1
WHERE c.relkind IN ('r', 'p') AND {_USER_NS} AND {_NOT_EXT.format(cls="'pg_class'", oid="c.oid")}
ORDER BY n.nspname, c.relname"""


@dataclass(frozen=True)
class _Rel:
    oid: int
    schema: str
    name: str
    owner: int
    rls: bool
    force: bool
    tenant_attnum: int | None
    granted: frozenset[str]  # privileges granted to the app role directly
    effective: frozenset[str]  # what the app role can do (direct + PUBLIC)

    @property
    def qname(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class _Tables:
    tenant: list[_Rel]
    globals: list[_Rel]
    unprotected: list[_Rel]
    bookkeeping: list[_Rel]
    warnings: list[str]


async def _tables(session: Session, app_role: str, global_tables: frozenset[str]) -> _Tables:
    rows = await session.fetch(_RELATIONS, app_role, list(APP_PRIVILEGES + _RISKY))
    rels = [_Rel(r["oid"], r["nspname"], r["relname"], r["relowner"], r["rls"], r["force"],
                 r["tenant_attnum"], frozenset(r["granted"]), frozenset(r["effective"])) for r in rows]
    out = _Tables([], [], [], [], [])
    seen: set[str] = set()
    for rel in rels:
        listed = {rel.name, rel.label} & global_tables
        seen |= listed
        if rel.schema == "public" and rel.name in BOOKKEEPING:
            out.bookkeeping.append(rel)
        elif rel.tenant_attnum is not None:
            out.tenant.append(rel)
            if listed:
                out.warnings.append(f"{rel.label} is listed in global_tables but has clnt_id: "
                                    "it is protected as a tenant table")
        else:
            (out.globals if listed else out.unprotected).append(rel)
    for name in sorted(global_tables - seen):
        out.warnings.append(f"global table {name} does not exist in {session.database}")
    return out


# ------------------------------------------------------------------ roles


async def _create_role(admin: Session, name: str, options: str) -> None:
    if await admin.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", name):
        return
    try:
        async with admin.transaction():  # a savepoint if the caller is in a transaction
            await admin.execute(f"CREATE ROLE {quote_ident(name)} {options}")
    except DatabaseError as exc:
        # 42710 duplicate_object; 23505 on pg_authid_rolname_index when a
        # concurrent CREATE ROLE of the same name committed first.
        if exc.sqlstate not in ("42710", "23505"):
            raise


async def ensure_roles(admin: Session, *, app_role: str, owner_role: str) -> None:
    """Create the owner (NOLOGIN) and app roles if missing; refuse an unsafe app role.

    Never ALTERs an existing role: a superuser, BYPASSRLS, or owner-member app
    role is reported (exit 1) for a person to fix.
    """
    if app_role == owner_role:
        raise BadInputError(f"the app role and the owner role are both {app_role!r}",
                            hint="the app role must not own the shared tables: use two roles")
    await _create_role(admin, owner_role, "NOLOGIN")
    await _create_role(admin, app_role, "LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT")
    row = await admin.fetchrow(
        "SELECT a.rolsuper, a.rolbypassrls, pg_has_role(a.oid, o.oid, 'MEMBER') AS member "
        "FROM pg_roles a, pg_roles o WHERE a.rolname = $1 AND o.rolname = $2",
        app_role, owner_role,
    )
    problems = [what for what, bad in (("SUPERUSER", row["rolsuper"]), ("BYPASSRLS", row["rolbypassrls"]))
                if bad]
    if problems:
        attrs = " and ".join(problems)
        raise TenantctlError(
            f"app role {app_role} exists with {attrs}: Row-Level Security never applies to it, "
            "so every tenant would see every other tenant's rows",
            hint=f"use another app_role in tenants.yaml, or have an administrator run "
                 f"ALTER ROLE {quote_ident(app_role)} NO{' NO'.join(problems)} (tenantctl will not)",
        )
    if row["member"]:
        raise TenantctlError(
            f"app role {app_role} is a member of the owner role {owner_role}: it could bypass or "
            "drop the tenant policies",
            hint=f"REVOKE {quote_ident(owner_role)} FROM {quote_ident(app_role)}",
        )


# ---------------------------------------------------------------- enforce


@dataclass(frozen=True)
class EnforceResult:
    tenant_tables: tuple[str, ...]
    global_tables: tuple[str, ...]
    unprotected: tuple[str, ...]  # no clnt_id, not global: the app role gets nothing on them
    statements: tuple[str, ...]  # what this run changed; () when everything was in place
    warnings: tuple[str, ...] = ()


async def enforce(session: Session, *, app_role: str, owner_role: str,
                  global_tables: frozenset[str]) -> EnforceResult:
    """Bring ownership, RLS, the tenant policy and grants in line; one transaction."""
    done: list[str] = []

    async def run(sql: str) -> None:
        await session.execute(sql)
        done.append(sql)

    app, owner = quote_ident(app_role), quote_ident(owner_role)
    async with session.transaction():
        me = await session.fetchrow(
            "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS su, "
            "(SELECT oid FROM pg_roles WHERE rolname = $1) AS app, "
            "(SELECT oid FROM pg_roles WHERE rolname = $2) AS owner, "
            "current_setting('server_version_num')::int AS ver", app_role, owner_role)
        if me["app"] is None or me["owner"] is None:
            raise TenantctlError(f"role {app_role if me['app'] is None else owner_role} does not exist",
                                 hint="create the roles first (ensure_roles / tenantctl provision)")
        tables = await _tables(session, app_role, global_tables)
        warnings = list(tables.warnings)
        can_own = bool(me["su"]) or await _join_owner(session, owner_role, me["ver"], done, warnings)
        policies = {r["polrelid"]: r for r in await session.fetch(
            "SELECT polrelid, polcmd::text AS cmd, polpermissive, polroles, "
            "pg_get_expr(polqual, polrelid) AS qual, pg_get_expr(polwithcheck, polrelid) AS chk "
            "FROM pg_policy WHERE polname = $1", POLICY_NAME)}
        # The owner role needs USAGE on the schemas (foreign-key checks and ON DELETE
        # CASCADE run as the owner of the table they touch) and CREATE (a non-superuser
        # can only hand a table to a role that may create in its schema).
        for schema in sorted({t.schema for t in tables.tenant} if can_own else ()):
            if not await session.fetchval("SELECT has_schema_privilege($1, $2, 'USAGE') AND "
                                          "has_schema_privilege($1, $2, 'CREATE')", owner_role, schema):
                await run(f"GRANT USAGE, CREATE ON SCHEMA {quote_ident(schema)} TO {owner}")
        known = {_DEPARSED}
        clause = f"USING ({TENANT_EXPR}) WITH CHECK ({TENANT_EXPR})"
        for t in tables.tenant:
            if can_own and t.owner != me["owner"]:
                await run(f"ALTER TABLE {t.qname} OWNER TO {owner}")
            parts = [s for s, ok in (("ENABLE", t.rls), ("FORCE", t.force)) if not ok]
            if parts:
                await run(f"ALTER TABLE {t.qname} " + ", ".join(f"{p} ROW LEVEL SECURITY" for p in parts))
            pol, on = policies.get(t.oid), f"{quote_ident(POLICY_NAME)} ON {t.qname}"
            if pol is not None and (pol["cmd"] != "*" or not pol["polpermissive"]):
                await run(f"DROP POLICY {on}")
                pol = None
            changed = True
            if pol is None:
                await run(f"CREATE POLICY {on} AS PERMISSIVE FOR ALL TO PUBLIC {clause}")
            elif list(pol["polroles"]) != [0] or pol["qual"] not in known or pol["chk"] not in known:
                await run(f"ALTER POLICY {on} TO PUBLIC {clause}")
            else:
                changed = False
            if changed:  # learn how this server deparses the expression
                known.add(await session.fetchval(
                    "SELECT pg_get_expr(polqual, polrelid) FROM pg_policy "
                    "WHERE polrelid = $1 AND polname = $2", t.oid, POLICY_NAME))
            missing = [p for p in APP_PRIVILEGES if p not in t.granted]
            if missing:
                await run(f"GRANT {', '.join(missing)} ON {t.qname} TO {app}")
            excess = sorted(t.granted - set(APP_PRIVILEGES))
            if excess:
                await run(f"REVOKE {', '.join(excess)} ON {t.qname} FROM {app}")
        for t in tables.globals:
            if "SELECT" not in t.granted:
                await run(f"GRANT SELECT ON {t.qname} TO {app}")
        await _grant_sequences(session, [t.oid for t in tables.tenant], app_role, run)
        for schema in sorted({t.schema for t in tables.tenant + tables.globals}):
            ns = quote_ident(schema)
            if not await session.fetchval("SELECT has_schema_privilege($1, $2, 'USAGE')", app_role, schema):
                await run(f"GRANT USAGE ON SCHEMA {ns} TO {app}")
            # Sequences only: a table created by the owner role must stay closed to
            # the app until enforce has put RLS on it (fail closed, no window).
            if can_own and not await session.fetchval(
                "SELECT EXISTS (SELECT FROM pg_default_acl d JOIN pg_namespace n "
                "ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) x WHERE d.defaclrole = $1 "
                "AND n.nspname = $2 AND d.defaclobjtype = 'S' AND x.grantee = $3 "
                "AND x.privilege_type = 'USAGE')", me["owner"], schema, me["app"]):
                await run(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {ns} "
                          f"GRANT USAGE, SELECT ON SEQUENCES TO {app}")
    return EnforceResult(
        tuple(t.label for t in tables.tenant), tuple(t.label for t in tables.globals),
        tuple(t.label for t in tables.unprotected), tuple(done), tuple(warnings))


async def _join_owner(session: Session, owner_role: str, version: int,
                      done: list[str], warnings: list[str]) -> bool:
    """A non-superuser needs the owner role's privileges to hand tables over and alter them later."""
    sql = "SELECT pg_has_role(current_user, $1, 'USAGE')"
    if version >= 160000:
        sql += " AND pg_has_role(current_user, $1, 'SET')"
    if await session.fetchval(sql, owner_role):
        return True
    grant = f"GRANT {quote_ident(owner_role)} TO CURRENT_USER"
    if version >= 160000:
        grant += " WITH INHERIT TRUE, SET TRUE"
    try:
        async with session.transaction():
            await session.execute(grant)
    except DatabaseError as exc:
        if exc.sqlstate != "42501":
            raise
        warnings.append(f"cannot join role {owner_role} ({exc.message}): table ownership left as is")
        return False
    done.append(grant)
    return True


async def _grant_sequences(session: Session, table_oids: list[int], app_role: str,
                           run: Callable[[str], Awaitable[None]]) -> None:
    """USAGE, SELECT on the identity/serial sequences of the tenant tables."""
    rows = await session.fetch(
        "SELECT DISTINCT n.nspname, s.relname FROM pg_depend d "
        "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_namespace n ON n.oid = s.relnamespace "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.deptype IN ('a', 'i') AND d.refobjid = ANY($1::oid[]) "
        "AND NOT (has_sequence_privilege($2, s.oid, 'USAGE') "
        "AND has_sequence_privilege($2, s.oid, 'SELECT')) ORDER BY 1, 2", table_oids, app_role)
    for r in rows:
        await run(f"GRANT USAGE, SELECT ON SEQUENCE {quote_ident(r['nspname'])}."
                  f"{quote_ident(r['relname'])} TO {quote_ident(app_role)}")


# --------------------------------------------------------------- registry


async def ensure_registry(session: Session) -> None:
    """The shared tenant registry: bookkeeping, no RLS, no grant to the app role."""
    if await session.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{REGISTRY_TABLE}"):
        return
    try:
        async with session.transaction():
            await session.execute(REGISTRY_DDL)
    except DatabaseError as exc:  # a concurrent CREATE won (pg_type / pg_class unique index)
        if exc.sqlstate not in ("23505", "42P07"):
            raise


async def register(session: Session, clnt_id: int, name: str, sites: tuple[int, ...]) -> bool:
    """Upsert a tenant of the shared database; True if it was not registered before."""
    row = await session.fetchrow(
        f"INSERT INTO public.{REGISTRY_TABLE} AS r (clnt_id, name, sites) VALUES ($1, $2, $3::int2[]) "
        "ON CONFLICT (clnt_id) DO UPDATE SET name = excluded.name, sites = excluded.sites "
        "WHERE (r.name, r.sites) IS DISTINCT FROM (excluded.name, excluded.sites) "
        "RETURNING (xmax = 0) AS inserted", clnt_id, name, list(sites))
    return bool(row is not None and row["inserted"])


async def registered_ids(session: Session) -> list[int]:
    rows = await session.fetch(f"SELECT clnt_id FROM public.{REGISTRY_TABLE} ORDER BY clnt_id")
    return [r["clnt_id"] for r in rows]


# ------------------------------------------------------------------ check


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
