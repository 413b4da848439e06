"""Command line: the only importer of click. Wiring, output, exit codes.

Heavy modules (pydantic, asyncpg, pglast) are imported inside the commands so
``tenantctl --help`` stays fast.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, TenantctlError

if TYPE_CHECKING:
    from .commands import ChangeRequest
    from .config import Project
    from .outcome import TenantResult

CLNT_ID = click.IntRange(1, 32767)


@dataclass
class GlobalOptions:
    """The options every command accepts (given before the subcommand)."""

    config: str | None
    dsn: str | None
    json: bool
    debug: bool
    quiet: bool
    argv: tuple[str, ...] = ()  # the arguments as given (redacted before they are stored)
    log_format: str | None = None  # text | json (None: text)

    def project(self) -> Project:
        from .config import find_config, load_project

        return load_project(find_config(self.config), dsn=self.dsn)


def _err(text: str) -> None:
    """A warning on stderr, through the log (``--log-format``)."""
    from . import logs

    logs.warning(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config", metavar="PATH", envvar="TENANTCTL_CONFIG",
              help="tenants.yaml to use [env TENANTCTL_CONFIG; default ./tenants.yaml]")
@click.option("--dsn", metavar="URL", envvar="TENANTCTL_DSN",
              help="PostgreSQL URL of the default server [env TENANTCTL_DSN; default: embedded]")
@click.option("--json", "as_json", is_flag=True, help="Machine output: one JSON document on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="No per-tenant progress lines.")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="TENANTCTL_LOG_FORMAT",
              help="stderr as text (timestamped lines when not a terminal) or one JSON object "
              "per line [env TENANTCTL_LOG_FORMAT; default text].")
@click.version_option(package_name="tenantctl")
@click.pass_context
def cli(ctx: click.Context, config: str | None, dsn: str | None, as_json: bool, debug: bool,
        quiet: bool, log_format: str | None) -> None:
    """Provision and migrate PostgreSQL databases for a multi-tenant SaaS.

    Exit codes: 0 all good, 1 a tenant failed or drift found, 2 bad input
    (nothing changed), 130 interrupted.
    """
    from . import logs

    argv = ctx.obj if isinstance(ctx.obj, tuple) else tuple(sys.argv[1:])
    ctx.obj = GlobalOptions(config, dsn, as_json, debug, quiet, argv, log_format)
    logs.configure(logs.LogFormat(log_format) if log_format else None, quiet=quiet)


def _json_flag(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True,
                        help="Machine output: one JSON document on stdout.")(f)


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
        _json_flag,
        click.argument("ids", nargs=-1, type=CLNT_ID),
        click.option("--all", "all_", is_flag=True, help="Every tenant in tenants.yaml."),
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


def _change_request(flags: dict[str, Any]) -> ChangeRequest:
    """The typed request behind provision/migrate/rollback/repair's click flags."""
    from .commands import ChangeRequest

    return ChangeRequest(
        ids=tuple(flags["ids"]), all=flags["all_"], to=flags.get("to"),
        dry_run=flags["dry_run"], concurrency=flags["concurrency"],
        max_failures=flags["max_failures"], fail_fast=flags["fail_fast"],
        lock_timeout=flags["lock_timeout"], statement_timeout=flags["statement_timeout"],
        lock_wait=flags["lock_wait"], retries=flags["retries"],
        only_failed=flags["only_failed"], resume_run=flags["resume_run"],
        allow_drift=flags.get("allow_drift", False), no_skip=flags["no_skip"],
        no_template=flags.get("no_template", False), strict_lint=flags["strict_lint"],
        strict=flags["strict"], servers=tuple(flags["servers"]),
    )


