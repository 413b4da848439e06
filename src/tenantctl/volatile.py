"""Which migrations must run per tenant instead of being baked into a template: pure.

Provisioning clones new tenant databases from a template database built from the
migrations. Whatever the template's migrations *wrote* is then copied into every
tenant byte for byte. For a value meant to be unique or secret that is a
cross-tenant hole: ``CREATE TABLE secret (v varchar DEFAULT gen_random_uuid());
INSERT INTO secret DEFAULT VALUES;`` gives every cloned tenant the same secret.
:func:`per_tenant_migrations` names the migrations that must be applied to each
tenant instead, each with a short reason.

**Volatile value generators** (``VOLATILE_GENERATORS``; matched by unqualified
name, any letter case, quoted or schema-qualified): ``gen_random_uuid()``,
``uuidv4()``, ``uuidv7()``, ``uuid_generate_v1()``, ``uuid_generate_v1mc()``,
``uuid_generate_v4()`` (uuid-ossp), ``gen_random_bytes()``, ``gen_salt()`` (pgcrypto),
``random()``, ``random_normal()``, ``array_shuffle()``, ``array_sample()``.
A user function counts as a generator when its body calls one (text scan of the
body; transitively through functions created earlier in the folder), and so does
one whose body inserts into a table with a generated default (below).

**Not generators, on purpose:** ``now()``, ``current_timestamp``, ``clock_timestamp()``,
``statement_timestamp()``, ``timeofday()`` and the like: a timestamp is not a secret
nor expected to be unique per tenant, and flagging them would take the template away
from every table with a ``mod_dttm timestamptz DEFAULT now()`` column.
``nextval()`` / serial / identity: a clone continues the sequence exactly where a
freshly migrated database would. ``txid_current()`` / ``pg_current_xact_id()``: a
transaction id is neither secret nor per-tenant. ``setseed()`` writes nothing (the
``random()`` after it is flagged). ``uuid_generate_v3/v5`` are deterministic.
``CREATE EXTENSION pgcrypto`` / ``"uuid-ossp"`` is fine: creating a function writes
no value.

**Flagged** (the migration's first such statement is the reason):

- ``-- tenantctl: per-tenant`` in the header;
- a data-writing statement that calls a generator anywhere in it: INSERT (also
  ``ON CONFLICT DO UPDATE``, data-modifying CTEs), UPDATE, MERGE, COPY FROM,
  ``SELECT ... INTO``, ``CREATE TABLE ... AS`` and ``CREATE MATERIALIZED VIEW``
  (unless ``WITH NO DATA``), ``REFRESH MATERIALIZED VIEW`` of such a view, a
  top-level SELECT or CALL (it may write through the functions it calls),
  ``EXPLAIN ANALYZE`` of any of these; DO blocks by a case-insensitive text scan
  of the body (comments ignored);
- an INSERT / MERGE ... INSERT / COPY FROM that does not explicitly supply every
  column whose default calls a generator (``DEFAULT VALUES``, a column list or a
  VALUES row that leaves it out, ``DEFAULT`` in its place, ``INSERT ... SELECT *``
  whose width is unknown), and ``UPDATE ... SET col = DEFAULT`` of such a column.
  Defaults are known from CREATE TABLE (also ``LIKE ... INCLUDING DEFAULTS``,
  INHERITS, PARTITION OF), ALTER TABLE ... ADD COLUMN / ALTER COLUMN SET DEFAULT,
  and domains with such a default, in this or earlier migrations (DROP DEFAULT,
  DROP TABLE and RENAME are followed). A DO block or function body that writes
  into such a table (``INSERT INTO`` / ``COPY`` / ``MERGE INTO`` it, by text scan)
  counts too;
- an INSERT/UPDATE/DELETE on a table with a trigger (for that event) whose function
  calls a generator;
- ALTER TABLE ... ADD COLUMN with a generated default (column or domain), or
  ALTER COLUMN ... TYPE ... USING a generator, on a table that may hold rows: one
  not created in this folder, or one that has received rows in the template.

**Not detected:** dynamic SQL (EXECUTE of a string built from pieces), functions
created outside the folder (extensions, other schemas' code) that generate values,
rules, foreign tables, overloaded functions (matched by name only), values that
reach a table through a view. It errs towards flagging: a flagged migration only
costs template speed, a missed one leaks between tenants.
"""

