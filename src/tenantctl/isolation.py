"""Shared-schema mode: tenants isolated by Row-Level Security on the tenant column.

In shared mode many tenants live in one database and every tenant table
carries the tenant column (tenants.yaml's ``tenant_column``, default
``clnt_id``; see tenant_column.py). The application connects as ``app_role`` (LOGIN,
NOSUPERUSER, NOBYPASSRLS, NOINHERIT, owns nothing) and sets the tenant per
transaction with ``set_config('app.current_tenant', $1, true)``. The tables
belong to ``owner_role`` (NOLOGIN) and have RLS enabled *and forced*, with one
policy ``tenantctl_tenant`` that fails closed when no tenant is set (the
setting reads ``''`` after a reset, hence ``nullif``): a connection that
forgot to set its tenant sees no rows and can write none.

- :func:`ensure_roles` creates the two cluster-wide roles (admin connection).
- :func:`enforce` brings every table of the shared database to that state;
  run it after every migration run (idempotent: it changes only what differs).
- :func:`ensure_registry` / :func:`register` keep the shared tenant registry.
- :func:`tenantctl.isolation_check.check_isolation` audits the catalog and,
  given two tenants, probes live as the app role inside a transaction that is
  always rolled back.

Every function works on a :class:`~tenantctl.drivers.base.Session` it is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .drivers.base import Session
from .drivers.postgres import HISTORY_TABLE, quote_ident
from .errors import BadInputError, DatabaseError, TenantctlError
from .tenant_column import DEFAULT_TENANT_COLUMN

POLICY_NAME = "tenantctl_tenant"
TENANT_SETTING = "app.current_tenant"
REGISTRY_TABLE = "tenantctl_shared_tenants"
BOOKKEEPING = frozenset({HISTORY_TABLE, REGISTRY_TABLE})  # in schema public


def tenant_expr(column: str) -> str:
    """The policy's USING / WITH CHECK expression on ``column`` (a checked tenant column)."""
    return f"{quote_ident(column)} = (SELECT nullif(current_setting('{TENANT_SETTING}', true), '')::int2)"


def _deparsed(column: str) -> str:
    """pg_get_expr() of :func:`tenant_expr` (the column is never a keyword, so never
    quoted); enforce() also learns the server's own text."""
    return (f"({column} = ( SELECT (NULLIF(current_setting('{TENANT_SETTING}'::text, true), "
            "''::text))::smallint AS \"nullif\"))")


TENANT_EXPR = tenant_expr(DEFAULT_TENANT_COLUMN)
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
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relowner AS owner, c.relrowsecurity AS rls,
       c.relforcerowsecurity AS force, a.attnum AS tenant_attnum,
       format_type(a.atttypid, NULL) AS tenant_type,
       ARRAY(SELECT x.privilege_type FROM aclexplode(c.relacl) x WHERE x.grantee = r.oid) AS granted,
       ARRAY(SELECT p FROM unnest($2::text[]) p WHERE has_table_privilege(r.oid, c.oid, p)) AS effective
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0
                        AND NOT a.attisdropped
