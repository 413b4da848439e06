"""tenantctl as a library: one function per command.

Each function takes a validated :class:`~tenantctl.config.Project` and typed
arguments, validates every local input before it opens a connection (bad
input raises a :class:`~tenantctl.errors.BadInputError`, nothing changed),
and returns typed results. Nothing here parses arguments or prints: the CLI
(``tenantctl.cli``) is a thin adapter over these, as alembic's ``command``
module is over its script directory.

    project = load_project(Path("tenants.yaml"))
    run = await commands.migrate(project, ChangeRequest(all=True))
    rows = await commands.status(project)
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ledger
from .config import Project, TenantSpec, parse_duration
from .drivers.base import Driver, Session
from .drivers.postgres import DRIVER
from .engine import PauseCallback, RunOptions
from .errors import BadInputError, DatabaseError, ErrorKind, ServerError, Unreachable
from .fleet import server_dsns
from .inputs import (
    Inputs,
    LintReport,
    check_rollback_inputs,
    lint_report,
    load_inputs,
    parse_all,
    pending_lint,
    refuse_on_lint_errors,
    resolve_target,
    rollback_target,
)
from .inputs import (
    lint as lint_inputs,
)
from .lint_rules import Finding
from .migrations import NEW_MIGRATION_TEMPLATE, Version, load_migrations, new_migration_path
from .outcome import RunResult, TenantResult
from .placement import check_servers
from .runs import run_changes
from .steps import Verb
from .waves import parse_wave_pause, select_tenants

# The modules of the other commands are imported by the functions that use
# them: provision and migrate (the nightly job) do not pay for loading
# offboarding, check-reversible, status or isolation checks at start-up.
if TYPE_CHECKING:
    from .baseline import BaselineRequest as BaselineRequest
    from .isolation_check import IsolationFinding
    from .lifecycle import LifecycleReport
    from .offboard import DeprovisionPlan
    from .offboard import DeprovisionRequest as DeprovisionRequest
    from .offboard import RestoreRequest as RestoreRequest
    from .reversible import Difference
    from .reversible_range import Base
    from .run_history import RunRow, RunStatus
    from .status import StatusRow, VerifyFinding

# request types callers build (commands.BaselineRequest(...)), loaded on first use
_REEXPORTED = {"BaselineRequest": "baseline", "DeprovisionRequest": "offboard",
               "RestoreRequest": "offboard"}


def __getattr__(name: str) -> Any:
    if name in _REEXPORTED:
        import importlib

        return getattr(importlib.import_module(f".{_REEXPORTED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ChangeRequest:
    """What provision, migrate, rollback or repair is asked to do.

    ``None`` means "the setting from tenants.yaml"; durations are given as
    text (``5s``, ``500ms``) as on the command line.
    """

    ids: tuple[int, ...] = ()
    all: bool = False
    to: str | None = None
    dry_run: bool = False
    concurrency: int | None = None
    max_failures: int | None = None
    fail_fast: bool = False
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    lock_wait: str | None = None
    retries: int | None = None
    only_failed: bool = False
    resume_run: str | None = None
    allow_drift: bool = False
    no_skip: bool = False
    no_template: bool = False
    strict_lint: bool = False
    strict: bool = False  # lint errors and missing extensions refuse the run (exit 2)
    servers: tuple[str, ...] = ()  # --server: only the tenants living on these servers
    waves: tuple[str, ...] = ()  # only the tenants of these waves (instead of ids / --all)
    wave_pause: str | None = None  # wait this long between waves (`30s`, `5m`)

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> ChangeRequest:
        """The request behind the CLI's flags (named as click names them: ``all_``,
        ``resume_run``); a flag a command does not have keeps its default."""
        fields = {f.name for f in dataclasses.fields(cls)}
        given = {("all" if k == "all_" else k): v for k, v in flags.items()}
        values = {k: v for k, v in given.items() if k in fields and v is not None}
        for name in ("ids", "waves", "servers"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class PreparedRun:
    """A changing command with every local input validated: nothing touched yet."""

    verb: Verb
    inputs: Inputs
    tenants: tuple[TenantSpec, ...]
    options: RunOptions
    resume: str | bool
    servers: frozenset[str] = frozenset()

    @property
    def notices(self) -> tuple[str, ...]:
        return self.inputs.notices

    @cached_property
    def lint(self) -> tuple[Finding, ...]:
        """The folder's lint findings (tenants.yaml's ``lint:`` block applied), computed
        on first use: with --strict-lint before the run, otherwise only when the run
        had something pending (:func:`pending_findings`)."""
        return tuple(lint_inputs(self.inputs))


def prepare(project: Project, verb: Verb, request: ChangeRequest) -> PreparedRun:
    """Validate a changing command's input; raises BadInputError (exit 2)."""
    if request.resume_run and request.only_failed:
        raise BadInputError("give --only-failed or --resume RUN_ID, not both")
    resume: str | bool = request.resume_run or request.only_failed
    servers = check_servers(project, request.servers)
    implied = (bool(resume) or bool(servers)) and not request.ids
    tenants = select_tenants(project, request.ids, request.all or implied, request.waves)
    inputs = load_inputs(project, with_seed=verb in (Verb.PROVISION, Verb.MIGRATE))
    target = (rollback_target(inputs, request.to) if verb is Verb.ROLLBACK
              else resolve_target(inputs, request.to))
    if verb is Verb.ROLLBACK:
        if target is None:
            raise BadInputError("rollback needs --to VERSION")
        check_rollback_inputs(inputs, target)
    options = _run_options(project, verb, request, target)
    prepared = PreparedRun(verb, inputs, tenants, options, resume, servers)
    if request.strict or request.strict_lint or project.settings.strict_lint:
        refuse_on_lint_errors(list(prepared.lint))
    return prepared


