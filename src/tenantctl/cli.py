"""Command line: the only importer of click. Wiring, output, exit codes.

Heavy modules (pydantic, asyncpg, pglast) are imported inside the commands so
``tenantctl --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, TenantctlError

if TYPE_CHECKING:
    from .commands import PreparedRun
    from .config import Project
    from .outcome import TenantResult

CLNT_ID = click.IntRange(1, 32767)


@dataclass(frozen=True)
class GlobalOptions:
    """The options every command accepts, before or after the subcommand name."""

    config: str | None = None
    dsn: str | None = None
    json: bool = False
    debug: bool = False
    quiet: bool = False
    argv: tuple[str, ...] = ()  # the arguments as given (redacted before they are stored)
    log_format: str | None = None  # text | json (None: text)

    def project(self) -> Project:
        from .config import find_config, load_project

        return load_project(find_config(self.config), dsn=self.dsn)


@dataclass(frozen=True)
class GlobalOption:
    """One global option: ``field`` of :class:`GlobalOptions`, its flags, its help."""

    field: str
    decls: tuple[str, ...]
    help: str
    flag: bool = False
    metavar: str | None = None
    envvar: str | None = None
    type: Any = None  # a click type (click.Choice(...)) for a value option

    def param(self, *, after: bool = False) -> click.Option:
        """The option before the subcommand (``tenantctl --json status``), or after it
        (``tenantctl status --json``: no environment variable there, the group's
        option reads it once)."""
        return click.Option([*self.decls, self.after_name if after else self.field],
                            is_flag=self.flag, metavar=self.metavar, type=self.type,
                            envvar=None if after else self.envvar, help=self.help)

    @property
    def after_name(self) -> str:
        return f"global_{self.field}"


# Adding a global option is one change here: a field of GlobalOptions above and an
# entry below. Every command then accepts it before or after its name.
GLOBAL_OPTIONS: tuple[GlobalOption, ...] = (
    GlobalOption("config", ("--config",), metavar="PATH", envvar="TENANTCTL_CONFIG",
                 help="tenants.yaml to use [env TENANTCTL_CONFIG; default ./tenants.yaml]"),
    GlobalOption("dsn", ("--dsn",), metavar="URL", envvar="TENANTCTL_DSN",
                 help="PostgreSQL URL of the default server [env TENANTCTL_DSN; default: embedded]"),
    GlobalOption("json", ("--json",), flag=True,
                 help="Machine output: one JSON document on stdout."),
    GlobalOption("debug", ("--debug",), flag=True, help="Show tracebacks."),
    GlobalOption("quiet", ("-q", "--quiet"), flag=True, help="No per-tenant progress lines."),
    GlobalOption("log_format", ("--log-format",), type=click.Choice(["text", "json"]),
                 envvar="TENANTCTL_LOG_FORMAT",
                 help="stderr as text (timestamped lines when not a terminal) or one JSON object "
                 "per line [env TENANTCTL_LOG_FORMAT; default text]."),
)


def _apply_global_options(opts: GlobalOptions) -> None:
    """What the global options set up before a command runs: the stderr log."""
    from . import logs

    logs.configure(logs.LogFormat(opts.log_format) if opts.log_format else None, quiet=opts.quiet)


def _given_earlier(ctx: click.Context, option: GlobalOption) -> bool:
    """Was ``option`` on the command line before this command's name (after
    ``tenantctl`` or after an enclosing group's name)?"""
    parent = ctx.parent
    while parent is not None:
        name = option.field if parent.parent is None else option.after_name
        if parent.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            return True
        parent = parent.parent
    return False


