"""Migration linter: pure (no database), reads the SQL with PostgreSQL's own parser.

The migrations are walked in version order while a simulated schema records the
tables created so far (their columns and keys). A table is *existing* when it was
not created by the migration being linted: created by an earlier migration, or
not created in this folder at all. Rules (ids are stable):

  require-concurrent-index      error    CREATE INDEX (or ADD PRIMARY KEY/UNIQUE) on an
                                         existing table without CONCURRENTLY
  concurrent-in-transaction     error    CONCURRENTLY in a transactional migration
  add-column-not-null-no-default error   ADD COLUMN ... NOT NULL without DEFAULT (existing)
  ban-drop-column               error    DROP COLUMN of an existing table
  ban-drop-table                error    DROP TABLE of an existing table
  ban-truncate                  error    TRUNCATE of an existing table
  ban-alter-column-type         error    ALTER COLUMN ... TYPE that rewrites an existing table
                                         (varchar/text/numeric widening is allowed)
  ban-rename                    error    RENAME of an existing table or of its column
  constraint-not-valid          error    ADD FOREIGN KEY/CHECK on an existing table without
                                         NOT VALID
  tenant-table-needs-clnt-id    error    CREATE TABLE without a clnt_id column
  key-leads-with-clnt-id        error    PRIMARY KEY/UNIQUE/FOREIGN KEY not led by clnt_id
  key-site-id-second            warning  such a key of a table with site_id: site_id not second
  rls-disabled                  error    DISABLE / NO FORCE ROW LEVEL SECURITY on a tenant table

``-- tenantctl: allow <rule-id>`` in a file's header silences that rule for the file.
Tables in ``global_tables`` (and tables created without clnt_id) are not tenant tables:
the clnt_id/site_id/RLS rules skip them and foreign keys pointing at them.
Only up scripts are linted: down scripts drop things by nature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pglast
from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType as CT
from pglast.enums import ObjectType as OT

from .migrations import Migration, Script


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # "error" | "warning"
    summary: str
    hint: str


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    line: int
    message: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _rule(id: str, summary: str, hint: str, severity: str = "error") -> Rule:
    return Rule(id, severity, summary, f"{hint}; or accept it in that file: `-- tenantctl: allow {id}`")


RULES: dict[str, Rule] = {r.id: r for r in (
    _rule("require-concurrent-index", "index built on an existing table without CONCURRENTLY",
          "use CREATE INDEX CONCURRENTLY in a migration headed by `-- tenantctl: no-transaction` "
          "(for a key: build the unique index concurrently, then ADD CONSTRAINT ... USING INDEX)"),
    _rule("concurrent-in-transaction", "CONCURRENTLY cannot run inside a transaction block",
          "move it to its own migration headed by `-- tenantctl: no-transaction`"),
    _rule("add-column-not-null-no-default", "NOT NULL column added to an existing table without DEFAULT",
          "add it with a DEFAULT; or add it nullable, backfill, add CHECK (col IS NOT NULL) "
          "NOT VALID, VALIDATE it, then SET NOT NULL (no table scan)"),
    _rule("ban-drop-column", "column of an existing table dropped",
          "running application code may still read it: stop using it in a release, drop it later"),
    _rule("ban-drop-table", "existing table dropped",
          "running application code may still use it: stop using it in a release, drop it later"),
    _rule("ban-truncate", "existing table truncated", "tenant data is lost; delete rows explicitly"),
    _rule("ban-alter-column-type", "column type changed on an existing table (rewrite, exclusive lock)",
          "add a new column, backfill in batches, switch readers, then drop the old one"),
    _rule("ban-rename", "existing table or column renamed",
          "running application code uses the old name: add the new one alongside, migrate readers"),
    _rule("constraint-not-valid", "constraint validated while holding a lock on an existing table",
          "add it NOT VALID, then VALIDATE CONSTRAINT in a later migration"),
    _rule("tenant-table-needs-clnt-id", "tenant table without a clnt_id column",
          "add `clnt_id int2 NOT NULL`, or list the table under global tables in tenants.yaml"),
    _rule("key-leads-with-clnt-id", "PRIMARY KEY/UNIQUE/FOREIGN KEY does not start with clnt_id",
          "put clnt_id first: (clnt_id, site_id, ...); RI checks and unique indexes ignore RLS"),
    _rule("key-site-id-second", "key of a table with site_id does not have site_id second",
          "XOS keys lead with (clnt_id, site_id, ...)", severity="warning"),
    _rule("rls-disabled", "row level security disabled or unforced on a tenant table",
          "tenant isolation relies on ENABLE + FORCE ROW LEVEL SECURITY; keep both"),
)}

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
    tables: dict[str, _Table] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    index: int = 0
    file: str = ""
    script: Script | None = None
    line: int = 0

    # -- helpers --------------------------------------------------------------
    def report(self, rule_id: str, message: str) -> None:
        assert self.script is not None
        if rule_id in self.script.allowed_rules:
            return
        rule = RULES[rule_id]
        self.findings.append(Finding(rule_id, rule.severity, self.file, self.line, message, rule.hint))

    def table(self, rel: Any) -> tuple[str, _Table]:
        name = rel.relname
        return name, self.tables.get(name) or _Table(None, -1)

    def existing(self, info: _Table) -> bool:
        return info.created != self.index

    def is_global(self, rel: Any) -> bool:
        names = {rel.relname, f"{rel.schemaname}.{rel.relname}" if rel.schemaname else rel.relname}
        return bool(names & self.global_tables)

    def tenant(self, rel: Any) -> bool:
        """Not global, and not a table known to have no clnt_id (a reported/allowed exception)."""
        _, info = self.table(rel)
        known_clientless = info.columns is not None and "clnt_id" not in info.columns
        return not (self.is_global(rel) or info.exempt or known_clientless)

    def check_key(self, rel: Any, kind: str, cols: tuple[str | None, ...], ref: Any = None) -> None:
        if not cols or cols[0] is None or not self.tenant(rel) or (ref is not None and not self.tenant(ref)):
            return
        name, info = self.table(rel)
        shown = f"{kind} ({', '.join(c or '<expression>' for c in cols)}) of {name}"
        if cols[0] != "clnt_id":
            self.report("key-leads-with-clnt-id", f"{shown} does not start with clnt_id")
            return
        has_site = "site_id" in (info.columns if info.columns is not None else cols)
        site_master = info.pk == ("clnt_id", "site_id")  # site_id is the row's own identity
        if has_site and not site_master and len(cols) > 1 and cols[1] not in (None, "site_id"):
            self.report("key-site-id-second", f"{shown} does not have site_id second")

    def check_constraint(self, rel: Any, con: Any, column: str | None = None) -> None:
        cols = (column,) if column else None
        if con.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE) and not con.indexname:
            kind = "PRIMARY KEY" if con.contype == CT.CONSTR_PRIMARY else "UNIQUE"
            self.check_key(rel, kind, cols or _names(con.keys))
        elif con.contype == CT.CONSTR_FOREIGN:
            self.check_key(rel, "FOREIGN KEY", cols or _names(con.fk_attrs), con.pktable)

    # -- statements -----------------------------------------------------------
    def create_table(self, node: Any) -> None:
        rel = node.relation
        if node.if_not_exists and rel.relname in self.tables:
            return
        columns: dict[str, _TypeSig | None] | None = {}
        cons: list[tuple[Any, str | None]] = []
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
        if columns is not None and "clnt_id" not in columns:
            self.report("tenant-table-needs-clnt-id", f"table {rel.relname} has no clnt_id column")
            return
        for con, col in cons:
            self.check_constraint(rel, con, col)

    def create_table_as(self, node: Any) -> None:
        rel = node.into.rel
        if node.objtype == OT.OBJECT_MATVIEW:
            self.tables[rel.relname] = _Table(None, self.index, exempt=True)
            return
        names: list[str | None] = []
        for target in getattr(node.query, "targetList", None) or ():  # None for UNION, VALUES, ...
            fields = getattr(target.val, "fields", None) or ()
            names.append(target.name or (getattr(fields[-1], "sval", None) if fields else None))
        renamed = [c.sval for c in node.into.colNames or ()]
        names = renamed + names[len(renamed):] if len(renamed) <= len(names) else []
        columns: dict[str, _TypeSig | None] | None = None
        if names and None not in names:
            columns = {n: None for n in names if n}
        temporary = rel.relpersistence == "t"
        self.tables[rel.relname] = _Table(columns, self.index, exempt=temporary)
        if columns is not None and "clnt_id" not in columns and not temporary and not self.is_global(rel):
            self.report("tenant-table-needs-clnt-id", f"table {rel.relname} has no clnt_id column")

    def index_stmt(self, node: Any) -> None:
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

    def alter_table(self, node: Any) -> None:
        if node.objtype != OT.OBJECT_TABLE:
            return
        rel = node.relation
        name, info = self.table(rel)
        old = self.existing(info)
        for cmd in node.cmds or ():
            sub, d = cmd.subtype, cmd.def_
            if sub == AT.AT_AddColumn:
                kinds = {c.contype for c in d.constraints or ()}
                if old and kinds & {CT.CONSTR_NOTNULL, CT.CONSTR_PRIMARY} and not kinds & _FILLED:
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
                if old and (d.raw_default is not None or d.collClause is not None or not _widens(before, after)):
                    self.report("ban-alter-column-type", f"type of column {name}.{cmd.name} changed")
                if info.columns is not None:
                    info.columns[cmd.name] = after
            elif sub in (AT.AT_DisableRowSecurity, AT.AT_NoForceRowSecurity) and self.tenant(rel):
                what = "DISABLE" if sub == AT.AT_DisableRowSecurity else "NO FORCE"
                self.report("rls-disabled", f"{what} ROW LEVEL SECURITY on tenant table {name}")
            elif sub == AT.AT_DetachPartition and getattr(d, "concurrent", False):
                self.concurrent(f"DETACH PARTITION CONCURRENTLY on {name}")

    def add_constraint(self, rel: Any, name: str, info: _Table, old: bool, con: Any, col: str | None) -> None:
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
                        f"{kind} {con.conname or '(unnamed)'} added to existing table {name} without NOT VALID")
        self.check_constraint(rel, con, col)

    def drop(self, node: Any) -> None:
        if node.concurrent:
            self.concurrent("DROP INDEX CONCURRENTLY")
        if node.removeType != OT.OBJECT_TABLE:
            return
        for obj in node.objects or ():
            name = obj[-1].sval
            info = self.tables.pop(name, None) or _Table(None, -1)
            if self.existing(info):
                self.report("ban-drop-table", f"table {name} dropped")

    def truncate(self, node: Any) -> None:
        for rel in node.relations or ():
            name, info = self.table(rel)
            if self.existing(info):
                self.report("ban-truncate", f"table {name} truncated")

    def rename(self, node: Any) -> None:
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

    def reindex(self, node: Any) -> None:
        if any(getattr(p, "defname", "") == "concurrently" for p in node.params or ()):
            self.concurrent("REINDEX CONCURRENTLY")


_FILLED = {CT.CONSTR_DEFAULT, CT.CONSTR_IDENTITY, CT.CONSTR_GENERATED}

_HANDLERS = {
    "CreateStmt": _Linter.create_table,
    "CreateTableAsStmt": _Linter.create_table_as,
    "IndexStmt": _Linter.index_stmt,
    "AlterTableStmt": _Linter.alter_table,
    "DropStmt": _Linter.drop,
    "TruncateStmt": _Linter.truncate,
    "RenameStmt": _Linter.rename,
    "ReindexStmt": _Linter.reindex,
}


def _names(nodes: Any) -> tuple[str | None, ...]:
    return tuple(getattr(n, "sval", None) for n in nodes or ())


def _merge(columns: dict[str, _TypeSig | None] | None,
           more: dict[str, _TypeSig | None] | None) -> dict[str, _TypeSig | None] | None:
    return None if columns is None or more is None else {**columns, **more}


def _type_sig(type_name: Any) -> _TypeSig | None:
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
        old_scale, new_scale = (old_mods + (0, 0))[1], (new_mods + (0, 0))[1]
        return bool(old_mods) and new_mods[0] >= old_mods[0] and new_scale == old_scale
    return False


def lint_migrations(migrations: tuple[Migration, ...], *,
                    global_tables: frozenset[str] = frozenset()) -> list[Finding]:
    """Every finding of every up script, in version then line order."""
    linter = _Linter(frozenset(global_tables))
    for index, migration in enumerate(sorted(migrations, key=lambda m: m.version)):
        linter.index, linter.file, linter.script = index, migration.filename, migration.up
        for stmt in migration.up.statements:
            handler = _HANDLERS.get(stmt.kind)
            if handler is None:
                continue
            linter.line = stmt.line
            handler(linter, pglast.parse_sql(stmt.sql)[0].stmt)
    return linter.findings
