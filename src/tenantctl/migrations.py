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

Everything is checked before a database is touched; any problem is a
MigrationFileError (exit 2).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import total_ordering
from pathlib import Path

from .errors import MigrationFileError

_SEED_NAME = re.compile(r"^[vV](?P<version>\d+(?:\.\d+)*)_(?P<desc>[^.]+?)(?P<down>\.down)?\.sql$")
_FLYWAY_NAME = re.compile(r"^V(?P<version>\d+(?:[._]\d+)*)__(?P<desc>[^.]+?)(?P<down>\.down)?\.sql$")
_DIRECTIVE = re.compile(r"^--\s*tenantctl:\s*(?P<body>.*?)\s*$", re.IGNORECASE)

NO_TRANSACTION = "no-transaction"
KNOWN_DIRECTIVES = ("no-transaction", "statement-timeout", "lock-timeout", "allow")

# Statements PostgreSQL refuses inside a transaction block (or that end one).
_NON_TRANSACTIONAL_NODES = {
    "VacuumStmt",
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
    for number, raw in enumerate(sql.splitlines(), start=1):
        line = raw.strip()
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
    """Split a script with PostgreSQL's own parser (pglast / libpg_query)."""
    import pglast
    from pglast.parser import ParseError

    try:
        raw_statements = pglast.parse_sql(sql)
    except ParseError as exc:
        # args = (message, 1-based character position of the error)
        position = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        where = f"{path.name}:{sql[:max(position - 1, 0)].count(chr(10)) + 1}" if position else path.name
        raise MigrationFileError(f"{where}: SQL syntax error: {exc.args[0]}") from None
    encoded = sql.encode("utf-8")  # pglast locations are byte offsets
    out = []
    for raw in raw_statements:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(encoded)
        chunk = encoded[start:end].decode("utf-8")
        lead = len(chunk) - len(chunk.lstrip())
        line = encoded[:start].count(b"\n") + chunk[:lead].count("\n") + 1
        kind = type(raw.stmt).__name__
        out.append(Statement(chunk.strip(), line, kind, _non_transactional(raw.stmt, kind)))
    return tuple(out)


def _non_transactional(node: object, kind: str) -> bool:
    if kind in _NON_TRANSACTIONAL_NODES:
        return True
    if kind == "IndexStmt":
        return bool(getattr(node, "concurrent", False))
    if kind == "DropStmt":
        return bool(getattr(node, "concurrent", False))
    if kind == "ReindexStmt":
        for param in getattr(node, "params", None) or ():
            if getattr(param, "defname", "") == "concurrently":
                return True
    return False


def read_script(path: Path) -> Script:
    try:
        sql = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationFileError(f"{path.name}: cannot read: {exc}") from None
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


def load_migrations(folder: Path) -> tuple[Migration, ...]:
    """Every migration in the folder, sorted by version. Raises MigrationFileError."""
    if not folder.is_dir():
        raise MigrationFileError(
            f"migrations folder {folder} does not exist",
            hint="create it, or set `migrations:` in tenants.yaml",
        )
    ups: dict[Version, tuple[str, Path]] = {}
    downs: dict[Version, Path] = {}
    problems: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix != ".sql":
            continue
        try:
            version, description, is_down = parse_name(path.name)
        except ValueError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        table = downs if is_down else ups
        if version in table:
            other = table[version] if is_down else table[version][1]
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
    migrations = []
    for version in sorted(ups):
        description, path = ups[version]
        down = read_script(downs[version]) if version in downs else None
        migrations.append(Migration(version, description, read_script(path), down))
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