def _merge_global_options(ctx: click.Context) -> None:
    """Fold the global options given after the subcommand into ``ctx.obj``.

    Flags given on either side are on. A value given on both sides must be the
    same (a conflict is exit 2, naming the option, never its value: a DSN holds
    a password); given after the subcommand only, it beats the environment.
    """
    before: GlobalOptions = ctx.find_object(GlobalOptions) or GlobalOptions()
    changes: dict[str, Any] = {}
    for option in GLOBAL_OPTIONS:
        after = ctx.params.pop(option.after_name, None)
        if option.field == "json" and ctx.params.get("as_json"):
            after = True  # a command that still declares its own --json (_json_flag)
        if after is None or after is False:
            continue
        if option.flag:
            changes[option.field] = True
            continue
        if _given_earlier(ctx, option) and getattr(before, option.field) != after:
            raise click.UsageError(
                f"{option.decls[-1]} is given before and after `{ctx.info_name}` with different "
                "values: give it once", ctx=ctx)
        changes[option.field] = after
    ctx.obj = replace(before, **changes)
    if changes:
        _apply_global_options(ctx.obj)


class _AfterTheName(click.Command):
    """Accepts the global options after its name too (``tenantctl status --json``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        taken = {opt for param in self.params for opt in param.opts}
        self.params.extend(option.param(after=True) for option in GLOBAL_OPTIONS
                           if not taken.intersection(option.decls))

    def invoke(self, ctx: click.Context) -> Any:
        _merge_global_options(ctx)
        return super().invoke(ctx)


class GlobalCommand(_AfterTheName):
    """Every command of ``cli`` (``@cli.command()`` makes one)."""


class GlobalGroup(_AfterTheName, click.Group):
    """A subgroup (``tenantctl runs``, ``tenantctl server``): global options after
    its name and after its commands' names."""

    command_class = GlobalCommand
    group_class = type


class RootGroup(click.Group):
    """``tenantctl`` itself: its options are the global ones (GLOBAL_OPTIONS)."""

    command_class = GlobalCommand
    group_class = GlobalGroup


def _err(text: str) -> None:
    """A warning on stderr, through the log (``--log-format``)."""
    from . import logs

    logs.warning(text)


