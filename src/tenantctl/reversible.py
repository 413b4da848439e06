"""``tenantctl check-reversible``: do the down scripts really undo their ups?

On a scratch database (dropped afterwards, also on failure), for each migration
in version order: snapshot the catalog (S0), up, snapshot (S1), down, snapshot
(S2) compared with S0 (phase ``down``), up again, snapshot (S3) compared with
S1 (phase ``redo``). No down script: phase ``missing-down``, the up stays
applied and the check goes on. An up, down or redo that fails: phase ``error``
with its SQLSTATE, and the check stops.

When both scripts are transactional, down/S2/redo/S3 run in one outer
transaction that is rolled back, so the database returns exactly to S1 even
after an incomplete down (whose redo is skipped: from a state other than S0
it proves nothing). A no-transaction script cannot be rewound: down and redo
then run for real.

A snapshot is one catalog query (search_path pinned to pg_catalog, so names
are qualified the same whatever a migration SET): kind -> {qualified name ->
canonical text}, never an OID. Needs PostgreSQL 14 or later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .drivers.base import Driver, Session
from .drivers.postgres import DRIVER
from .errors import BadInputError, DatabaseError
from .migrations import Migration, Script
from .rollback import rolled_back

Snapshot = dict[str, dict[str, str]]

KINDS = ("schema", "extension", "type", "table", "column", "constraint", "index", "sequence",
         "view", "function", "trigger", "rule", "policy", "statistics")

_USER_NS = "{n}.nspname NOT LIKE 'pg\\_%' AND {n}.nspname <> 'information_schema'"
_NOT_EXT = ("NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = '{cat}'::regclass "
            "AND x.objid = {oid} AND x.deptype = 'e')")
# Relation c (in schema n) is the user's: not a system one, not tenantctl's, not an extension's.
_REL = " AND ".join((_USER_NS.format(n="n"), "c.relname NOT LIKE 'tenantctl\\_%'",
                     _NOT_EXT.format(cat="pg_class", oid="c.oid")))
_FROM_REL = "pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
_ACL = "'acl ' || {}::text"
_COMMENT = "'comment ' || obj_description({}, '{}')"

_PARTS = {
    "schema": f"""
SELECT quote_ident(n.nspname), concat_ws(E'\\n', 'owner ' || pg_get_userbyid(n.nspowner),
  {_ACL.format('n.nspacl')}, {_COMMENT.format('n.oid', 'pg_namespace')})
FROM pg_namespace n WHERE {_USER_NS.format(n='n')}
  AND {_NOT_EXT.format(cat='pg_namespace', oid='n.oid')}""",
    "extension": """
SELECT quote_ident(e.extname), 'version ' || e.extversion || E'\\nschema ' || quote_ident(n.nspname)
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace""",
    "type": f"""
SELECT format('%I.%I', n.nspname, t.typname), concat_ws(E'\\n', CASE t.typtype
  WHEN 'e' THEN 'enum ' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                            FROM pg_enum e WHERE e.enumtypid = t.oid)
  WHEN 'd' THEN concat_ws(E'\\n', 'domain over ' || format_type(t.typbasetype, t.typtypmod),
    CASE WHEN t.typnotnull THEN 'not null' END, 'default ' || t.typdefault,
    (SELECT string_agg('constraint ' || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid),
                       E'\\n' ORDER BY k.conname) FROM pg_constraint k WHERE k.contypid = t.oid))
  WHEN 'c' THEN 'composite (' || (SELECT string_agg(quote_ident(a.attname) || ' '
    || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum) FROM pg_attribute a
    WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) || ')'
  WHEN 'r' THEN 'range of ' || (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r
                                 WHERE r.rngtypid = t.oid)
  END, {_COMMENT.format('t.oid', 'pg_type')})
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE {_USER_NS.format(n='n')} AND {_NOT_EXT.format(cat='pg_type', oid='t.oid')}
  AND (t.typtype IN ('e', 'd', 'r')
       OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))""",
    "table": f"""
