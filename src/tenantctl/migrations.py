"""The migrations folder: the only reader of it, producing frozen values.

File names:
  ``v1.0.1_add_usr_tables.sql``  seed convention (``v``/``V``, dotted version, ``_``)
  ``V1_1__init.sql``            Flyway convention (``__`` ends the version; ``_`` in
                                the version is a dot, so this is version 1.1)
  ``<same stem>.down.sql``      the optional down script of a migration

Versions compare numerically per dotted part, trailing zeros ignored (1.0 == 1.0.0,
so two such files are a duplicate). Header directives live in the leading
comment block::

  -- tenantctl: no-transaction
  -- tenantctl: statement-timeout=10min
  -- tenantctl: lock-timeout=2s
  -- tenantctl: allow ban-drop-column, require-concurrent-index
  -- tenantctl: per-tenant            (never baked into a template: see volatile.py)

Everything is checked before a database is touched; any problem is a
MigrationFileError (exit 2): names that look like SQL files (``.sql`` in any
letter case) but match neither convention, NUL bytes, symlinks that resolve
outside the folder (unless ``allow_external_symlinks``), syntax errors.
An empty or comment-only file is a valid migration that runs nothing
(``Script.statements == ()``); lint warns about it (``empty-migration``).

Text is handled as ``str`` throughout: pglast (8.x) reports statement and
error positions as *character* indexes into the str it was given, so
statements are sliced from the str, never from its UTF-8 bytes (slicing bytes
with character offsets cut statements short after any non-ASCII text: a
``DROP TABLE t_old_bak`` ran as ``DROP TABLE t_old``). The unit is checked
once at run time, so a pglast that reports bytes is handled too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, total_ordering
from pathlib import Path
from typing import Any

from .errors import MigrationFileError

_SEED_NAME = re.compile(r"^[vV](?P<version>\d+(?:\.\d+)*)_(?P<desc>[^.]+?)(?P<down>\.down)?\.sql$")
_FLYWAY_NAME = re.compile(r"^V(?P<version>\d+(?:[._]\d+)*)__(?P<desc>[^.]+?)(?P<down>\.down)?\.sql$")
_DIRECTIVE = re.compile(r"^--\s*tenantctl:\s*(?P<body>.*?)\s*$", re.IGNORECASE)

NO_TRANSACTION = "no-transaction"
PER_TENANT = "per-tenant"
KNOWN_DIRECTIVES = ("no-transaction", "statement-timeout", "lock-timeout", "allow", "per-tenant")
_FLAG_DIRECTIVES_WITHOUT_VALUE = (PER_TENANT,)  # no-transaction tolerates trailing text (compatibility)

# PostgreSQL's white space (scan.l): Python's str.strip() would also remove
# characters such as U+00A0 that PostgreSQL reads as part of an identifier.
_PG_SPACE = " \t\n\r\f\v"

ALLOW_SYMLINKS_HINT = "set `settings.allow_external_symlinks: true` in tenants.yaml to allow it"

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


@total_ordering
@dataclass(frozen=True)
class Version:
    """A migration version: ``text`` as written (dotted), compared numerically."""

    text: str
    parts: tuple[int, ...] = field(compare=False, repr=False)
    key: tuple[int, ...] = field(init=False, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        text = text.strip().lstrip("vV").replace("_", ".")
        if not re.fullmatch(r"\d+(?:\.\d+)*", text):
            raise ValueError(f"{text!r} is not a version such as 1.0.1")
        return cls(text, tuple(int(p) for p in text.split(".")))

    def __post_init__(self) -> None:
        # Computed once: versions are compared and hashed a great deal at fleet scale.
        parts = list(self.parts)
        while len(parts) > 1 and parts[-1] == 0:
            parts.pop()
        object.__setattr__(self, "key", tuple(parts))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a script, with the line it starts on."""

    sql: str
    line: int
    kind: str  # pglast node name, e.g. "IndexStmt"
    non_transactional: bool


