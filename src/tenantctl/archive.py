"""Tenant archives: a ``pg_dump`` custom-format file and its sha256 manifest.

``deprovision --archive DIR`` writes ``DIR/<database>-<UTC timestamp>.dump``
and, next to it, ``<that name>.manifest.json``: the archive's sha256 and what
``restore`` needs to put it back (clnt_id, mode, database, schema version,
the server's and pg_dump's major versions). The dump is written under a
``.partial`` name, flushed to disk, read back with ``pg_restore --list``, and
only then renamed: a file with the final name is a complete, readable
archive, and no database is dropped before it exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import __version__
from .errors import BadInputError, TenantctlError
from .pg_tools import ToolName, find_tool, libpq_target, run_tool

MANIFEST_SUFFIX = ".manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    file: str  # the archive's file name (in the manifest's folder)
    sha256: str
    clnt_id: int
    name: str
    mode: str
    server: str
    database: str
    schema_version: str | None
    server_major: int
    pg_dump_major: int
    created_on: str  # UTC, ISO 8601
    tenantctl: str = __version__
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def archive_path(folder: Path, database: str, now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return folder / f"{database}-{stamp}.dump"


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _durable(path: Path) -> None:
    """Flush a file and its folder entry to disk (an archive outlives its database)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


async def write_archive(dsn: str, manifest_base: Manifest, folder: Path) -> tuple[Path, Manifest]:
    """Dump the database, check the dump reads back, write the manifest; the archive's path.

    ``manifest_base`` carries everything but the file name, checksum and tool major."""
    try:
        return await _write_archive(dsn, manifest_base, folder)
    except OSError as exc:
        raise TenantctlError(f"cannot write the archive in {folder}: {exc}; nothing was "
                             "dropped") from None


async def _write_archive(dsn: str, manifest_base: Manifest, folder: Path) -> tuple[Path, Manifest]:
    folder.mkdir(parents=True, exist_ok=True)
    final = archive_path(folder, manifest_base.database)
    partial = final.with_name(final.name + ".partial")
    dump = find_tool(ToolName.PG_DUMP, at_least=manifest_base.server_major)
    url, env = libpq_target(dsn, manifest_base.database)
    try:
        await run_tool(dump, ["--format=custom", "--file", str(partial), "--dbname", url],
                       env=env, what=f"pg_dump of {manifest_base.database}")
        _durable(partial)
        await check_readable(partial, dump.major)
        checksum = sha256_file(partial)
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    manifest = Manifest(**{**asdict(manifest_base), "file": final.name, "sha256": checksum,
                           "pg_dump_major": dump.major})
    target = manifest_path(final)
    target.with_name(target.name + ".partial").write_text(
        json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(target.with_name(target.name + ".partial"), target)
    _durable(target)
    return final, manifest


async def check_readable(path: Path, major: int) -> int:
    """``pg_restore --list``: the archive's table of contents reads; its entry count."""
    tool = find_tool(ToolName.PG_RESTORE, at_least=major)
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    listing = await run_tool(tool, ["--list", str(path)], env=env, what=f"reading {path.name}")
    return sum(1 for line in listing.splitlines() if line and not line.startswith(";"))


async def restore_archive(dsn: str, database: str, path: Path, major: int) -> None:
    """pg_restore into an existing empty database, in one transaction, stopping at an error."""
    tool = find_tool(ToolName.PG_RESTORE, at_least=major)
    url, env = libpq_target(dsn, database)
    await run_tool(tool, ["--exit-on-error", "--single-transaction", "--dbname", url, str(path)],
                   env=env, what=f"pg_restore of {path.name} into {database}")


def check_folder(folder: Path) -> None:
    """``--archive DIR`` is a folder tenantctl can write in (or can create); exit 2 if not."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing == folder and not folder.is_dir():
        raise BadInputError(f"--archive {folder}: not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"--archive {folder}: {existing} is not writable")


def read_manifest(archive: Path) -> Manifest:
    """The archive's manifest, its checksum verified against the archive (exit 2 if not)."""
    if not archive.is_file():
        raise BadInputError(f"--from {archive}: no such file")
    path = manifest_path(archive)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{archive.name}: its manifest {path.name} is missing",
                            hint="restore reads the manifest deprovision wrote next to the "
                            "archive") from None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path.name}: unreadable manifest: {exc}") from None
    names = {f.name for f in fields(Manifest)}
    missing = sorted(names - set(doc)) if isinstance(doc, dict) else sorted(names)
    if missing:
        raise BadInputError(f"{path.name}: not a tenantctl archive manifest "
                            f"(missing {', '.join(missing)})")
    manifest = Manifest(**{k: doc[k] for k in names})
    if manifest.format != FORMAT:
        raise BadInputError(f"{path.name}: manifest format {manifest.format} is not {FORMAT}")
    if manifest.file != archive.name:
        raise BadInputError(f"{path.name} describes {manifest.file}, not {archive.name}")
    actual = sha256_file(archive)
    if actual != manifest.sha256:
        raise BadInputError(f"{archive.name}: sha256 {actual} does not match its manifest "
                            f"({manifest.sha256}): the archive is damaged or was changed")
    return manifest
