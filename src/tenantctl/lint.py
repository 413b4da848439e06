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
  empty-migration               warning  a file with no statement (empty or comment-only): a
                                         recorded no-op; fine as a placeholder, but noticed

Statements that reach outside the tenant's own database (up AND down scripts):

  ban-drop-database             error    CREATE / DROP / ALTER DATABASE (incl. OWNER, RENAME,
                                         SET), GRANT/REVOKE ... ON DATABASE
  ban-cross-database-access     error    CREATE EXTENSION dblink / any *_fdw, CREATE/ALTER
                                         SERVER, USER MAPPING, FOREIGN TABLE, FOREIGN DATA
                                         WRAPPER, IMPORT FOREIGN SCHEMA, SUBSCRIPTION; calls of
                                         dblink* functions anywhere
  ban-copy-program              error    COPY ... TO/FROM PROGRAM, COPY to/from a server file;
                                         lo_import/lo_export/pg_read_file/pg_read_binary_file
  ban-alter-system              error    ALTER SYSTEM (the whole server's configuration)
  ban-role-ddl                  error    CREATE/ALTER/DROP ROLE/USER/GROUP, GRANT/REVOKE role
                                         membership, SET ROLE, SET SESSION AUTHORIZATION,
                                         REASSIGN OWNED, DROP OWNED (roles are cluster-wide)

ALTER <object> OWNER TO is not role DDL: it changes an object of this database
(shared mode relies on it); ALTER DATABASE ... OWNER TO is ban-drop-database.
DO blocks and function bodies are scanned as text (comments ignored) for the
same things: dblink calls, role DDL, ALTER/CREATE/DROP DATABASE, COPY ... PROGRAM
or to/from a file, ALTER SYSTEM. Dynamic SQL built from pieces is not seen.

Shared mode only (``shared_mode=True``; one database holds many tenants under RLS),
up and down scripts:

  view-needs-security-invoker   error    CREATE [OR REPLACE] VIEW without
                                         WITH (security_invoker = true); ALTER VIEW ...
                                         SET (security_invoker = false) / RESET (security_invoker)
  shared-materialized-view      error    CREATE MATERIALIZED VIEW (stores every tenant's rows,
                                         no RLS on it)
  shared-security-definer       error    CREATE FUNCTION/PROCEDURE ... SECURITY DEFINER,
                                         ALTER FUNCTION/PROCEDURE ... SECURITY DEFINER

``-- tenantctl: allow <rule-id>`` in a file's header silences that rule for the file
(a down script has its own header). Tables in ``global_tables`` (and tables created
without clnt_id) are not tenant tables: the clnt_id/site_id/RLS rules skip them and
foreign keys pointing at them. The schema rules (indexes, drops, keys, ...) apply to
up scripts only: down scripts drop things by nature.

Line numbers are those of the statement's first token, or of the offending call
inside it where the parser gives its position (character positions, see
migrations.py); nothing here works on UTF-8 byte offsets.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ConstrType as CT
from pglast.enums import ObjectType as OT
from pglast.enums import VariableSetKind as VSK

from .migrations import (
    Migration,
    ParsedStatement,
    Script,
    func_name,
    parse_statements,
    routine_bodies,
    walk,
)


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
    _rule("empty-migration", "migration file without any statement",
          "an empty or comment-only file is recorded as applied and runs nothing; add its SQL, "
          "or delete the file if it is not meant to ship", severity="warning"),
    _rule("ban-drop-database", "statement on a database as a whole (other tenants' databases included)",
          "a migration runs inside one tenant's database and must change only that; databases are "
          "created, dropped and configured by tenantctl (provision, tenants.yaml)"),
    _rule("ban-cross-database-access", "access to another database or server (dblink, foreign data "
          "wrappers, subscriptions)",
          "a tenant's migration must not read or write other databases; move cross-database data "
          "work to a reviewed one-off job"),
    _rule("ban-copy-program", "COPY ... PROGRAM or server file access",
          "it runs a shell command or reads/writes a file on the database server; load data with "
          "INSERT in the migration, or from the application"),
    _rule("ban-alter-system", "ALTER SYSTEM changes the whole server's configuration",
          "server settings belong to the server's configuration management, not to a tenant's migration"),
    _rule("ban-role-ddl", "role DDL or role switch (roles are shared by every database of the server)",
          "create and grant roles outside the migrations (shared mode: tenantctl manages its roles); "
          "GRANT privileges on this database's objects is fine"),
    _rule("view-needs-security-invoker", "shared mode: view without security_invoker = true",
          "a view runs with its owner's rights and bypasses the tenant RLS policies of the tables "
          "it reads: create it WITH (security_invoker = true)"),
    _rule("shared-materialized-view", "shared mode: materialized view",
          "it stores every tenant's rows and has no row level security; use a view WITH "
          "(security_invoker = true), or a table with clnt_id (tenantctl adds its policy)"),
    _rule("shared-security-definer", "shared mode: SECURITY DEFINER function or procedure",
          "it runs with its owner's rights, which bypass RLS when the owner owns the tables; use "
          "SECURITY INVOKER (the default)"),
)}

