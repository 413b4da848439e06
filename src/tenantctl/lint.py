"""Migration linter: pure (no database), reads the SQL with PostgreSQL's own parser.

The migrations are walked in version order while a simulated schema records the
tables created so far (their columns and keys). A table is *existing* when it was
not created by the migration being linted: created by an earlier migration, or
not created in this folder at all. docs/lint-rules.md describes every rule (what
it catches, why it matters, the fix); lint_rules.RULES holds their ids,
severities and hints.

Within one up script the linter also remembers which existing tables the file
emptied (``DELETE FROM t`` without WHERE, ``TRUNCATE t``; an INSERT, COPY FROM or
MERGE into t fills it again), so ``ADD COLUMN ... NOT NULL`` without a default is
accepted on them, and whether the file set the session's TimeZone to UTC (then a
timestamp <-> timestamptz type change rewrites nothing and is not reported).
CREATE TABLE ... AS and SELECT ... INTO create tables like CREATE TABLE: their
columns are the query's output names (``*`` expanded from tables whose columns
are known), and a table whose columns are known and lack the tenant column is reported.

``-- tenantctl: allow <rule-id>`` in a file's header silences that rule for the file
(a down script has its own header). The tenant column is tenants.yaml's
``tenant_column`` (default ``clnt_id``); the rule ids keep the XOS name whatever it
is. Tables in ``global_tables`` (and tables created without the tenant column) are
not tenant tables: the tenant column/site_id/RLS rules skip them and foreign keys
pointing at them. The schema rules (indexes, drops, keys, ...) apply to
up scripts only: down scripts drop things by nature. The rules of statements that
reach outside the database, and the shared-mode rules, apply to down scripts too
(lint_stateless.py).

Line numbers are those of the statement's first token, or of the offending call
inside it where the parser gives its position (character positions, see
statements.py); nothing here works on UTF-8 byte offsets.

The project's ``lint:`` block of tenants.yaml (disable, severity, exclude,
baseline) is applied by inputs.lint, not here: this module reports every rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType as CT
from pglast.enums import ObjectType as OT
from pglast.enums import VariableSetKind as VSK

from .lint_rules import RULES, Finding, Rule
from .lint_stateless import check_outside, check_shared
from .migrations import Migration, Script
from .sqltree import ParsedStatement, PgNode, leftmost_select, output_names, parse_statements
from .tenant_column import DEFAULT_TENANT_COLUMN

__all__ = ["RULES", "Finding", "Rule", "lint_migrations"]

_TypeSig = tuple[str, tuple[int, ...]]


@dataclass
class _Table:
    columns: dict[str, _TypeSig | None] | None  # None: not known (not created in this folder)
    created: int  # index of the migration that created it; -1: before this folder
    partitioned: bool = False
    pk: tuple[str | None, ...] | None = None
    exempt: bool = False  # a temporary table or a materialized view: no tenant rules


@dataclass
class _Linter:
    global_tables: frozenset[str]
    shared_mode: bool = False
    column: str = DEFAULT_TENANT_COLUMN  # the tenant column
    tables: dict[str, _Table] = field(default_factory=dict)
    views: set[str] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)
    index: int = 0
    file: str = ""
    script: Script | None = None
    line: int = 0
    emptied: set[str] = field(default_factory=set)  # existing tables this up script emptied
    utc: bool = False  # this script set the session's TimeZone to UTC

    # -- helpers --------------------------------------------------------------
    def report(self, rule_id: str, message: str, line: int | None = None) -> None:
        assert self.script is not None
        if rule_id in self.script.allowed_rules:
            return
        rule = RULES[rule_id]
        self.findings.append(
            Finding(rule_id, rule.severity, self.file, line or self.line, message, rule.hint))

    def table(self, rel: PgNode) -> tuple[str, _Table]:
        name = rel.relname
        return name, self.tables.get(name) or _Table(None, -1)

    def existing(self, info: _Table) -> bool:
        return info.created != self.index

    def is_global(self, rel: PgNode) -> bool:
        names = {rel.relname, f"{rel.schemaname}.{rel.relname}" if rel.schemaname else rel.relname}
        return bool(names & self.global_tables)

    def tenant(self, rel: PgNode) -> bool:
        """Not global, and not a table known to have no tenant column (a reported/allowed exception)."""
        _, info = self.table(rel)
        known_clientless = info.columns is not None and self.column not in info.columns
        return not (self.is_global(rel) or info.exempt or known_clientless)

    def check_key(self, rel: PgNode, kind: str, cols: tuple[str | None, ...], ref: PgNode = None) -> None:
        if not cols or cols[0] is None or not self.tenant(rel) or (ref is not None and not self.tenant(ref)):
            return
        name, info = self.table(rel)
        shown = f"{kind} ({', '.join(c or '<expression>' for c in cols)}) of {name}"
        if cols[0] != self.column:
            self.report("key-leads-with-clnt-id", f"{shown} does not start with {self.column}")
            return
        has_site = "site_id" in (info.columns if info.columns is not None else cols)
        site_master = info.pk == (self.column, "site_id")  # site_id is the row's own identity
        if has_site and not site_master and len(cols) > 1 and cols[1] not in (None, "site_id"):
            self.report("key-site-id-second", f"{shown} does not have site_id second")

    def check_constraint(self, rel: PgNode, con: PgNode, column: str | None = None) -> None:
        cols = (column,) if column else None
        if con.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE) and not con.indexname:
            kind = "PRIMARY KEY" if con.contype == CT.CONSTR_PRIMARY else "UNIQUE"
            self.check_key(rel, kind, cols or _names(con.keys))
        elif con.contype == CT.CONSTR_FOREIGN:
            self.check_key(rel, "FOREIGN KEY", cols or _names(con.fk_attrs), con.pktable)

    # -- every statement of up and down scripts ----------------------------------------
    def everywhere(self, parsed: ParsedStatement) -> None:
        """The rules that need no schema state: reaching outside the database, shared mode."""
        check_outside(parsed, self.report)
        if self.shared_mode:
            check_shared(parsed, self.views, self.report)


    # -- statements -----------------------------------------------------------
    def create_table(self, node: PgNode) -> None:
        rel = node.relation
        if node.if_not_exists and rel.relname in self.tables:
            return
        columns: dict[str, _TypeSig | None] | None = {}
        cons: list[tuple[PgNode, str | None]] = []
        for parent in node.inhRelations or ():
            columns = _merge(columns, self.table(parent)[1].columns)
        for elt in node.tableElts or ():
            if isinstance(elt, ast.ColumnDef):
                if columns is not None and elt.colname:
                    columns[elt.colname] = _type_sig(elt.typeName)
                cons += [(c, elt.colname) for c in elt.constraints or ()]
            elif isinstance(elt, ast.Constraint):
                cons.append((elt, None))
            elif isinstance(elt, ast.TableLikeClause):
                columns = _merge(columns, self.table(elt.relation)[1].columns)
        temporary = rel.relpersistence == "t"
        info = _Table(columns, self.index, node.partspec is not None, None, exempt=temporary)
        for con, col in cons:
            if con.contype == CT.CONSTR_PRIMARY:
                info.pk = (col,) if col else _names(con.keys)
        self.tables[rel.relname] = info
        if temporary or self.is_global(rel):
            return
        if columns is not None and self.column not in columns:
            self.report("tenant-table-needs-clnt-id", f"table {rel.relname} has no {self.column} column")
            return
        for con, col in cons:
            self.check_constraint(rel, con, col)

    def create_table_as(self, node: PgNode) -> None:
        rel = node.into.rel
        if node.objtype == OT.OBJECT_MATVIEW:
            self.tables[rel.relname] = _Table(None, self.index, exempt=True)
            return
        if not (node.if_not_exists and rel.relname in self.tables):
            self.create_from_query(node.into, node.query)

    def select_into(self, node: PgNode) -> None:
        into = leftmost_select(node).intoClause
        if into is not None:
            self.create_from_query(into, node)

    def create_from_query(self, into: PgNode, query: PgNode) -> None:
        """CREATE TABLE ... AS / SELECT ... INTO: columns named as PostgreSQL names them."""
        rel = into.rel

        def columns_of(source: PgNode) -> list[str] | None:
            columns = self.table(source)[1].columns
            return list(columns) if columns is not None else None

        names = output_names(query, columns_of) or []
        renamed = [c.sval for c in into.colNames or ()]
        names = renamed + names[len(renamed):] if len(renamed) <= len(names) else []
        columns: dict[str, _TypeSig | None] | None = None
        if names and None not in names:
            columns = {n: None for n in names if n}
        temporary = rel.relpersistence == "t"
        self.tables[rel.relname] = _Table(columns, self.index, exempt=temporary)
        if columns is not None and self.column not in columns and not temporary and not self.is_global(rel):
            self.report("tenant-table-needs-clnt-id", f"table {rel.relname} has no {self.column} column")

    def index_stmt(self, node: PgNode) -> None:
        name, info = self.table(node.relation)
        if node.concurrent:
            self.concurrent(f"CREATE INDEX CONCURRENTLY {node.idxname or ''} ON {name}")
        elif self.existing(info) and not info.partitioned:
            self.report("require-concurrent-index",
                        f"index {node.idxname or '(unnamed)'} on existing table {name} without CONCURRENTLY")
        if node.unique or node.primary:
            cols = tuple(p.name for p in node.indexParams or ())
            self.check_key(node.relation, "UNIQUE index", cols)

    def concurrent(self, what: str) -> None:
        assert self.script is not None
        if self.script.transactional:
            self.report("concurrent-in-transaction", f"{what} in a transactional migration")

    def alter_table(self, node: PgNode) -> None:
        if node.objtype != OT.OBJECT_TABLE:
            return
        rel = node.relation
        name, info = self.table(rel)
        old = self.existing(info)
        for cmd in node.cmds or ():
            sub, d = cmd.subtype, cmd.def_
            if sub == AT.AT_AddColumn:
                kinds = {c.contype for c in d.constraints or ()}
                if old and kinds & {CT.CONSTR_NOTNULL, CT.CONSTR_PRIMARY} and not kinds & _FILLED \
                        and name not in self.emptied:
                    self.report("add-column-not-null-no-default",
                                f"column {name}.{d.colname} added NOT NULL without DEFAULT")
                if info.columns is not None:
                    info.columns[d.colname] = _type_sig(d.typeName)
                for con in d.constraints or ():
                    self.add_constraint(rel, name, info, old, con, d.colname)
            elif sub == AT.AT_AddConstraint:
                self.add_constraint(rel, name, info, old, d, None)
            elif sub == AT.AT_DropColumn:
                if old:
                    self.report("ban-drop-column", f"column {name}.{cmd.name} dropped")
                if info.columns is not None:
                    info.columns.pop(cmd.name, None)
            elif sub == AT.AT_AlterColumnType:
                before = info.columns.get(cmd.name) if info.columns is not None else None
                after = _type_sig(d.typeName)
                rewrites = d.raw_default is not None or d.collClause is not None or not _widens(before, after)
                if old and rewrites and _timestamptz_switch(before, after, d):
                    if not self.utc:
                        self.report("alter-column-type-timestamptz",
                                    f"column {name}.{cmd.name} changed between timestamp and timestamptz "
                                    "without SET TimeZone = 'UTC' earlier in the file")
                elif old and rewrites:
                    self.report("ban-alter-column-type", f"type of column {name}.{cmd.name} changed")
                if info.columns is not None:
                    info.columns[cmd.name] = after
            elif sub in (AT.AT_DisableRowSecurity, AT.AT_NoForceRowSecurity) and self.tenant(rel):
                what = "DISABLE" if sub == AT.AT_DisableRowSecurity else "NO FORCE"
                self.report("rls-disabled", f"{what} ROW LEVEL SECURITY on tenant table {name}")
            elif sub == AT.AT_DetachPartition and getattr(d, "concurrent", False):
                self.concurrent(f"DETACH PARTITION CONCURRENTLY on {name}")

    def add_constraint(self, rel: PgNode, name: str, info: _Table, old: bool, con: PgNode,
                       col: str | None) -> None:
        if con.contype == CT.CONSTR_PRIMARY and not con.indexname:
            info.pk = (col,) if col else _names(con.keys)
        if old and con.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE, CT.CONSTR_EXCLUSION) \
                and not con.indexname and not info.partitioned:
            self.report("require-concurrent-index",
                        f"constraint {con.conname or '(unnamed)'} builds an index on existing table {name}")
        if old and col is None and con.contype in (CT.CONSTR_FOREIGN, CT.CONSTR_CHECK) \
                and not con.skip_validation:
            kind = "FOREIGN KEY" if con.contype == CT.CONSTR_FOREIGN else "CHECK"
            self.report("constraint-not-valid",
                        f"{kind} {con.conname or '(unnamed)'} added to existing table {name} "
                        "without NOT VALID")
        self.check_constraint(rel, con, col)

    def drop(self, node: PgNode) -> None:
        if node.concurrent:
            self.concurrent("DROP INDEX CONCURRENTLY")
        if node.removeType != OT.OBJECT_TABLE:
            return
        for obj in node.objects or ():
            name = obj[-1].sval
            info = self.tables.pop(name, None) or _Table(None, -1)
            if self.existing(info):
                self.report("ban-drop-table", f"table {name} dropped")

    def truncate(self, node: PgNode) -> None:
        for rel in node.relations or ():
            name, info = self.table(rel)
            if self.existing(info):
                self.report("ban-truncate", f"table {name} truncated")
            if rel.inh:  # not ONLY: its partitions / children are emptied too
                self.emptied.add(name)

    def delete(self, node: PgNode) -> None:
        rel = node.relation
        if node.whereClause is None and not node.usingClause and rel.inh:
            self.emptied.add(rel.relname)

    def fill(self, node: PgNode) -> None:
        """INSERT, COPY FROM, MERGE: the target table has rows again."""
        rel = getattr(node, "relation", None)
        if rel is not None and (type(node).__name__ != "CopyStmt" or node.is_from):
            self.emptied.discard(rel.relname)

    def set_variable(self, node: PgNode) -> None:
        if node.kind == VSK.VAR_RESET_ALL:
            self.utc = False
        elif node.name == "timezone":
            args: tuple[PgNode, ...] = tuple(node.args or ())
            value = getattr(getattr(args[0], "val", None), "sval", None) if len(args) == 1 else None
            self.utc = node.kind == VSK.VAR_SET_VALUE and str(value).upper() in _UTC_ZONES

    def rename(self, node: PgNode) -> None:
        if node.renameType == OT.OBJECT_TABLE:
            name, info = self.table(node.relation)
            if self.existing(info):
                self.report("ban-rename", f"table {name} renamed to {node.newname}")
            if name in self.tables:
                self.tables[node.newname] = self.tables.pop(name)
        elif node.renameType == OT.OBJECT_COLUMN and node.relationType == OT.OBJECT_TABLE:
            name, info = self.table(node.relation)
            if self.existing(info):
                self.report("ban-rename", f"column {name}.{node.subname} renamed to {node.newname}")
            if info.columns is not None and node.subname in info.columns:
                info.columns[node.newname] = info.columns.pop(node.subname)

    def reindex(self, node: PgNode) -> None:
        if any(getattr(p, "defname", "") == "concurrently" for p in node.params or ()):
            self.concurrent("REINDEX CONCURRENTLY")


_FILLED = {CT.CONSTR_DEFAULT, CT.CONSTR_IDENTITY, CT.CONSTR_GENERATED}
_UTC_ZONES = frozenset({"UTC", "ETC/UTC", "UCT", "ETC/UCT", "ZULU", "ETC/ZULU", "UNIVERSAL",
                        "ETC/UNIVERSAL", "GMT", "ETC/GMT"})
_TIMESTAMPS = frozenset({"timestamp", "timestamptz"})

_HANDLERS = {
    "CreateStmt": _Linter.create_table,
    "CreateTableAsStmt": _Linter.create_table_as,
    "IndexStmt": _Linter.index_stmt,
    "AlterTableStmt": _Linter.alter_table,
    "DropStmt": _Linter.drop,
    "TruncateStmt": _Linter.truncate,
    "DeleteStmt": _Linter.delete,
    "InsertStmt": _Linter.fill,
    "CopyStmt": _Linter.fill,
    "MergeStmt": _Linter.fill,
    "VariableSetStmt": _Linter.set_variable,
    "SelectStmt": _Linter.select_into,
    "RenameStmt": _Linter.rename,
    "ReindexStmt": _Linter.reindex,
}


def _names(nodes: PgNode) -> tuple[str | None, ...]:
    return tuple(getattr(n, "sval", None) for n in nodes or ())


def _merge(columns: dict[str, _TypeSig | None] | None,
           more: dict[str, _TypeSig | None] | None) -> dict[str, _TypeSig | None] | None:
    return None if columns is None or more is None else {**columns, **more}


def _type_sig(type_name: PgNode) -> _TypeSig | None:
    if type_name is None or not type_name.names:
        return None
    mods = tuple(getattr(getattr(m, "val", None), "ival", -1) for m in type_name.typmods or ())
    suffix = "[]" if type_name.arrayBounds else ""
    return type_name.names[-1].sval + suffix, mods


def _widens(before: _TypeSig | None, after: _TypeSig | None) -> bool:
    """True for the type changes PostgreSQL makes without rewriting the table."""
    if before is None or after is None:
        return False
    (old, old_mods), (new, new_mods) = before, after
    if old in ("varchar", "text") and (new == "text" or (new == "varchar" and not new_mods)):
        return True
    if old == new == "varchar":
        return bool(old_mods) and bool(new_mods) and new_mods[0] >= old_mods[0]
    if old == new == "numeric":
        if not new_mods:
            return True
        old_scale, new_scale = (*old_mods, 0, 0)[1], (*new_mods, 0, 0)[1]
        return bool(old_mods) and new_mods[0] >= old_mods[0] and new_scale == old_scale
    return False


def _timestamptz_switch(before: _TypeSig | None, after: _TypeSig | None, column: PgNode) -> bool:
    """timestamp <-> timestamptz without USING and without losing precision: PostgreSQL 12+
    rewrites nothing when the session's TimeZone is UTC."""
    if before is None or after is None or column.raw_default is not None or column.collClause is not None:
        return False
    (old, old_mods), (new, new_mods) = before, after
    if {old, new} != _TIMESTAMPS:
        return False
    return not new_mods or (bool(old_mods) and new_mods[0] >= old_mods[0])