@click.group(cls=RootGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tenantctl")
@click.pass_context
def cli(ctx: click.Context, /, **given: Any) -> None:
    """Provision and migrate PostgreSQL databases for a multi-tenant SaaS.

    Exit codes: 0 all good, 1 a tenant failed or drift found, 2 bad input
    (nothing changed), 130 interrupted. Global options may also be given after
    the command (`tenantctl status --json`).
    """
    argv = ctx.obj if isinstance(ctx.obj, tuple) else tuple(sys.argv[1:])
    ctx.obj = GlobalOptions(**given, argv=argv)
    _apply_global_options(ctx.obj)


cli.params[0:0] = [option.param() for option in GLOBAL_OPTIONS]


def _json_flag(f: Any) -> Any:
    """Kept for commands written before --json became global (GLOBAL_OPTIONS gives
    every command --json; read ``opts.json``): declares it as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Machine output: one JSON document on stdout.")(f)


_wave_option = click.option("--wave", "waves", multiple=True, metavar="NAME",
                            help="Only the tenants of wave NAME (repeatable; see waves: in "
                            "tenants.yaml).")
_server_option = click.option(
    "--server", "servers", multiple=True, metavar="NAME",
    help="Only the tenants living on server NAME (repeatable; with no ids: all of them).")


def _run_options(f: Any) -> Any:
    options: list[Callable[[Any], Any]] = [
        click.option("--concurrency", type=click.IntRange(1, 1000), metavar="N",
                     help="Tenants worked on at once [settings.concurrency, default 8]."),
        click.option("--dry-run", is_flag=True, help="Show what would run; change nothing."),
        click.option("--max-failures", type=click.IntRange(1), metavar="N",
                     help="Stop starting tenants after N failures (in-flight ones finish)."),
        click.option("--fail-fast", is_flag=True, help="Same as --max-failures 1."),
        click.option("--lock-timeout", metavar="DURATION",
                     help="lock_timeout of migration sessions, e.g. 5s [settings.lock_timeout]."),
        click.option("--statement-timeout", metavar="DURATION",
                     help="statement_timeout of migration sessions; 0 = none."),
        click.option("--lock-wait", metavar="DURATION",
                     help="How long to wait for another run's per-tenant lock [default 120s]."),
        click.option("--retries", type=click.IntRange(0, 100), metavar="N",
                     help="Retries of a tenant after a transient error [default 3]."),
        click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True),
                     help="Also write the JSON report to FILE."),
        click.option("--junit", "junit_file", type=click.Path(dir_okay=False, writable=True),
                     help="Also write a JUnit XML report (one test case per tenant) to FILE."),
        click.option("--metrics-file", type=click.Path(dir_okay=False, writable=True),
                     metavar="PATH", help="Write the run's Prometheus metrics to PATH "
                     "(atomically; node_exporter textfile collector)."),
        click.option("--only-failed", is_flag=True,
                     help="Only tenants the last run left failed, skipped or unreached."),
        click.option("--resume", "resume_run", metavar="RUN_ID",
                     help="Only tenants that run RUN_ID did not finish."),
        click.argument("ids", nargs=-1, type=CLNT_ID),
        click.option("--all", "all_", is_flag=True, help="Every tenant in tenants.yaml."),
        _wave_option,
        click.option("--wave-pause", metavar="DURATION",
                     help="Wait this long between waves (30s, 5m); Ctrl-C ends the wait."),
        click.option("--no-skip", is_flag=True,
                     help="Open a session on every tenant even where its schema marker says it "
                     "is up to date."),
        click.option("--strict-lint", is_flag=True,
                     help="Refuse to run (exit 2) when lint finds errors [settings.strict_lint]."),
        click.option("--strict", is_flag=True,
                     help="Refuse to run (exit 2) on lint errors or extensions a server lacks."),
        _server_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _run_change_command(opts: GlobalOptions, command: str, flags: dict[str, Any], *,
                        before_run: Callable[[PreparedRun], None] | None = None) -> int:
    """provision / migrate / rollback / repair: validate, run, print; the exit code.
    ``before_run`` sees the validated run before anything changes (confirmation)."""
    import time

    from . import commands, documents, logs, progress, report
    from .metrics import check_path, record_failure, record_run
    from .signals import run_async
    from .steps import Verb

    started = time.monotonic()
    metrics_file = check_path(flags.get("metrics_file"))
    failure_metrics = None if flags["dry_run"] else metrics_file
    try:
        prepared = commands.prepare(opts.project(), Verb(command),
                                    commands.ChangeRequest.from_flags(flags))
        if before_run is not None:
            before_run(prepared)
    except TenantctlError as exc:
        record_failure(failure_metrics, command, exc.exit_code, started)
        raise
    for notice in prepared.notices:
        _err(f"warning: {notice}")
    live = opts.log_format != "json"
    sink = progress.choose(quiet=opts.quiet, dry_run=prepared.options.dry_run, live=live)
    servers = {t.clnt_id: t.server for t in prepared.tenants}

    async def on_result(result: TenantResult) -> None:
        line = report.tenant_line(result, dry_run=prepared.options.dry_run, command=command)
        logs.tenant_result(result, line, server=servers.get(result.clnt_id))
        sink.done(result)

    def on_pause(wave: str | None, seconds: float) -> None:
        logs.warning(f"waiting {seconds:g}s before wave {wave or '(tenants without a wave)'}; "
                     "Ctrl-C stops the run here", wave=wave, pause_ms=int(seconds * 1000))

    try:
        run, interrupted = run_async(
            lambda stop: commands.execute(prepared, on_result=on_result, on_start=sink.start,
                                          stop=stop, argv=opts.argv, on_pause=on_pause))
    except TenantctlError as exc:
        record_failure(failure_metrics, command, exc.exit_code, started)
        raise
    finally:
        sink.close()
    if run is None:
        _err("interrupted: in-flight work was cancelled and rolled back; re-run to finish")
        record_failure(failure_metrics, command, EXIT_INTERRUPTED, started)
        if opts.json:
            click.echo(report.to_json({"error": {"kind": "interrupted", "message": "in-flight work "
                                                 "was cancelled and rolled back",
                                                 "exit_code": EXIT_INTERRUPTED}}))
        return EXIT_INTERRUPTED
    findings = commands.pending_findings(prepared, run)
    if not opts.quiet:
        for finding in findings:
            _err(f"lint {finding.severity}: {report.finding_line(finding)}")
    doc = documents.run_document(run)
    code = documents.run_exit_code(run, interrupted=interrupted)
    for note in run.notes:
        logs.warning(f"note: {note}", run_id=run.run_id)
    logs.run_end(run, code, report.run_summary(run).splitlines()[0])
    record_run(metrics_file, run, code, prepared.inputs.latest)
    documents.write_run_files(run, doc, report_file=flags.get("report_file"),
                              junit_file=flags.get("junit_file"))
    if opts.json:
        click.echo(report.to_json(doc))
    else:
        click.echo(report.run_summary(run))
    return code


@cli.command()
@_run_options
@click.option("--no-template", is_flag=True,
              help="Create databases empty and run every migration (no template clone).")
@click.pass_obj
def provision(opts: GlobalOptions, /, **flags: Any) -> None:
    """Create, migrate, seed and register tenants (idempotent).

    Database-mode tenants get their own database (database_pattern, default
    cvs_client_<clnt_id>), created when missing; shared-mode tenants live in
    the shared database.
    """
    sys.exit(_run_change_command(opts, "provision", flags))


@cli.command()
@_run_options
@click.option("--to", metavar="VERSION", help="Migrate up to this version only.")
@click.option("--allow-drift", is_flag=True,
              help="Migrate even where an applied file was edited (drift is still reported).")
@click.pass_obj
def migrate(opts: GlobalOptions, /, **flags: Any) -> None:
    """Apply pending migrations to tenant databases, many at once."""
    sys.exit(_run_change_command(opts, "migrate", flags))


def _status_report(opts: GlobalOptions, ids: tuple[int, ...], concurrency: int | None,
                   servers: tuple[str, ...], *, verify: bool = False,
                   waves: tuple[str, ...] = ()) -> tuple[Any, bool]:
    """status/verify's report (no locks, no writes), and whether a signal interrupted it."""
    from . import commands
    from .signals import run_async

    project = opts.project()
    report: Any
    if verify:
        report, interrupted = run_async(
            lambda stop: commands.verify(project, ids, concurrency=concurrency, servers=servers))
    else:
        report, interrupted = run_async(lambda stop: commands.status(
            project, ids, concurrency=concurrency, servers=servers, waves=waves))
    if report is None:
        sys.exit(EXIT_INTERRUPTED)
    return report, interrupted


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=None, metavar="N")
@_server_option
@_wave_option
@click.pass_obj
def status(opts: GlobalOptions, ids: tuple[int, ...], concurrency: int | None,
           servers: tuple[str, ...], waves: tuple[str, ...]) -> None:
    """Every tenant: server, mode, database, version, pending migrations, last error.
    Exit 1 when a tenant's server (or database) cannot be reached."""
    from . import documents, report

    result, interrupted = _status_report(opts, ids, concurrency, servers, waves=tuple(waves))
    if opts.json:
        click.echo(report.to_json(documents.status_document(result.rows, result.latest)))
    else:
        click.echo(report.status_table(result.rows))
    sys.exit(documents.status_exit_code(result.rows, interrupted=interrupted))


