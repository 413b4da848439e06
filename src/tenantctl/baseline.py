"""Adopting existing databases: ``tenantctl baseline`` records migrations as applied
without running them.

A customer database built by another tool (psql, Flyway) already holds the
schema of the folder's first migrations; running them would fail with
``42P07 relation already exists``. ``baseline`` creates tenantctl's history
table in it and records every migration up to V as a ``baseline`` row (plus
the seed, if one is configured, as done: the database has its data), tags the
database as the tenant's and registers its placement. ``migrate`` then applies
only what comes after V.

Everything is checked for every tenant before anything is written (exit 2,
nothing changed): the database exists and holds tables, it has no tenantctl
history, it is not tagged for something else, V is in the folder (or, with
``--from-flyway``, Flyway's latest version has a counterpart in it).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import purpose, registry
from .config import Project, TenantSpec
from .drivers import postgres
from .drivers.base import Driver, Session
from .drivers.pg_session import quote_ident
from .errors import BadInputError, DatabaseError, ServerError
from .fleet import server_dsns, server_problem
from .inputs import Inputs, known_version, load_inputs
from .lifecycle import LedgerRun, LifecycleReport, LifecycleResult, failed
from .migrations import Migration, Version
from .outcome import TenantResult
from .placement import place
from .plan import replay

BASELINED = "baselined"
FLYWAY_TABLE = "flyway_schema_history"


@dataclass(frozen=True)
class BaselineRequest:
    ids: tuple[int, ...]
    version: str | None = None
    from_flyway: bool = False


@dataclass(frozen=True)
class FlywayRow:
    installed_rank: int
    version: str | None
    script: str
    type: str
    success: bool


class Refused(Exception):
    """Why one tenant's database cannot be baselined (collected, then exit 2)."""


@dataclass(frozen=True)
class Adoption:
    tenant: TenantSpec
    version: Version
    source: str  # "--version", or the Flyway row it came from


def flyway_version(rows: list[FlywayRow], migrations: tuple[Migration, ...],
                   folder: str) -> tuple[Version, str]:
    """The folder's version matching Flyway's current one: the highest version of a
    successful versioned row (Flyway's own rows for schema creation excluded)."""
    versioned = [r for r in rows if r.version and r.type not in ("SCHEMA", "DELETE")]
    if not versioned:
        raise Refused(f"{FLYWAY_TABLE} records no versioned migration")
    if any(r.type.startswith("UNDO") for r in versioned):
        raise Refused(f"{FLYWAY_TABLE} holds undo migrations: give --version V instead")
    done = {r.version for r in versioned if r.success}
    broken = [r for r in versioned if not r.success and r.version not in done]
    if broken:
        raise Refused(f"{FLYWAY_TABLE} records a failed migration ({broken[-1].script}, version "
                      f"{broken[-1].version}): repair it with Flyway first")
    try:
        latest = max((r for r in versioned if r.success), key=lambda r: Version.parse(str(r.version)))
        version = Version.parse(str(latest.version))
    except ValueError as exc:
        raise Refused(f"{FLYWAY_TABLE}: {exc}") from None
    match = next((m for m in migrations if m.version == version), None)
    if match is None:
        raise Refused(f"Flyway's version {latest.version} ({latest.script}) has no migration of "
                      f"that version in {folder}/: give --version V naming the folder's "
                      "migration that brings the schema to the same state")
    return match.version, f"{FLYWAY_TABLE}: {latest.script}"


async def baseline(project: Project, request: BaselineRequest, *, driver: Driver,
                   argv: tuple[str, ...] = ()) -> LifecycleReport:
    if request.from_flyway == (request.version is not None):
        raise BadInputError("baseline needs --version V or --from-flyway (one of them)")
    inputs = load_inputs(project, with_seed=True)
    folder = project.migrations_dir.name
    version = known_version(inputs.migrations, "--version", request.version, folder)
    tenants = project.select(request.ids, False)
    shared = [str(t.clnt_id) for t in tenants if t.mode != "database"]
    if shared:
        raise BadInputError(f"clnt_id {', '.join(shared)}: baseline adopts dedicated databases; "
                            "a shared-mode tenant lives in the shared database")
    control_dsn = server_dsns(project, {project.default_server})[project.default_server]
    known = await registry.read_existing(driver, control_dsn, project.file.control_database)
    placed, unplaced = place(project, known).resolve(tenants)
    if unplaced:
        raise BadInputError("\n".join(unplaced.values()))
    dsns = server_dsns(project, {t.server for t in placed})
    adoptions: list[Adoption] = []
    refusals: list[str] = []
    for t in placed:
        try:
            adoptions.append(await _inspect(driver, dsns[t.server], t, inputs, version,
                                            request.from_flyway))
        except Refused as why:
            refusals.append(f"clnt_id {t.clnt_id} ({t.database} on server {t.server}): {why}")
    if refusals:
        raise BadInputError("baseline refused, nothing changed:\n" + "\n".join(refusals))
    async with await LedgerRun.open(driver, project, "baseline") as run:
        await run.start([a.tenant.clnt_id for a in adoptions], argv)
        for adoption in adoptions:
            await run.record(await _adopt(driver, dsns, run, adoption, inputs))
        return await run.finish()


