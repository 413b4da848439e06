"""SQL scripts split into statements with PostgreSQL's own parser (pglast).

Text is handled as ``str`` throughout: pglast (8.x) reports statement and
error positions as *character* indexes into the str it was given, so
statements are sliced from the str, never from its UTF-8 bytes (slicing bytes
with character offsets cut statements short after any non-ASCII text: a
``DROP TABLE t_old_bak`` ran as ``DROP TABLE t_old``). The unit is checked
once at run time, so a pglast that reports bytes is handled too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import MigrationFileError

# PostgreSQL's white space (scan.l): Python's str.strip() would also remove
# characters such as U+00A0 that PostgreSQL reads as part of an identifier.
PG_SPACE = " \t\n\r\f\v"

# Statements PostgreSQL refuses inside a transaction block (or that end one).
# VacuumStmt is judged in _non_transactional: ANALYZE (same node) may run in one.
_NON_TRANSACTIONAL_NODES = {
    "AlterSystemStmt",
    "CreatedbStmt",
    "DropdbStmt",
    "CreateTableSpaceStmt",
    "DropTableSpaceStmt",
    "TransactionStmt",
}


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a script, with the line it starts on."""

    sql: str
    line: int
    kind: str  # pglast node name, e.g. "IndexStmt"
    non_transactional: bool
    # the statement's syntax tree from the one parse of its file (lint, the
    # volatile-value scan and the driver read it; nobody parses the SQL again)
    node: Any = field(default=None, compare=False, repr=False)
    # where ``sql`` starts in its file's text (-1: not known); the parse cache keeps it
    start: int = field(default=-1, compare=False, repr=False)



def split_statements(path: Path, sql: str) -> tuple[Statement, ...]:
    """Split a script with PostgreSQL's own parser (pglast / libpg_query).

    Each statement runs from its first token (leading comments and white space
    dropped) to just before its ``;``; ``line`` is the line of that first token.
    """
    import pglast
    from pglast.parser import ParseError

    try:
        raw_statements = pglast.parse_sql(sql)
    except ParseError as exc:
        raise MigrationFileError(
            f"{_error_where(path, sql, exc)}: SQL syntax error: {exc.args[0] if exc.args else exc}"
        ) from None
    index = location_to_index(sql)
    out = []
    for raw in raw_statements:
        location = raw.stmt_location or 0
        start = index(location)
        end = index(location + raw.stmt_len) if raw.stmt_len else len(sql)
        start = skip_space_and_comments(sql, start, end)
        chunk = sql[start:end].rstrip(PG_SPACE)
        line = sql.count("\n", 0, start) + 1
        kind = type(raw.stmt).__name__
        out.append(Statement(chunk, line, kind, _non_transactional(raw.stmt, kind), raw.stmt, start))
    return tuple(out)


def skip_space_and_comments(sql: str, start: int, end: int | None = None) -> int:
    """Index of the first character at or after ``start`` that is not white space or
    inside a ``--`` or (nested) ``/* */`` comment."""
    end = len(sql) if end is None else end
    i = start
    while i < end:
        c = sql[i]
        if c in PG_SPACE:
            i += 1
        elif sql.startswith("--", i):  # to the end of the line (\n or \r, as scan.l)
            ends = [j for j in (sql.find("\n", i), sql.find("\r", i)) if j >= 0]
            i = min(ends) + 1 if ends else end
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < end and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return min(i, end)


@lru_cache(maxsize=1)
def _pglast_units() -> tuple[bool, int]:
    """(statement locations are UTF-8 byte offsets, base of ParseError positions).

    pglast 8 gives character indexes for both, and 0-based error positions;
    checked once on a probe so the slicing stays right whatever pglast does.
    """
    import pglast
    from pglast.parser import ParseError

    probe = "-- éé\nselect 1;select 2;"  # the second select: character 15, byte 17
    in_bytes = pglast.parse_sql(probe)[1].stmt_location == 17
    base = 0
    try:
        pglast.parse_sql("-- éé\nselec")  # the error token: character 6 (0-based)
    except ParseError as exc:
        position = exc.args[1] if len(exc.args) > 1 else None
        base = 1 if position in (7, 9) else 0
    return in_bytes, base


def location_to_index(sql: str) -> Callable[[int], int]:
    """Turn a pglast location into an index into ``sql``."""
    in_bytes, _ = _pglast_units()
    if not in_bytes or sql.isascii():
        return lambda location: location
    encoded = sql.encode("utf-8")
    return lambda location: len(encoded[:location].decode("utf-8", errors="ignore"))


def _error_where(path: Path, sql: str, exc: Exception) -> str:
    """``file:line`` of a pglast ParseError (its position: a character index, or None
    for an error at the end of the input)."""
    position = exc.args[1] if len(exc.args) > 1 else None
    if isinstance(position, int) and not isinstance(position, bool):
        in_bytes, base = _pglast_units()
        index = location_to_index(sql)(position - base) if in_bytes else position - base
        if 0 <= index <= len(sql):
            return f"{path.name}:{sql.count(chr(10), 0, index) + 1}"
    if sql.strip(PG_SPACE):  # "at end of input": the last line with text on it
        return f"{path.name}:{sql.rstrip(PG_SPACE).count(chr(10)) + 1}"
    return path.name


def _non_transactional(node: object, kind: str) -> bool:
    if kind in _NON_TRANSACTIONAL_NODES:
        return True
    if kind == "VacuumStmt":  # VACUUM may not run in a transaction block; ANALYZE may
        return bool(getattr(node, "is_vacuumcmd", True))
    if kind == "IndexStmt":
        return bool(getattr(node, "concurrent", False))
    if kind == "DropStmt":
        return bool(getattr(node, "concurrent", False))
    if kind == "ReindexStmt":
        for param in getattr(node, "params", None) or ():
            if getattr(param, "defname", "") == "concurrently":
                return True
    return False