def must_confirm(what: str, *, yes: bool, listed: bool = False) -> bool:
    """Whether a destructive command must ask now (the rule is confirm.decide's):
    ``--yes`` proceeds; on a terminal (stdin and stderr) it asks; without one, only
    ``listed`` tenants proceed and anything else is exit 2 naming ``what``."""
    from . import confirm

    try:
        tty = sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        tty = False
    decision = confirm.decide(yes=yes, interactive=tty, listed=listed)
    if decision is confirm.Consent.REFUSE:
        raise confirm.refusal(what)
    return decision is confirm.Consent.ASK


def ask(question: str, details: list[str]) -> None:
    """Show ``details`` and ask ``question`` on the terminal (a dialogue, not log
    lines); anything but yes is exit 2 with nothing changed."""
    from .errors import BadInputError

    for line in details:
        click.echo(line, err=True)
    if not click.confirm(question, default=False, err=True):
        raise BadInputError("not confirmed: nothing changed")


def confirm_destructive(question: str, details: list[str], *, yes: bool,
                        listed: bool = False) -> None:
    """Ask before an irreversible change (deprovision): must_confirm, then ask."""
    if must_confirm(question.rstrip("?"), yes=yes, listed=listed):
        ask(question, [f"  {line}" for line in details])


def _revert_preview(opts: GlobalOptions, prepared: PreparedRun) -> tuple[list[str], int]:
    """rollback's dry run (histories read, nothing locked or changed), summarised."""
    from . import commands, confirm
    from .signals import run_async

    dry = replace(prepared, options=replace(prepared.options, dry_run=True))
    run, _ = run_async(lambda stop: commands.execute(dry, stop=stop, argv=opts.argv))
    if run is None:
        sys.exit(EXIT_INTERRUPTED)
    downs = {m.version.text: m.down.path.name for m in prepared.inputs.migrations if m.down}
    return confirm.revert_preview(run, downs)


