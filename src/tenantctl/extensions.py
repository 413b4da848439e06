"""Pure: the PostgreSQL extensions a migrations folder creates.

A migration that runs ``CREATE EXTENSION x`` on a server whose installation
lacks ``x`` fails with 0A000 in every tenant. The run checks this per server
before any tenant is touched (``runs.py``), from this list.
"""

from __future__ import annotations

import re

from .migrations import Migration
from .sqltree import parse_statements

# CREATE EXTENSION is spelt with this word (keywords cannot be escaped or quoted):
# a file without it creates none and is not parsed here
_EXTENSION_WORD = re.compile("extension", re.IGNORECASE)


def required_extensions(migrations: tuple[Migration, ...]) -> dict[str, str]:
    """Extension name -> the first migration file that creates it."""
    out: dict[str, str] = {}
    for migration in migrations:
        if not _EXTENSION_WORD.search(migration.up.sql):
            continue
        for parsed in parse_statements(migration.up):
            if parsed.statement.kind != "CreateExtensionStmt":
                continue
            name = getattr(parsed.node, "extname", None)
            if isinstance(name, str) and name not in out:
                out[name] = migration.filename
    return out


def missing_extensions(required: dict[str, str], available: set[str]) -> list[str]:
    """``name (first created in FILE)`` for each required extension not available."""
    return [f"{name} (created in {file})" for name, file in sorted(required.items())
            if name not in available]
