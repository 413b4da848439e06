"""Whole-database dumps and restores between servers of different PostgreSQL majors.

A tenant moved from a 15 server to an 18 one (the per-tenant upgrade path), an
archive restored where it came from, a scratch copy: each is ``pg_dump`` into a
custom-format archive, then ``pg_restore``. Which tools run is decided here
(through :mod:`tenantctl.pg_tools`, which finds them and passes the password):

* ``pg_dump``: the oldest one whose major is at least the **source server's**
  (pg_dump refuses a newer server);
* ``pg_restore``: the oldest one whose major is at least the **archive's
  pg_dump** (an older one cannot read it: ``unsupported version (1.16) in file
  header``), read from the archive's own header;
* a ``pg_restore`` of 17 or newer writes ``SET transaction_timeout = 0;`` into
  what it restores, whatever the target; 15 and 16 reject it (``unrecognized
  configuration parameter``: ``pg_restore -d`` reports "errors ignored on
  restore: 1" and exits 1, a failure indistinguishable from a real one). When
  that pairing cannot be avoided (only 17+ tools for an archive, a 15 or 16
  target), pg_restore writes the SQL script instead and ``psql`` (at least as
  new as that pg_restore, which writes psql's ``\\restrict``) runs it with
  ``ON_ERROR_STOP`` in one transaction, without exactly that line of the
  script's header (never a line of data or of a function body).

Every restore runs in one transaction and stops at the first error.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .drivers.pg_version import ServerVersion, has_transaction_timeout
from .errors import ServerError
from .pg_tools import ClientTool, ToolName, available_tools, find_tool, libpq_target, run_tool
from .redact import redact

_DUMPED_BY = re.compile(r"^;\s+Dumped by pg_dump version:\s+(\d+)", re.MULTILINE)
# What pg_restore 17+ writes among the fixed settings at the top of its script.
TRANSACTION_TIMEOUT_LINE = "SET transaction_timeout = 0;"
_STDERR_TAIL = 2000


class RestoreMethod(StrEnum):
    DIRECT = "pg_restore"  # pg_restore --dbname
    SCRIPT = "pg_restore | psql"  # the script, less the SET an older server rejects


@dataclass(frozen=True)
class Restored:
    method: RestoreMethod
    pg_restore: ClientTool
    psql: ClientTool | None = None


async def dump_database(dsn: str, database: str, source: ServerVersion, archive: Path, *,
                        pg_dump: ClientTool | None = None,
                        options: Sequence[str] = ()) -> ClientTool:
    """``database`` into the custom-format ``archive``; the pg_dump that ran.

    ``pg_dump`` overrides the choice (it must still be new enough for the server)."""
    tool = pg_dump or find_tool(ToolName.PG_DUMP, at_least=source.major)
    if tool.major < source.major:
        raise ServerError(f"pg_dump {tool.major} cannot dump a PostgreSQL {source.text} server")
    url, env = libpq_target(dsn, database)
    await run_tool(tool, ["--format=custom", f"--file={archive}", *options, f"--dbname={url}"],
                   env=env, what=f"dumping {database}")
    return tool


async def archive_dumper_major(archive: Path) -> int:
    """The major of the pg_dump that wrote ``archive`` (its header, read by the newest pg_restore)."""
    tools = available_tools(ToolName.PG_RESTORE)
    if not tools:
        raise ServerError("no pg_restore found", hint="install PostgreSQL client tools, or point "
                          "TENANTCTL_PG_BIN at their bin folder")
    listing = await run_tool(tools[-1], ["--list", str(archive)], env=dict(os.environ),
                             what=f"reading the archive {archive.name}")
    match = _DUMPED_BY.search(listing)
    if match is None:
        raise ServerError(f"{archive}: no 'Dumped by pg_dump version' in its header")
    return int(match.group(1))


async def restore_database(archive: Path, dsn: str, database: str, target: ServerVersion, *,
                           pg_restore: ClientTool | None = None, psql: ClientTool | None = None,
                           options: Sequence[str] = (), what: str | None = None) -> Restored:
    """Restore ``archive`` into the existing ``database`` on a server of ``target``'s version.

    ``pg_restore``/``psql`` override the choice (the pg_restore must still read
    the archive). ``options`` go to pg_restore (``--no-owner``, ``--no-acl``)."""
    dumped_by = await archive_dumper_major(archive)
    tool = pg_restore or find_tool(ToolName.PG_RESTORE, at_least=dumped_by)
    if tool.major < dumped_by:
        raise ServerError(f"pg_restore {tool.major} cannot read an archive written by "
                          f"pg_dump {dumped_by}")
    url, env = libpq_target(dsn, database)
    what = what or f"restoring {archive.name} into {database}"
    if tool.major < 17 or has_transaction_timeout(target):
        await run_tool(tool, ["--exit-on-error", "--single-transaction", *options,
                              f"--dbname={url}", str(archive)], env=env, what=what)
        return Restored(RestoreMethod.DIRECT, tool)
    runner = psql or find_tool(ToolName.PSQL, at_least=tool.major)
    await _restore_through_psql(tool, runner, archive, url, env, options, what)
    return Restored(RestoreMethod.SCRIPT, tool, runner)


async def _restore_through_psql(pg_restore: ClientTool, psql: ClientTool, archive: Path, url: str,
                                env: dict[str, str], options: Sequence[str], what: str) -> None:
    """pg_restore's script, streamed into psql (one transaction, stop at the first error)."""
    producer = await asyncio.create_subprocess_exec(
        str(pg_restore.path), "--file=-", *options, str(archive), env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    consumer = await asyncio.create_subprocess_exec(
        str(psql.path), "--no-psqlrc", "--quiet", "--single-transaction",
        "--set=ON_ERROR_STOP=1", f"--dbname={url}", env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert producer.stdout is not None and producer.stderr is not None
    assert consumer.stdin is not None and consumer.stderr is not None

    async def pump() -> None:
        assert producer.stdout is not None and consumer.stdin is not None
        header = True
        try:
            async for line in producer.stdout:
                if header:
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    if text == TRANSACTION_TIMEOUT_LINE:
                        continue
                    header = _in_header(text)
                consumer.stdin.write(line)
                await consumer.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # psql stopped at an error: its stderr says which
        finally:
            consumer.stdin.close()

    _, restore_err, psql_err = await asyncio.gather(
        pump(), producer.stderr.read(), consumer.stderr.read())
    await producer.wait()
    await consumer.wait()
    if consumer.returncode != 0 or producer.returncode != 0:
        tail = (psql_err or restore_err).decode("utf-8", "replace")[-_STDERR_TAIL:].strip()
        raise ServerError(redact(f"{what}: pg_restore {pg_restore.major} exited "
                                 f"{producer.returncode}, psql {psql.major} exited "
                                 f"{consumer.returncode}: {tail}"))


def _in_header(line: str) -> bool:
    """Still in the script's header (comments, psql meta-commands, the fixed SETs)?
    The first line of anything else (an object, its data) ends it."""
    return (not line or line.startswith(("--", "\\", "SET ", "SELECT pg_catalog.set_config(")))