@cli.command()
@_run_options
@click.option("--to", metavar="VERSION", required=True,
              help="Version to roll back to; 0 = before the first migration.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def rollback(opts: GlobalOptions, /, yes: bool, **flags: Any) -> None:
    """Run down scripts newest-first until tenants are at VERSION.

    Each down script commits with its history row. Refuses (exit 2) before
    changing anything when a needed .down.sql is missing. On a terminal it shows
    what will be reverted and asks first (--yes answers); without one, --all or
    --wave needs --yes, listed clnt_ids proceed.
    """
    from .confirm import describe_selection

    def first_ask(prepared: PreparedRun) -> None:
        selection = describe_selection(
            flags["ids"], flags["waves"], only_failed=flags["only_failed"],
            resume_run=flags["resume_run"], servers=flags["servers"])
        if prepared.options.dry_run or not must_confirm(
                f"rollback {selection}", yes=yes, listed=bool(flags["ids"])):
            return
        lines, changing = _revert_preview(opts, prepared)
        if changing:
            ask(f"rollback: go ahead on {changing} tenant(s)?", lines)
        else:
            for line in lines:  # nothing will change: no question to ask
                click.echo(line, err=True)

    sys.exit(_run_change_command(opts, "rollback", flags, before_run=first_ask))


@cli.command()
@_run_options
@click.pass_obj
def repair(opts: GlobalOptions, /, **flags: Any) -> None:
    """Accept deliberate edits of applied files: re-record their checksums.

    Only tenants with drift are changed; each re-recording is a `repair` row in
    the tenant's history and the run is in the ledger.
    """
    sys.exit(_run_change_command(opts, "repair", flags))


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID)
@click.option("--all", "all_", is_flag=True, help="Every tenant (the default).")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=None, metavar="N")
@_server_option
@click.pass_obj
def verify(opts: GlobalOptions, ids: tuple[int, ...], all_: bool, concurrency: int | None,
           servers: tuple[str, ...]) -> None:
    """Compare each tenant's history with the folder: drift, unknown versions,
    gaps, failed/partial migrations, missing databases. Exit 1 on any finding."""
    from . import documents, report

    result, interrupted = _status_report(opts, ids, concurrency, servers, verify=True)
    if opts.json:
        click.echo(report.to_json(documents.verify_document(result.rows, result.findings)))
    else:
        click.echo(report.verify_text(result.rows, result.findings))
    sys.exit(documents.verify_exit_code(result.findings, interrupted=interrupted))


def _lifecycle(opts: GlobalOptions, as_json: bool, make: Callable[[Project], Any]) -> None:
    """Run baseline/deprovision/restore, print its report, exit 1 if a tenant failed."""
    from . import report
    from .signals import run_async

    project = opts.project()
    result, interrupted = run_async(lambda stop: make(project))
    if result is None:
        sys.exit(EXIT_INTERRUPTED)
    click.echo(report.to_json(result.to_json()) if opts.json or as_json else result.text())
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if result.failed else EXIT_OK))


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID, required=True)
@click.option("--version", "version", metavar="V", help="Record every migration up to V.")
@click.option("--from-flyway", is_flag=True,
              help="Read V from the database's flyway_schema_history (latest successful version).")