def _run_options(project: Project, verb: Verb, request: ChangeRequest,
                 target: Version | None) -> RunOptions:
    settings = project.settings

    def duration(flag: str, given: str | None, default: float) -> float:
        if given is None:
            return default
        try:
            return parse_duration(given)
        except ValueError as exc:
            raise BadInputError(f"--{flag}: {exc}") from None

    return RunOptions(
        verb=verb,
        target=target,
        dry_run=request.dry_run,
        concurrency=request.concurrency or settings.concurrency,
        max_failures=1 if request.fail_fast else request.max_failures,
        lock_timeout=duration("lock-timeout", request.lock_timeout, settings.lock_timeout),
        statement_timeout=duration("statement-timeout", request.statement_timeout,
                                   settings.statement_timeout),
        lock_wait=duration("lock-wait", request.lock_wait, settings.lock_wait),
        retries=settings.retries if request.retries is None else request.retries,
        allow_drift=request.allow_drift,
        skip_marked=not request.no_skip,
        use_template=not request.no_template,
        strict=request.strict,
        wave_pause=parse_wave_pause(request.wave_pause),
    )


ResultCallback = Callable[[TenantResult], Awaitable[None]]


async def execute(
    prepared: PreparedRun, *, driver: Driver = DRIVER, on_result: ResultCallback | None = None,
    on_start: Callable[[int], None] | None = None, stop: asyncio.Event | None = None,
    argv: tuple[str, ...] = (), on_pause: PauseCallback | None = None,
) -> RunResult:
    """Run a prepared changing command against the servers and record it in the ledger."""
    return await run_changes(driver, prepared.inputs, prepared.tenants, prepared.options,
                             on_result=on_result, on_start=on_start, stop=stop,
                             resume=prepared.resume, argv=argv, lint=lambda: prepared.lint,
                             servers=prepared.servers, on_pause=on_pause)


def pending_findings(prepared: PreparedRun, run: RunResult) -> list[Finding]:
    """The lint findings of migrations that were pending for at least one tenant of
    the run (what the report's ``lint`` holds); ``tenantctl lint`` shows all."""
    return pending_lint(prepared.inputs, lambda: prepared.lint, run)


async def provision(project: Project, request: ChangeRequest, *, driver: Driver = DRIVER,
                    stop: asyncio.Event | None = None) -> RunResult:
    """Create, migrate, seed and register tenants (idempotent)."""
    return await execute(prepare(project, Verb.PROVISION, request), driver=driver, stop=stop)


async def migrate(project: Project, request: ChangeRequest, *, driver: Driver = DRIVER,
                  stop: asyncio.Event | None = None) -> RunResult:
    """Apply pending migrations to the selected tenants, many at once."""
    return await execute(prepare(project, Verb.MIGRATE, request), driver=driver, stop=stop)


async def rollback(project: Project, request: ChangeRequest, *, driver: Driver = DRIVER,
                   stop: asyncio.Event | None = None) -> RunResult:
    """Run down scripts newest-first until the tenants are at ``request.to``."""
    return await execute(prepare(project, Verb.ROLLBACK, request), driver=driver, stop=stop)


async def repair(project: Project, request: ChangeRequest, *, driver: Driver = DRIVER,
                 stop: asyncio.Event | None = None) -> RunResult:
    """Accept deliberate edits of applied files: re-record their checksums."""
    return await execute(prepare(project, Verb.REPAIR, request), driver=driver, stop=stop)


@dataclass(frozen=True)
class StatusReport:
    rows: tuple[StatusRow, ...]
    latest: str | None