def _run_change_command(opts: GlobalOptions, command: str, flags: dict[str, Any]) -> int:
    """provision / migrate / rollback / repair: validate, run, print; the exit code."""
    import time

    from . import commands, logs, progress, report
    from .metrics import check_path, record_failure, record_run
    from .signals import run_async
    from .steps import Verb

    started = time.monotonic()
    metrics_file = check_path(flags.get("metrics_file"))
    failure_metrics = None if flags["dry_run"] else metrics_file
    try:
        prepared = commands.prepare(opts.project(), Verb(command), _change_request(flags))
    except TenantctlError as exc:
        record_failure(failure_metrics, command, exc.exit_code, started)
        raise
    for notice in prepared.notices:
        _err(f"warning: {notice}")
    live = opts.log_format != "json"
    sink = progress.choose(quiet=opts.quiet, dry_run=prepared.options.dry_run, live=live)
    servers = {t.clnt_id: t.server for t in prepared.tenants}

    async def on_result(result: TenantResult) -> None:
        logs.tenant_result(result, report.tenant_line(result, dry_run=prepared.options.dry_run),
                           server=servers.get(result.clnt_id))
        sink.done(result)

    try:
        run, interrupted = run_async(
            lambda stop: commands.execute(prepared, on_result=on_result, on_start=sink.start,
                                          stop=stop, argv=opts.argv))
    except TenantctlError as exc:
        record_failure(failure_metrics, command, exc.exit_code, started)
        raise
    finally:
        sink.close()
    if run is None:
        _err("interrupted: in-flight work was cancelled and rolled back; re-run to finish")
        record_failure(failure_metrics, command, EXIT_INTERRUPTED, started)
        if opts.json or flags["as_json"]:
            click.echo(report.to_json({"error": {"kind": "interrupted", "message": "in-flight work "
                                                 "was cancelled and rolled back",
                                                 "exit_code": EXIT_INTERRUPTED}}))
        return EXIT_INTERRUPTED
    findings = commands.pending_findings(prepared, run)
    if not opts.quiet:
        for finding in findings:
            _err(f"lint {finding.severity}: {report.finding_line(finding)}")
    doc = run.to_json()
    code = EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if run.failed else EXIT_OK)
    for note in run.notes:
        logs.warning(f"note: {note}", run_id=run.run_id)
    logs.run_end(run, code, report.run_summary(run).splitlines()[0])
    record_run(metrics_file, run, code, prepared.inputs.latest)
    if flags.get("report_file"):
        Path(flags["report_file"]).write_text(report.to_json(doc) + "\n", encoding="utf-8")
    if flags.get("junit_file"):
        Path(flags["junit_file"]).write_text(report.junit_xml(run) + "\n", encoding="utf-8")
    if opts.json or flags["as_json"]:
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
                   servers: tuple[str, ...], *, verify: bool = False) -> tuple[Any, bool]:
    """status/verify's report (no locks, no writes), and whether a signal interrupted it."""
    from . import commands
    from .signals import run_async

    project = opts.project()
    read = commands.verify if verify else commands.status
    report, interrupted = run_async(
        lambda stop: read(project, ids, concurrency=concurrency, servers=servers))
    if report is None:
        sys.exit(EXIT_INTERRUPTED)
    return report, interrupted


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=None, metavar="N")
@_server_option
@_json_flag
@click.pass_obj
def status(opts: GlobalOptions, ids: tuple[int, ...], concurrency: int | None,
           servers: tuple[str, ...], as_json: bool) -> None:
    """Every tenant: server, mode, database, version, pending migrations, last error.
    Exit 1 when a tenant's server (or database) cannot be reached."""
    from . import report

    result, interrupted = _status_report(opts, ids, concurrency, servers)
    if opts.json or as_json:
        click.echo(report.to_json({"tenants": [r.to_json() for r in result.rows],
                                   "latest": result.latest,
                                   "servers": report.servers_json(result.rows)}))
    else:
        click.echo(report.status_table(result.rows))
    unreachable = any(r.state == "unreachable" for r in result.rows)
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if unreachable else EXIT_OK))


@cli.command()
@_run_options
@click.option("--to", metavar="VERSION", required=True, help="Version to roll back to.")
@click.pass_obj
def rollback(opts: GlobalOptions, /, **flags: Any) -> None:
    """Run down scripts newest-first until tenants are at VERSION.

    Each down script commits with its history row. Refuses (exit 2) before
    changing anything when a needed .down.sql is missing.
    """
    sys.exit(_run_change_command(opts, "rollback", flags))


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
@_json_flag
@click.pass_obj
def verify(opts: GlobalOptions, ids: tuple[int, ...], all_: bool, concurrency: int | None,
           servers: tuple[str, ...], as_json: bool) -> None:
    """Compare each tenant's history with the folder: drift, unknown versions,
    gaps, failed/partial migrations, missing databases. Exit 1 on any finding."""
    from . import report

    result, interrupted = _status_report(opts, ids, concurrency, servers, verify=True)
    if opts.json or as_json:
        click.echo(report.to_json({
            "findings": [f.to_json() for f in result.findings],
            "tenants": [{"clnt_id": r.clnt_id, "database": r.database, "version": r.version,
                         "pending": r.pending, "state": r.state} for r in result.rows],
        }))
    else:
        click.echo(report.verify_text(result.rows, result.findings))
    failed = EXIT_FAILED if result.findings else EXIT_OK
    sys.exit(EXIT_INTERRUPTED if interrupted else failed)


def confirm_destructive(question: str, details: list[str], *, yes: bool) -> None:
    """Ask before an irreversible change: on a terminal, a y/N question (no: exit 2,
    nothing changed); without one, ``--yes`` is required (exit 2 otherwise)."""
    from .errors import BadInputError

    if yes:
        return
    try:
        tty = sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):
        tty = False
    if not tty:
        raise BadInputError(f"{question} needs confirmation, and there is no terminal to ask on",
                            hint="pass --yes to confirm without a terminal")
    for line in details:
        _err(f"  {line}")
    if not click.confirm(question, default=False, err=True):
        raise BadInputError("not confirmed: nothing changed")


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


