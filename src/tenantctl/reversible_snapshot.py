"""check-reversible's catalog snapshot: one query, kind -> {qualified name -> text}.

search_path is pinned to pg_catalog (names are qualified the same whatever a
migration SET) and DateStyle to ISO; never an OID. Needs PostgreSQL 14 or later.

Values that change on every creation are not differences: a definition that
froze ``'now'`` (a view, materialized view, column default, check constraint,
index predicate or policy that says ``'now'::timestamp``) holds the moment it
was created, e.g. ``'2026-11-23 17:00:00.123456'::timestamp without time
zone``. :func:`normalise` replaces such literals (a time of day with fractional
seconds, typed timestamp or time) by ``'<frozen timestamp>'``. A literal
written by hand (``'2020-01-01'::date``, ``'2020-01-01 00:00:00'::timestamp``)
is compared as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .drivers.base import Session
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
  CASE WHEN i.indisreplident THEN 'replica identity' END, {_COMMENT.format('ic.oid', 'pg_class')},
  format('table %I.%I', n.nspname, c.relname))
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
SELECT format('%s.%I', s.stxnamespace::regnamespace, s.stxname),
  pg_get_statisticsobjdef(s.oid) || format(E'\\ntable %I.%I', n.nspname, c.relname)
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
        await session.execute("SET LOCAL search_path = pg_catalog; SET LOCAL datestyle = 'ISO, YMD'")
        rows = await session.fetch_as(_CatalogObject, SNAPSHOT_SQL)
    out: Snapshot = {kind: {} for kind in KINDS}
    for kind, name, definition in sorted((r.kind, r.name, r.definition or "") for r in rows):
        out[kind][name] = normalise(definition)
    return out


FROZEN = "'<frozen timestamp>'"
# What 'now' becomes when PostgreSQL folds it into a stored expression (ISO DateStyle):
# a date and a time of day with fractional seconds (or a time alone), an optional
# zone offset, cast to timestamp or time with or without time zone.
_FROZEN_LITERAL = re.compile(
    r"'(?:\d{4,}-\d\d-\d\d )?\d\d:\d\d:\d\d\.\d{1,6}(?:[+-]\d\d(?::\d\d){0,2})?(?: BC)?'"
    r"(?=::(?:timestamp|time)(?:\(\d\))? with(?:out)? time zone)"
)


def normalise(definition: str) -> str:
    """Pure: a definition with every frozen 'now' literal replaced by FROZEN."""
    return _FROZEN_LITERAL.sub(FROZEN, definition)