LEFT JOIN pg_roles r ON r.rolname = $1
WHERE c.relkind IN ('r', 'p') AND {_USER_NS} AND {_NOT_EXT.format(cls="'pg_class'", oid="c.oid")}
ORDER BY n.nspname, c.relname"""


@dataclass(frozen=True)
class _RelationRow:
    oid: int
    schema: str
    name: str
    owner: int
    rls: bool
    force: bool
    tenant_attnum: int | None
    tenant_type: str | None
    granted: list[str]
    effective: list[str]


@dataclass(frozen=True)
class _Rel:
    oid: int
    schema: str
    name: str
    owner: int
    rls: bool
    force: bool
    tenant_attnum: int | None
    tenant_type: str | None  # format_type() of its tenant column; None: it has none
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


async def _tables(session: Session, app_role: str, global_tables: frozenset[str],
                  tenant_column: str) -> _Tables:
    rows = await session.fetch_as(_RelationRow, _RELATIONS, app_role, list(APP_PRIVILEGES + _RISKY),
                                  tenant_column)
    rels = [_Rel(r.oid, r.schema, r.name, r.owner, r.rls, r.force, r.tenant_attnum, r.tenant_type,
                 frozenset(r.granted), frozenset(r.effective)) for r in rows]
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
                out.warnings.append(f"{rel.label} is listed in global_tables but has {tenant_column}: "
                                    "it is protected as a tenant table")
        else:
            (out.globals if listed else out.unprotected).append(rel)
    for name in sorted(global_tables - seen):
        out.warnings.append(f"global table {name} does not exist in {session.database}")
    return out


# ------------------------------------------------------------------ roles


async def _create_role(admin: Session, name: str, options: str) -> None:
    if await admin.fetch_value("SELECT true FROM pg_roles WHERE rolname = $1", name):
        return
    try:
        async with admin.transaction():  # a savepoint if the caller is in a transaction
            await admin.execute(f"CREATE ROLE {quote_ident(name)} {options}")
    except DatabaseError as exc:
        # 42710 duplicate_object; 23505 on pg_authid_rolname_index when a
        # concurrent CREATE ROLE of the same name committed first.
        if exc.sqlstate not in ("42710", "23505"):
            raise


@dataclass(frozen=True)
class _AppRole:
    rolsuper: bool
    rolbypassrls: bool
    member: bool


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
    row = await admin.fetch_one_as(
        _AppRole, "SELECT a.rolsuper, a.rolbypassrls, pg_has_role(a.oid, o.oid, 'MEMBER') AS member "
        "FROM pg_roles a, pg_roles o WHERE a.rolname = $1 AND o.rolname = $2",
        app_role, owner_role,
    )
    assert row is not None  # both roles exist: created above if they were missing
    problems = [what for what, bad in (("SUPERUSER", row.rolsuper), ("BYPASSRLS", row.rolbypassrls))
                if bad]
    if problems:
        attrs = " and ".join(problems)
        raise TenantctlError(
            f"app role {app_role} exists with {attrs}: Row-Level Security never applies to it, "
            "so every tenant would see every other tenant's rows",
            hint=f"use another app_role in tenants.yaml, or have an administrator run "
                 f"ALTER ROLE {quote_ident(app_role)} NO{' NO'.join(problems)} (tenantctl will not)",
        )
    if row.member:
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
    unprotected: tuple[str, ...]  # no tenant column, not global: the app role gets nothing on them
    statements: tuple[str, ...]  # what this run changed; () when everything was in place
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Me:
    su: bool | None
    app: int | None  # oid of the app role
    owner: int | None  # oid of the owner role
    ver: int  # server_version_num


@dataclass(frozen=True)
class _Policy:
    polrelid: int
    cmd: str
    polpermissive: bool
    polroles: list[int]
    qual: str | None
    chk: str | None


async def enforce(session: Session, *, app_role: str, owner_role: str,
                  global_tables: frozenset[str], tenant_column: str) -> EnforceResult:
    """Bring ownership, RLS, the tenant policy and grants in line; one transaction.

    Tenant tables are those with a ``tenant_column``; their policy compares it
    with the tenant setting (an existing policy on another column is altered).
    """
    done: list[str] = []

    async def run(sql: str) -> None:
        await session.execute(sql)
        done.append(sql)

    app, owner = quote_ident(app_role), quote_ident(owner_role)
    async with session.transaction():
        me = await session.fetch_one_as(
            _Me, "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS su, "
            "(SELECT oid FROM pg_roles WHERE rolname = $1) AS app, "
            "(SELECT oid FROM pg_roles WHERE rolname = $2) AS owner, "
            "current_setting('server_version_num')::int AS ver", app_role, owner_role)
        assert me is not None  # a SELECT without FROM returns one row
        if me.app is None or me.owner is None:
            raise TenantctlError(f"role {app_role if me.app is None else owner_role} does not exist",
                                 hint="create the roles first (ensure_roles / tenantctl provision)")
        tables = await _tables(session, app_role, global_tables, tenant_column)
        _check_tenant_types(tables.tenant, tenant_column)
        warnings = list(tables.warnings)
        can_own = bool(me.su) or await _join_owner(session, owner_role, me.ver, done, warnings)
        policies = {r.polrelid: r for r in await session.fetch_as(
            _Policy, "SELECT polrelid, polcmd::text AS cmd, polpermissive, polroles, "
            "pg_get_expr(polqual, polrelid) AS qual, pg_get_expr(polwithcheck, polrelid) AS chk "
            "FROM pg_policy WHERE polname = $1", POLICY_NAME)}
        # The owner role needs USAGE on the schemas (foreign-key checks and ON DELETE
        # CASCADE run as the owner of the table they touch) and CREATE (a non-superuser
        # can only hand a table to a role that may create in its schema).
        for schema in sorted({t.schema for t in tables.tenant} if can_own else ()):
            if not await session.fetch_value("SELECT has_schema_privilege($1, $2, 'USAGE') AND "
                                             "has_schema_privilege($1, $2, 'CREATE')", owner_role, schema):
                await run(f"GRANT USAGE, CREATE ON SCHEMA {quote_ident(schema)} TO {owner}")
        known, expr = {_deparsed(tenant_column)}, tenant_expr(tenant_column)
        clause = f"USING ({expr}) WITH CHECK ({expr})"
        for t in tables.tenant:
            if can_own and t.owner != me.owner:
                await run(f"ALTER TABLE {t.qname} OWNER TO {owner}")
            parts = [s for s, ok in (("ENABLE", t.rls), ("FORCE", t.force)) if not ok]
            if parts:
                await run(f"ALTER TABLE {t.qname} " + ", ".join(f"{p} ROW LEVEL SECURITY" for p in parts))
            pol, on = policies.get(t.oid), f"{quote_ident(POLICY_NAME)} ON {t.qname}"
            if pol is not None and (pol.cmd != "*" or not pol.polpermissive):
                await run(f"DROP POLICY {on}")
                pol = None
            changed = True
            if pol is None:
                await run(f"CREATE POLICY {on} AS PERMISSIVE FOR ALL TO PUBLIC {clause}")
            elif list(pol.polroles) != [0] or pol.qual not in known or pol.chk not in known:
                await run(f"ALTER POLICY {on} TO PUBLIC {clause}")
            else:
                changed = False
            if changed:  # learn how this server deparses the expression
                known.add(await session.fetch_value(
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
            if not await session.fetch_value("SELECT has_schema_privilege($1, $2, 'USAGE')",
                                             app_role, schema):
                await run(f"GRANT USAGE ON SCHEMA {ns} TO {app}")
            # Sequences only: a table created by the owner role must stay closed to
            # the app until enforce has put RLS on it (fail closed, no window).
            if can_own and not await session.fetch_value(
                "SELECT EXISTS (SELECT FROM pg_default_acl d JOIN pg_namespace n "
                "ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) x WHERE d.defaclrole = $1 "
                "AND n.nspname = $2 AND d.defaclobjtype = 'S' AND x.grantee = $3 "
                "AND x.privilege_type = 'USAGE')", me.owner, schema, me.app):
                await run(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {ns} "
                          f"GRANT USAGE, SELECT ON SEQUENCES TO {app}")
    return EnforceResult(
        tuple(t.label for t in tables.tenant), tuple(t.label for t in tables.globals),
        tuple(t.label for t in tables.unprotected), tuple(done), tuple(warnings))


# what the policy can compare with the tenant's id (an int2) without a cast
TENANT_TYPES = frozenset({"smallint", "integer", "bigint"})


def _check_tenant_types(tables: list[_Rel], column: str) -> None:
    """Refuse (before changing anything) tables whose tenant column is not an integer:
    the policy compares it with the tenant's int2 id, and CREATE POLICY would fail on
    it with 42883 in the middle of the run's enforcement."""
    bad = [f"{t.label} ({t.tenant_type})" for t in tables if t.tenant_type not in TENANT_TYPES]
    if bad:
        raise TenantctlError(
            f"the tenant column {column} is not an integer in {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + ": the tenant policy compares it with the tenant's id (int2); no policy was changed",
            hint=f"make {column} smallint (or integer/bigint) in these tables, or set "
                 "tenant_column in tenants.yaml to the column that holds the tenant's id")