@dataclass(frozen=True)
class Script:
    """One SQL file: an up migration or its down companion."""

    path: Path
    sql: str
    checksum: str
    directives: dict[str, str]
    statements: tuple[Statement, ...]

    @property
    def transactional(self) -> bool:
        return NO_TRANSACTION not in self.directives

    @property
    def allowed_rules(self) -> frozenset[str]:
        raw = self.directives.get("allow", "")
        return frozenset(r.strip() for r in raw.replace(",", " ").split() if r.strip())

    @property
    def per_tenant_directive(self) -> bool:
        """``-- tenantctl: per-tenant``: apply to every tenant, never bake into a template."""
        return PER_TENANT in self.directives

    def timeout(self, name: str) -> float | None:
        from .config import parse_duration

        raw = self.directives.get(name)
        return None if raw is None else parse_duration(raw)


@dataclass(frozen=True)
class Migration:
    version: Version
    description: str
    up: Script
    down: Script | None = None

    @property
    def filename(self) -> str:
        return self.up.path.name

    @property
    def checksum(self) -> str:
        return self.up.checksum

    @property
    def transactional(self) -> bool:
        return self.up.transactional

    @property
    def per_tenant_directive(self) -> bool:
        return self.up.per_tenant_directive


def checksum(text: str) -> str:
    """sha256 of the file with line endings normalised (a CRLF checkout is not drift)."""
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def parse_name(name: str) -> tuple[Version, str, bool]:
    """(version, description, is_down) from a file name, or raise ValueError."""
    match = _FLYWAY_NAME.match(name) or _SEED_NAME.match(name)
    if not match:
        raise ValueError(
            "name must look like v1.0.1_add_usr_tables.sql or V1__init.sql "
            "(optionally .down.sql)"
        )
    version = Version.parse(match.group("version"))
    description = match.group("desc").replace("_", " ").strip()
    if not description:
        raise ValueError("the description after the version is empty")
    return version, description, bool(match.group("down"))


def parse_directives(path: Path, sql: str) -> dict[str, str]:
    """Directives from the leading comment block of a script."""
    directives: dict[str, str] = {}
    # Lines as PostgreSQL and the statement line numbers count them (\n), not as
    # str.splitlines() does (it also breaks at U+2028, \x1c, ... inside a comment).
    for number, raw in enumerate(sql.split("\n"), start=1):
        line = raw.strip(_PG_SPACE)
        if not line:
            continue
        if not line.startswith("--"):
            break
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        body = match.group("body")
        name = re.split(r"[\s=:]", body, maxsplit=1)[0]
        rest = body[len(name):].lstrip(" =:\t")
        name = name.lower()
        if name not in KNOWN_DIRECTIVES:
            raise MigrationFileError(
                f"{path.name}:{number}: unknown directive {name!r}",
                hint=f"known directives: {', '.join(KNOWN_DIRECTIVES)}",
            )
        if name in _FLAG_DIRECTIVES_WITHOUT_VALUE and rest:
            raise MigrationFileError(
                f"{path.name}:{number}: directive {name!r} takes no value (got {rest!r})",
                hint=f"write just `-- tenantctl: {name}`, or remove the line",
            )
        if name == "allow":
            previous = directives.get("allow", "")
            directives["allow"] = f"{previous} {rest}".strip()
            continue
        if name in ("statement-timeout", "lock-timeout"):
            from .config import parse_duration

            try:
                parse_duration(rest)
            except ValueError as exc:
                raise MigrationFileError(f"{path.name}:{number}: {name}: {exc}") from None
        directives[name] = rest
    return directives


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
        chunk = sql[start:end].rstrip(_PG_SPACE)
        line = sql.count("\n", 0, start) + 1
        kind = type(raw.stmt).__name__
        out.append(Statement(chunk, line, kind, _non_transactional(raw.stmt, kind)))
    return tuple(out)