from __future__ import annotations

import re

from .migrations import Migration, Version
from .sqltree import ParsedStatement, PgNode, parse_statements, routine_bodies, walk
from .volatile_state import (
    TRIGGER_DELETE,
    TRIGGER_INSERT,
    TRIGGER_UPDATE,
    VOLATILE_GENERATORS,
    State,
    Table,
    domain_default,
    generated_default,
    generator_call,
    last_name,
)

__all__ = ["VOLATILE_GENERATORS", "per_tenant_migrations"]

_LIKE_DEFAULTS = 1 << 3  # TableLikeOption.CREATE_TABLE_LIKE_DEFAULTS
_WRITE_TARGET = re.compile(r"\b(?:insert\s+into|merge\s+into|copy)\s+(?:\"?\w+\"?\s*\.\s*)?\"?(\w+)")


def per_tenant_migrations(migrations: tuple[Migration, ...]) -> dict[Version, str]:
    """Migrations to apply per tenant, never in a template: version -> short reason.

    Walks the migrations in version order (pure, no database); see the module
    docstring for what is and is not detected.
    """
    state = State()
    out: dict[Version, str] = {}
    for migration in sorted(migrations, key=lambda m: m.version):
        reasons: list[str] = []
        if migration.up.per_tenant_directive:
            reasons.append("marked -- tenantctl: per-tenant")
        for parsed in parse_statements(migration.up):
            reason = _statement(state, parsed)
            if reason:
                reasons.append(reason)
        if reasons:
            out[migration.version] = reasons[0]
    return out


# -- one statement --------------------------------------------------------------------------

def _statement(state: State, parsed: ParsedStatement) -> str | None:
    """Update the state with the statement; the reason it writes a generated value, if so."""
    node, kind = parsed.node, parsed.statement.kind
    if kind == "ExplainStmt":
        if not any(getattr(o, "defname", None) == "analyze" for o in node.options or ()):
            return None
        node, kind = node.query, type(node.query).__name__
    line = parsed.statement.line
    if kind == "CreateStmt":
        _create_table(state, node)
        return None
    if kind in ("CreateDomainStmt", "AlterDomainStmt"):
        if kind == "CreateDomainStmt":
            domain, default = last_name(node.domainname), generated_default(state, node.constraints)
        elif node.subtype == "T":  # ALTER DOMAIN ... SET/DROP DEFAULT
            call = generator_call(state, node.def_)
            domain, default = last_name(node.typeName), call[0] if call else None
        else:
            return None
        if default:
            state.domains[domain] = default
        else:
            state.domains.pop(domain, None)
        return None
    if kind == "CreateFunctionStmt":
        _create_function(state, node, parsed)
        return None
    if kind == "CreateTrigStmt":
        table = state.tables.setdefault(node.relation.relname, state.table(node.relation.relname))
        table.triggers[node.trigname] = (last_name(node.funcname), node.events)
        return None
    if kind == "DropStmt":
        _drop(state, node)
        return None
    if kind == "RenameStmt":
        _rename(state, node)
        return None
    if kind == "AlterTableStmt":
        return _alter_table(state, node, parsed)
    if kind == "DoStmt":
        return _body_reason(state, node, parsed, "DO block")
    if kind == "RefreshMatViewStmt":
        generated = state.matviews.get(node.relation.relname)
        if generated and not node.skipData:
            return (f"refreshes materialized view {node.relation.relname}, which writes {generated} "
                    f"(line {line})")
        return None

    writes = kind in ("InsertStmt", "UpdateStmt", "MergeStmt", "DeleteStmt", "CallStmt") \
        or (kind == "CopyStmt" and node.is_from) \
        or (kind == "SelectStmt")  # SELECT ... INTO, or a top-level SELECT calling functions
    if kind == "CreateTableAsStmt":
        query_call = generator_call(state, node.query)
        created = node.into.rel.relname
        state.tables[created] = Table(None, rows=not node.into.skipData)
        if node.objtype.name == "OBJECT_MATVIEW" and node.into.skipData and query_call:
            state.matviews[created] = query_call[0]
        writes = not node.into.skipData
    if kind == "SelectStmt" and node.intoClause is not None:
        state.tables[node.intoClause.rel.relname] = Table(None, rows=True)
    reason = None
    if writes or _has_dml(node):
        call = generator_call(state, node)
        if call:
            reason = f"writes {call[0]} (line {parsed.line_at(call[1])})"
    for inner in walk(node):
        why = _dml_defaults(state, inner)
        if reason is None and why:
            reason = f"{why} (line {line})"
    return reason


