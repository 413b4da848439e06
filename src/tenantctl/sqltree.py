"""Statements read back as pglast syntax trees, for lint.py and volatile.py.

Node locations are character indexes into the text that was parsed (see
statements.py); :meth:`ParsedStatement.line_at` turns them into file lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from .statements import Statement, location_to_index

if TYPE_CHECKING:
    from .migrations import Script

# A node of pglast's syntax tree. pglast types each field of each of its ~250
# node classes, but the linters dispatch on the node's class name and read
# fields by name across many classes (duck typing, ``getattr`` with defaults),
# so a node travels untyped.
PgNode: TypeAlias = Any
# the known columns of a table named in FROM (None: not known)
ColumnsOf: TypeAlias = Callable[[PgNode], list[str] | None]


@dataclass(frozen=True)
class ParsedStatement:
    """A statement of a script with its pglast node; node locations index ``text``,
    whose first line is ``first_line`` of the file."""

    statement: Statement
    node: PgNode
    text: str
    first_line: int

    def line_at(self, location: int | None) -> int:
        """The file line of a pglast location of this node (its statement's line if unknown)."""
        if location is None or location < 0:
            return self.statement.line
        index = location_to_index(self.text)(location)
        if not 0 <= index <= len(self.text):
            return self.statement.line
        return self.first_line + self.text.count("\n", 0, index)


def parse_statements(script: Script) -> list[ParsedStatement]:
    """Every statement of the script with its syntax tree: one parse of the whole file."""
    import pglast

    if script.statements and all(s.node is not None for s in script.statements):
        return [ParsedStatement(s, s.node, script.sql, 1) for s in script.statements]
    raws = pglast.parse_sql(script.sql) if script.statements else ()
    if len(raws) == len(script.statements):
        return [ParsedStatement(stmt, raw.stmt, script.sql, 1)
                for stmt, raw in zip(script.statements, raws, strict=True)]
    # a Script built by hand whose text does not match its statements: parse them one by one
    return [ParsedStatement(stmt, pglast.parse_sql(stmt.sql)[0].stmt, stmt.sql, stmt.line)
            for stmt in script.statements]


def statement_node(statement: Statement) -> Any:
    """The syntax tree of one statement (its own, or parsed from its text)."""
    if statement.node is not None:
        return statement.node
    import pglast

    return pglast.parse_sql(statement.sql)[0].stmt


def walk(node: object) -> Iterator[PgNode]:
    """Every pglast node in the tree under ``node`` (itself included), depth first."""
    from pglast import ast

    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            stack.extend(getattr(item, attr) for attr in item)
        elif isinstance(item, (tuple, list)):
            stack.extend(reversed(item))


def func_name(call: PgNode) -> str:
    """Lower-cased unqualified name of a FuncCall."""
    names = getattr(call, "funcname", None) or ()
    return (getattr(names[-1], "sval", "") or "").lower() if names else ""


def routine_bodies(node: PgNode, text: str) -> list[tuple[str, int]]:
    """The source bodies of a DO block or CREATE FUNCTION/PROCEDURE ``AS '...'``:
    (body with comments blanked out, index in ``text`` where the body starts).

    Comments become spaces (line breaks kept), so a text scan of the body does
    not match commented-out code and line numbers stay right.
    """
    kind = type(node).__name__
    if kind == "DoStmt":
        elems = node.args or ()
    elif kind == "CreateFunctionStmt":
        elems = node.options or ()
    else:
        return []
    out = []
    for elem in elems:
        if getattr(elem, "defname", None) != "as":
            continue
        arg = elem.arg
        first = arg[0] if isinstance(arg, (tuple, list)) and arg else arg
        body = getattr(first, "sval", None)
        if not isinstance(body, str):
            continue
        start = location_to_index(text)(elem.arg_location) if elem.arg_location is not None else -1
        if 0 <= start < len(text):
            if text[start] == "$":
                close = text.find("$", start + 1)
                start = close + 1 if close > 0 else start
            else:
                start += 2 if text[start] in "eE" else 1
        out.append((_blank_comments(body), start))
    return out


def _blank_comments(body: str) -> str:
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(body)
    except ParseError:
        return body
    chars = list(body)
    for token in tokens:
        if token.name in ("SQL_COMMENT", "C_COMMENT"):
            for i in range(token.start, min(token.end + 1, len(chars))):
                if chars[i] != "\n":
                    chars[i] = " "
    return "".join(chars)


def leftmost_select(node: PgNode) -> PgNode:
    """The first SELECT of a UNION/INTERSECT/EXCEPT (it names the columns and holds INTO)."""
    while getattr(node, "larg", None) is not None:
        node = node.larg
    return node


def output_names(query: PgNode, columns_of: ColumnsOf) -> list[str | None] | None:
    """The column names a query produces, as PostgreSQL names them (FigureColname),
    or None when the query is not a plain SELECT/VALUES.

    A name is None where it cannot be known here; ``columns_of(range_var)`` gives
    the columns of a table in FROM (a list, or None if not known) to expand ``*``.
    """
    select = leftmost_select(query)
    if type(select).__name__ != "SelectStmt":
        return None
    if select.valuesLists:
        return [f"column{i + 1}" for i in range(len(select.valuesLists[0]))]
    names: list[str | None] = []
    for target in select.targetList or ():
        fields = getattr(target.val, "fields", None) or ()
        if fields and type(fields[-1]).__name__ == "A_Star":
            qualifier = getattr(fields[-2], "sval", None) if len(fields) > 1 else None
            expanded = _star(select.fromClause, qualifier, columns_of)
            if expanded is None:
                names.append(None)
            else:
                names += expanded
            continue
        names.append(target.name or _figure_colname(target.val))
    return names


def _star(from_clause: PgNode, qualifier: str | None, columns_of: ColumnsOf) -> list[str] | None:
    """The columns ``*`` (or ``qualifier.*``) stands for; None if any table is unknown."""
    rels: list[PgNode] = []
    stack = list(from_clause or ())
    while stack:
        item = stack.pop(0)
        kind = type(item).__name__
        if kind == "JoinExpr":
            stack[:0] = [item.larg, item.rarg]
        elif kind == "RangeVar":
            rels.append(item)
        else:
            return None  # a subquery, a function: its columns are not tracked
    if qualifier is not None:
        rels = [r for r in rels if (r.alias.aliasname if r.alias else r.relname) == qualifier]
    out: list[str] = []
    for rel in rels or [None]:
        columns = columns_of(rel) if rel is not None else None
        if columns is None:
            return None
        out += columns
    return out


_FIXED_NAMES = {"CoalesceExpr": "coalesce", "A_ArrayExpr": "array", "RowExpr": "row",
                "GroupingFunc": "grouping"}


def _figure_colname(node: PgNode) -> str | None:
    """PostgreSQL's FigureColname for the common expressions; None where unsure."""
    kind = type(node).__name__
    if kind == "ColumnRef":
        return getattr(node.fields[-1], "sval", None)
    if kind == "A_Indirection":
        names = [getattr(i, "sval", None) for i in node.indirection or ()]
        names = [n for n in names if n]
        return names[-1] if names else _figure_colname(node.arg)
    if kind == "FuncCall":
        return func_name(node) or None
    if kind == "TypeCast":
        inner = _figure_colname(node.arg)
        if inner is not None and inner != "?column?":
            return inner
        type_names = getattr(node.typeName, "names", None) or ()
        return getattr(type_names[-1], "sval", None) if type_names else None
    if kind == "CollateClause":
        return _figure_colname(node.arg)
    if kind in _FIXED_NAMES:
        return _FIXED_NAMES[kind]
    if kind == "MinMaxExpr":
        return None
    if kind == "CaseExpr":
        inner = _figure_colname(node.defresult) if node.defresult is not None else None
        return inner if inner is not None and inner != "?column?" else "case"
    if kind in ("A_Const", "A_Expr", "BoolExpr", "NullTest", "BooleanTest", "ParamRef"):
        if kind == "A_Expr" and getattr(node.kind, "name", "") == "AEXPR_NULLIF":
            return "nullif"
        return "?column?"
    return None