@_json_flag
@click.pass_obj
def baseline(opts: GlobalOptions, ids: tuple[int, ...], version: str | None, from_flyway: bool,
             as_json: bool) -> None:
    """Adopt existing databases: create tenantctl's history and record every migration
    up to V as `baseline`, running none. migrate then applies only what follows V."""
    from . import commands

    request = commands.BaselineRequest(ids, version, from_flyway)
    _lifecycle(opts, as_json, lambda p: commands.baseline(p, request, argv=opts.argv))


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID, required=True)
@click.option("--archive", "archive_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write DIR/<database>-<UTC timestamp>.dump and its sha256 manifest first.")
@click.option("--no-archive", is_flag=True, help="Drop without an archive.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required without a TTY).")
@_json_flag
@click.pass_obj
def deprovision(opts: GlobalOptions, ids: tuple[int, ...], archive_dir: Path | None,
                no_archive: bool, yes: bool, as_json: bool) -> None:
    """Remove tenants no longer in tenants.yaml: archive (pg_dump), drop the database,
    mark the registry row deprovisioned."""
    from . import commands
    from .signals import run_async

    project = opts.project()
    request = commands.DeprovisionRequest(ids, archive_dir, no_archive)
    plan, _ = run_async(lambda stop: commands.plan_deprovision(project, request))
    if plan is None:
        sys.exit(EXIT_INTERRUPTED)
    confirm_destructive(f"Deprovision {len(plan.tenants)} tenant(s)?", plan.lines(), yes=yes)
    _lifecycle(opts, as_json, lambda p: commands.deprovision(p, plan, argv=opts.argv))


@cli.command()
@click.argument("clnt_id", type=CLNT_ID)
@click.option("--from", "archive", required=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path), help="The .dump deprovision wrote.")
@_json_flag
@click.pass_obj
def restore(opts: GlobalOptions, clnt_id: int, archive: Path, as_json: bool) -> None:
    """Recreate a tenant from a deprovision archive at the placement tenants.yaml declares."""
    from . import commands

    request = commands.RestoreRequest(clnt_id, archive)
    _lifecycle(opts, as_json, lambda p: commands.restore(p, request, argv=opts.argv))


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID, required=True)
@click.option("--dry-run", is_flag=True, help="Say what would be moved; change nothing.")
@click.option("--keep-source", is_flag=True,
              help="Keep the old database renamed <name>_moved_<time> (tagged moved:<id>, "
                   "no connections), or a shared tenant's rows, instead of removing them.")
@_json_flag
@click.pass_obj
def move(opts: GlobalOptions, ids: tuple[int, ...], dry_run: bool, keep_source: bool,
         as_json: bool) -> None:
    """Move tenants' data to the placement tenants.yaml declares (another server or
    database name, shared <-> dedicated): copy, verify every table, switch the
    registry, remove the source. Exit 1 if any tenant failed."""
    from . import move as moving
    from . import report
    from .signals import run_async

    project = opts.project()
    result, interrupted = run_async(lambda stop: moving.move(
        project, ids, dry_run=dry_run, keep_source=keep_source, argv=opts.argv, stop=stop))
    if result is None:
        _err("interrupted: an unfinished move is finished or undone by the next `tenantctl move`")
        sys.exit(EXIT_INTERRUPTED)
    if opts.json or as_json:
        click.echo(report.to_json(result.to_json()))
    else:
        for row in result.tenants:
            click.echo(row.line())
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if result.failed else EXIT_OK))


@cli.command("check-isolation")
@click.pass_obj
def check_isolation(opts: GlobalOptions) -> None:
    """Shared mode: RLS coverage of every table with the tenant column (tenant_column,
    default clnt_id), the app role's rights, and a live probe as the app role with
    two tenants. Exit 1 naming every offender."""
    from . import commands, report
    from .signals import run_async

    project = opts.project()
    found, interrupted = run_async(lambda stop: commands.check_isolation(project))
    if found is None:
        sys.exit(EXIT_INTERRUPTED)
    database = project.file.shared.database
    click.echo(report.to_json(report.isolation_doc(database, found)) if opts.json
               else report.isolation_text(database, found))
    errors = any(f.severity == "error" for f in found)
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if errors else EXIT_OK))


@cli.command("check-reversible")
@click.option("--from", "from_version", metavar="V", help="Check from version V (earlier ones are "
              "only applied, from a cached base database).")