SELECT format('%I.%I', n.nspname, c.relname), concat_ws(E'\\n', 'relkind ' || c.relkind::text,
  'persistence ' || c.relpersistence::text, 'row security ' || c.relrowsecurity,
  'force row security ' || c.relforcerowsecurity, 'options ' || array_to_string(c.reloptions, ','),
  'partition by ' || pg_get_partkeydef(c.oid), 'bound ' || pg_get_expr(c.relpartbound, c.oid),
  'inherits ' || (SELECT string_agg(p.oid::regclass::text, ', ' ORDER BY i.inhseqno)
                  FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE i.inhrelid = c.oid),
  'replica identity ' || c.relreplident::text, 'owner ' || pg_get_userbyid(c.relowner),
  {_ACL.format('c.relacl')}, {_COMMENT.format('c.oid', 'pg_class')})
FROM {_FROM_REL} WHERE c.relkind IN ('r', 'p', 'f') AND {_REL}""",
    "column": f"""
SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname), concat_ws(E'\\n',
  'type ' || format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN 'not null' END,
  CASE WHEN a.attgenerated = '' THEN 'default ' ELSE 'generated ' || a.attgenerated::text || ' ' END
    || pg_get_expr(d.adbin, d.adrelid),
  CASE WHEN a.attidentity <> '' THEN 'identity ' || a.attidentity::text END,
  CASE WHEN a.attcollation <> t.typcollation THEN 'collation ' || a.attcollation::regcollation::text END,
  CASE WHEN a.attstorage <> t.typstorage THEN 'storage ' || a.attstorage::text END,
  CASE WHEN a.attcompression <> '' THEN 'compression ' || a.attcompression::text END,
  'options ' || array_to_string(a.attoptions, ','), {_ACL.format('a.attacl')},
  'comment ' || col_description(c.oid, a.attnum))
FROM {_FROM_REL} JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relkind IN ('r', 'p', 'f') AND {_REL}""",
    "constraint": f"""
SELECT format('%I.%I.%I', n.nspname, c.relname, k.conname),
  concat_ws(E'\\n', pg_get_constraintdef(k.oid), {_COMMENT.format('k.oid', 'pg_constraint')})
FROM pg_constraint k JOIN {_FROM_REL} ON c.oid = k.conrelid
WHERE k.contype <> 'n' AND {_REL}""",
    "index": f"""
SELECT format('%I.%I', n.nspname, ic.relname), concat_ws(E'\\n', pg_get_indexdef(i.indexrelid),
  'valid ' || i.indisvalid, CASE WHEN i.indisclustered THEN 'clustered' END,
  CASE WHEN i.indisreplident THEN 'replica identity' END, {_COMMENT.format('ic.oid', 'pg_class')})
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN {_FROM_REL} ON c.oid = i.indrelid
WHERE {_REL} AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
  AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))""",
    "sequence": f"""
SELECT format('%I.%I', n.nspname, c.relname), concat_ws(E'\\n', 'type ' || format_type(s.seqtypid, NULL),
  'start ' || s.seqstart, 'increment ' || s.seqincrement, 'min ' || s.seqmin, 'max ' || s.seqmax,
  'cache ' || s.seqcache, 'cycle ' || s.seqcycle, 'persistence ' || c.relpersistence::text,
  'owned by ' || (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname)
    || CASE d.deptype WHEN 'i' THEN ' (identity)' ELSE '' END FROM pg_depend d
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1),
  {_ACL.format('c.relacl')}, {_COMMENT.format('c.oid', 'pg_class')})
FROM pg_sequence s JOIN {_FROM_REL} ON c.oid = s.seqrelid WHERE {_REL}""",
    "view": f"""
SELECT format('%I.%I', n.nspname, c.relname), concat_ws(E'\\n',
  CASE c.relkind WHEN 'm' THEN 'materialized, populated ' || c.relispopulated ELSE 'view' END,
  'options ' || array_to_string(c.reloptions, ','), pg_get_viewdef(c.oid, true),
  {_ACL.format('c.relacl')}, {_COMMENT.format('c.oid', 'pg_class')})
FROM {_FROM_REL} WHERE c.relkind IN ('v', 'm') AND {_REL}""",
    "function": f"""
SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
  concat_ws(E'\\n', CASE WHEN p.prokind = 'a' THEN (SELECT concat_ws(' ', 'aggregate sfunc',
      g.aggtransfn::text, 'stype', format_type(g.aggtranstype, NULL), 'finalfunc', g.aggfinalfn::text,
      'combinefunc', g.aggcombinefn::text, 'initcond', g.agginitval, 'sortop', g.aggsortop::regoper::text)
      FROM pg_aggregate g WHERE g.aggfnoid = p.oid)
    ELSE rtrim(pg_get_functiondef(p.oid), E'\\n') END,
  'owner ' || pg_get_userbyid(p.proowner), {_ACL.format('p.proacl')}, {_COMMENT.format('p.oid', 'pg_proc')})
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER_NS.format(n='n')} AND {_NOT_EXT.format(cat='pg_proc', oid='p.oid')}
  AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass
                  AND x.objid = p.oid AND x.deptype = 'i')  -- a range type's constructors""",
    "trigger": f"""
SELECT format('%I.%I.%I', n.nspname, c.relname, g.tgname), concat_ws(E'\\n', pg_get_triggerdef(g.oid),
  'enabled ' || g.tgenabled::text, {_COMMENT.format('g.oid', 'pg_trigger')})
FROM pg_trigger g JOIN {_FROM_REL} ON c.oid = g.tgrelid WHERE NOT g.tgisinternal AND {_REL}""",
    "rule": f"""
SELECT format('%I.%I.%I', n.nspname, c.relname, r.rulename),
  pg_get_ruledef(r.oid) || E'\\nenabled ' || r.ev_enabled::text
FROM pg_rewrite r JOIN {_FROM_REL} ON c.oid = r.ev_class WHERE r.rulename <> '_RETURN' AND {_REL}""",
    "statistics": f"""
SELECT format('%s.%I', s.stxnamespace::regnamespace, s.stxname), pg_get_statisticsobjdef(s.oid)
FROM pg_statistic_ext s JOIN {_FROM_REL} ON c.oid = s.stxrelid WHERE {_REL}""",
    "policy": f"""
SELECT format('%I.%I.%I', n.nspname, c.relname, p.polname), concat_ws(E'\\n',
  CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END, 'command ' || p.polcmd::text,
  'roles ' || (SELECT string_agg(r, ', ' ORDER BY r) FROM (SELECT CASE o WHEN 0 THEN 'public'
               ELSE pg_get_userbyid(o)::text END AS r FROM unnest(p.polroles) o) x),
  'using ' || pg_get_expr(p.polqual, p.polrelid), 'check ' || pg_get_expr(p.polwithcheck, p.polrelid))
FROM pg_policy p JOIN {_FROM_REL} ON c.oid = p.polrelid WHERE {_REL}""",
}

# Each part selects (name, definition); the parts are named by the alias list.
SNAPSHOT_SQL = "SELECT * FROM (" + "\nUNION ALL".join(
    part.replace("SELECT ", f"SELECT '{kind}'::text, ", 1) for kind, part in _PARTS.items()
) + "\n) AS objects(kind, name, definition)\nORDER BY 1, 2"


@dataclass(frozen=True)
class _CatalogObject:
    kind: str
    name: str
    definition: str | None


async def snapshot(session: Session) -> Snapshot:
    """The catalog of the connected database: kind -> {qualified name -> definition}, sorted."""
    rows: list[_CatalogObject] = []
    async with rolled_back(session):
        await session.execute("SET LOCAL search_path = pg_catalog")
        rows = await session.fetch_as(_CatalogObject, SNAPSHOT_SQL)
    out: Snapshot = {kind: {} for kind in KINDS}
    for kind, name, definition in sorted((r.kind, r.name, r.definition or "") for r in rows):
        out[kind][name] = definition
    return out