@cli.command("check-isolation")
@_json_flag
@click.pass_obj
def check_isolation(opts: GlobalOptions, as_json: bool) -> None:
    """Shared mode: RLS coverage of every table with the tenant column (tenant_column,
    default clnt_id), the app role's rights, and a live probe as the app role with
    two tenants. Exit 1 naming every offender."""
    from . import commands, report
    from .signals import run_async

    project = opts.project()
    found, interrupted = run_async(lambda stop: commands.check_isolation(project))
    if found is None:
        sys.exit(EXIT_INTERRUPTED)
    errors = [f for f in found if f.severity == "error"]
    if opts.json or as_json:
        click.echo(report.to_json({"database": project.file.shared.database,
                                   "isolated": not errors,
                                   "findings": [f.to_json() for f in found]}))
    else:
        for f in found:
            click.echo(f"{f.severity}: [{f.check}] {f.message}")
        click.echo(f"{project.file.shared.database}: "
                   + ("isolated" if not errors else f"NOT isolated: {len(errors)} error(s)"))
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if errors else EXIT_OK))


@cli.command("check-reversible")
@click.option("--from", "from_version", metavar="V", help="Check from version V (earlier ones are "
              "only applied, from a cached base database).")
@click.option("--to", "to_version", metavar="W", help="Check up to version W (later ones are not run).")
@click.option("--pending", is_flag=True,
              help="Only migrations that some tenant in tenants.yaml has not applied yet.")
@_json_flag
@click.pass_obj
def check_reversible(opts: GlobalOptions, from_version: str | None, to_version: str | None,
                     pending: bool, as_json: bool) -> None:
    """On a scratch database, apply each migration up, down, up again and compare
    the schema snapshots; one line per object that differs (details with --json).
    Exit 1 on any difference."""
    from . import commands, report
    from .reversible_report import group_differences
    from .signals import run_async

    project = opts.project()
    request = commands.ReversibleRequest(from_version, to_version, pending)
    outcome, interrupted = run_async(lambda stop: commands.check_reversible(project, request))
    if outcome is None:
        sys.exit(EXIT_INTERRUPTED)
    found = list(outcome.differences)
    groups = group_differences(found)
    if opts.json or as_json:
        click.echo(report.to_json({
            "differences": [d.to_json() for d in found], "migrations": len(outcome.checked),
            "checked": list(outcome.checked), "objects": [g.to_json() for g in groups],
            "range": {"from": from_version, "to": to_version, "pending": pending},
            "base": outcome.base.to_json(), "notes": list(outcome.notes)}))
    else:
        for note in outcome.notes:
            _err(f"note: {note}")
        if outcome.base.line:
            click.echo(outcome.base.line)
        for group in groups:
            click.echo(group.line)
        objects = f" in {len(groups)} object(s)" if found else ""
        more = "; details: --json" if len(groups) < len(found) else ""
        click.echo(f"{len(outcome.checked)} migration(s) checked up -> down -> up: "
                   f"{len(found)} difference(s){objects}{more}")
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if found else EXIT_OK))


@cli.command()
@click.argument("description")
@click.option("--version", "version", metavar="V", help="Version to use instead of the next one.")
@click.pass_obj
def new(opts: GlobalOptions, description: str, version: str | None) -> None:
    """Write the next versioned migration file into migrations/."""
    from . import commands

    click.echo(str(commands.new_migration(opts.project(), description, version)))


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--all-files", is_flag=True,
              help="Also report findings in migrations at or below lint.baseline of tenants.yaml.")
@_json_flag
@click.pass_obj
def lint(opts: GlobalOptions, files: tuple[Path, ...], all_files: bool, as_json: bool) -> None:
    """Check migrations for risky DDL and tenancy rules (default: all of migrations/).

    Exit 1 when a rule of severity error fires. Accept a rule deliberately in
    the file with `-- tenantctl: allow <rule-id>`, or project-wide in the
    `lint:` block of tenants.yaml (disable, severity, exclude, baseline).
    """
    from . import commands, report
    from .lint import RULES

    result = commands.lint(opts.project(), files, all_files=all_files)
    findings = result.findings
    errors = sum(1 for f in findings if f.severity == "error")
    if opts.json or as_json:
        click.echo(report.to_json({"findings": [f.to_json() for f in findings],
                                   "errors": errors, "rules": sorted(RULES),
                                   "baseline": result.baseline, "hidden_by_baseline": result.hidden}))
    else:
        for f in findings:
            click.echo(f"{f.severity}: {report.finding_line(f)}")
            click.echo(f"    hint: {f.hint}")
        hidden = (f" ({result.hidden} more in migrations at or below the baseline "
                  f"{result.baseline}; --all-files shows them)" if result.hidden else "")
        click.echo(f"{len(findings)} finding(s), {errors} error(s){hidden}")
    sys.exit(EXIT_FAILED if errors else EXIT_OK)


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
@_json_flag
@click.pass_obj
def server_status(opts: GlobalOptions, as_json: bool) -> None:
    """Is the embedded server running, and where is its data."""
    from . import commands, report

    info = commands.server_status(opts.project())
    if opts.json or as_json:
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