@click.option("--to", "to_version", metavar="W", help="Check up to version W (later ones are not run).")
@click.option("--pending", is_flag=True,
              help="Only migrations that some tenant in tenants.yaml has not applied yet.")
@click.pass_obj
def check_reversible(opts: GlobalOptions, from_version: str | None, to_version: str | None,
                     pending: bool) -> None:
    """On a scratch database, apply each migration up, down, up again and compare
    the schema snapshots; one line per object that differs (details with --json).
    Exit 1 on any difference."""
    from . import commands, report
    from .signals import run_async

    project = opts.project()
    request = commands.ReversibleRequest(from_version, to_version, pending)
    outcome, interrupted = run_async(lambda stop: commands.check_reversible(project, request))
    if outcome is None:
        sys.exit(EXIT_INTERRUPTED)
    if opts.json:
        click.echo(report.to_json(report.reversible_doc(request, outcome)))
    else:
        for note in outcome.notes:
            _err(f"note: {note}")
        click.echo(report.reversible_text(outcome))
    found = bool(outcome.differences)
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if found else EXIT_OK))


@cli.command()
@click.argument("description")
@click.option("--version", "version", metavar="V", help="Version to use instead of the next one.")
@click.pass_obj
def new(opts: GlobalOptions, description: str, version: str | None) -> None:
    """Write the next versioned migration file and its .down.sql into migrations/."""
    from . import commands

    for path in commands.new_migration(opts.project(), description, version):
        click.echo(str(path))


@cli.command()
@click.argument("folder", required=False, default=".",
                type=click.Path(file_okay=False, path_type=Path))
def init(folder: Path) -> None:
    """Start a project in FOLDER (default: here): tenants.yaml, migrations/ with a
    first migration and its down script, and seed/. Never overwrites a file."""
    from . import commands

    for path in commands.init(folder):
        click.echo(str(path))


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--all-files", is_flag=True,
              help="Also report findings in migrations at or below lint.baseline of tenants.yaml.")
@click.pass_obj
def lint(opts: GlobalOptions, files: tuple[Path, ...], all_files: bool) -> None:
    """Check migrations for risky DDL and tenancy rules (default: all of migrations/).

    Exit 1 when a rule of severity error fires. Accept a rule deliberately in
    the file with `-- tenantctl: allow <rule-id>`, or project-wide in the
    `lint:` block of tenants.yaml (disable, severity, exclude, baseline).
    """
    from . import commands, report

    result = commands.lint(opts.project(), files, all_files=all_files)
    click.echo(report.to_json(report.lint_doc(result)) if opts.json else report.lint_text(result))
    sys.exit(EXIT_FAILED if any(f.severity == "error" for f in result.findings) else EXIT_OK)


@cli.group(invoke_without_command=True)
@click.option("--limit", type=click.IntRange(1, 100000), default=20, show_default=True, metavar="N")
@click.option("--command", "command_name", metavar="C",
              type=click.Choice(["provision", "migrate", "rollback", "repair"]),
              help="Only runs of this command.")
@click.option("--status", "status_name", metavar="S",
              type=click.Choice(["running", "ok", "failed", "interrupted", "abandoned"]),
              help="Only runs with this status.")
@_json_flag
@click.pass_context
def runs(ctx: click.Context, limit: int, command_name: str | None, status_name: str | None,
         as_json: bool) -> None:
    """The run ledger, newest first: status (running, ok, failed, interrupted,
    abandoned), when, how long, tenants per outcome, who and where.

    `tenantctl runs show RUN_ID` prints one run's report."""
    if ctx.invoked_subcommand is not None:
        return
    from . import commands, report
    from .run_history import RunStatus
    from .signals import run_async

    opts: GlobalOptions = ctx.obj
    project = opts.project()
    status = RunStatus(status_name) if status_name else None
    rows, _ = run_async(lambda stop: commands.runs(project, limit=limit, command=command_name,
                                                   status=status))
    if rows is None:
        sys.exit(EXIT_INTERRUPTED)
    if opts.json or as_json:
        click.echo(report.to_json({"runs": [r.to_json() for r in rows]}))
    else:
        click.echo(report.runs_table(rows))