async def _join_owner(session: Session, owner_role: str, version: int,
                      done: list[str], warnings: list[str]) -> bool:
    """A non-superuser needs the owner role's privileges to hand tables over and alter them later."""
    sql = "SELECT pg_has_role(current_user, $1, 'USAGE')"
    if version >= 160000:
        sql += " AND pg_has_role(current_user, $1, 'SET')"
    if await session.fetch_value(sql, owner_role):
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


@dataclass(frozen=True)
class _Relation:
    schema: str
    name: str


async def _grant_sequences(session: Session, table_oids: list[int], app_role: str,
                           run: Callable[[str], Awaitable[None]]) -> None:
    """USAGE, SELECT on the identity/serial sequences of the tenant tables."""
    rows = await session.fetch_as(
        _Relation, "SELECT DISTINCT n.nspname AS schema, s.relname AS name FROM pg_depend d "
        "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_namespace n ON n.oid = s.relnamespace "
        "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND d.deptype IN ('a', 'i') AND d.refobjid = ANY($1::oid[]) "
        "AND NOT (has_sequence_privilege($2, s.oid, 'USAGE') "
        "AND has_sequence_privilege($2, s.oid, 'SELECT')) ORDER BY 1, 2", table_oids, app_role)
    for r in rows:
        await run(f"GRANT USAGE, SELECT ON SEQUENCE {quote_ident(r.schema)}."
                  f"{quote_ident(r.name)} TO {quote_ident(app_role)}")