async def status(project: Project, ids: tuple[int, ...] = (), *, concurrency: int | None = None,
                 driver: Driver = DRIVER, servers: tuple[str, ...] = (),
                 waves: tuple[str, ...] = ()) -> StatusReport:
    """Every selected tenant (all when neither ``ids`` nor ``waves`` is given; only
    those on ``servers`` when given): version, pending, state, last error. Listing
    everyone, tenants the registry holds but tenants.yaml no longer lists are rows
    of state ``orphaned``."""
    from .status import fleet_status

    wanted = check_servers(project, servers)
    tenants = select_tenants(project, ids, not ids, waves)
    inputs = load_inputs(project)
    rows = await fleet_status(driver, inputs, tenants, wanted,
                              concurrency or project.settings.concurrency,
                              orphans=not ids and not waves)
    return StatusReport(tuple(rows), inputs.latest)


@dataclass(frozen=True)
class VerifyReport:
    rows: tuple[StatusRow, ...]
    findings: tuple[VerifyFinding, ...]


async def verify(project: Project, ids: tuple[int, ...] = (), *, concurrency: int | None = None,
                 driver: Driver = DRIVER, servers: tuple[str, ...] = ()) -> VerifyReport:
    """Every tenant's history against the folder; a finding per problem."""
    from .status import verify_findings

    report = await status(project, ids, concurrency=concurrency, driver=driver, servers=servers)
    return VerifyReport(report.rows, tuple(verify_findings(list(report.rows))))


async def baseline(project: Project, request: BaselineRequest, *, driver: Driver = DRIVER,
                   argv: tuple[str, ...] = ()) -> LifecycleReport:
    """Adopt existing databases: record the migrations up to a version as ``baseline``."""
    from . import baseline as baseline_mod

    return await baseline_mod.baseline(project, request, driver=driver, argv=argv)


async def plan_deprovision(project: Project, request: DeprovisionRequest, *,
                           driver: Driver = DRIVER) -> DeprovisionPlan:
    """Validate a deprovision (exit 2 on bad input); nothing is touched."""
    from . import offboard

    return await offboard.plan_deprovision(project, request, driver=driver)


async def deprovision(project: Project, plan: DeprovisionPlan, *, driver: Driver = DRIVER,
                      argv: tuple[str, ...] = ()) -> LifecycleReport:
    """Archive (or not) and drop tenants tenants.yaml no longer lists."""
    from . import offboard

    return await offboard.deprovision(project, plan, driver=driver, argv=argv)


async def restore(project: Project, request: RestoreRequest, *, driver: Driver = DRIVER,
                  argv: tuple[str, ...] = ()) -> LifecycleReport:
    """Recreate a tenant from a deprovision archive at its declared placement."""
    from . import offboard

    return await offboard.restore(project, request, driver=driver, argv=argv)


def lint(project: Project, files: tuple[Path, ...] = (), *, all_files: bool = False) -> LintReport:
    """Lint findings of the folder, or of ``files`` judged after the folder; the
    ``lint:`` block of tenants.yaml applies (``all_files`` lifts its baseline)."""
    return lint_report(load_inputs(project), files, all_files=all_files)


async def check_isolation(project: Project, *, driver: Driver = DRIVER) -> list[IsolationFinding]:
    """Shared mode: catalog audit and live probe of the shared database (two tenants)."""
    from . import isolation, isolation_check
    from .isolation_check import IsolationFinding

    shared = project.file.shared
    server = shared.server or project.default_server
    dsn = server_dsns(project, {server})[server]
    async with await driver.connect(dsn, shared.database) as session:
        await isolation.ensure_registry(session)
        ids = await isolation.registered_ids(session)
    probe = (ids[0], ids[1]) if len(ids) >= 2 else None
    findings = await isolation_check.check_isolation(
        dsn, shared.database, app_role=shared.app_role, owner_role=shared.owner_role,
        global_tables=frozenset(shared.global_tables), probe_tenants=probe,
        tenant_column=project.file.tenant_column, probe_dsn=shared.probe_dsn,
    )
    if probe is None:
        findings.append(IsolationFinding(
            "probe-skipped", None, "fewer than two tenants registered in the shared database: "
            "the live probe needs two", "warning"))
    return findings


@dataclass(frozen=True)
class ReversibleRequest:
    """Which migrations check-reversible checks: ``from_version``..``to_version``
    (inclusive, None: open), and with ``pending`` only those some tenant lacks."""

    from_version: str | None = None
    to_version: str | None = None
    pending: bool = False


@dataclass(frozen=True)
class ReversibleReport:
    checked: tuple[str, ...]  # file names of the migrations checked
    differences: tuple[Difference, ...]
    base: Base
    notes: tuple[str, ...] = ()