def lint_migrations(migrations: tuple[Migration, ...], *,
                    global_tables: frozenset[str] = frozenset(),
                    shared_mode: bool = False,
                    tenant_column: str = DEFAULT_TENANT_COLUMN) -> list[Finding]:
    """Every finding, in version order: a migration's up script by line, then its down script.

    ``shared_mode``: the migrations also run on a shared (RLS) database; adds the
    view / materialized view / SECURITY DEFINER rules. ``tenant_column``: the column
    every tenant table carries and its keys lead with.
    """
    linter = _Linter(frozenset(global_tables), shared_mode=shared_mode, column=tenant_column)
    for index, migration in enumerate(sorted(migrations, key=lambda m: m.version)):
        linter.index = index
        _lint_script(linter, migration.up, up=True)
        if migration.down is not None:
            _lint_script(linter, migration.down, up=False)
    return linter.findings


def _lint_script(linter: _Linter, script: Script, *, up: bool) -> None:
    linter.file, linter.script, linter.line = script.path.name, script, 1
    linter.emptied, linter.utc = set(), False
    if up and not script.statements:
        linter.report("empty-migration",
                      f"{script.path.name} has no statement: it is recorded and runs nothing")
        return
    for parsed in parse_statements(script):
        linter.line = parsed.statement.line
        if up:
            handler = _HANDLERS.get(parsed.statement.kind)
            if handler is not None:
                handler(linter, parsed.node)
        linter.everywhere(parsed)