@runs.command("show")
@click.argument("run_id")
@_json_flag
@click.pass_obj
def runs_show(opts: GlobalOptions, run_id: str, as_json: bool) -> None:
    """One run's per-tenant report, as its own --json report had it."""
    from . import commands, report
    from .run_history import text_report
    from .signals import run_async

    project = opts.project()
    found, _ = run_async(lambda stop: commands.run_report(project, run_id))
    if found is None:
        sys.exit(EXIT_INTERRUPTED)
    status, doc = found
    if opts.json or as_json:
        click.echo(report.to_json(doc))
    else:
        click.echo("\n".join(text_report(status, doc)))


@cli.group()
def server() -> None:
    """The embedded PostgreSQL used when no server is configured."""


@server.command("start")
@click.pass_obj
def server_start(opts: GlobalOptions) -> None:
    """Start the embedded server (commands also start it on demand)."""
    from . import commands
    from .redact import redact_dsn

    click.echo(redact_dsn(commands.server_start(opts.project())))


@server.command("stop")
@click.pass_obj
def server_stop(opts: GlobalOptions) -> None:
    """Stop the embedded server kept next to tenants.yaml."""
    from . import commands

    click.echo("stopped" if commands.server_stop(opts.project()) else "not running")


@server.command("status")
@click.pass_obj
def server_status(opts: GlobalOptions) -> None:
    """Is the embedded server running, and where is its data."""
    from . import commands, report

    info = commands.server_status(opts.project())
    if opts.json:
        click.echo(report.to_json({"pgdata": info.pgdata, "running": info.running, "pid": info.pid}))
    else:
        state = f"running (pid {info.pid})" if info.running else "stopped"
        click.echo(f"{state}: {info.pgdata}")


def _fail(exc: TenantctlError, *, debug: bool, as_json: bool) -> NoReturn:
    from . import logs
    from .redact import redact

    if debug:
        traceback.print_exc()
    message, hint = redact(exc.message), redact(exc.hint) if exc.hint else None
    logs.error(f"tenantctl: error: {message}" + (f"\nhint: {hint}" if hint else ""),
               kind=exc.kind.value, exit_code=exc.exit_code)
    if as_json:
        import json

        click.echo(json.dumps({"error": {"kind": exc.kind.value, "message": message, "hint": hint,
                                         "exit_code": exc.exit_code}}))
    sys.exit(exc.exit_code)


def entry() -> NoReturn:
    """The ``tenantctl`` program (console script and ``python -m tenantctl``):
    :func:`main`, then the process ends without tearing the interpreter down.

    Tearing down frees every object of the ~400 modules a run imports (pydantic's
    schemas, pglast's node classes, asyncpg): about 50 ms of CPU after the run's
    work and output are done, measured on the nightly path. Here the output
    streams and the log handlers are flushed, then ``os._exit`` ends the process
    with main's exit code. Nothing else waits for the end of the interpreter: a
    run closes its sessions and writes its cache and metrics files before main
    returns. An unexpected exception (a bug) still ends the normal way, with its
    traceback. In-process callers (tests, the Python API) call :func:`main`.
    """
    import logging
    import os

    try:
        main()
        code: int = EXIT_OK
    except SystemExit as exc:
        code = _exit_code(exc.code)
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # reader gone (`| head`), or stdout closed
        code = code or EXIT_FAILED
    with contextlib.suppress(BrokenPipeError, ValueError):
        sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _exit_code(code: object) -> int:
    """What ``sys.exit(code)`` would have made the process exit with."""
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)  # sys.exit("message"): printed, exit 1
    return 1


def main(argv: list[str] | None = None) -> None:
    from . import logs

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _main(args)
    finally:
        logs.reset()


def _main(args: list[str]) -> None:
    try:
        cli.main(args, prog_name="tenantctl", standalone_mode=False, obj=tuple(args))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_BAD_INPUT)
    except click.exceptions.Abort:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except TenantctlError as exc:
        _fail(exc, debug="--debug" in args, as_json="--json" in args)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_OK)