def _short(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _changes(before: Snapshot, after: Snapshot) -> list[tuple[str, str, str, str]]:
    """(change, kind, name, detail) with change one of added / removed / changed."""
    out = []
    for kind in sorted(set(before) | set(after)):
        old, new = before.get(kind, {}), after.get(kind, {})
        for name in sorted(set(old) | set(new)):
            if name not in old:
                out.append(("added", kind, name, _short(new[name].split("\n", 1)[0])))
            elif name not in new:
                out.append(("removed", kind, name, _short(old[name].split("\n", 1)[0])))
            elif old[name] != new[name]:
                was, now = old[name].split("\n"), new[name].split("\n")
                lines = ([f"-{x}" for x in was if x not in now][:2]
                         + [f"+{x}" for x in now if x not in was][:2])
                out.append(("changed", kind, name, _short("; ".join(lines) or "line order differs", 200)))
    return out


def diff(before: Snapshot, after: Snapshot) -> list[tuple[str, str, str]]:
    """Pure: (kind, name, detail) for every object added, removed or changed, sorted."""
    return [(kind, name, f"{change}: {detail}") for change, kind, name, detail in _changes(before, after)]


@dataclass(frozen=True)
class Difference:
    """One finding of check-reversible."""

    migration: str  # the up script's file name
    phase: str  # "down" | "redo" | "missing-down" | "error"
    kind: str  # an object kind of KINDS; for "error" the failed step: up / down / redo
    name: str  # qualified object name; for "error"/"missing-down" a script file name
    detail: str
    sqlstate: str | None = None  # phase "error" only

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_WORDING = {
    "down": {"added": "left behind by down", "removed": "missing after down (was there before up)",
             "changed": "not restored by down"},
    "redo": {"added": "only after redo", "removed": "missing after redo", "changed": "differs after redo"},
}


def _compare(migration: Migration, phase: str, expected: Snapshot, actual: Snapshot) -> list[Difference]:
    return [Difference(migration.filename, phase, kind, name, f"{_WORDING[phase][change]}: {detail}")
            for change, kind, name, detail in _changes(expected, actual)]


def _error(migration: Migration, step: str, script: Script, exc: DatabaseError, note: str = "") -> Difference:
    return Difference(migration.filename, "error", step, script.path.name,
                      f"{step} failed{note}: {exc}", sqlstate=exc.sqlstate)


async def _apply(session: Session, script: Script) -> None:
    if not script.statements:
        return  # an empty or comment-only script: a no-op
    if script.transactional:
        async with session.transaction():  # a savepoint inside a trial
            await session.execute(script.sql)
    else:
        for statement in script.statements:
            await session.execute(statement.sql)


async def _down_and_redo(
    session: Session, m: Migration, s0: Snapshot, s1: Snapshot, out: list[Difference], rewinding: bool
) -> tuple[bool, Snapshot]:
    """Down, compare with S0, redo, compare with S1. Returns (stop, snapshot of the end state)."""
    assert m.down is not None
    try:
        await _apply(session, m.down)
    except DatabaseError as exc:
        out.append(_error(m, "down", m.down, exc))
        return True, s1
    down_diffs = _compare(m, "down", s0, await snapshot(session))
    out.extend(down_diffs)
    if down_diffs and rewinding:
        return False, s1  # the rollback restores S1; a redo from here would prove nothing
    try:
        await _apply(session, m.up)
    except DatabaseError as exc:
        note = f" (after a down that left {len(down_diffs)} difference(s))" if down_diffs else ""
        out.append(_error(m, "redo", m.up, exc, note))
        return True, s1
    s3 = await snapshot(session)
    out.extend(_compare(m, "redo", s1, s3))
    return False, s3


async def _check(session: Session, migrations: tuple[Migration, ...]) -> list[Difference]:
    out: list[Difference] = []
    state = await snapshot(session)
    for m in migrations:
        s0 = state
        try:
            await _apply(session, m.up)
        except DatabaseError as exc:
            out.append(_error(m, "up", m.up, exc))
            break
        state = s1 = await snapshot(session)
        if m.down is None:
            out.append(Difference(m.filename, "missing-down", "migration", m.filename,
                                  "no down script: cannot be undone; the check goes on with it applied"))
            continue
        if m.up.transactional and m.down.transactional:
            async with rolled_back(session):  # the trial: back to S1 whatever happens in it
                stop, _ = await _down_and_redo(session, m, s0, s1, out, rewinding=True)
        else:
            stop, state = await _down_and_redo(session, m, s0, s1, out, rewinding=False)
        if stop:
            break
    return out


async def check_reversible(
    dsn: str, migrations: tuple[Migration, ...], *, scratch_name: str, driver: Driver | None = None
) -> list[Difference]:
    """Run the up/down/up experiment on a new scratch database, dropped afterwards.

    ``driver`` opens the connections and manages the scratch database (None: PostgreSQL).
    """
    db = DRIVER if driver is None else driver
    async with await db.connect(dsn) as admin:
        if not await db.create_database(admin, scratch_name):
            raise BadInputError(f"scratch database {scratch_name} already exists",
                                hint="drop it, or choose another scratch name")
        try:
            async with await db.connect(dsn, scratch_name) as session:
                return await _check(session, migrations)
        finally:
            await db.drop_database(admin, scratch_name)