# Rules that do not depend on the simulated schema: checked in down scripts too.
_OUTSIDE_RULES = ("ban-drop-database", "ban-cross-database-access", "ban-copy-program",
                  "ban-alter-system", "ban-role-ddl")

_FILE_FUNCTIONS = frozenset({"lo_import", "lo_export", "pg_read_file", "pg_read_binary_file"})
_CROSS_EXTENSIONS = frozenset({"dblink"})
_CROSS_NODES = {
    "CreateForeignServerStmt": "CREATE SERVER",
    "AlterForeignServerStmt": "ALTER SERVER",
    "CreateUserMappingStmt": "CREATE USER MAPPING",
    "AlterUserMappingStmt": "ALTER USER MAPPING",
    "CreateForeignTableStmt": "CREATE FOREIGN TABLE",
    "ImportForeignSchemaStmt": "IMPORT FOREIGN SCHEMA",
    "CreateFdwStmt": "CREATE FOREIGN DATA WRAPPER",
    "AlterFdwStmt": "ALTER FOREIGN DATA WRAPPER",
    "CreateSubscriptionStmt": "CREATE SUBSCRIPTION",
    "AlterSubscriptionStmt": "ALTER SUBSCRIPTION",
}
_DATABASE_NODES = {
    "CreatedbStmt": "CREATE DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "AlterDatabaseStmt": "ALTER DATABASE",
    "AlterDatabaseSetStmt": "ALTER DATABASE ... SET",
    "AlterDatabaseRefreshCollStmt": "ALTER DATABASE ... REFRESH COLLATION VERSION",
}
_ROLE_NODES = {
    "CreateRoleStmt": "CREATE ROLE/USER/GROUP",
    "AlterRoleStmt": "ALTER ROLE/USER/GROUP",
    "AlterRoleSetStmt": "ALTER ROLE/USER ... SET",
    "DropRoleStmt": "DROP ROLE/USER/GROUP",
    "ReassignOwnedStmt": "REASSIGN OWNED",
    "DropOwnedStmt": "DROP OWNED",
}
# Text scans of DO blocks and function bodies (comments blanked, lower-cased).
_BODY_PATTERNS = (
    ("ban-cross-database-access", re.compile(r"\bdblink\w*\s*\("), "calls {}"),
    ("ban-cross-database-access",
     re.compile(r"\b(?:create|alter)\s+(?:server|user\s+mapping|foreign\s+table|subscription)\b"), "runs {}"),
    ("ban-drop-database", re.compile(r"\b(?:create|drop|alter)\s+database\b"), "runs {}"),
    ("ban-copy-program", re.compile(r"\bcopy\b[^;]*?\bprogram\b"), "runs COPY ... PROGRAM"),
    ("ban-copy-program", re.compile(r"\bcopy\b[^;]*?\b(?:from|to)\s+e?'"), "runs COPY to/from a server file"),
    ("ban-copy-program", re.compile(r"\b(?:lo_import|lo_export|pg_read_file|pg_read_binary_file)\s*\("),
     "calls {}"),
    ("ban-alter-system", re.compile(r"\balter\s+system\b"), "runs {}"),
    ("ban-role-ddl", re.compile(r"\b(?:create|alter|drop)\s+(?:role|user|group)\b(?!\s+mapping)"), "runs {}"),
    ("ban-role-ddl", re.compile(r"\bset\s+(?:local\s+|session\s+)?role\b"), "runs {}"),
    ("ban-role-ddl", re.compile(r"\bsession\s+authorization\b"), "runs SET SESSION AUTHORIZATION"),
    ("ban-role-ddl", re.compile(r"\b(?:reassign|drop)\s+owned\b"), "runs {}"),
)