def skip_space_and_comments(sql: str, start: int, end: int | None = None) -> int:
    """Index of the first character at or after ``start`` that is not white space or
    inside a ``--`` or (nested) ``/* */`` comment."""
    end = len(sql) if end is None else end
    i = start
    while i < end:
        c = sql[i]
        if c in _PG_SPACE:
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
    if sql.strip(_PG_SPACE):  # "at end of input": the last line with text on it
        return f"{path.name}:{sql.rstrip(_PG_SPACE).count(chr(10)) + 1}"
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


def read_script(path: Path, *, root: Path | None = None, allow_external_symlinks: bool = False) -> Script:
    """Read, check and split one SQL file (a migration, a down script, the seed).

    ``root``: the folder the file must stay inside once resolved (symlinks
    followed); None: no such check. ``allow_external_symlinks`` lifts the check.
    """
    if root is not None and not allow_external_symlinks:
        problem = external_symlink_problem(path, root)
        if problem:
            raise MigrationFileError(problem, hint=ALLOW_SYMLINKS_HINT)
    try:
        sql = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationFileError(f"{path.name}: cannot read: {exc}") from None
    sql = sql.removeprefix("\ufeff")  # a byte order mark is no SQL (PostgreSQL refuses it)
    nul = sql.find("\x00")
    if nul >= 0:
        # libpg_query reads a C string: everything after a NUL would be silently dropped
        raise MigrationFileError(
            f"{path.name}:{sql.count(chr(10), 0, nul) + 1}: contains a NUL byte (\\x00)",
            hint="SQL text cannot contain NUL; is it a binary file, or saved as UTF-16? save it as UTF-8",
        )
    directives = parse_directives(path, sql)
    statements = split_statements(path, sql)
    script = Script(path, sql, checksum(sql), directives, statements)
    if script.transactional:
        for stmt in statements:
            if stmt.non_transactional:
                raise MigrationFileError(
                    f"{path.name}:{stmt.line}: {stmt.sql.split(None, 4)[:4]!r}... cannot run "
                    "inside a transaction",
                    hint="put it in its own migration whose first line is "
                    "`-- tenantctl: no-transaction`",
                )
    return script


