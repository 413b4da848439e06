"""Offboarding: ``deprovision`` (archive, then drop) and ``restore`` (from that archive).

tenants.yaml is the desired state: a tenant is offboarded by removing it from
the file (it then shows as ``orphaned``) and running ``deprovision``, which

1. refuses a tenant still listed, one the registry does not know, or one whose
   database is tagged for something else (exit 2, before anything changes);
2. holds the tenant's migration lock, blocks new connections (``CONNECTION
   LIMIT 0``, when tenantctl is a superuser) and ends the open sessions;
3. with ``--archive DIR``: dumps the database (``pg_dump -Fc``), reads the dump
   back with ``pg_restore --list`` and writes its sha256 manifest
   (:mod:`tenantctl.archive`); a failure here unblocks the database and stops;
4. drops the database and marks the registry row ``deprovisioned`` with the
   archive's path.

``restore`` puts such an archive back at the placement tenants.yaml declares
(the tenant listed again): the manifest's checksum and schema version are
checked first, an existing database is never overwritten, and a failed
restore drops the database it created.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from . import registry
from .archive import Manifest, check_folder, read_manifest, restore_archive, write_archive
from .config import Project
from .drivers.base import Driver, Session
from .drivers.pg_session import quote_ident
from .errors import BadInputError, DatabaseError, TenantctlError
from .fleet import server_dsns, server_problem
from .inputs import known_version, load_inputs
from .lifecycle import LedgerRun, LifecycleReport, LifecycleResult, failed
from .offboard_shared import delete_tenant_rows
from .outcome import TenantResult
from .placement import place
from .plan import replay
from .purpose import SHARED, TENANT_PREFIX, mismatch

DEPROVISIONED = "deprovisioned"
RESTORED = "restored"


@dataclass(frozen=True)
class DeprovisionRequest:
    ids: tuple[int, ...]
    archive_dir: Path | None = None
    no_archive: bool = False


@dataclass(frozen=True)
class DeprovisionPlan:
    """The registered tenants about to be removed (validated, nothing touched yet)."""

    tenants: tuple[registry.RegistryRow, ...]
    archive_dir: Path | None

    def lines(self) -> list[str]:
        where = f"archived to {self.archive_dir}" if self.archive_dir else "NOT archived"
        return [f"clnt_id {r.clnt_id} ({r.name}): "
                + (f"database {r.database} on server {r.server}, {where}, then dropped"
                   if r.mode == "database" else
                   f"its rows deleted from the shared database {r.database} on {r.server}")
                for r in self.tenants]


async def plan_deprovision(project: Project, request: DeprovisionRequest, *,
                           driver: Driver) -> DeprovisionPlan:
    """Check a deprovision before anything is asked or changed (exit 2 on bad input)."""
    if request.no_archive == (request.archive_dir is not None):
        raise BadInputError("deprovision needs --archive DIR or --no-archive (one of them)")
    if not request.ids:
        raise BadInputError("no tenants selected", hint="name the clnt_ids to deprovision")
    listed = sorted({t.clnt_id for t in project.tenants} & set(request.ids))
    if listed:
        raise BadInputError(
            f"clnt_id {', '.join(map(str, listed))} is still listed in {project.path.name}: "
            f"remove it from {project.path.name} first",
            hint="tenants.yaml is the desired state; deprovision removes tenants it no longer lists")
    if request.archive_dir is not None:
        check_folder(request.archive_dir)
    dsn = server_dsns(project, {project.default_server})[project.default_server]
    known = await registry.read_existing(driver, dsn, project.file.control_database)
    rows, problems = [], []
    for clnt_id in dict.fromkeys(request.ids):
        row = known.get(clnt_id)
        if row is None:
            problems.append(f"clnt_id {clnt_id} is not in the registry: nothing to deprovision")
        elif row.deprovisioned:
            problems.append(f"clnt_id {clnt_id} was deprovisioned already"
                            + (f" (archive {row.archive})" if row.archive else ""))
        elif row.mode != "database" and request.archive_dir is not None:
            problems.append(f"clnt_id {clnt_id} lives in the shared database {row.database}: "
                            "archiving a shared-mode tenant's rows is not supported yet; "
                            "back them up yourself, then deprovision it with --no-archive")
        elif row.server not in project.servers:
            problems.append(f"clnt_id {clnt_id} is registered on server {row.server}, which "
                            f"{project.path.name} does not list")
        else:
            rows.append(row)
    if problems:
        raise BadInputError("\n".join(problems))
    return DeprovisionPlan(tuple(rows), request.archive_dir)


async def deprovision(project: Project, plan: DeprovisionPlan, *, driver: Driver,
                      argv: tuple[str, ...] = ()) -> LifecycleReport:
    async with await LedgerRun.open(driver, project, "deprovision") as run:
        await run.start([r.clnt_id for r in plan.tenants], argv)
        for row in plan.tenants:
            try:
                outcome = await _deprovision_one(driver, project, row, plan.archive_dir, run)
            except DatabaseError as exc:
                message = exc.message
                if (exc.sqlstate or "")[:2] in ("08", "28"):
                    dsn = server_dsns(project, {row.server})[row.server]
                    message = server_problem(row.server, dsn, exc)
                outcome = failed(row.clnt_id, row.database, row.mode, row.server, message,
                                 sqlstate=exc.sqlstate, hint=exc.hint)
            except TenantctlError as exc:
                outcome = failed(row.clnt_id, row.database, row.mode, row.server, exc.message,
                                 sqlstate=getattr(exc, "sqlstate", None), hint=exc.hint)
            await run.record(outcome)
        return await run.finish()


@dataclass(frozen=True)
class _DbFacts:
    major: int
    superuser: bool
    connlimit: int


async def _deprovision_one(driver: Driver, project: Project, row: registry.RegistryRow,
                           archive_dir: Path | None, run: LedgerRun) -> LifecycleResult:
    dsn = server_dsns(project, {row.server})[row.server]
    if row.mode == "shared":
        return await _deprovision_shared(driver, project, dsn, row, run)
    expected = f"{TENANT_PREFIX}{row.clnt_id}"
    archive: Path | None = None
    async with await driver.connect(dsn) as admin:
        if not await driver.existing_databases(admin, [row.database]):
            if archive_dir is not None:
                return failed(row.clnt_id, row.database, row.mode, row.server,
                              f"database {row.database} does not exist on server {row.server}: "
                              "nothing to archive (--no-archive marks the tenant deprovisioned)")
            await registry.mark_deprovisioned(run.control, row.clnt_id, None)
            return _done(row, None, "the database did not exist any more")
        tag = (await driver.read_purposes(admin)).get(row.database)
        refusal = mismatch(row.database, expected, tag)
        if refusal is not None:
            return failed(row.clnt_id, row.database, row.mode, row.server, refusal)
        facts = await admin.fetch_one_as(
            _DbFacts, "SELECT current_setting('server_version_num')::int / 10000 AS major, "
            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser, "
            "(SELECT datconnlimit FROM pg_database WHERE datname = $1) AS connlimit", row.database)
        assert facts is not None
        async with await driver.connect(dsn, row.database) as session:
            await driver.acquire_migration_lock(session, project.settings.lock_wait)
            has_history, _ = await driver.database_contents(session)
            if tag is None and not has_history:
                return failed(row.clnt_id, row.database, row.mode, row.server,
                              f"database {row.database} has no tenantctl purpose tag and no "
                              "tenantctl history: not dropped")
            version = replay(await driver.read_history(session)).version_text
            await _block(admin, session, row.database, facts.superuser)
            try:
                if archive_dir is not None:
                    archive, _ = await write_archive(dsn, Manifest(
                        file="", sha256="", clnt_id=row.clnt_id, name=row.name, mode=row.mode,
                        server=row.server, database=row.database, schema_version=version,
                        server_major=facts.major, pg_dump_major=0,
                        created_on=dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
                        archive_dir.resolve())
            except BaseException:
                if facts.superuser:
                    await admin.execute(f"ALTER DATABASE {quote_ident(row.database)} "
                                        f"CONNECTION LIMIT {int(facts.connlimit)}")
                raise
        await driver.drop_database(admin, row.database)
    await registry.mark_deprovisioned(run.control, row.clnt_id, str(archive) if archive else None)
    return _done(row, archive, None)


async def _deprovision_shared(driver: Driver, project: Project, dsn: str,
                              row: registry.RegistryRow, run: LedgerRun) -> LifecycleResult:
    async with await driver.connect(dsn) as admin:
        tag = (await driver.read_purposes(admin)).get(row.database)
    refusal = mismatch(row.database, SHARED, tag)
    if refusal is not None:
        return failed(row.clnt_id, row.database, row.mode, row.server, refusal)
    async with await driver.connect(dsn, row.database) as session:
        await driver.acquire_migration_lock(session, project.settings.lock_wait)
        deleted = await delete_tenant_rows(session, row.clnt_id, project.file.tenant_column)
    await registry.mark_deprovisioned(run.control, row.clnt_id, None)
    done = _done(row, None, None)
    return LifecycleResult(done.result, done.server, {**done.extra, "deleted": deleted})


async def _block(admin: Session, session: Session, database: str, superuser: bool) -> None:
    """No new sessions (a superuser's, such as pg_dump's, still connect) and none left open."""
    if superuser:
        await admin.execute(f"ALTER DATABASE {quote_ident(database)} CONNECTION LIMIT 0")
    mine = await session.fetch_value("SELECT pg_backend_pid()")
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = $1 AND pid <> $2", database, mine)


def _done(row: registry.RegistryRow, archive: Path | None, note: str | None) -> LifecycleResult:
    result = TenantResult(row.clnt_id, row.database, row.mode, DEPROVISIONED, row.version)
    extra: dict[str, object] = {"archive": str(archive) if archive else None}
    if archive is not None:
        extra["manifest"] = str(archive) + ".manifest.json"
    if note:
        extra["note"] = note
    return LifecycleResult(result, row.server, extra)


@dataclass(frozen=True)
class RestoreRequest:
    clnt_id: int
    archive: Path


async def restore(project: Project, request: RestoreRequest, *, driver: Driver,
                  argv: tuple[str, ...] = ()) -> LifecycleReport:
    """Recreate a deprovisioned tenant from its archive at its declared placement."""
    manifest = read_manifest(request.archive)
    (tenant,) = project.select((request.clnt_id,), False)
    if manifest.clnt_id != tenant.clnt_id:
        raise BadInputError(f"{request.archive.name} is the archive of clnt_id "
                            f"{manifest.clnt_id}, not of {tenant.clnt_id}")
    if tenant.mode != "database" or manifest.mode != "database":
        raise BadInputError("restore puts back dedicated databases; clnt_id "
                            f"{tenant.clnt_id} is {tenant.mode} mode, the archive {manifest.mode}")
    inputs = load_inputs(project)
    if manifest.schema_version is not None:
        known_version(inputs.migrations, "the archive's schema version", manifest.schema_version,
                      project.migrations_dir.name)
    dsn0 = server_dsns(project, {project.default_server})[project.default_server]
    known = await registry.read_existing(driver, dsn0, project.file.control_database)
    placed, unplaced = place(project, known).resolve((tenant,))
    if unplaced:
        raise BadInputError(unplaced[tenant.clnt_id])
    tenant = placed[0]
    dsn = server_dsns(project, {tenant.server})[tenant.server]
    async with await driver.connect(dsn) as admin:
        if await driver.existing_databases(admin, [tenant.database]):
            raise BadInputError(f"database {tenant.database} already exists on server "
                                f"{tenant.server}: restore never overwrites a database",
                                hint="drop it first if it really is to be replaced")
    async with await LedgerRun.open(driver, project, "restore") as run:
        await run.start([tenant.clnt_id], argv)
        try:
            version = await _restore_one(driver, dsn, tenant.database, tenant.clnt_id,
                                         request.archive, manifest, project.settings.lock_wait)
            await registry.mark_restored(run.control, tenant, version, run.run_id)
            outcome = LifecycleResult(
                TenantResult(tenant.clnt_id, tenant.database, tenant.mode, RESTORED, None, version),
                tenant.server, {"archive": str(request.archive.resolve())})
        except TenantctlError as exc:
            outcome = failed(tenant.clnt_id, tenant.database, tenant.mode, tenant.server,
                             exc.message, sqlstate=getattr(exc, "sqlstate", None), hint=exc.hint)
        await run.record(outcome)
        return await run.finish()


async def _restore_one(driver: Driver, dsn: str, database: str, clnt_id: int, archive: Path,
                       manifest: Manifest, lock_wait: float) -> str | None:
    """Create, tag and lock the database, pg_restore into it, check its history's version;
    any failure drops the database this created."""
    async with await driver.connect(dsn) as admin:
        if not await driver.create_database(admin, database):
            raise TenantctlError(f"database {database} appeared meanwhile: not overwritten")
        try:
            await driver.write_purpose(admin, f"{TENANT_PREFIX}{clnt_id}", database)
            async with await driver.connect(dsn, database) as session:
                # a provision of the same tenant waits, then finds the restored history
                await driver.acquire_migration_lock(session, lock_wait)
                await restore_archive(dsn, database, archive, manifest.pg_dump_major)
                version = replay(await driver.read_history(session)).version_text
            if version != manifest.schema_version:
                raise TenantctlError(f"the restored history ends at {version}, the manifest "
                                     f"says {manifest.schema_version}: restore undone")
        except BaseException:
            await driver.drop_database(admin, database)
            raise
    return version
