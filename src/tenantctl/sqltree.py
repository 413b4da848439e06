"""Statements read back as pglast syntax trees, for lint.py and volatile.py.

Node locations are character indexes into the text that was parsed (see
statements.py); :meth:`ParsedStatement.line_at` turns them into file lines.
"""

from __future__ import annotations

from collections.abc import Iterator
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
