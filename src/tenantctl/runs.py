"""One run of a changing verb: facts, ledger, templates, the engine, the report.

:func:`run_changes` is what provision, migrate, rollback and repair share:
read the servers' facts, open the run in the ledger (the control database),
prepare templates, fan out, and close the run with its outcome. Shared-mode
units get their row-level security enforced after every change.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

from . import ledger, logs, move_registry, placement_check, registry
from .config import Project, TenantSpec
from .drivers.base import Driver, Session
from .drivers.pg_version import UNSUPPORTED_HINT
from .engine import Engine, PauseCallback, RunOptions, group_units, marked_up_to_date
from .errors import BadInputError, DatabaseError, ErrorKind, Unreachable, UnsupportedServer
from .executor import EnforceHook, Unit
from .extensions import missing_extensions, required_extensions
from .fleet import ServerFacts, prepare_templates, server_dsns, server_facts, server_problem
from .inputs import Inputs, parse_all, pending_lint
from .lint_rules import Finding
from .logs import Event
from .modes import Mode
from .outcome import FAILED, RunResult, TenantFailure, TenantResult
from .placement import on_servers, place
from .steps import Verb

ResultCallback = Callable[[TenantResult], Awaitable[None]]


async def run_changes(
    driver: Driver,
    inputs: Inputs,
    tenants: tuple[TenantSpec, ...],
    options: RunOptions,
    *,
    on_result: ResultCallback | None = None,
    on_start: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    resume: str | bool | None = None,
    argv: tuple[str, ...] = (),
    lint: Callable[[], tuple[Finding, ...]] = tuple,
    servers: frozenset[str] = frozenset(),
    on_pause: PauseCallback | None = None,
) -> RunResult:
    """Fan a changing verb out over the tenants' databases and record the run.

    ``resume``: True re-runs what the last run (and any earlier failure) left
    unfinished; a run id re-runs what that run left unfinished. ``lint``: gives the
    folder's findings (called only when something was pending); the report keeps
    those of migrations pending for its tenants.
    A dry run is recorded too (marked dry), without touching the registry.
    ``servers``: only the tenants living on these servers (``--server``).

    Tenants without ``server:`` are placed (and pinned) first. A server that
    cannot be reached, or refuses tenantctl's login, fails its own tenants
    (named in the error) and the others go on; only the control database's
    server is needed by every run.

    Files are split into statements (parse_all: from the parse cache, or by the
    parser) before the control database is created on a first run, and otherwise
    once the servers' markers are read, before the run is recorded or any tenant is
    touched, unless every tenant's marker proves there is nothing to do.
    """
    project = inputs.project
    stop = stop or asyncio.Event()
    started = time.monotonic()
    notes: list[str] = []
    if resume:
        tenants = await _unfinished(driver, project, tenants, options.verb,
                                    resume if isinstance(resume, str) else None)
        notes.append(f"resuming: {len(tenants)} unfinished tenant(s) selected")
    control_dsn = server_dsns(project, {project.default_server})[project.default_server]
    run_id = str(uuid.uuid4())
    control: Session | None = None
    recorder: ledger.Ledger | None = None
    engine: Engine | None = None
    lint_ahead: asyncio.Future[tuple[Finding, ...]] | None = None
    required = required_extensions(inputs.migrations)
    if options.strict and required:  # refuse before the control database is even created
        await _strict_extensions(driver, project, tenants, control_dsn, required)
    try:
        # a first run (no control database yet) has everything to do: refuse a broken
        # file before creating it
        control = await open_control_or_name_server(
            driver, project, control_dsn, before_create=lambda: parse_all(inputs))
        # who the registry placed where, read before tenants.yaml's view is synced in
        claims = await ledger.placements(control)
        recorder = ledger.Ledger(control, dry_run=options.dry_run)
        if not options.dry_run:
            placement = await registry.pin(control, recorder, project)
        else:  # a dry run is recorded, but changes no registry entry
            placement = place(project, await registry.read(control))
        tenants, unplaced = placement.resolve(tenants)
        if servers:
            tenants, unplaced = on_servers(tenants, servers), {}
        # a tenant whose data lives elsewhere than tenants.yaml says fails before any
        # tenant is touched, and nothing is created at the new place (tenantctl move)
        checked = placement_check.reconcile(tenants, await move_registry.registered(control), {})
        refused = [_refusal(m) for m in checked.refused(tenants)]
        placed_tenants, tenants = tenants, checked.runnable(tenants)
        units = group_units(tenants)
        dsns = server_dsns(project, {u.server for u in units} | {project.default_server})
        facts = await server_facts(driver, project, dsns, units, need_extensions=bool(required),
                                   open_sessions={project.default_server: control})
        facts.claims = claims
        live = [u for u in units if u.server not in facts.down]
        notes.extend(_extension_problems(required, facts, {u.server for u in live}, False))
        notes.extend(problem.message for problem in facts.down.values())
        notes.extend(facts.notes)
        if not all(marked_up_to_date(options, u, facts.markers, inputs.migrations,
                                     has_seed=inputs.seed is not None) for u in live):
            # Something may be pending: every file is split (or taken from the parse
            # cache) now, so a broken one is refused (exit 2) before the run is recorded
            # or any tenant is touched. When every marker proves its tenant is at the
            # latest version of exactly this folder (its fingerprint covers every up
            # file's checksum), no file can be pending and none is parsed: a no-op run
            # costs the same on 10 files as on 700.
            parse_all(inputs)
            # The report's lint findings: the folder is linted on a thread while the
            # tenants run (the run waits on the servers; a 700-file folder's lint takes
            # seconds), instead of after them.
            lint_ahead = asyncio.ensure_future(asyncio.to_thread(lint))
            lint_ahead.add_done_callback(_retrieve)  # a run that fails first never awaits it
        selected = tuple(placement_order(placed_tenants, unplaced, inputs))
        await recorder.start_run(run_id, options.verb, [t.clnt_id for t in selected], argv)
        logs.bind_run(run_id)
        logs.event(Event.RUN_START, f"{options.verb.value} run {run_id} started: "
                   f"{len(selected)} tenant(s)" + (" (dry run)" if options.dry_run else ""),
                   command=options.verb.value, tenants=len(selected), dry_run=options.dry_run)
        if on_start is not None:
            on_start(len(selected))

        async def record(result: TenantResult) -> None:
            if recorder is not None:
                await recorder.record(run_id, result, provisioned=options.verb is Verb.PROVISION)
            if on_result is not None:
                await on_result(result)

        failed_early = refused + _failed_early(selected, unplaced, units, facts)
        for result in failed_early:
            await record(result)
        units = live
        templates, baked = await prepare_templates(
            driver, project, inputs.migrations, dsns, units, facts, options, run_id, notes)
        enforce = None
        if any(u.policy.enforces for u in units) and not options.dry_run:
            enforce = await shared_mode_hook(driver, project, dsns, options.verb)
        engine = Engine(
            inputs.migrations, dsns, options, driver=driver, seed=inputs.seed,
            server_caps=facts.caps, existing=facts.existing, markers=facts.markers,
            templates=templates, template_migrations=baked, purposes=facts.purposes,
            claims=facts.claims, on_result=record, stop=stop, run_id=run_id, enforce=enforce,
            clone_strategies=facts.clone_strategies,
            on_pause=on_pause,
        )
        results = failed_early + await engine.run(units, project.file.waves)
        recording_error = None
        if engine.recording_error is not None:
            recording_error = (f"recording results failed, later tenants were not started: "
                               f"{type(engine.recording_error).__name__}: {engine.recording_error}")
        order = {t.clnt_id: i for i, t in enumerate(selected)}
        run = RunResult(
            run_id=run_id,
            command=options.verb.value,
            tenants=tuple(sorted(results, key=lambda r: order[r.clnt_id])),
            interrupted=stop.is_set(),
            duration_ms=int((time.monotonic() - started) * 1000),
            target=options.target.text if options.target else None,
            dry_run=options.dry_run,
            notes=tuple(notes),
            recording_error=recording_error,
        )
        linted = await lint_ahead if lint_ahead is not None else None
        folder_lint = lint if linted is None else (lambda: linted)
        run = replace(run, lint=tuple(f.to_json() for f in pending_lint(inputs, folder_lint, run)))
        if recorder is not None:
            try:
                await recorder.finish_run(run)
            except Exception as exc:  # the report still reaches the caller
                run = replace(run, notes=(*run.notes, f"the run's outcome could not be recorded: "
                                          f"{type(exc).__name__}: {exc}"))
        return run
    finally:
        if engine is not None:
            await engine.close()
        if control is not None:
            await control.close()


def _retrieve(future: asyncio.Future[tuple[Finding, ...]]) -> None:
    """Mark the lint thread's exception as seen: a run that ends early (and raises its
    own error) must not log "exception was never retrieved" for it."""
    if not future.cancelled():
        future.exception()


async def _strict_extensions(driver: Driver, project: Project, tenants: tuple[TenantSpec, ...],
                             control_dsn: str, required: dict[str, str]) -> None:
    """--strict: exit 2 when a server the run would use lacks an extension the folder
    creates; read-only (the registry as it is), before anything is created."""
    placement = place(project, await registry.read_existing(
        driver, control_dsn, project.file.control_database))
    units = group_units(placement.resolve(tenants)[0])
    dsns = server_dsns(project, {u.server for u in units})
    facts = await server_facts(driver, project, dsns, units, need_extensions=True)
    _extension_problems(required, facts, {u.server for u in units} - set(facts.down), True)


async def open_control_or_name_server(driver: Driver, project: Project, dsn: str, *,
                                      before_create: Callable[[], None] | None = None) -> Session:
    """The control database (created when missing, after ``before_create``); its server
    down is an error naming it."""
    try:
        async with await driver.connect(dsn) as admin:
            refusal = (await driver.server_version(admin)).refusal(project.default_server)
            if refusal is not None:  # the ledger would live there: nothing is created
                raise UnsupportedServer(refusal, hint=UNSUPPORTED_HINT)
            return await ledger.open_control(driver, admin, dsn, project.file.control_database,
                                             before_create=before_create)
    except DatabaseError as exc:
        if exc.sqlstate is None or not (exc.sqlstate.startswith("08")
                                        or exc.sqlstate.startswith("28")):
            raise
        raise Unreachable(
            f"{server_problem(project.default_server, dsn, exc)}; the control database "
            f"{project.file.control_database} (run ledger, registry) lives there: nothing was run",
            ErrorKind.CONTROL_UNREACHABLE,
            hint="bring the default server back, or point default_server at a live one") from None


def placement_order(tenants: tuple[TenantSpec, ...], unplaced: dict[int, str],
                    inputs: Inputs) -> list[TenantSpec]:
    """The run's tenants in tenants.yaml's order, those that could not be placed included."""
    ids = {t.clnt_id for t in tenants} | set(unplaced)
    placed = {t.clnt_id: t for t in tenants}
    return [placed.get(t.clnt_id, t) for t in inputs.project.tenants if t.clnt_id in ids]


def _refusal(mismatch: placement_check.Mismatch) -> TenantResult:
    want = mismatch.declared
    return TenantResult(mismatch.clnt_id, want.database, want.mode, FAILED, error=TenantFailure(
        mismatch.message, hint=mismatch.hint, kind="placement"))


def _failed_early(selected: tuple[TenantSpec, ...], unplaced: dict[int, str], units: list[Unit],
                  facts: ServerFacts) -> list[TenantResult]:
    """Tenants failed before the engine starts: no server can take them, or theirs is down."""
    out = []
    on_down = {t.clnt_id: facts.down[u.server] for u in units if u.server in facts.down
               for t in u.tenants}
    for t in selected:
        if t.clnt_id in unplaced:
            failure = TenantFailure(unplaced[t.clnt_id], hint="raise servers.<name>.max_tenants, "
                                    "add a server, or give the tenant a server:")
        elif t.clnt_id in on_down:
            down = on_down[t.clnt_id]
            failure = TenantFailure(down.message, down.sqlstate,
                                    hint=down.hint or "the other servers' tenants were worked "
                                    "on; re-run these with --only-failed once the server is back")
        else:
            continue
        out.append(TenantResult(t.clnt_id, t.database, t.mode, FAILED, error=failure))
    return out


def _extension_problems(required: dict[str, str], facts: ServerFacts, servers: set[str],
                        strict: bool) -> list[str]:
    """Per server, the extensions the folder creates that its installation lacks:
    notes for the report, or (strict) a refusal before any tenant is touched."""
    problems = []
    for server in sorted(servers):
        missing = missing_extensions(required, facts.extensions.get(server, set()))
        if missing:
            problems.append(f"server {server} cannot create extension(s) the migrations need: "
                            f"{', '.join(missing)}; its tenants will fail with 0A000")
    if problems and strict:
        raise BadInputError("\n".join(problems), hint="install them on the server (its packages or "
                            "image), or drop them from the migrations; nothing was changed")
    return problems


async def shared_mode_hook(driver: Driver, project: Project, dsns: dict[str, str],
                           verb: Verb) -> EnforceHook:
    """Roles exist before the run; after each change to the shared database, every
    table with the tenant column is put under forced RLS and (provision) the tenants
    are registered."""
    from . import isolation  # shared mode only: a fleet of tenant databases never loads it

    shared, column = project.file.shared, project.file.tenant_column
    server = shared.server or project.default_server
    async with await driver.connect(dsns[server]) as admin:
        await isolation.ensure_roles(admin, app_role=shared.app_role, owner_role=shared.owner_role)

    async def enforce(session: Session, unit: Unit) -> list[str]:
        if unit.mode is not Mode.SHARED:
            return []
        await isolation.ensure_registry(session)
        if verb is Verb.PROVISION:
            for t in unit.tenants:
                await isolation.register(session, t.clnt_id, t.name, t.sites)
        result = await isolation.enforce(
            session, app_role=shared.app_role, owner_role=shared.owner_role,
            global_tables=frozenset(shared.global_tables), tenant_column=column,
        )
        warnings = list(result.warnings)
        warnings += [f"table {t} has no {column} and is not declared in shared.global_tables: "
                     "the app role cannot use it" for t in result.unprotected]
        return warnings

    return enforce


async def _unfinished(
    driver: Driver, project: Project, tenants: tuple[TenantSpec, ...], verb: Verb,
    run_id: str | None,
) -> tuple[TenantSpec, ...]:
    dsn = server_dsns(project, {project.default_server})[project.default_server]
    control = await ledger.connect_existing(driver, dsn, project.file.control_database)
    if control is None:
        if run_id is not None:
            raise BadInputError(f"--resume {run_id}: there is no run ledger yet")
        return ()
    async with control:
        ids = await ledger.unfinished(control, verb.value, run_id)
    return tuple(t for t in tenants if t.clnt_id in ids)