def _create_table(state: State, node: PgNode) -> None:
    name = node.relation.relname
    if node.if_not_exists and name in state.tables:
        return
    table = Table([])
    for parent in node.inhRelations or ():  # INHERITS, PARTITION OF: defaults come along
        _inherit(state, table, parent.relname, with_defaults=True)
    for elt in node.tableElts or ():
        kind = type(elt).__name__
        if kind == "ColumnDef" and elt.colname:
            if table.columns is not None and elt.colname not in table.columns:
                table.columns.append(elt.colname)
            generated = generated_default(state, elt.constraints) or domain_default(state, elt.typeName)
            if generated:
                table.defaults[elt.colname] = generated
        elif kind == "TableLikeClause":
            _inherit(state, table, elt.relation.relname, with_defaults=bool(elt.options & _LIKE_DEFAULTS))
    state.tables[name] = table


def _inherit(state: State, table: Table, parent: str, *, with_defaults: bool) -> None:
    known = state.tables.get(parent)
    if known is None or known.columns is None:
        table.columns = None
    elif table.columns is not None:
        table.columns.extend(c for c in known.columns if c not in table.columns)
    if known is not None and with_defaults:
        table.defaults.update(known.defaults)


def _create_function(state: State, node: PgNode, parsed: ParsedStatement) -> None:
    name = last_name(node.funcname)
    why = None
    sql_body = getattr(node, "sql_body", None)
    if sql_body is not None:  # BEGIN ATOMIC ... END: a syntax tree
        generated = generator_call(state, sql_body)
        if generated:
            why = f"calls {generated[0]}"
        else:
            for inner in walk(sql_body):
                dml = _dml_defaults(state, inner)
                if dml:
                    why = dml
                    break
    for body, _ in routine_bodies(node, parsed.text):
        why = why or _scan_body(state, body)
    if why:
        state.functions[name] = why
    else:
        state.functions.pop(name, None)


def _alter_table(state: State, node: PgNode, parsed: ParsedStatement) -> str | None:
    if node.objtype.name not in ("OBJECT_TABLE", "OBJECT_FOREIGN_TABLE"):
        return None
    name = node.relation.relname
    table = state.tables.setdefault(name, state.table(name))  # from outside the folder: may hold rows
    reason = None
    line = parsed.statement.line
    for cmd in node.cmds or ():
        sub = cmd.subtype.name
        if sub == "AT_AddColumn":
            col = cmd.def_
            generated = generated_default(state, col.constraints) or domain_default(state, col.typeName)
            if table.columns is not None and col.colname not in table.columns:
                table.columns.append(col.colname)
            if generated:
                table.defaults[col.colname] = generated
                if table.rows and reason is None:
                    reason = (f"adds column {col.colname} with default {generated} to table {name}, "
                              f"which may hold rows (line {line})")
        elif sub == "AT_ColumnDefault":
            call = generator_call(state, cmd.def_) if cmd.def_ is not None else None
            if call:
                table.defaults[cmd.name] = call[0]
            else:
                table.defaults.pop(cmd.name, None)
        elif sub == "AT_AlterColumnType":
            call = generator_call(state, cmd.def_.raw_default) if cmd.def_ is not None else None
            if call and table.rows and reason is None:
                reason = (f"rewrites column {name}.{cmd.name} with {call[0]}, on a table that may hold "
                          f"rows (line {parsed.line_at(call[1])})")
        elif sub == "AT_DropColumn":
            table.defaults.pop(cmd.name, None)
            if table.columns is not None and cmd.name in table.columns:
                table.columns.remove(cmd.name)
    return reason