async def _inspect(driver: Driver, dsn: str, tenant: TenantSpec, inputs: Inputs,
                   version: Version | None, from_flyway: bool) -> Adoption:
    """Read-only: may this database be adopted, and at which version."""
    expected = f"{purpose.TENANT_PREFIX}{tenant.clnt_id}"
    try:
        async with await driver.connect(dsn) as admin:
            tag = (await driver.read_purposes(admin)).get(tenant.database)
        refusal = purpose.mismatch(tenant.database, expected, tag)
        if refusal is not None:
            raise Refused(refusal)
        try:
            session = await driver.connect(dsn, tenant.database)
        except DatabaseError as exc:
            if exc.sqlstate != "3D000":
                raise
            raise Refused("the database does not exist: baseline adopts existing databases "
                          "(tenantctl provision creates new ones)") from None
        async with session:
            has_history, has_objects = await driver.database_contents(session)
            rows = await driver.read_history(session) if has_history else []
            if rows:
                raise Refused(f"it already has tenantctl history ({len(rows)} row(s), at version "
                              f"{replay(rows).version_text or '-'}): there is nothing to adopt")
            if not has_objects:
                raise Refused("it holds no tables: there is nothing to adopt (tenantctl "
                              "provision migrates an empty database)")
            if not from_flyway:
                assert version is not None
                return Adoption(tenant, version, "--version")
            found, source = flyway_version(await _flyway_rows(session), inputs.migrations,
                                           inputs.project.migrations_dir.name)
            return Adoption(tenant, found, source)
    except DatabaseError as exc:
        if exc.sqlstate and exc.sqlstate[:2] in ("08", "28"):
            raise ServerError(server_problem(tenant.server, dsn, exc) + ": nothing changed") from None
        raise


@dataclass(frozen=True)
class _Schema:
    schema: str


async def _flyway_rows(session: Session) -> list[FlywayRow]:
    schemas = await session.fetch_as(
        _Schema, "SELECT n.nspname AS schema FROM pg_class c JOIN pg_namespace n ON "
        "n.oid = c.relnamespace WHERE c.relname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
        FLYWAY_TABLE)
    if not schemas:
        raise Refused(f"--from-flyway: it has no {FLYWAY_TABLE} table")
    if len(schemas) > 1:
        raise Refused(f"{FLYWAY_TABLE} exists in several schemas "
                      f"({', '.join(s.schema for s in schemas)}): give --version V instead")
    return await session.fetch_as(
        FlywayRow, "SELECT installed_rank, version, script, type, success FROM "
        f"{quote_ident(schemas[0].schema)}.{FLYWAY_TABLE} ORDER BY installed_rank")


async def _adopt(driver: Driver, dsns: dict[str, str], run: LedgerRun, adoption: Adoption,
                 inputs: Inputs) -> LifecycleResult:
    """Write the baseline rows, with the tenant's lock held; its purpose tag after."""
    t = adoption.tenant
    pinned, _ = run.placement.resolve([t])
    if not pinned or pinned[0].server != t.server:
        return failed(t.clnt_id, t.database, t.mode, t.server, "another run placed this tenant "
                      "elsewhere while baseline was checking it: run baseline again")
    upto = tuple(m for m in inputs.migrations if not adoption.version < m.version)
    seed = (inputs.seed, t.clnt_id) if inputs.seed is not None else None
    try:
        async with await driver.connect(dsns[t.server], t.database) as session:
            await driver.acquire_migration_lock(session, inputs.project.settings.lock_wait)
            if await driver.read_history(session):
                return failed(t.clnt_id, t.database, t.mode, t.server,
                              "tenantctl history appeared while baseline was checking: not adopted")
            await postgres.record_baseline(session, upto, seed, run.run_id)
            await driver.write_purpose(session, f"{purpose.TENANT_PREFIX}{t.clnt_id}")
    except DatabaseError as exc:
        return failed(t.clnt_id, t.database, t.mode, t.server, exc.message, sqlstate=exc.sqlstate)
    result = TenantResult(t.clnt_id, t.database, t.mode, BASELINED, None, adoption.version.text)
    return LifecycleResult(result, t.server, {
        "baselined": [m.version.text for m in upto], "source": adoption.source,
        "seed": "recorded as done, not run" if seed else None})