_TRUE = frozenset({"true", "on", "yes", "1", "t", "tr", "tru", "y", "ye"})

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
    tables: dict[str, _Table] = field(default_factory=dict)
    views: set[str] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)
    index: int = 0
    file: str = ""
    script: Script | None = None
    line: int = 0

    # -- helpers --------------------------------------------------------------
    def report(self, rule_id: str, message: str, line: int | None = None) -> None:
        assert self.script is not None
        if rule_id in self.script.allowed_rules:
            return
        rule = RULES[rule_id]
        self.findings.append(Finding(rule_id, rule.severity, self.file, line or self.line, message, rule.hint))

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

    # -- every statement of up and down scripts ----------------------------------------
    def everywhere(self, parsed: ParsedStatement) -> None:
        """The rules that need no schema state: reaching outside the database, shared mode."""
        node, kind = parsed.node, parsed.statement.kind
        if kind in _DATABASE_NODES:
            self.report("ban-drop-database", f"{_DATABASE_NODES[kind]} {getattr(node, 'dbname', '')}".rstrip())
        elif kind == "RenameStmt" and node.renameType == OT.OBJECT_DATABASE:
            self.report("ban-drop-database", f"ALTER DATABASE {node.subname} RENAME")
        elif kind == "AlterOwnerStmt" and node.objectType == OT.OBJECT_DATABASE:
            self.report("ban-drop-database", f"ALTER DATABASE {getattr(node.object, 'sval', '')} OWNER TO")
        elif kind == "GrantStmt" and node.objtype == OT.OBJECT_DATABASE:
            self.report("ban-drop-database", f"{'GRANT' if node.is_grant else 'REVOKE'} ... ON DATABASE")
        elif kind in _CROSS_NODES:
            self.report("ban-cross-database-access", _CROSS_NODES[kind])
        elif kind == "CreateExtensionStmt" and (node.extname in _CROSS_EXTENSIONS or node.extname.endswith("_fdw")):
            self.report("ban-cross-database-access", f"CREATE EXTENSION {node.extname}")
        elif kind == "CopyStmt" and node.filename is not None:
            direction = "FROM" if node.is_from else "TO"
            what = f"{direction} PROGRAM" if node.is_program else f"{direction} the server file {node.filename!r}"
            self.report("ban-copy-program", f"COPY {what}")
        elif kind == "AlterSystemStmt":
            self.report("ban-alter-system", "ALTER SYSTEM")
        elif kind in _ROLE_NODES:
            self.report("ban-role-ddl", _ROLE_NODES[kind])
        elif kind == "RenameStmt" and node.renameType == OT.OBJECT_ROLE:
            self.report("ban-role-ddl", f"ALTER ROLE {node.subname} RENAME")
        elif kind == "GrantRoleStmt":
            self.report("ban-role-ddl", f"{'GRANT' if node.is_grant else 'REVOKE'} role membership")
        elif kind == "VariableSetStmt" and node.name in ("role", "session_authorization") \
                and node.kind in (VSK.VAR_SET_VALUE, VSK.VAR_SET_DEFAULT, VSK.VAR_SET_CURRENT):
            self.report("ban-role-ddl", "SET ROLE" if node.name == "role" else "SET SESSION AUTHORIZATION")
        calls = sorted(((getattr(n, "location", None) or 0, n) for n in walk(node) if isinstance(n, ast.FuncCall)),
                       key=lambda pair: pair[0])
        for location, call in calls:
            name = func_name(call)
            if name.startswith("dblink"):
                self.report("ban-cross-database-access", f"calls {name}()", parsed.line_at(location))
            elif name in _FILE_FUNCTIONS:
                self.report("ban-copy-program", f"calls {name}()", parsed.line_at(location))
        for body, start in routine_bodies(node, parsed.text):
            self.scan_body(parsed, body, start)
        if self.shared_mode:
            self.shared(parsed)

    def scan_body(self, parsed: ParsedStatement, body: str, start: int) -> None:
        lowered, hits = body.lower(), {}
        what = "DO block" if parsed.statement.kind == "DoStmt" else "function body"
        for rule, pattern, template in _BODY_PATTERNS:
            match = pattern.search(lowered)
            if match is None or (rule, template) in hits:
                continue
            text = " ".join(body[match.start():match.end()].split()).rstrip("(").rstrip()
            shown = template.format(text.lower() + "()" if template == "calls {}" else text.upper())
            line = parsed.statement.line
            if start >= 0:
                line = parsed.first_line + parsed.text.count("\n", 0, start) + body.count("\n", 0, match.start())
            hits[(rule, template)] = (line, rule, f"{what} {shown}")
        for line, rule, message in sorted(hits.values()):
            self.report(rule, message, line)

    def shared(self, parsed: ParsedStatement) -> None:
        node, kind = parsed.node, parsed.statement.kind
        if kind == "ViewStmt":
            self.views.add(node.view.relname)
            if node.view.relpersistence != "t" and not _security_invoker(node.options):
                self.report("view-needs-security-invoker",
                            f"view {node.view.relname} without WITH (security_invoker = true)")
        elif kind == "AlterTableStmt" and (node.objtype == OT.OBJECT_VIEW or node.relation.relname in self.views):
            for cmd in node.cmds or ():
                options = [d for d in cmd.def_ or () if getattr(d, "defname", None) == "security_invoker"] \
                    if isinstance(cmd.def_, tuple) else []
                if cmd.subtype == AT.AT_ResetRelOptions and options:
                    self.report("view-needs-security-invoker",
                                f"RESET (security_invoker) on view {node.relation.relname}")
                elif cmd.subtype == AT.AT_SetRelOptions and options and not _security_invoker(options):
                    self.report("view-needs-security-invoker",
                                f"security_invoker set false on view {node.relation.relname}")
        elif kind == "CreateTableAsStmt" and node.objtype == OT.OBJECT_MATVIEW:
            self.report("shared-materialized-view", f"materialized view {node.into.rel.relname}")
        elif kind in ("CreateFunctionStmt", "AlterFunctionStmt"):
            elems = node.options if kind == "CreateFunctionStmt" else node.actions
            if any(getattr(e, "defname", None) == "security" and getattr(e.arg, "boolval", False)
                   for e in elems or ()):
                names = node.funcname if kind == "CreateFunctionStmt" else node.func.objname
                name = ".".join(getattr(n, "sval", "?") for n in names or ())
                self.report("shared-security-definer", f"{name} is SECURITY DEFINER")


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


