"""The servers of a run: their DSNs, what they hold, and their provisioning templates.

Read once per run, one admin session per server, before any tenant is
touched: the server's version (a server below the supported range is put
in ``down``: its tenants fail untouched), the connection cap, which unit
databases exist, every database's schema marker (what lets a no-op run skip
sessions) and purpose tag (what keeps a run out of databases that are not the
tenant's). Templates are rebuilt here when the folder changed.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass, field, replace

from . import purpose
from .config import EMBEDDED, Project
from .drivers.base import Driver, Session
from .drivers.pg_session import url_dsn
from .drivers.pg_version import UNSUPPORTED_HINT, CloneStrategy, ServerVersion, clone_strategy
from .engine import Engine, RunOptions
from .errors import DatabaseError
from .executor import Unit
from .migrations import Migration
from .modes import Mode
from .plan import can_skip
from .steps import Verb
from .volatile import per_tenant_migrations

TEMPLATE_LOCK_KEY = 0x74656E616E7465  # one template rebuild per server at a time


def server_dsns(project: Project, servers: set[str]) -> dict[str, str]:
    """DSN per server in use, starting the embedded server where configured."""
    out = {}
    for name in servers:
        dsn = project.servers[name].dsn
        if dsn == EMBEDDED:
            from . import embedded  # subprocess, tempfile, psutil: only for the embedded server

            dsn = embedded.ensure_running(project.state_dir)
        out[name] = dsn
    return out


@dataclass
class ServerFacts:
    caps: dict[str, int] = field(default_factory=dict)
    existing: set[tuple[str, str]] = field(default_factory=set)
    markers: dict[tuple[str, str], str] = field(default_factory=dict)
    purposes: dict[tuple[str, str], str] = field(default_factory=dict)
    # registry: who lives where, as the control database knew it before this run
    claims: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    extensions: dict[str, set[str]] = field(default_factory=dict)  # server -> available
    # servers that could not be used (unreachable, authentication refused, too old): why
    down: dict[str, ServerDown] = field(default_factory=dict)
    versions: dict[str, ServerVersion] = field(default_factory=dict)
    clone_strategies: dict[str, CloneStrategy] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # for the run's report (a newer major)

    def merge(self, other: ServerFacts) -> None:
        """Add another server's facts (each server's keys are its own)."""
        self.caps |= other.caps
        self.existing |= other.existing
        self.markers |= other.markers
        self.purposes |= other.purposes
        self.claims |= other.claims
        self.extensions |= other.extensions
        self.down |= other.down
        self.versions |= other.versions
        self.clone_strategies |= other.clone_strategies
        self.notes.extend(other.notes)


@dataclass(frozen=True)
class ServerDown:
    message: str  # names the server and its address, never its password
    sqlstate: str | None
    hint: str | None = None  # what to do (None: the run's own advice for a server down)


def server_address(dsn: str) -> str:
    """``host:port`` of a DSN (every host of a multi-host one), never its password."""
    parts = urllib.parse.urlsplit(url_dsn(dsn))
    query = dict(urllib.parse.parse_qsl(parts.query))
    hostspec = parts.netloc.rsplit("@", 1)[-1]
    if not hostspec:
        hostspec = ",".join(f"{h}:{query.get('port', '5432')}"
                            for h in query.get("host", "localhost").split(","))
    return hostspec or "localhost"


def server_problem(name: str, dsn: str, exc: DatabaseError) -> str:
    """Why server ``name`` cannot be used, naming it and its address (no password)."""
    what = "authentication failed" if (exc.sqlstate or "").startswith("28") else "unreachable"
    message = exc.message.removeprefix("server: ")
    return f"server {name} ({server_address(dsn)}): {what}: {message}"


async def server_facts(driver: Driver, project: Project, dsns: dict[str, str],
                       units: list[Unit], *, need_extensions: bool = False,
                       open_sessions: dict[str, Session] | None = None) -> ServerFacts:
    """Every server's facts; a server that cannot be used is put in ``down`` (its
    tenants fail, the others go on), whatever the error. The servers are asked at
    the same time, a session each: a fleet of many servers, or one slow to answer
    (a connect timeout), costs the slowest, not the sum. Merged in ``dsns`` order.

    ``open_sessions``: a session the caller already holds on a server (the run's
    control database session, on the default server), asked instead of opening
    another: every fact is read from catalogs the whole server shares. It stays
    open."""
    held = open_sessions or {}

    async def one(name: str, dsn: str) -> ServerFacts:
        part = ServerFacts()
        try:
            if name in held:
                await _ask_server(driver, project, name, held[name], units, part, need_extensions)
            else:
                async with await driver.connect(dsn) as admin:
                    await _ask_server(driver, project, name, admin, units, part, need_extensions)
        except DatabaseError as exc:
            part.down[name] = ServerDown(server_problem(name, dsn, exc), exc.sqlstate)
        return part

    facts = ServerFacts()
    for part in await asyncio.gather(*(one(name, dsn) for name, dsn in dsns.items())):
        facts.merge(part)
    return facts


async def _ask_server(driver: Driver, project: Project, name: str, admin: Session,
                      units: list[Unit], facts: ServerFacts, need_extensions: bool) -> None:
    version = facts.versions[name] = await driver.server_version(admin)
    refusal = version.refusal(name)
    if refusal is not None:
        facts.down[name] = ServerDown(refusal, None, UNSUPPORTED_HINT)
        return
    note = version.note(name)
    if note is not None:
        facts.notes.append(note)
    facts.clone_strategies[name] = clone_strategy(version, project.settings.template_strategy)
    if need_extensions:
        facts.extensions[name] = await driver.available_extensions(admin)
    available = await driver.max_connections(admin)
    configured = project.servers[name].max_connections
    # Leave half the server to the application (and to other tools).
    facts.caps[name] = max(1, configured if configured else available // 2)
    names = [u.database for u in units if u.server == name]
    names.append(project.file.template_database)
    facts.existing |= {(name, db) for db in await driver.existing_databases(admin, names)}
    facts.markers.update({(name, db): m for db, m in (await driver.read_markers(admin)).items()})
    facts.purposes.update(
        {(name, db): p for db, p in (await driver.read_purposes(admin)).items()})


def template_migrations(migrations: tuple[Migration, ...], notes: list[str]) -> tuple[Migration, ...]:
    """The migrations a template may hold: those before the first one that must run
    per tenant (it writes random values, such as a signing key, that every clone
    would otherwise share). Later ones run in each tenant after the clone."""
    per_tenant = per_tenant_migrations(migrations)
    for index, migration in enumerate(migrations):
        reason = per_tenant.get(migration.version)
        if reason is not None:
            notes.append(f"template stops before {migration.filename}: it runs in each tenant "
                         f"after the clone ({reason})")
            return migrations[:index]
    return migrations


async def prepare_templates(
    driver: Driver, project: Project, migrations: tuple[Migration, ...], dsns: dict[str, str],
    units: list[Unit], facts: ServerFacts, options: RunOptions, run_id: str, notes: list[str],
) -> tuple[dict[str, str], int]:
    """Make sure each server that will create databases has a template holding the
    folder's migrations (up to the first per-tenant one); rebuild it from scratch
    when the folder changed.

    Returns ({server: template name} where usable, how many migrations it holds);
    where it is not usable, provisioning falls back to plain migrations and a
    note says why.
    """
    if options.verb is not Verb.PROVISION or options.dry_run or not migrations:
        return {}, 0
    if not project.settings.template or not options.use_template:
        return {}, 0
    name = project.file.template_database
    need = sorted({u.server for u in units
                   if u.policy.clones_template and (u.server, u.database) not in facts.existing})
    baked = template_migrations(migrations, notes) if need else ()
    if not baked:
        return {}, 0
    templates: dict[str, str] = {}
    for server in need:
        if can_skip(facts.markers.get((server, name)), baked, need_seed=False):
            templates[server] = name
            continue
        async with await driver.connect(dsns[server]) as admin:
            if await _build_template(driver, admin, server, name, baked, dsns, facts, options,
                                     run_id, notes):
                templates[server] = name
    return templates, len(baked)


async def _build_template(
    driver: Driver, admin: Session, server: str, name: str, baked: tuple[Migration, ...],
    dsns: dict[str, str], facts: ServerFacts, options: RunOptions, run_id: str, notes: list[str],
) -> bool:
    await driver.acquire_migration_lock(admin, options.lock_wait, key=TEMPLATE_LOCK_KEY)
    # another run may have rebuilt it while we waited
    current = (await driver.read_markers(admin)).get(name)
    if can_skip(current, baked, need_seed=False):
        return True
    refusal = await _template_refusal(driver, admin, server, name, current, facts)
    if refusal is not None:
        notes.append(f"{refusal}; provisioning with plain migrations on {server}")
        return False
    await driver.drop_database(admin, name)
    await driver.create_database(admin, name)
    await driver.write_purpose(admin, purpose.TEMPLATE, name)
    build = Engine(
        baked, dsns, replace(options, verb=Verb.MIGRATE, target=None, skip_marked=False),
        driver=driver, run_id=run_id, purposes={(server, name): purpose.TEMPLATE},
    )
    try:
        outcome = await build.run_single(Unit(server, name, Mode.TEMPLATE, ()))
    finally:
        await build.close()
    if outcome.failure is not None:
        await driver.drop_database(admin, name)
        notes.append(f"template {name} on {server} could not be built "
                     f"([{outcome.failure.sqlstate}] {outcome.failure.message}); provisioning "
                     "with plain migrations")
        return False
    notes.append(f"template {name} on {server} rebuilt at {baked[-1].version.text} "
                 f"in {outcome.duration_ms} ms")
    return True


async def _template_refusal(driver: Driver, admin: Session, server: str, name: str,
                            marker: str | None, facts: ServerFacts) -> str | None:
    """Why the configured template database must not be dropped and rebuilt, if so."""
    tag = (await driver.read_purposes(admin)).get(name)
    if tag == purpose.TEMPLATE:
        return None
    if tag is not None:
        return purpose.mismatch(name, purpose.TEMPLATE, tag)
    if not await driver.existing_databases(admin, [name]):
        return None
    if marker is not None and not facts.claims.get((server, name)):
        return None  # a template built before purpose tags existed
    return (f"template_database {name} exists on {server} but was not created by tenantctl as "
            "its template: not dropped")
