"""What parsing and linting the migration files found, kept in ``.tenantctl/cache``.

Start-up reads and checksums every file; splitting them with PostgreSQL's
parser (pglast) and linting them is what grows with the folder. Both results
are kept here between runs, so a 700-file history costs a parse once, not on
every run:

- ``scripts-v1.json``: per script, where its statements start and end, their
  lines and kinds, keyed by the sha256 of the file's exact text. Only files
  that split cleanly are kept, so a hit also means "no syntax error". The SQL
  that runs is always cut from the file itself: the cache holds positions,
  never SQL text, and an entry whose positions do not fit the file is ignored.
- ``lint-v1.json``: the findings of ``lint_migrations`` over the whole folder,
  keyed by every file's name and text digest and the lint settings.

Both are stamped with the tool's identity (a digest of tenantctl's own source
files and pglast's version): any other version ignores them. The directory is
safe to delete at any time; a corrupt or truncated file is ignored and
rebuilt; a write goes to a temporary file renamed over the old one, so a
reader (another run at the same time) sees either file whole; a read-only
project directory just means nothing is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from .lint_rules import Finding
from .migrations import Script
from .statements import Statement

CACHE_DIR = "cache"
_SCRIPTS = "scripts-v1.json"
_LINT = "lint-v1.json"
_LINT_ENTRIES = 4  # lint keys kept (a folder linted with and without shared mode, ...)


@lru_cache(maxsize=1)
def source_digest() -> str:
    """A digest of tenantctl's own source: any edit may change how files split or lint."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:24]


@cache
def installed_version(package: str) -> str:
    """The installed version of ``package``, from the name of its ``.dist-info``
    folder in the first ``sys.path`` entry that has one ("?" if none does);
    importlib.metadata would add its own import (about 12 ms) to every run."""
    prefix, suffix = f"{package}-", ".dist-info"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith(prefix) and name.endswith(suffix):
                return name[len(prefix):-len(suffix)]
    return "?"


@lru_cache(maxsize=1)
def tool_identity() -> str:
    """tenantctl's own source and pglast's version: what the cached results depend on."""
    return f"{source_digest()}:pglast-{installed_version('pglast')}"


def text_key(script: Script) -> str:
    """Digest of the script's exact text (its checksum ignores CRLF; positions do not)."""
    if "\r" not in script.sql:
        return script.checksum  # the same text: the checksum normalises only CRLF
    return hashlib.sha256(script.sql.encode("utf-8")).hexdigest()


@dataclass
class ParseCache:
    """The cache of one project; ``directory`` None keeps nothing (no project dir)."""

    directory: Path | None
    _scripts: dict[str, list[list[Any]]] | None = field(default=None, repr=False)
    _used: set[str] = field(default_factory=set, repr=False)
    _dirty: bool = False
    hits: int = 0  # scripts taken from the cache in this process
    parsed: int = 0  # scripts split with the parser in this process

    # ---------------------------------------------------------------- scripts

    def prime(self, scripts: list[Script]) -> None:
        """Give every script its statements: from the cache, else by parsing it
        (raises MigrationFileError at the first broken script, in the order given);
        then save what was new."""
        try:
            for script in scripts:
                key = text_key(script)
                self._used.add(key)
                if script.is_parsed:  # split earlier in this process (extensions, lint)
                    if key not in self._entries():
                        self._remember(key, script.statements, script)
                    continue
                cached = self._statements(key, script)
                if cached is not None:
                    script.adopt(cached)
                    self.hits += 1
                    continue
                statements = script.statements  # parses; raises on a broken file
                self.parsed += 1
                self._remember(key, statements, script)
        finally:
            self.save()

    def _entries(self) -> dict[str, list[list[Any]]]:
        if self._scripts is None:
            doc = self._read(_SCRIPTS)
            entries = doc.get("scripts") if doc else None
            self._scripts = entries if isinstance(entries, dict) else {}
        return self._scripts

    def _statements(self, key: str, script: Script) -> tuple[Statement, ...] | None:
        rows = self._entries().get(key)
        if not isinstance(rows, list):
            return None
        sql, out = script.sql, []
        previous_end, lines = 0, 1
        try:
            for start, end, line, kind, non_transactional in rows:
                if not (isinstance(start, int) and isinstance(end, int)
                        and previous_end <= start < end <= len(sql) and isinstance(line, int)
                        and isinstance(kind, str) and isinstance(non_transactional, bool)):
                    return None
                lines += sql.count("\n", previous_end, end)
                if line != lines - sql.count("\n", start, end) or (
                        non_transactional and script.transactional):
                    return None  # does not fit this text: parse it
                out.append(Statement(sql[start:end], line, kind, non_transactional, None, start))
                previous_end = end
        except (TypeError, ValueError):
            return None
        return tuple(out)

    def _remember(self, key: str, statements: tuple[Statement, ...], script: Script) -> None:
        rows = []
        for stmt in statements:
            end = stmt.start + len(stmt.sql)
            if stmt.start < 0 or not stmt.sql or script.sql[stmt.start:end] != stmt.sql:
                return  # not a slice of the file (a hand-built script): keep nothing
            rows.append([stmt.start, end, stmt.line, stmt.kind, stmt.non_transactional])
        self._entries()[key] = rows
        self._dirty = True

    # ---------------------------------------------------------------- lint

    def lint(self, key: str) -> list[Finding] | None:
        doc = self._read(_LINT)
        entries = doc.get("lint") if doc else None
        found = entries.get(key) if isinstance(entries, dict) else None
        if not isinstance(found, list):
            return None
        try:
            return [Finding(**f) for f in found]
        except TypeError:
            return None

    def remember_lint(self, key: str, findings: list[Finding]) -> None:
        doc = self._read(_LINT)
        entries = doc.get("lint") if doc else None
        kept = dict(list(entries.items())[-(_LINT_ENTRIES - 1):]) if isinstance(entries, dict) else {}
        kept[key] = [f.to_json() for f in findings]
        self._write(_LINT, {"lint": kept})

    # ---------------------------------------------------------------- files

    def save(self) -> None:
        """Write the scripts' entries if anything was new, keeping only those this
        process used (a file edited or deleted since drops out)."""
        if not self._dirty or self._scripts is None:
            return
        kept = {k: v for k, v in self._scripts.items() if k in self._used}
        self._write(_SCRIPTS, {"scripts": kept})
        self._dirty = False

    def _read(self, name: str) -> dict[str, Any] | None:
        return read_json(self.directory, name, tool_identity())

    def _write(self, name: str, doc: dict[str, Any]) -> None:
        write_json(self.directory, name, tool_identity(), doc)


def read_json(directory: Path | None, name: str, tool: str) -> dict[str, Any] | None:
    """A cache file's document, or None: missing, unreadable, truncated, not JSON,
    or written by another tool identity."""
    if directory is None:
        return None
    try:
        doc = json.loads((directory / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("tool") != tool:
        return None
    return doc


def write_json(directory: Path | None, name: str, tool: str, doc: dict[str, Any]) -> None:
    """Write a cache file (0600) through a temporary file renamed over the old one,
    so a reader (another run at the same time) sees either file whole; a
    read-only project keeps nothing and nothing fails."""
    if directory is None:
        return
    doc = {"tool": tool, **doc}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, ensure_ascii=False, separators=(",", ":"))
        os.replace(tmp, directory / name)  # atomic: readers see old or new, whole
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