def _drop(state: State, node: PgNode) -> None:
    what = node.removeType.name
    for obj in node.objects or ():
        if what in ("OBJECT_TABLE", "OBJECT_MATVIEW"):
            name = str(getattr(obj[-1], "sval", ""))
            state.tables.pop(name, None)
            state.matviews.pop(name, None)
        elif what in ("OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE"):
            state.functions.pop(last_name(getattr(obj, "objname", ())), None)
        elif what == "OBJECT_DOMAIN":
            state.domains.pop(last_name(getattr(obj, "names", ())), None)
        elif what == "OBJECT_TRIGGER" and len(obj) >= 2:
            table = state.tables.get(str(getattr(obj[-2], "sval", "")))
            if table is not None:
                table.triggers.pop(str(getattr(obj[-1], "sval", "")), None)


def _rename(state: State, node: PgNode) -> None:
    what = node.renameType.name
    if what in ("OBJECT_TABLE", "OBJECT_MATVIEW") and node.relation is not None:
        old = node.relation.relname
        if old in state.tables:
            state.tables[node.newname] = state.tables.pop(old)
        if old in state.matviews:
            state.matviews[node.newname] = state.matviews.pop(old)
    elif what == "OBJECT_COLUMN" and node.relation is not None:
        table = state.tables.get(node.relation.relname)
        if table is None:
            return
        if node.subname in table.defaults:
            table.defaults[node.newname] = table.defaults.pop(node.subname)
        if table.columns is not None and node.subname in table.columns:
            table.columns[table.columns.index(node.subname)] = node.newname
    elif what in ("OBJECT_FUNCTION", "OBJECT_PROCEDURE") and node.object is not None:
        old = last_name(getattr(node.object, "objname", ()))
        if old in state.functions:
            state.functions[node.newname] = state.functions.pop(old)


# -- data-writing statements ----------------------------------------------------------------

def _has_dml(node: PgNode) -> bool:
    return any(type(n).__name__ in ("InsertStmt", "UpdateStmt", "MergeStmt", "DeleteStmt")
               for n in walk(node))


def _dml_defaults(state: State, node: PgNode) -> str | None:
    """Why this INSERT/UPDATE/MERGE/COPY/DELETE node writes a generated value without
    calling a generator itself (a default, a trigger), or None."""
    kind = type(node).__name__
    if kind not in ("InsertStmt", "UpdateStmt", "MergeStmt", "DeleteStmt", "CopyStmt"):
        return None
    if kind == "CopyStmt" and not node.is_from:
        return None
    name = node.relation.relname
    table = state.tables.get(name)
    if table is None:
        return None
    if kind != "DeleteStmt":
        table.rows = True
    event = {"InsertStmt": TRIGGER_INSERT, "CopyStmt": TRIGGER_INSERT, "DeleteStmt": TRIGGER_DELETE,
             "UpdateStmt": TRIGGER_UPDATE,
             "MergeStmt": TRIGGER_INSERT | TRIGGER_UPDATE | TRIGGER_DELETE}[kind]
    for function, events in table.triggers.values():
        if events & event and function in state.functions:
            return f"writes into {name}, whose trigger function {function}() {state.functions[function]}"
    column = None
    if kind == "InsertStmt":
        column = _defaulted(table, _names(node.cols), node.selectStmt)
    elif kind == "CopyStmt":
        column = _defaulted(table, _names(node.attlist), None, copy=True)
    elif kind == "UpdateStmt":
        column = next((t.name for t in node.targetList or ()
                       if type(t.val).__name__ == "SetToDefault" and t.name in table.defaults), None)
    elif kind == "MergeStmt":
        for clause in node.mergeWhenClauses or ():
            if clause.commandType.name == "CMD_INSERT":
                values = (clause.values,) if clause.values else None
                column = _defaulted(table, _names(clause.targetList), None, rows=values)
            elif clause.commandType.name == "CMD_UPDATE":
                column = next((t.name for t in clause.targetList or ()
                               if type(t.val).__name__ == "SetToDefault" and t.name in table.defaults), None)
            if column:
                break
    if column:
        verb = "sets" if kind == "UpdateStmt" else "inserts into"
        return f"{verb} {name}, whose column {column} defaults to {table.defaults[column]}"
    return None