def external_symlink_problem(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be read from under ``root`` (it resolves outside), or None."""
    try:
        resolved = path.resolve(strict=True)
        inside = root.resolve()
    except (OSError, RuntimeError) as exc:  # dangling link, loop
        target = _link_target(path)
        return f"{path.name}: cannot resolve{f' (symlink to {target})' if target else ''}: {exc}"
    if resolved == inside or resolved.is_relative_to(inside):
        return None
    target = _link_target(path)
    how = f"symlink to {target}" if target is not None else f"resolves to {resolved}"
    if target is not None and Path(target) != resolved:
        how += f" ({resolved})"
    return f"{path.name}: {how}, outside {inside}; refused: {ALLOW_SYMLINKS_HINT}"


def _link_target(path: Path) -> str | None:
    try:
        return str(path.readlink()) if path.is_symlink() else None
    except OSError:
        return None


def load_migrations(
    folder: Path, *, notices: list[str] | None = None, allow_external_symlinks: bool = False
) -> tuple[Migration, ...]:
    """Every migration in the folder, sorted by version. Raises MigrationFileError.

    ``notices``: when given, one line is appended per entry that is ignored
    (a non-SQL file, a sub-folder). Hidden entries (``.name``) are skipped silently.
    ``allow_external_symlinks``: accept files that resolve outside the folder.
    """
    if not folder.is_dir():
        raise MigrationFileError(
            f"migrations folder {folder} does not exist",
            hint="create it, or set `migrations:` in tenants.yaml",
        )
    ups: dict[Version, tuple[str, Path]] = {}
    downs: dict[Version, Path] = {}
    problems: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.name.lower().endswith(".sql"):
            if notices is not None:
                what = "a folder; sub-folders are not read" if path.is_dir() else "not a migration file name"
                notices.append(f"{folder.name}/{path.name}: ignored ({what})")
            continue
        if not allow_external_symlinks:
            problem = external_symlink_problem(path, folder)
            if problem:
                problems.append(problem)
                continue
        if not path.is_file():
            what = "a dangling symlink" if path.is_symlink() and not path.exists() else "not a regular file"
            problems.append(f"{path.name}: {what}")
            continue
        if not path.name.endswith(".sql"):
            problems.append(f"{path.name}: the suffix must be lower-case .sql")
            continue
        try:
            version, description, is_down = parse_name(path.name)
        except ValueError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        if version in (downs if is_down else ups):
            other = downs[version] if is_down else ups[version][1]
            problems.append(f"{path.name}: version {version} is also used by {other.name}")
            continue
        if is_down:
            downs[version] = path
        else:
            ups[version] = (description, path)
    for version, path in downs.items():
        if version not in ups:
            problems.append(f"{path.name}: down script without an up migration {version}")
        elif path.name != ups[version][1].name.removesuffix(".sql") + ".down.sql":
            problems.append(f"{path.name}: name does not match its up migration {ups[version][1].name}")
    if problems:
        raise MigrationFileError(
            f"{len(problems)} problem(s) in {folder}:\n  " + "\n  ".join(problems),
            hint="fix or rename the files; nothing was run",
        )
    root = None if allow_external_symlinks else folder
    migrations = []
    for version in sorted(ups):
        description, path = ups[version]
        down = read_script(downs[version], root=root) if version in downs else None
        migrations.append(Migration(version, description, read_script(path, root=root), down))
    return tuple(migrations)


# -- reading statements back as syntax trees (lint, volatile) ---------------------------

@dataclass(frozen=True)
class ParsedStatement:
    """A statement of a script with its pglast node; node locations index ``text``,
    whose first line is ``first_line`` of the file."""

    statement: Statement
    node: Any
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

    raws = pglast.parse_sql(script.sql) if script.statements else ()
    if len(raws) == len(script.statements):
        return [ParsedStatement(stmt, raw.stmt, script.sql, 1) for stmt, raw in zip(script.statements, raws)]
    # a Script built by hand whose text does not match its statements: parse them one by one
    return [ParsedStatement(stmt, pglast.parse_sql(stmt.sql)[0].stmt, stmt.sql, stmt.line)
            for stmt in script.statements]


def walk(node: Any) -> Iterator[Any]:
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


def func_name(call: Any) -> str:
    """Lower-cased unqualified name of a FuncCall."""
    names = getattr(call, "funcname", None) or ()
    return (getattr(names[-1], "sval", "") or "").lower() if names else ""


def routine_bodies(node: Any, text: str) -> list[tuple[str, int]]:
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


def new_migration_path(
    folder: Path, description: str, existing: tuple[Migration, ...], version: str | None = None
) -> Path:
    """The path ``tenantctl new`` writes: the next version, bumping the last part."""
    slug = re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")
    if not slug:
        raise MigrationFileError(f"{description!r} has no letters or digits to name a file")
    if version is not None:
        try:
            chosen = Version.parse(version)
        except ValueError as exc:
            raise MigrationFileError(str(exc)) from None
    elif existing:
        last = existing[-1].version.parts
        chosen = Version.parse(".".join(map(str, last[:-1] + (last[-1] + 1,))))
    else:
        chosen = Version.parse("1.0.0")
    if any(m.version == chosen for m in existing):
        raise MigrationFileError(f"version {chosen} already exists")
    if existing and chosen < existing[-1].version:
        raise MigrationFileError(
            f"version {chosen} is older than the latest {existing[-1].version}",
            hint="tenants already at the latest version would skip it; choose a newer one",
        )
    return folder / f"v{chosen}_{slug}.sql"


NEW_MIGRATION_TEMPLATE = """\
-- {description}
-- Runs in one transaction with its history row. For CREATE INDEX CONCURRENTLY
-- and friends, put them in a migration of their own headed by:
--   -- tenantctl: no-transaction
-- XOS conventions: every tenant table leads its keys with (clnt_id, site_id, ...).

"""
