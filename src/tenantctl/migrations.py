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

Reading the folder checks names and text; any problem is a MigrationFileError
(exit 2): names that look like SQL files (``.sql`` in any letter case) but match
neither convention, NUL bytes, undecodable text, bad directives, symlinks that
resolve outside the folder (unless ``allow_external_symlinks``). Syntax errors
are found when a script is split into statements (``Script.statements``, or
inputs.parse_all before a run that has anything to do: see parse_cache.py).
An empty or comment-only file is a valid migration that runs nothing
(``Script.statements == ()``); lint warns about it (``empty-migration``).

Statements are split by statements.py (PostgreSQL's parser, character
positions); sqltree.py reads them back as syntax trees for lint and volatile.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path

from .config_fields import parse_duration
from .errors import MigrationFileError
from .sqltree import ParsedStatement, func_name, parse_statements, routine_bodies, walk
from .statements import (
    PG_SPACE,
    Statement,
    location_to_index,
    skip_space_and_comments,
    split_statements,
)

__all__ = [
    "ALLOW_SYMLINKS_HINT",
    "KNOWN_DIRECTIVES",
    "NEW_MIGRATION_TEMPLATE",
    "NO_TRANSACTION",
    "PER_TENANT",
    "Migration",
    "ParsedStatement",
    "Script",
    "Statement",
    "Version",
    "check_statements",
    "checksum",
    "external_symlink_problem",
    "func_name",
    "load_migrations",
    "location_to_index",
    "new_migration_path",
    "parse_directives",
    "parse_name",
    "parse_statements",
    "read_script",
    "routine_bodies",
    "skip_space_and_comments",
    "split_statements",
    "walk",
]

_SEED_NAME = re.compile(r"^[vV](?P<version>\d+(?:\.\d+)*)_(?P<desc>[^.]+?)(?P<down>\.down)?\.sql$")
_FLYWAY_NAME = re.compile(r"^V(?P<version>\d+(?:[._]\d+)*)__(?P<desc>[^.]+?)(?P<down>\.down)?\.sql$")
_DIRECTIVE = re.compile(r"^--\s*tenantctl:\s*(?P<body>.*?)\s*$", re.IGNORECASE)

NO_TRANSACTION = "no-transaction"
PER_TENANT = "per-tenant"
KNOWN_DIRECTIVES = ("no-transaction", "statement-timeout", "lock-timeout", "allow", "per-tenant")
_FLAG_DIRECTIVES_WITHOUT_VALUE = (PER_TENANT,)  # no-transaction tolerates trailing text (compatibility)

ALLOW_SYMLINKS_HINT = "set `settings.allow_external_symlinks: true` in tenants.yaml to allow it"


@total_ordering
@dataclass(frozen=True)
class Version:
    """A migration version: ``text`` as written (dotted), compared numerically."""

    text: str
    parts: tuple[int, ...] = field(compare=False, repr=False)
    key: tuple[int, ...] = field(init=False, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        return _parse_version(text)

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


@functools.lru_cache(maxsize=65536)
def _parse_version(text: str) -> Version:
    """Versions are immutable: each tenant's history repeats the same few hundred
    texts, parsed once per run instead of once per row."""
    text = text.strip().lstrip("vV").replace("_", ".")
    if not re.fullmatch(r"\d+(?:\.\d+)*", text):
        raise ValueError(f"{text!r} is not a version such as 1.0.1")
    return Version(text, tuple(int(p) for p in text.split(".")))



@dataclass(frozen=True)
class Script:
    """One SQL file: an up migration or its down companion.

    Reading a script checks and checksums its text; splitting it into
    statements (PostgreSQL's parser) happens on first use of ``statements``,
    or earlier from the parse cache (parse_cache.py): a run that has nothing
    to apply never parses a file. :func:`check_statements` is that split plus
    its checks; it raises MigrationFileError.
    """

    path: Path
    sql: str
    checksum: str
    directives: dict[str, str]
    parsed: tuple[Statement, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def statements(self) -> tuple[Statement, ...]:
        if self.parsed is None:
            self.adopt(check_statements(self.path, self.sql, transactional=self.transactional))
        assert self.parsed is not None
        return self.parsed

    @property
    def is_parsed(self) -> bool:
        return self.parsed is not None

    def adopt(self, statements: tuple[Statement, ...]) -> None:
        """Take statements split earlier (the parse cache) or just now."""
        object.__setattr__(self, "parsed", statements)

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
        line = raw.strip(PG_SPACE)
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
            try:
                parse_duration(rest)
            except ValueError as exc:
                raise MigrationFileError(f"{path.name}:{number}: {name}: {exc}") from None
        directives[name] = rest
    return directives




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
    return Script(path, sql, checksum(sql), parse_directives(path, sql))


def check_statements(path: Path, sql: str, *, transactional: bool) -> tuple[Statement, ...]:
    """Split a script into statements and check them; raises MigrationFileError
    (a syntax error, or a statement that cannot run inside a transaction in a
    transactional script)."""
    statements = split_statements(path, sql)
    if transactional:
        for stmt in statements:
            if stmt.non_transactional:
                raise MigrationFileError(
                    f"{path.name}:{stmt.line}: {stmt.sql.split(None, 4)[:4]!r}... cannot run "
                    "inside a transaction",
                    hint="put it in its own migration whose first line is "
                    "`-- tenantctl: no-transaction`",
                )
    return statements


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
    folder: Path, *, notices: list[str] | None = None, allow_external_symlinks: bool = False,
    parse: bool = False,
) -> tuple[Migration, ...]:
    """Every migration in the folder, sorted by version. Raises MigrationFileError.

    ``notices``: when given, one line is appended per entry that is ignored
    (a non-SQL file, a sub-folder). Hidden entries (``.name``) are skipped silently.
    ``allow_external_symlinks``: accept files that resolve outside the folder.
    ``parse``: also split every script now (a syntax error raises here); otherwise
    each is split on first use of its ``statements`` (inputs.parse_all, with the cache).
    """
    if not folder.is_dir():
        raise MigrationFileError(
            f"migrations folder {folder} does not exist",
            hint="create it, or set `migrations:` in tenants.yaml",
        )
    ups: dict[Version, tuple[str, Path]] = {}
    downs: dict[Version, Path] = {}
    problems: list[str] = []
    with os.scandir(folder) as listing:  # one call; the entries know their own type
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        path = folder / entry.name
        if entry.name.startswith("."):
            continue
        if not entry.name.lower().endswith(".sql"):
            if notices is not None:
                what = "a folder; sub-folders are not read" if path.is_dir() else "not a migration file name"
                notices.append(f"{folder.name}/{path.name}: ignored ({what})")
            continue
        if not allow_external_symlinks and entry.is_symlink():
            # a plain entry of the folder is inside it; only a link can lead out
            problem = external_symlink_problem(path, folder)
            if problem:
                problems.append(problem)
                continue
        if not entry.is_file():
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
    migrations = []  # every path was checked above: no second symlink check
    for version in sorted(ups):
        description, path = ups[version]
        down = read_script(downs[version]) if version in downs else None
        migrations.append(Migration(version, description, read_script(path), down))
    if parse:
        for m in migrations:
            for script in (m.up, m.down):
                if script is not None:
                    script.statements  # noqa: B018 - splits and checks it
    return tuple(migrations)




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
        chosen = Version.parse(".".join(map(str, (*last[:-1], last[-1] + 1))))
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
-- Every tenant table has {tenant_column} and leads its keys with it.

"""