async def check_reversible(project: Project, request: ReversibleRequest | None = None, *,
                           driver: Driver = DRIVER) -> ReversibleReport:
    """up -> down -> up of the selected migrations on a scratch database of the default
    server, started from a cached base holding the earlier ones."""
    from .reversible_range import Base, base_database, check_range, pending_versions, select_range
    from .status import fleet_status

    request = request or ReversibleRequest()
    inputs = load_inputs(project)
    parse_all(inputs)  # a broken file is bad input (exit 2) before the scratch database
    chosen = select_range(inputs.migrations, request.from_version, request.to_version,
                          project.migrations_dir.name)
    notes: tuple[str, ...] = ()
    if request.pending and chosen:
        rows = await fleet_status(driver, inputs, project.select((), True), frozenset(),
                                  project.settings.concurrency, orphans=False)
        wanted, notes = pending_versions(inputs.migrations, rows)
        chosen = tuple(m for m in chosen if m.version in wanted)
    if not chosen:
        return ReversibleReport((), (), Base("none", 0), notes)
    dsn = server_dsns(project, {project.default_server})[project.default_server]
    result = await check_range(
        dsn, inputs.migrations, chosen, scratch_name=f"tenantctl_scratch_{uuid.uuid4().hex[:12]}",
        base_name=base_database(project.file.control_database),
        lock_wait=project.settings.lock_wait, driver=driver)
    return ReversibleReport(tuple(m.filename for m in result.checked), tuple(result.differences),
                            result.base, notes)


async def runs(project: Project, *, limit: int = 20, command: str | None = None,
               status: RunStatus | None = None, driver: Driver = DRIVER) -> list[RunRow]:
    """The ledger's newest runs (none when there is no control database yet)."""
    from . import run_history

    async with _control(project, driver) as session:
        if session is None:
            return []
        return await run_history.list_runs(session, limit=limit, command=command, status=status)


async def run_report(project: Project, run_id: str, *,
                     driver: Driver = DRIVER) -> tuple[RunStatus, dict[str, Any]]:
    """One run's status and report, in the shape of its own ``--json`` report."""
    from . import run_history

    async with _control(project, driver) as session:
        if session is None:
            raise BadInputError(f"run {run_id} is not in the ledger: there is no ledger yet")
        return await run_history.run_report(session, run_id)


@asynccontextmanager
async def _control(project: Project, driver: Driver) -> AsyncIterator[Session | None]:
    dsn = server_dsns(project, {project.default_server})[project.default_server]
    try:
        session = await ledger.connect_existing(driver, dsn, project.file.control_database)
    except DatabaseError as exc:
        raise Unreachable(f"control database {project.file.control_database}: {exc.message}",
                          ErrorKind.CONTROL_UNREACHABLE, hint=exc.hint) from exc
    if session is None:
        yield None
        return
    async with session:
        yield session


def new_migration(project: Project, description: str, version: str | None = None) -> list[Path]:
    """Write the next versioned migration file and its ``.down.sql`` companion into
    the migrations folder (neither may exist yet)."""
    from . import scaffold

    folder = project.migrations_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = new_migration_path(folder, description, load_migrations(folder), version)
    one_line = " ".join(description.split())  # a line break would end the comment
    return scaffold.write_new({
        path: NEW_MIGRATION_TEMPLATE.format(description=one_line,
                                          tenant_column=project.file.tenant_column),
        scaffold.down_companion(path): scaffold.NEW_DOWN_TEMPLATE.format(
            filename=path.name, description=one_line),
    })


def init(folder: Path) -> list[Path]:
    """A starter project in ``folder`` (tenants.yaml, a first migration and its
    down script, a seed); refuses (exit 2) if any of those files exists."""
    from . import scaffold

    return scaffold.init_project(folder)


@dataclass(frozen=True)
class EmbeddedStatus:
    pgdata: str
    running: bool
    pid: int | None


def server_start(project: Project) -> str:
    """The default server's DSN, starting the embedded server if that is the one."""
    dsns = server_dsns(project, {project.default_server})
    if not dsns:
        raise ServerError("no default server")
    return dsns[project.default_server]


def server_stop(project: Project) -> bool:
    """Stop the embedded server; False if it was not running."""
    from . import embedded  # subprocess, tempfile, psutil: not needed by a run on a DSN

    return embedded.stop(project.state_dir)


def server_status(project: Project) -> EmbeddedStatus:
    from . import embedded

    pid = embedded.running_pid(project.state_dir)
    return EmbeddedStatus(str(project.state_dir / embedded.PGDATA), pid is not None, pid)
