"""check-isolation: audit a shared database's catalog and probe it live.

Catalog checks: RLS enabled and forced with a tenant-bound policy on every
table with the tenant column (tenants.yaml's ``tenant_column``, default
``clnt_id``), the app role's attributes, memberships, ownership and
privileges, views without ``security_invoker``, SECURITY DEFINER functions
(an error when the app role can execute one whose owner bypasses RLS; their
``search_path``), keys without the tenant column. Check ids are stable: the two
that name ``clnt_id`` (``unique-without-clnt_id``, ``fk-without-clnt_id``) keep
that name whatever the column is called. The live probe
(:mod:`tenantctl.isolation_probe`) connects as the app role with two real
tenants, inside a transaction that is always rolled back, and calls the
definer functions it can call without guessing arguments in a read-only
transaction, each call bounded and in a savepoint rolled back.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from .drivers.base import Driver, Session
from .drivers.postgres import DRIVER, quote_ident
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
from .isolation_probe import Definer, Findings, probe
from .isolation_probe import IsolationFinding as IsolationFinding

DEFINER_CALL_TIMEOUT = 5.0  # seconds: statement_timeout of each probe call of a definer function


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
                          tenant_column: str, probe_dsn: str | None = None,
                          driver: Driver | None = None) -> list[IsolationFinding]:
    """Audit the shared database's catalog; with two tenants, probe live as the app role.

    Tenant tables are those with a ``tenant_column``; the tenant policy must compare
    that column with the tenant setting.

    The probe logs in as the app role (``probe_dsn``, else ``admin_dsn`` with the
    user replaced) and runs in one transaction that is rolled back. ``driver``
    opens both connections (None: PostgreSQL).
    """
    out = Findings()
    async with await (DRIVER if driver is None else driver).connect(admin_dsn, database) as admin:
        tables = await _tables(admin, app_role, global_tables, tenant_column)
        app_exists = await _role_checks(admin, out, app_role, owner_role, tables.tenant)
        await _table_checks(admin, out, app_role, tables, tenant_column)
        definers = await _definer_checks(admin, out, app_role, tables.tenant, tenant_column)
    if probe_tenants is not None and tables.tenant and app_exists:
        await probe(out, probe_dsn or role_dsn(admin_dsn, app_role), database, tables.tenant,
                    probe_tenants, [d for d in definers if d.callable], tenant_column=tenant_column,
                    definer_timeout=DEFINER_CALL_TIMEOUT, driver=driver)
    return list(out)


@dataclass(frozen=True)
class _AppRole:
    oid: int
    rolsuper: bool
    rolbypassrls: bool


@dataclass(frozen=True)
class _Member:  # a role the app role is a member of
    rolname: str
    rolsuper: bool
    rolbypassrls: bool


@dataclass(frozen=True)
class _Owned:
    what: str  # "table x.y", "function f(integer)", "schema s"


async def _role_checks(s: Session, out: Findings, app_role: str, owner_role: str,
                       tenant: list[_Rel]) -> bool:
    app = await s.fetch_one_as(
        _AppRole, "SELECT oid, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", app_role)
    if app is None:
        out.add("app-role-missing", None, f"app role {app_role} does not exist")
        return False
    for bad, what in ((app.rolsuper, "superuser"), (app.rolbypassrls, "bypassrls")):
        if bad:
            out.add(f"app-role-{what}", None, f"{app_role} is {what.upper()}: RLS never applies to it")
    for r in await s.fetch_as(  # NOINHERIT does not stop SET ROLE
        _Member, "SELECT r.rolname, r.rolsuper, r.rolbypassrls FROM pg_roles r WHERE r.oid <> $1 "
        "AND (r.rolsuper OR r.rolbypassrls OR r.rolname = $2 OR r.oid = ANY($3::oid[])) "
        "AND pg_has_role($1, r.oid, 'MEMBER') ORDER BY 1",
        app.oid, owner_role, list({t.owner for t in tenant}),
    ):
        what = "a superuser" if r.rolsuper else "BYPASSRLS" if r.rolbypassrls else "a table owner"
        out.add("app-role-membership", None,
                f"{app_role} is a member of {r.rolname} ({what}): SET ROLE escapes the tenant policy")
    owned = await s.fetch_as(
        _Owned, "SELECT 'table ' || c.oid::regclass AS what FROM pg_class c WHERE c.relowner = $1 "
        "UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p WHERE p.proowner = $1 "
        "UNION ALL SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE n.nspowner = $1 "
        "ORDER BY 1 LIMIT 20", app.oid)
    if owned:
        out.add("app-role-owns-objects", None, f"{app_role} owns objects (an owner can disable RLS): "
                + ", ".join(r.what for r in owned))
    return True


def _tenant_bound(expr: str | None, column: str) -> bool:
    """The policy expression (pg_get_expr text) compares ``column`` with the tenant setting.

    A whole-word match: a column ``tenant_id`` is not found in ``old_tenant_id``.
    """
    return (expr is not None and TENANT_SETTING in expr
            and re.search(rf'(?<![\w$"]){column}(?![\w$"])|"{column}"', expr) is not None)


@dataclass(frozen=True)
class _Policy:
    polrelid: int
    polname: str
    cmd: str
    qual: str | None
    chk: str | None


@dataclass(frozen=True)
class _UniqueIndex:
    indrelid: int
    relname: str


@dataclass(frozen=True)
class _ForeignKey:
    conrelid: int
    conname: str
    parent: str


@dataclass(frozen=True)
class _View:
    label: str
    kind: str
    opts: list[str]


async def _table_checks(s: Session, out: Findings, app_role: str, tables: _Tables,
                        column: str) -> None:
    tenant = {t.oid: t for t in tables.tenant}
    oids = list(tenant)
    pols = await s.fetch_as(  # permissive policies that reach the app role (they are OR-ed)
        _Policy, "SELECT polrelid, polname, polcmd::text AS cmd, pg_get_expr(polqual, polrelid) AS qual, "
        "pg_get_expr(polwithcheck, polrelid) AS chk FROM pg_policy WHERE polpermissive "
        "AND polrelid = ANY($1::oid[]) AND (0 = ANY(polroles) OR EXISTS (SELECT FROM unnest(polroles) "
        "pr WHERE pg_has_role($2::name, pr, 'MEMBER'))) ORDER BY polname", oids, app_role)
    for t in tables.tenant:
        if not t.rls:
            out.add("rls-disabled", t.label, f"{t.label} has {column} but row-level security is disabled")
        if not t.force:
            out.add("rls-not-forced", t.label, f"{t.label}: row-level security is not forced, so its "
                    "owner (and members of the owner role) bypass it")
        missing, loose = [], set()
        for cmd, code in (("SELECT", "r"), ("INSERT", "a"), ("UPDATE", "w"), ("DELETE", "d")):
            applies = [p for p in pols if p.polrelid == t.oid and p.cmd in ("*", code)]
            missing += [] if applies else [cmd]
            for p in applies:
                check = p.chk or p.qual  # without WITH CHECK, USING checks new rows
                exprs = {"r": [p.qual], "d": [p.qual], "a": [check], "w": [p.qual, check]}
                if not all(_tenant_bound(e, column) for e in exprs[code]):
                    loose.add(p.polname)
        if missing:
            out.add("policy-missing", t.label, f"{t.label}: no permissive policy for "
                    f"{', '.join(missing)} reaches the app role")
        for name in sorted(loose):
            out.add("policy-not-tenant-bound", t.label, f"{t.label}: permissive policy {name} does not "
                    f"compare {column} with {TENANT_SETTING}; permissive policies are OR-ed, so it opens "
                    "the table")
        if risky := sorted(t.effective & set(_RISKY)):
            out.add("app-role-excess-privilege", t.label, f"{app_role} has {', '.join(risky)} on "
                    f"{t.label}" + (" (TRUNCATE ignores RLS)" if "TRUNCATE" in risky else ""))
    for t in tables.unprotected + tables.bookkeeping:
        if t.effective & set(APP_PRIVILEGES):
            out.add("unprotected-table", t.label, f"{app_role} can access {t.label}, which has no "
                    f"{column} and is not listed in global_tables")
    for ix in await s.fetch_as(
        _UniqueIndex,
        "SELECT i.indrelid, ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = $2 "
        "WHERE i.indisunique AND i.indrelid = ANY($1::oid[]) "
        "AND NOT a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1]) ORDER BY 2", oids, column):
        label = tenant[ix.indrelid].label
        out.add("unique-without-clnt_id", label, f"{label}: unique index {ix.relname} does not have "
                f"{column} in its key; a duplicate in another tenant shows up as a 23505")
    for fk in await s.fetch_as(
        _ForeignKey,
        "SELECT c.conrelid, c.conname, c.confrelid::regclass::text AS parent FROM pg_constraint c "
        "JOIN pg_attribute ca ON ca.attrelid = c.conrelid AND ca.attname = $2 "
        "JOIN pg_attribute pa ON pa.attrelid = c.confrelid AND pa.attname = $2 "
        "WHERE c.contype = 'f' AND c.conrelid = ANY($1::oid[]) AND NOT EXISTS (SELECT FROM "
        "generate_subscripts(c.conkey, 1) k WHERE c.conkey[k] = ca.attnum AND c.confkey[k] = pa.attnum) "
        "ORDER BY 2", oids, column):
        label = tenant[fk.conrelid].label
        out.add("fk-without-clnt_id", label, f"{label}: foreign key {fk.conname} to {fk.parent} "
                f"does not pair {column} with {column}; RI checks ignore RLS, so rows can point into "
                "another tenant")
    for v in await s.fetch_as(  # views reading tenant tables, directly or through other views
        _View,
        "WITH RECURSIVE reads(oid) AS (SELECT unnest($1::oid[]) UNION SELECT w.ev_class FROM pg_depend d "
        "JOIN pg_rewrite w ON w.oid = d.objid JOIN reads ON d.refobjid = reads.oid "
        "WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass "
        "AND w.ev_class <> d.refobjid) "
        "SELECT n.nspname || '.' || c.relname AS label, c.relkind::text AS kind, "
        "coalesce(c.reloptions, '{}') AS opts FROM reads JOIN pg_class c ON c.oid = reads.oid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {_USER_NS} "
        "ORDER BY 1", oids):
        if v.kind == "m":
            out.add("materialized-view", v.label, f"materialized view {v.label} stores rows of "
                    "tenant tables and has no row-level security")
        elif not any(o.partition("=")[::2] in _INVOKER_ON for o in v.opts):
            out.add("view-not-security-invoker", v.label, f"view {v.label} reads tenant tables "
                    "with its owner's rights; set security_invoker = true")


_INVOKER_ON = {("security_invoker", v) for v in ("true", "on", "1", "yes", "t", "y")}


# ---------------------------------------------------------- SECURITY DEFINER

_DEFINERS = f"""
SELECT p.oid, n.nspname, p.proname, p.oid::regprocedure::text AS sig, o.rolname AS owner,
       o.rolsuper, o.rolbypassrls, p.prokind::text AS kind, p.proretset,
       format_type(p.prorettype, NULL) AS rettype, t.typtype::text AS typtype,
       p.pronargs, p.pronargdefaults,
       EXISTS (SELECT FROM unnest(p.proargmodes::text[]) m WHERE m IN ('o', 'b', 't')) AS has_out,
       (EXISTS (SELECT FROM pg_attribute x WHERE x.attrelid = t.typrelid AND x.attname = $3
                AND x.attnum > 0 AND NOT x.attisdropped)
        OR EXISTS (SELECT FROM unnest(p.proargnames, p.proargmodes::text[]) u(nm, md)
                   WHERE u.md IN ('o', 'b', 't') AND u.nm = $3)) AS tenant_column,
       (SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) c
        WHERE c LIKE 'search\\_path=%' LIMIT 1) AS search_path,
       coalesce(has_function_privilege(a.oid, p.oid, 'EXECUTE')
                AND has_schema_privilege(a.oid, n.oid, 'USAGE'), false) AS callable,
       ARRAY(SELECT c.oid FROM pg_class c WHERE c.oid = ANY($2::oid[])
             AND ((NOT c.relforcerowsecurity AND pg_has_role(p.proowner, c.relowner, 'USAGE'))
                  OR (NOT c.relrowsecurity AND has_table_privilege(p.proowner, c.oid, 'SELECT')))
             ORDER BY 1) AS bypassed
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_roles o ON o.oid = p.proowner
JOIN pg_type t ON t.oid = p.prorettype
LEFT JOIN pg_roles a ON a.rolname = $1
WHERE p.prosecdef AND {_USER_NS} AND {_NOT_EXT.format(cls="'pg_proc'", oid="p.oid")}
ORDER BY 4"""


@dataclass(frozen=True)
class _DefinerRow:
    oid: int
    nspname: str
    proname: str
    sig: str  # regprocedure text, e.g. ordr.peek()
    owner: str
    rolsuper: bool
    rolbypassrls: bool
    kind: str  # prokind: f function, p procedure, a aggregate, w window
    proretset: bool
    rettype: str
    typtype: str
    pronargs: int
    pronargdefaults: int
    has_out: bool  # OUT / INOUT / TABLE arguments
    tenant_column: bool  # its rows have the tenant column
    search_path: str | None  # as pinned with SET search_path; None: not pinned
    callable: bool  # the app role has EXECUTE on it and USAGE on its schema
    bypassed: list[int]  # tenant tables whose RLS its owner bypasses


@dataclass(frozen=True)
class _Schema:
    nspname: str


def _listing(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _path_entries(value: str) -> list[str]:
    """``search_path`` as stored in proconfig (``"$user", public``) → unquoted names."""
    return [e.strip().strip('"').replace('""', '"') for e in value.split(",") if e.strip()]


def _probe_skip(r: _DefinerRow) -> str | None:
    if r.kind != "f":
        return "it is a procedure, not a function" if r.kind == "p" else f"its kind is {r.kind!r}"
    if r.pronargs > r.pronargdefaults:
        required = r.pronargs - r.pronargdefaults
        return f"it takes {required} argument(s) without a default (the probe never guesses arguments)"
    if r.rettype == "record" and not r.has_out:
        return "it returns record without a column list"
    if r.typtype == "p" and r.rettype != "record":
        return f"it returns {r.rettype}"
    if not (r.proretset or r.typtype == "c" or r.has_out):
        return f"it returns a single {r.rettype} value, not rows"
    return None


async def _definer_checks(s: Session, out: Findings, app_role: str, tenant: list[_Rel],
                          column: str) -> list[Definer]:
    """SECURITY DEFINER functions: an error when the app role can execute one whose owner
    bypasses RLS (every tenant's rows are reachable through it); otherwise a warning."""
    rows = await s.fetch_as(_DefinerRow, _DEFINERS, app_role, [t.oid for t in tenant], column)
    if not rows:
        return []
    by_oid = {t.oid: t for t in tenant}
    writable = {r.nspname for r in await s.fetch_as(
        _Schema, f"SELECT n.nspname FROM pg_namespace n JOIN pg_roles a ON a.rolname = $1 WHERE {_USER_NS} "
        "AND has_schema_privilege(a.oid, n.oid, 'CREATE') ORDER BY 1", app_role)}
    found: list[Definer] = []
    for r in rows:
        fn, owner = f"function {r.sig}", r.owner
        if r.rolsuper:
            why = f"{owner} is a superuser"
        elif r.rolbypassrls:
            why = f"{owner} has BYPASSRLS"
        elif r.bypassed:
            rels = [by_oid[o] for o in r.bypassed]
            disabled = [t.label for t in rels if not t.rls]
            unforced = [t.label for t in rels if t.rls]
            why = " and ".join(part for part in (
                unforced and f"{owner} owns (or has the rights of the owner of) {_listing(unforced)}, "
                             "whose row-level security is not forced",
                disabled and f"{owner} can read {_listing(disabled)}, whose row-level security is disabled",
            ) if part)
        else:
            why = None
        if r.rettype in ("trigger", "event_trigger"):
            out.add("security-definer", None, f"{fn} is a SECURITY DEFINER trigger function owned by "
                    f"{owner}: it runs with its owner's rights whenever its trigger fires"
                    + (f" ({why}); make sure it touches only the current tenant's rows" if why else ""),
                    "warning")
            continue
        if why and r.callable:
            out.add("security-definer-bypasses-rls", None,
                    f"{fn} is SECURITY DEFINER and {app_role} can execute it, but its owner bypasses "
                    f"row-level security ({why}): whatever it reads or writes is not filtered by tenant, so "
                    f"every tenant's rows are reachable through it. Make it SECURITY INVOKER, revoke EXECUTE "
                    f"from PUBLIC and {app_role}, or give it to an owner that is subject to forced RLS")
        elif why:
            out.add("security-definer", None, f"{fn} is SECURITY DEFINER and its owner bypasses row-level "
                    f"security ({why}), but {app_role} cannot execute it; keep it that way (EXECUTE for "
                    f"PUBLIC or {app_role} would open every tenant's rows)", "warning")
        elif r.callable:
            out.add("security-definer", None, f"{fn} is SECURITY DEFINER: it runs with the rights of its "
                    f"owner {owner}, which is subject to forced row-level security; make sure it does not "
                    "change the tenant setting or reach tables without RLS", "warning")
        else:
            out.add("security-definer", None, f"{fn} is SECURITY DEFINER (owner {owner}, subject to forced "
                    f"row-level security) and {app_role} cannot execute it", "warning")
        if r.callable:
            _search_path_check(out, r.sig, r.search_path, owner, app_role, writable)
        found.append(Definer(r.sig, f"{quote_ident(r.nspname)}.{quote_ident(r.proname)}", owner,
                             r.callable, r.tenant_column, _probe_skip(r)))
    return found


def _search_path_check(out: Findings, sig: str, value: str | None, owner: str, app_role: str,
                       writable: set[str]) -> None:
    """A definer function resolves names with its search_path: unpinned, the caller chooses it."""
    fn = f"function {sig}"
    fix = f"ALTER FUNCTION {sig} SET search_path = <schema>, pg_temp"
    if value is None:
        planted = (f"; {app_role} can create objects in {_listing(sorted(writable))}" if writable else "")
        out.add("security-definer-search-path", None, f"{fn} is SECURITY DEFINER without a pinned "
                f"search_path: it resolves unqualified names with the caller's search_path, so a caller can "
                f"substitute its own tables, functions or operators{planted} ({fix})", "warning")
        return
    entries = _path_entries(value)
    listed = [owner if e == "$user" else e for e in entries]
    if open_ := [e for e in listed if e in writable]:
        out.add("security-definer-search-path", None, f"{fn} pins search_path = {value}, but {app_role} can "
                f"create objects in {_listing(open_)}: it could plant functions or operators that run with "
                f"the owner's rights", "warning")
    if not entries or entries[-1].lower() != "pg_temp":
        out.add("security-definer-search-path", None, f"{fn} pins search_path = {value} without pg_temp "
                "last: the caller's temporary tables are searched first and can stand in for its tables "
                f"({fix})", "warning")
