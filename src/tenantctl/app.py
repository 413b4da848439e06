"""Use cases: what each command does, wiring config, folder, servers, engine, ledger.

Nothing here parses arguments or prints; the CLI does that. Every function
here validates all local input (tenants.yaml, the migrations folder, the
seed) *before* it opens a connection, so bad input changes nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from . import embedded, ledger, purpose
from .drivers import postgres
from .config import EMBEDDED, Project, TenantSpec
from .engine import Engine, RunOptions, Unit, group_units
from .errors import DatabaseError, ServerError
from .migrations import Migration, Script, Version, load_migrations, read_script
from .outcome import RunResult, TenantResult
from .plan import can_skip, marker_version, plan_migrate, replay

T = TypeVar("T")


@dataclass(frozen=True)
class Inputs:
    """Everything read from disk, validated, before any database is touched."""

    project: Project
    migrations: tuple[Migration, ...]
    seed: Script | None
    notices: tuple[str, ...] = ()  # entries of the folder that were ignored, by name


def load_inputs(project: Project, *, with_seed: bool = False) -> Inputs:
    allow = project.settings.allow_external_symlinks
    notices: list[str] = []
    migrations = load_migrations(
        project.migrations_dir, notices=notices, allow_external_symlinks=allow)
    seed = None
    if with_seed and project.seed_path is not None:
        from .errors import MigrationFileError

        # not resolved: a symlinked seed is judged by where it points
        seed_path = project.base_dir / (project.file.seed or "")
        if not seed_path.is_file():
            raise MigrationFileError(f"seed file {seed_path} does not exist")
        seed = read_script(seed_path, root=project.base_dir, allow_external_symlinks=allow)
    return Inputs(project, migrations, seed, tuple(notices))


def lint(inputs: Inputs, only: tuple[Path, ...] = ()) -> list[Any]:
    """Lint findings for the folder (or for ``only`` these files, judged in context).

    Files outside the folder are linted after the folder's migrations, so
    "existing table" means what the folder creates.
    """
    from .lint import lint_migrations
    from .migrations import Migration, parse_name

    migrations = list(inputs.migrations)
    wanted = {p.resolve() for p in only}
    known = {m.up.path.resolve() for m in migrations}
    for path in sorted(wanted - known):
        try:
            version, description, is_down = parse_name(path.name)
        except ValueError:
            version, description, is_down = Version.parse("999999"), path.stem, False
        if not is_down:
            migrations.append(Migration(version, description, read_script(path)))
    project = inputs.project
    findings = lint_migrations(
        tuple(migrations), global_tables=frozenset(project.file.shared.global_tables),
        shared_mode=any(t.mode == "shared" for t in project.tenants),
    )
    if wanted:
        names = {p.name for p in wanted}
        findings = [f for f in findings if f.file in names]
    return findings


def refuse_on_lint_errors(findings: list[Any]) -> None:
    from .errors import MigrationFileError

    errors = [f for f in findings if f.severity == "error"]
    if errors:
        listed = "\n  ".join(f"{f.file}:{f.line}: [{f.rule}] {f.message}" for f in errors)
        raise MigrationFileError(
            f"{len(errors)} lint error(s) and strict lint is on:\n  {listed}",
            hint="fix them, or accept a rule in the file with `-- tenantctl: allow <rule>`",
        )


def resolve_target(inputs: Inputs, to: str | None) -> Version | None:
    if to is None:
        return None
    from .errors import BadInputError

    try:
        target = Version.parse(to)
    except ValueError as exc:
        raise BadInputError(f"--to: {exc}") from None
    if not any(m.version == target for m in inputs.migrations):
        raise BadInputError(
            f"--to {to}: no migration with that version in {inputs.project.migrations_dir.name}/"
        )
    return target


def server_dsns(project: Project, servers: set[str]) -> dict[str, str]:
    """DSN per server in use, starting the embedded server where configured."""
    out = {}
    for name in servers:
        dsn = project.servers[name].dsn
        out[name] = embedded.ensure_running(project.state_dir) if dsn == EMBEDDED else dsn
    return out


@dataclass
class _Facts:
    caps: dict[str, int]
    existing: set[tuple[str, str]]
    markers: dict[tuple[str, str], str]
    purposes: dict[tuple[str, str], str]  # what tenantctl created each database for
    claims: dict[tuple[str, str], tuple[int, ...]]  # registry: who lives where (before this run)


async def _server_facts(project: Project, dsns: dict[str, str], units: list[Unit]) -> _Facts:
    """Per server, one admin session: connection cap, which unit databases exist,
    every database's schema marker (what lets a no-op run skip sessions) and
    purpose tag (what keeps a run out of databases that are not the tenant's)."""
    facts = _Facts({}, set(), {}, {}, {})
    for name, dsn in dsns.items():
        admin = await postgres.connect(dsn)
        try:
            available = await postgres.max_connections(admin)
            configured = project.servers[name].max_connections
            # Leave half the server to the application (and to other tools).
            facts.caps[name] = max(1, configured if configured else available // 2)
            names = [u.database for u in units if u.server == name]
            names.append(project.file.template_database)
            facts.existing |= {(name, db) for db in await postgres.existing_databases(admin, names)}
            facts.markers.update(
                {(name, db): m for db, m in (await postgres.read_markers(admin)).items()}
            )
            facts.purposes.update(
                {(name, db): p for db, p in (await postgres.read_purposes(admin)).items()}
            )
        finally:
            await admin.close()
    return facts


TEMPLATE_LOCK_KEY = 0x74656E616E7465  # one template rebuild per server at a time


async def _prepare_templates(
    inputs: Inputs, dsns: dict[str, str], units: list[Unit], facts: _Facts,
    options: RunOptions, run_id: str, notes: list[str],
) -> dict[str, str]:
    """Make sure each server that will create databases has a template at the
    folder's latest version; rebuild it from scratch when the folder changed.

    Returns {server: template name} for the servers where it is usable; where it
    is not, provisioning falls back to plain migrations and a note says why.
    """
    project = inputs.project
    if options.command != "provision" or options.dry_run or not inputs.migrations:
        return {}
    if not project.settings.template or not options.use_template:
        return {}
    name = project.file.template_database
    need = sorted({u.server for u in units
                   if u.mode == "database" and (u.server, u.database) not in facts.existing})
    baked = template_migrations(inputs.migrations, notes) if need else ()
    if not baked:
        return {}
    templates: dict[str, str] = {}
    for server in need:
        if can_skip(facts.markers.get((server, name)), baked, need_seed=False):
            templates[server] = name
            continue
        admin = await postgres.connect(dsns[server])
        try:
            await postgres.acquire_migration_lock(admin, options.lock_wait, key=TEMPLATE_LOCK_KEY)
            # another run may have rebuilt it while we waited
            current = (await postgres.read_markers(admin)).get(name)
            if not can_skip(current, baked, need_seed=False):
                refusal = await _template_refusal(admin, server, name, current, facts)
                if refusal is not None:
                    notes.append(f"{refusal}; provisioning with plain migrations on {server}")
                    continue
                await postgres.drop_database(admin, name)
                await postgres.create_database(admin, name)
                await postgres.write_purpose(admin, purpose.TEMPLATE, name)
                build = Engine(
                    baked, dsns,
                    replace(options, command="migrate", target=None, skip_marked=False),
                    run_id=run_id, purposes={(server, name): purpose.TEMPLATE},
                )
                _, _, error, ms = await build.run_single(Unit(server, name, "template", ()))
                if error is not None:
                    await postgres.drop_database(admin, name)
                    notes.append(f"template {name} on {server} could not be built "
                                 f"([{error.sqlstate}] {error.message}); provisioning with "
                                 "plain migrations")
                    continue
                notes.append(f"template {name} on {server} rebuilt at "
                             f"{baked[-1].version.text} in {ms} ms")
            templates[server] = name
        finally:
            await admin.close()
    return templates


def template_migrations(migrations: tuple[Migration, ...], notes: list[str]) -> tuple[Migration, ...]:
    """The migrations a template may hold: those before the first one that must run
    per tenant (it writes random values, such as a signing key, that every clone
    would otherwise share). Later ones run in each tenant after the clone."""
    from .volatile import per_tenant_migrations

    per_tenant = per_tenant_migrations(migrations)
    for index, migration in enumerate(migrations):
        reason = per_tenant.get(migration.version)
        if reason is not None:
            notes.append(f"template stops before {migration.filename}: it runs in each tenant "
                         f"after the clone ({reason})")
            return migrations[:index]
    return migrations


async def _template_refusal(admin: postgres.PgSession, server: str, name: str,
                            marker: str | None, facts: _Facts) -> str | None:
    """Why the configured template database must not be dropped and rebuilt, if so."""
    tag = (await postgres.read_purposes(admin)).get(name)
    if tag == purpose.TEMPLATE:
        return None
    if tag is not None:
        return purpose.mismatch(name, purpose.TEMPLATE, tag)
    if not await postgres.existing_databases(admin, [name]):
        return None
    if marker is not None and not facts.claims.get((server, name)):
        return None  # a template built before purpose tags existed
    return (f"template_database {name} exists on {server} but was not created by tenantctl as "
            "its template: not dropped")


async def run_changes(
    inputs: Inputs,
    tenants: tuple[TenantSpec, ...],
    options: RunOptions,
    *,
    on_result: Callable[[TenantResult], Awaitable[None]] | None = None,
    on_start: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    resume: str | bool | None = None,
    argv: tuple[str, ...] = (),
) -> RunResult:
    """provision / migrate: fan out over the tenants' databases, record the run.

    ``resume``: True re-runs what the last run (and any earlier failure) left
    unfinished; a run id re-runs what that run left unfinished.
    """
    project = inputs.project
    stop = stop or asyncio.Event()
    started = time.monotonic()
    notes: list[str] = []
    if resume:
        tenants = await _unfinished(project, tenants, options.command,
                                    resume if isinstance(resume, str) else None)
        notes.append(f"resuming: {len(tenants)} unfinished tenant(s) selected")
    units = group_units(tenants)
    servers = {u.server for u in units} | {project.default_server}
    dsns = server_dsns(project, servers)
    facts = await _server_facts(project, dsns, units)
    run_id = str(uuid.uuid4())
    control = None
    book: ledger.Ledger | None = None
    if not options.dry_run:
        admin = await postgres.connect(dsns[project.default_server])
        try:
            control = await ledger.open_control(
                admin, dsns[project.default_server], project.file.control_database
            )
        finally:
            await admin.close()
        # who the registry placed where, read before tenants.yaml's view is synced in
        facts.claims = await ledger.placements(control)
        book = ledger.Ledger(control)
        await book.sync_registry(project.tenants)
        await book.start_run(run_id, options.command, [t.clnt_id for t in tenants], argv)
    else:
        existing_control = await ledger.connect_existing(
            dsns[project.default_server], project.file.control_database)
        if existing_control is not None:
            try:
                facts.claims = await ledger.placements(existing_control)
            finally:
                await existing_control.close()
    if on_start is not None:
        on_start(len(tenants))

    async def record(result: TenantResult) -> None:
        if book is not None:
            await book.record(run_id, result, provisioned=options.command == "provision")
        if on_result is not None:
            await on_result(result)

    templates = await _prepare_templates(inputs, dsns, units, facts, options, run_id, notes)
    baked = len(template_migrations(inputs.migrations, [])) if templates else 0
    hook = None
    if any(u.mode == "shared" for u in units) and not options.dry_run:
        hook = await _shared_mode_hook(project, dsns)
    engine = Engine(
        inputs.migrations, dsns, options, seed=inputs.seed, server_caps=facts.caps,
        existing=facts.existing, markers=facts.markers, templates=templates,
        template_migrations=baked, purposes=facts.purposes, claims=facts.claims,
        on_result=record, stop=stop, run_id=run_id, after_migrate=hook,
    )
    try:
        results = await engine.run(units, project.file.waves)
        order = {t.clnt_id: i for i, t in enumerate(tenants)}
        run = RunResult(
            run_id=run_id,
            command=options.command,
            tenants=tuple(sorted(results, key=lambda r: order[r.clnt_id])),
            interrupted=stop.is_set(),
            duration_ms=int((time.monotonic() - started) * 1000),
            target=options.target.text if options.target else None,
            dry_run=options.dry_run,
            notes=tuple(notes),
        )
        if book is not None:
            await book.finish_run(run)
        return run
    finally:
        await engine.close()
        if control is not None:
            await control.close()


async def _shared_mode_hook(project: Project, dsns: dict[str, str]) -> Any:
    """Roles exist before the run; after each run on the shared database, every
    clnt_id table is put under forced RLS and the tenants are registered."""
    from . import isolation

    shared = project.file.shared
    server = shared.server or project.default_server
    admin = await postgres.connect(dsns[server])
    try:
        await isolation.ensure_roles(admin, app_role=shared.app_role, owner_role=shared.owner_role)
    finally:
        await admin.close()

    async def after_migrate(session: postgres.PgSession, unit: Unit, options: RunOptions) -> list[str]:
        if unit.mode != "shared" or options.command not in ("migrate", "provision", "rollback"):
            return []
        await isolation.ensure_registry(session)
        if options.command == "provision":
            for t in unit.tenants:
                await isolation.register(session, t.clnt_id, t.name, t.sites)
        result = await isolation.enforce(
            session, app_role=shared.app_role, owner_role=shared.owner_role,
            global_tables=frozenset(shared.global_tables),
        )
        warnings = list(result.warnings)
        warnings += [f"table {t} has no clnt_id and is not declared in shared.global_tables: "
                     "the app role cannot use it" for t in result.unprotected]
        return warnings

    return after_migrate


async def check_isolation(project: Project) -> list[Any]:
    """Catalog audit + live probe of the shared database (two registered tenants)."""
    from . import isolation, isolation_check

    shared = project.file.shared
    server = shared.server or project.default_server
    dsn = server_dsns(project, {server})[server]
    session = await postgres.connect(dsn, shared.database)
    try:
        await isolation.ensure_registry(session)
        ids = await isolation.registered_ids(session)
    finally:
        await session.close()
    probe = (ids[0], ids[1]) if len(ids) >= 2 else None
    findings = await isolation_check.check_isolation(
        dsn, shared.database, app_role=shared.app_role, owner_role=shared.owner_role,
        global_tables=frozenset(shared.global_tables), probe_tenants=probe,
        probe_dsn=shared.probe_dsn,
    )
    if probe is None:
        findings.append(isolation_check.IsolationFinding(
            "probe-skipped", None, "fewer than two tenants registered in the shared database: "
            "the live probe needs two", "warning"))
    return findings


async def _unfinished(
    project: Project, tenants: tuple[TenantSpec, ...], command: str, run_id: str | None
) -> tuple[TenantSpec, ...]:
    dsn = server_dsns(project, {project.default_server})[project.default_server]
    control = await ledger.connect_existing(dsn, project.file.control_database)
    if control is None:
        return () if run_id is None else _no_such_run(run_id)
    try:
        ids = await ledger.unfinished(control, command, run_id)
    finally:
        await control.close()
    return tuple(t for t in tenants if t.clnt_id in ids)


def _no_such_run(run_id: str) -> tuple[TenantSpec, ...]:
    from .errors import BadInputError

    raise BadInputError(f"--resume {run_id}: there is no run ledger yet")


async def collect_status(
    inputs: Inputs, tenants: tuple[TenantSpec, ...], concurrency: int
) -> list[dict[str, Any]]:
    """Each tenant: mode, database, version (from its own history), pending, last error."""
    project = inputs.project
    units = group_units(tenants)
    dsns = server_dsns(project, {u.server for u in units} | {project.default_server})
    latest = inputs.migrations[-1].version.text if inputs.migrations else None
    sem = asyncio.Semaphore(concurrency)
    seed_configured = project.seed_path is not None
    markers: dict[tuple[str, str], str] = {}
    for server in {u.server for u in units}:
        try:
            admin = await postgres.connect(dsns[server])
        except DatabaseError:
            continue  # its tenants show as unreachable below
        try:
            markers.update({(server, db): m for db, m in (await postgres.read_markers(admin)).items()})
        finally:
            await admin.close()

    async def one(unit: Unit) -> list[dict[str, Any]]:
        async with sem:
            base: dict[str, Any] = {"database": unit.database, "mode": unit.mode}
            try:
                session = await postgres.connect(dsns[unit.server], unit.database)
            except DatabaseError as exc:
                if exc.sqlstate != "3D000":
                    base.update(state="unreachable", version=None, pending=None,
                                error={"sqlstate": exc.sqlstate, "message": exc.message})
                else:
                    base.update(state="not_provisioned", version=None,
                                pending=len(inputs.migrations))
                return [dict(base, clnt_id=t.clnt_id) for t in unit.tenants]
            try:
                history = await postgres.read_history(session)
            finally:
                await session.close()
            plan = plan_migrate(inputs.migrations, history)
            state = replay(history)
            if plan.drift:
                summary = "drift"
            elif plan.gaps:
                summary = "gap"
            elif plan.pending:
                summary = "pending"
            else:
                summary = "up_to_date"
            claimed = marker_version(markers.get((unit.server, unit.database)))
            behind = (claimed is not None and state.version is not None and state.version < claimed)
            base.update(
                state=summary,
                gaps=list(plan.gaps),
                marker_ahead=claimed.text if behind and claimed is not None else None,
                unseeded=[t.clnt_id for t in unit.tenants if t.clnt_id not in state.seeded]
                if seed_configured and unit.mode == "database" else [],
                version=plan.from_version,
                pending=len(plan.pending),
                partial=[v.text for v in state.failed],
                partial_rows=[{"version": v.text, "statements_done": r.statements_done}
                              for v, r in state.failed.items()],
                drift=[d.filename for d in plan.drift],
                drift_detail=[{"version": d.version, "file": d.filename,
                               "applied_checksum": d.applied_checksum,
                               "file_checksum": d.file_checksum} for d in plan.drift],
                unknown=list(plan.unknown),
            )
            return [dict(base, clnt_id=t.clnt_id) for t in unit.tenants]

    per_unit = await asyncio.gather(*(one(u) for u in units))
    by_id = {row["clnt_id"]: row for rows in per_unit for row in rows}
    outcomes: dict[int, dict[str, Any]] = {}
    control = await ledger.connect_existing(
        dsns[project.default_server], project.file.control_database
    )
    if control is not None:
        try:
            outcomes = await ledger.last_outcomes(control)
        finally:
            await control.close()
    out = []
    for t in tenants:
        row = by_id[t.clnt_id]
        known = outcomes.get(t.clnt_id, {})
        if t.clnt_id in row.get("unseeded", ()) and row["state"] in ("up_to_date", "pending"):
            row = dict(row, state="unfinished")
        out.append({
            "clnt_id": t.clnt_id,
            "name": t.name,
            "mode": t.mode,
            "server": t.server,
            "database": row["database"],
            "version": row["version"],
            "latest": latest,
            "pending": row["pending"],
            "state": row["state"],
            "partial": row.get("partial", []),
            "drift": row.get("drift", []),
            "drift_detail": row.get("drift_detail", []),
            "unknown": row.get("unknown", []),
            "partial_rows": row.get("partial_rows", []),
            "gaps": row.get("gaps", []),
            "marker_ahead": row.get("marker_ahead"),
            "seeded": None if not seed_configured or t.mode != "database"
            else t.clnt_id not in row.get("unseeded", [t.clnt_id]),
            "last_status": known.get("last_status"),
            "last_run_id": known.get("last_run_id"),
            "last_error": row.get("error") or known.get("last_error"),
        })
    return out


def verify_findings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every problem ``verify`` reports, one dict per finding (tenant, version, file, what)."""
    out: list[dict[str, Any]] = []

    def add(row: dict[str, Any], kind: str, detail: str, version: str | None = None,
            file: str | None = None) -> None:
        out.append({"clnt_id": row["clnt_id"], "database": row["database"], "kind": kind,
                    "version": version, "file": file, "detail": detail})

    for row in rows:
        if row["state"] == "not_provisioned":
            add(row, "missing-database", "the database does not exist (tenantctl provision)")
        elif row["state"] == "unreachable":
            add(row, "unreachable", str((row.get("last_error") or {}).get("message")))
        for d in row.get("drift_detail", []):
            add(row, "drift", f"applied with checksum {d['applied_checksum'][:12]}, file now "
                f"{d['file_checksum'][:12]}: the file was edited after it ran", d["version"], d["file"])
        for v in row.get("unknown", []):
            add(row, "ahead", "applied in the database but not in the migrations folder", v)
        for v in row.get("gaps", []):
            add(row, "gap", "not recorded in the history, but newer versions are: its row was "
                "deleted by hand, or the file was added below versions that already ran; "
                "migrate would run it again out of order", v)
        if row.get("marker_ahead"):
            add(row, "history-behind-marker", f"the database's schema marker says it reached "
                f"{row['marker_ahead']}, but its history ends at {row['version']}: history rows "
                "were deleted by hand, or the database was restored from an older backup",
                row["marker_ahead"])
        if row["state"] == "unfinished":
            add(row, "unfinished", "provisioning did not finish: the database exists but the "
                "seed has not run (the next provision or migrate runs it)")
        for p in row.get("partial_rows", []):
            add(row, "partial", f"failed/partial no-transaction migration "
                f"({p['statements_done'] or 0} statement(s) done); migrate resumes it", p["version"])
    return out


def check_rollback_inputs(inputs: Inputs, target: Version) -> None:
    """Refuse (exit 2) before touching anything when a needed down script is missing."""
    from .errors import MigrationFileError
    from .plan import missing_downs

    missing = missing_downs(inputs.migrations, target)
    if missing:
        raise MigrationFileError(
            f"cannot roll back to {target}: {len(missing)} down script(s) missing:\n  "
            + "\n  ".join(missing),
            hint="write them (same stem + .down.sql); nothing was changed",
        )


async def check_reversible(inputs: Inputs) -> list[Any]:
    """up -> down -> up of every migration on a scratch database of the default server."""
    from .reversible import check_reversible as check

    project = inputs.project
    dsn = server_dsns(project, {project.default_server})[project.default_server]
    scratch = f"tenantctl_scratch_{uuid.uuid4().hex[:12]}"
    return await check(dsn, inputs.migrations, scratch_name=scratch)


def run_async(make: Callable[[asyncio.Event], Awaitable[T]]) -> tuple[T | None, bool]:
    """Run a coroutine with SIGINT/SIGTERM wired to a stop event.

    First signal: stop scheduling, let in-flight work commit or roll back.
    Second signal: cancel in-flight work (connections close, open
    transactions roll back). Returns (result, interrupted).
    """

    async def main() -> tuple[T | None, bool]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        hits = {"n": 0}

        def on_signal() -> None:
            hits["n"] += 1
            stop.set()
            if hits["n"] > 1 and task is not None:
                task.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (e.g. under a test runner) or no signals
        try:
            result = await make(stop)
            return result, stop.is_set()
        except asyncio.CancelledError:
            return None, True
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def stop_embedded(project: Project) -> bool:
    return embedded.stop(project.state_dir)


def embedded_status(project: Project) -> dict[str, Any]:
    pid = embedded.running_pid(project.state_dir)
    return {
        "pgdata": str(project.state_dir / embedded.PGDATA),
        "running": pid is not None,
        "pid": pid,
    }


def ensure_server(project: Project) -> str:
    dsns = server_dsns(project, {project.default_server})
    if not dsns:
        raise ServerError("no default server")
    return dsns[project.default_server]