# --------------------------------------------------------------- registry


async def ensure_registry(session: Session) -> None:
    """The shared tenant registry: bookkeeping, no RLS, no grant to the app role."""
    if await session.fetch_value("SELECT to_regclass($1) IS NOT NULL", f"public.{REGISTRY_TABLE}"):
        return
    try:
        async with session.transaction():
            await session.execute(REGISTRY_DDL)
    except DatabaseError as exc:  # a concurrent CREATE won (pg_type / pg_class unique index)
        if exc.sqlstate not in ("23505", "42P07"):
            raise


@dataclass(frozen=True)
class _Upserted:
    inserted: bool


@dataclass(frozen=True)
class _Registered:
    clnt_id: int


async def register(session: Session, clnt_id: int, name: str, sites: tuple[int, ...]) -> bool:
    """Upsert a tenant of the shared database; True if it was not registered before."""
    row = await session.fetch_one_as(
        _Upserted, f"INSERT INTO public.{REGISTRY_TABLE} AS r (clnt_id, name, sites) "
        "VALUES ($1, $2, $3::int2[]) "
        "ON CONFLICT (clnt_id) DO UPDATE SET name = excluded.name, sites = excluded.sites "
        "WHERE (r.name, r.sites) IS DISTINCT FROM (excluded.name, excluded.sites) "
        "RETURNING (xmax = 0) AS inserted", clnt_id, name, list(sites))
    return bool(row is not None and row.inserted)  # no row: registered already, unchanged


async def registered_ids(session: Session) -> list[int]:
    rows = await session.fetch_as(
        _Registered, f"SELECT clnt_id FROM public.{REGISTRY_TABLE} ORDER BY clnt_id")
    return [r.clnt_id for r in rows]
