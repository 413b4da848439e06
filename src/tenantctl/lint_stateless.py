"""The lint rules that need no simulated schema: checked in up and down scripts.

Statements that reach outside the tenant's database (ban-drop-database,
ban-cross-database-access, ban-copy-program, ban-alter-system, ban-role-ddl),
found in the syntax tree and, in DO blocks and function bodies, by a text scan
(comments blanked); in shared mode, views without ``security_invoker``,
materialized views and SECURITY DEFINER routines. docs/lint-rules.md describes
each rule. ALTER <object> OWNER TO is not role DDL (it changes an object of this
database; shared mode relies on it); ALTER DATABASE ... OWNER TO is
ban-drop-database. Dynamic SQL built from pieces is not seen.
"""

from __future__ import annotations

import re
from typing import Protocol

from pglast import ast
from pglast.enums import AlterTableType as AT
from pglast.enums import ObjectType as OT
from pglast.enums import VariableSetKind as VSK

from .sqltree import ParsedStatement, PgNode, func_name, routine_bodies, walk


class Report(Protocol):
    """Records a finding of ``rule_id`` at ``line`` (default: the statement's line)."""

    def __call__(self, rule_id: str, message: str, line: int | None = None) -> None: ...


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


def check_outside(parsed: ParsedStatement, report: Report) -> None:
    """Statements, calls and routine bodies that reach outside the tenant's database."""
    node, kind = parsed.node, parsed.statement.kind
    if kind in _DATABASE_NODES:
        report("ban-drop-database", f"{_DATABASE_NODES[kind]} {getattr(node, 'dbname', '')}".rstrip())
    elif kind == "RenameStmt" and node.renameType == OT.OBJECT_DATABASE:
        report("ban-drop-database", f"ALTER DATABASE {node.subname} RENAME")
    elif kind == "AlterOwnerStmt" and node.objectType == OT.OBJECT_DATABASE:
        report("ban-drop-database", f"ALTER DATABASE {getattr(node.object, 'sval', '')} OWNER TO")
    elif kind == "GrantStmt" and node.objtype == OT.OBJECT_DATABASE:
        report("ban-drop-database", f"{'GRANT' if node.is_grant else 'REVOKE'} ... ON DATABASE")
    elif kind in _CROSS_NODES:
        report("ban-cross-database-access", _CROSS_NODES[kind])
    elif kind == "CreateExtensionStmt" and (
            node.extname in _CROSS_EXTENSIONS or node.extname.endswith("_fdw")):
        report("ban-cross-database-access", f"CREATE EXTENSION {node.extname}")
    elif kind == "CopyStmt" and node.filename is not None:
        direction = "FROM" if node.is_from else "TO"
        what = f"{direction} PROGRAM" if node.is_program else f"{direction} the server file {node.filename!r}"
        report("ban-copy-program", f"COPY {what}")
    elif kind == "AlterSystemStmt":
        report("ban-alter-system", "ALTER SYSTEM")
    elif kind in _ROLE_NODES:
        report("ban-role-ddl", _ROLE_NODES[kind])
    elif kind == "RenameStmt" and node.renameType == OT.OBJECT_ROLE:
        report("ban-role-ddl", f"ALTER ROLE {node.subname} RENAME")
    elif kind == "GrantRoleStmt":
        report("ban-role-ddl", f"{'GRANT' if node.is_grant else 'REVOKE'} role membership")
    elif kind == "VariableSetStmt" and node.name in ("role", "session_authorization") \
            and node.kind in (VSK.VAR_SET_VALUE, VSK.VAR_SET_DEFAULT, VSK.VAR_SET_CURRENT):
        report("ban-role-ddl", "SET ROLE" if node.name == "role" else "SET SESSION AUTHORIZATION")
    calls = sorted(((getattr(n, "location", None) or 0, n) for n in walk(node)
                    if isinstance(n, ast.FuncCall)), key=lambda pair: pair[0])
    for location, call in calls:
        name = func_name(call)
        if name.startswith("dblink"):
            report("ban-cross-database-access", f"calls {name}()", parsed.line_at(location))
        elif name in _FILE_FUNCTIONS:
            report("ban-copy-program", f"calls {name}()", parsed.line_at(location))
    for body, start in routine_bodies(node, parsed.text):
        _scan_body(parsed, body, start, report)


def _scan_body(parsed: ParsedStatement, body: str, start: int, report: Report) -> None:
    lowered = body.lower()
    hits: dict[tuple[str, str], tuple[int, str, str]] = {}
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
        report(rule, message, line)


def check_shared(parsed: ParsedStatement, views: set[str], report: Report) -> None:
    """Shared mode: views must be security_invoker, no materialized views, no SECURITY DEFINER.

    ``views``: the views created so far (ALTER TABLE may name one); updated here.
    """
    node, kind = parsed.node, parsed.statement.kind
    if kind == "ViewStmt":
        views.add(node.view.relname)
        if node.view.relpersistence != "t" and not _security_invoker(node.options):
            report("view-needs-security-invoker",
                   f"view {node.view.relname} without WITH (security_invoker = true)")
    elif kind == "AlterTableStmt" and (node.objtype == OT.OBJECT_VIEW or node.relation.relname in views):
        for cmd in node.cmds or ():
            options = [d for d in cmd.def_ or () if getattr(d, "defname", None) == "security_invoker"] \
                if isinstance(cmd.def_, tuple) else []
            if cmd.subtype == AT.AT_ResetRelOptions and options:
                report("view-needs-security-invoker",
                       f"RESET (security_invoker) on view {node.relation.relname}")
            elif cmd.subtype == AT.AT_SetRelOptions and options and not _security_invoker(options):
                report("view-needs-security-invoker",
                       f"security_invoker set false on view {node.relation.relname}")
    elif kind == "CreateTableAsStmt" and node.objtype == OT.OBJECT_MATVIEW:
        report("shared-materialized-view", f"materialized view {node.into.rel.relname}")
    elif kind in ("CreateFunctionStmt", "AlterFunctionStmt"):
        elems = node.options if kind == "CreateFunctionStmt" else node.actions
        if any(getattr(e, "defname", None) == "security" and getattr(e.arg, "boolval", False)
               for e in elems or ()):
            names = node.funcname if kind == "CreateFunctionStmt" else node.func.objname
            name = ".".join(getattr(n, "sval", "?") for n in names or ())
            report("shared-security-definer", f"{name} is SECURITY DEFINER")


def _security_invoker(options: PgNode) -> bool:
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