def _security_invoker(options: Any) -> bool:
    """True when reloptions set security_invoker to a true value (PostgreSQL's parse_bool)."""
    value = False
    for opt in options or ():
        if getattr(opt, "defname", None) != "security_invoker":
            continue
        arg = opt.arg
        if arg is None:
            value = True
        elif hasattr(arg, "boolval"):
            value = bool(arg.boolval)
        elif hasattr(arg, "ival"):
            value = arg.ival == 1
        else:
            value = str(getattr(arg, "sval", "")).strip().lower() in _TRUE
    return value


def lint_migrations(migrations: tuple[Migration, ...], *,
                    global_tables: frozenset[str] = frozenset(),
                    shared_mode: bool = False) -> list[Finding]:
    """Every finding, in version order: a migration's up script by line, then its down script.

    ``shared_mode``: the migrations also run on a shared (RLS) database; adds the
    view / materialized view / SECURITY DEFINER rules.
    """
    linter = _Linter(frozenset(global_tables), shared_mode=shared_mode)
    for index, migration in enumerate(sorted(migrations, key=lambda m: m.version)):
        linter.index = index
        _lint_script(linter, migration.up, up=True)
        if migration.down is not None:
            _lint_script(linter, migration.down, up=False)
    return linter.findings


def _lint_script(linter: _Linter, script: Script, *, up: bool) -> None:
    linter.file, linter.script, linter.line = script.path.name, script, 1
    if up and not script.statements:
        linter.report("empty-migration", f"{script.path.name} has no statement: it is recorded and runs nothing")
        return
    for parsed in parse_statements(script):
        linter.line = parsed.statement.line
        if up:
            handler = _HANDLERS.get(parsed.statement.kind)
            if handler is not None:
                handler(linter, parsed.node)
        linter.everywhere(parsed)