def _defaulted(table: Table, cols: list[str] | None, select: PgNode, *, copy: bool = False,
               rows: tuple[PgNode, ...] | None = None) -> str | None:
    """A column with a generated default that this insert leaves to its default."""
    if not table.defaults:
        return None
    first = next(iter(table.defaults))
    if select is None and rows is None and not copy:
        return first  # DEFAULT VALUES
    if rows is None and select is not None:
        if select.valuesLists:
            rows = select.valuesLists
        else:
            width = _width(select)
            if cols is None:
                if width is None or table.columns is None:
                    return first
                cols = table.columns[:width]
            return next((c for c in table.defaults if c not in cols), None)
    if cols is None:
        if table.columns is None:
            return first
        if rows is None:  # COPY without a column list: every column
            return None
        cols = table.columns
    if rows is None:
        return next((c for c in table.defaults if c not in cols), None)
    for row in rows:
        given = {c for c, value in zip(cols, row, strict=False) if type(value).__name__ != "SetToDefault"}
        missing = next((c for c in table.defaults if c not in given), None)
        if missing:
            return missing
    return None


def _width(select: PgNode) -> int | None:
    """Number of columns a SELECT yields, when known (no ``*``)."""
    while select is not None and select.op.name != "SETOP_NONE":
        select = select.larg
    if select is None or not select.targetList:
        return None
    for target in select.targetList:
        fields = getattr(target.val, "fields", None) or ()
        if any(type(f).__name__ == "A_Star" for f in fields):
            return None
    return len(select.targetList)


def _body_reason(state: State, node: PgNode, parsed: ParsedStatement, what: str) -> str | None:
    for body, start in routine_bodies(node, parsed.text):
        found = _scan_body_at(state, body)
        if found:
            why, offset = found
            line = parsed.statement.line
            if start >= 0:
                line = parsed.first_line + parsed.text.count("\n", 0, start) + body.count("\n", 0, offset)
            return f"{what} {why} (line {line})"
    return None


def _scan_body(state: State, body: str) -> str | None:
    """Text scan of a DO/function body (comments already blanked): what it generates."""
    found = _scan_body_at(state, body)
    return None if found is None else found[0]


def _scan_body_at(state: State, body: str) -> tuple[str, int] | None:
    """What a DO/function body generates (text scan, comments already blanked) and
    the index in ``body`` where it does, or None."""
    lowered = body.lower()
    names = sorted(VOLATILE_GENERATORS | set(state.functions), key=len, reverse=True)
    hits: list[tuple[int, str]] = []
    match = re.search(r"(?<![\w$])(" + "|".join(map(re.escape, names)) + r')"?\s*\(', lowered)
    if match:
        name = match.group(1)
        via = state.functions.get(name)
        hits.append((match.start(), f"calls {name}()" + (f", which {via}" if via else "")))
    for target in _WRITE_TARGET.finditer(lowered):
        table = state.tables.get(target.group(1))
        if table is None:
            continue
        trigger = next((f for f, events in table.triggers.values()
                        if events & TRIGGER_INSERT and f in state.functions), None)
        if table.defaults or trigger:
            why = (f"writes into {target.group(1)}, whose column {next(iter(table.defaults))} defaults to "
                   f"{next(iter(table.defaults.values()))}" if table.defaults
                   else f"writes into {target.group(1)}, whose trigger function {trigger}() "
                   f"{state.functions[trigger or '']}")
            hits.append((target.start(), why))
            break
    if not hits:
        return None
    offset, why = min(hits)
    return why, offset


# -- expressions ----------------------------------------------------------------------------

def _names(nodes: PgNode) -> list[str] | None:
    if not nodes:
        return None
    return [getattr(n, "name", None) or getattr(n, "sval", None) or "" for n in nodes]
