"""Command line: the only importer of click. Wiring, output, exit codes.

Heavy modules (pydantic, asyncpg, pglast) are imported inside the commands so
``tenantctl --help`` stays fast.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, TenantctlError

CLNT_ID = click.IntRange(1, 32767)


@dataclass
class Globals:
    config: str | None
    dsn: str | None
    json: bool
    debug: bool
    quiet: bool
    argv: tuple[str, ...] = ()  # the arguments as given (redacted before they are stored)

    def project(self) -> Any:
        from .config import find_config, load_project

        return load_project(find_config(self.config), dsn=self.dsn)


def _err(text: str) -> None:
    click.echo(text, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config", metavar="PATH", envvar="TENANTCTL_CONFIG",
              help="tenants.yaml to use [env TENANTCTL_CONFIG; default ./tenants.yaml]")
@click.option("--dsn", metavar="URL", envvar="TENANTCTL_DSN",
              help="PostgreSQL URL of the default server [env TENANTCTL_DSN; default: embedded]")
@click.option("--json", "as_json", is_flag=True, help="Machine output: one JSON document on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="No per-tenant progress lines.")
@click.version_option(package_name="tenantctl")
@click.pass_context
def cli(ctx: click.Context, config: str | None, dsn: str | None, as_json: bool, debug: bool,
        quiet: bool) -> None:
    """Provision and migrate PostgreSQL databases for a multi-tenant SaaS.

    Exit codes: 0 all good, 1 a tenant failed or drift found, 2 bad input
    (nothing changed), 130 interrupted.
    """
    argv = ctx.obj if isinstance(ctx.obj, tuple) else tuple(sys.argv[1:])
    ctx.obj = Globals(config, dsn, as_json, debug, quiet, argv)


def _json_flag(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True,
                        help="Machine output: one JSON document on stdout.")(f)


def _run_options(f: Any) -> Any:
    options = [
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
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _options(g: Globals, project: Any, command: str, kw: dict[str, Any], target: Any) -> Any:
    from .config import parse_duration
    from .engine import RunOptions
    from .errors import BadInputError

    s = project.settings

    def duration(name: str, default: float) -> float:
        raw = kw.get(name)
        if raw is None:
            return default
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise BadInputError(f"--{name.replace('_', '-')}: {exc}") from None

    return RunOptions(
        command=command,
        target=target,
        dry_run=kw["dry_run"],
        concurrency=kw["concurrency"] or s.concurrency,
        max_failures=1 if kw["fail_fast"] else kw["max_failures"],
        lock_timeout=duration("lock_timeout", s.lock_timeout),
        statement_timeout=duration("statement_timeout", s.statement_timeout),
        lock_wait=duration("lock_wait", s.lock_wait),
        retries=s.retries if kw["retries"] is None else kw["retries"],
        allow_drift=kw.get("allow_drift", False),
        skip_marked=not kw["no_skip"],
        use_template=not kw.get("no_template", False),
    )


def _changes(g: Globals, command: str, kw: dict[str, Any]) -> int:
    from . import app, report

    from . import progress

    project = g.project()
    resume = kw["resume_run"] or kw["only_failed"]
    if kw["resume_run"] and kw["only_failed"]:
        from .errors import BadInputError

        raise BadInputError("give --only-failed or --resume RUN_ID, not both")
    tenants = project.select(tuple(kw["ids"]), kw["all_"] or (bool(resume) and not kw["ids"]))
    inputs = app.load_inputs(project, with_seed=command in ("provision", "migrate"))
    target = app.resolve_target(inputs, kw.get("to"))
    if command == "rollback":
        app.check_rollback_inputs(inputs, target)
    options = _options(g, project, command, kw, target)
    as_json = g.json or kw["as_json"]
    for notice in inputs.notices:
        _err(f"warning: {notice}")
    findings = app.lint(inputs)
    if kw["strict_lint"] or project.settings.strict_lint:
        app.refuse_on_lint_errors(findings)
    for f in findings:
        _err(f"lint {f.severity}: {report.finding_line(f)}")
    sink = progress.choose(quiet=g.quiet, dry_run=options.dry_run)

    async def on_result(result: Any) -> None:
        sink.done(result)

    try:
        run, interrupted = app.run_async(
            lambda stop: app.run_changes(inputs, tenants, options, on_result=on_result,
                                         on_start=sink.start, stop=stop, resume=resume,
                                         argv=g.argv)
        )
    finally:
        sink.close()
    if run is None:
        _err("interrupted: in-flight work was cancelled and rolled back; re-run to finish")
        return EXIT_INTERRUPTED
    doc = run.to_json()
    doc["lint"] = [f.to_json() for f in findings]
    if kw.get("report_file"):
        Path(kw["report_file"]).write_text(report.to_json(doc) + "\n", encoding="utf-8")
    if kw.get("junit_file"):
        Path(kw["junit_file"]).write_text(report.junit_xml(run) + "\n", encoding="utf-8")
    if as_json:
        click.echo(report.to_json(doc))
    else:
        click.echo(report.run_summary(run))
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if run.failed else EXIT_OK


@cli.command()
@_run_options
@click.pass_obj
@click.option("--no-template", is_flag=True,
              help="Create databases empty and run every migration (no template clone).")
def provision(g: Globals, **kw: Any) -> None:
    """Create, migrate, seed and register tenants (idempotent).

    Database-mode tenants get their own database (cvs_client_<clnt_id>),
    created when missing; shared-mode tenants live in the shared database.
    """
    sys.exit(_changes(g, "provision", kw))


@cli.command()
@_run_options
@click.option("--to", metavar="VERSION", help="Migrate up to this version only.")
@click.option("--allow-drift", is_flag=True,
              help="Migrate even where an applied file was edited (drift is still reported).")
@click.pass_obj
def migrate(g: Globals, **kw: Any) -> None:
    """Apply pending migrations to tenant databases, many at once."""
    sys.exit(_changes(g, "migrate", kw))


def _status_rows(g: Globals, ids: tuple[int, ...], concurrency: int | None) -> Any:
    """Read every selected tenant's history (no locks, no writes): for status and verify."""
    from . import app

    project = g.project()
    tenants = project.select(ids, not ids)
    inputs = app.load_inputs(project)
    rows, interrupted = app.run_async(
        lambda stop: app.collect_status(inputs, tenants, concurrency or project.settings.concurrency)
    )
    if rows is None:
        sys.exit(EXIT_INTERRUPTED)
    return inputs, rows, interrupted


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=None, metavar="N")
@_json_flag
@click.pass_obj
def status(g: Globals, ids: tuple[int, ...], concurrency: int | None, as_json: bool) -> None:
    """Every tenant: mode, database, version, pending migrations, last error."""
    from . import report

    inputs, rows, interrupted = _status_rows(g, ids, concurrency)
    if g.json or as_json:
        click.echo(report.to_json({"tenants": rows, "latest": inputs.migrations[-1].version.text
                                   if inputs.migrations else None}))
    else:
        click.echo(report.status_table(rows))
    sys.exit(EXIT_INTERRUPTED if interrupted else EXIT_OK)


@cli.command()
@_run_options
@click.option("--to", metavar="VERSION", required=True, help="Version to roll back to.")
@click.pass_obj
def rollback(g: Globals, **kw: Any) -> None:
    """Run down scripts newest-first until tenants are at VERSION.

    Each down script commits with its history row. Refuses (exit 2) before
    changing anything when a needed .down.sql is missing.
    """
    sys.exit(_changes(g, "rollback", kw))


@cli.command()
@_run_options
@click.pass_obj
def repair(g: Globals, **kw: Any) -> None:
    """Accept deliberate edits of applied files: re-record their checksums.

    Only tenants with drift are changed; each re-recording is a `repair` row in
    the tenant's history and the run is in the ledger.
    """
    sys.exit(_changes(g, "repair", kw))


@cli.command()
@click.argument("ids", nargs=-1, type=CLNT_ID)
@click.option("--all", "all_", is_flag=True, help="Every tenant (the default).")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=None, metavar="N")
@_json_flag
@click.pass_obj
def verify(g: Globals, ids: tuple[int, ...], all_: bool, concurrency: int | None,
           as_json: bool) -> None:
    """Compare each tenant's history with the folder: drift, unknown versions,
    failed/partial migrations, missing databases. Exit 1 on any finding."""
    from . import app, report

    inputs, rows, interrupted = _status_rows(g, ids, concurrency)
    findings = app.verify_findings(rows)
    if g.json or as_json:
        click.echo(report.to_json({
            "findings": findings,
            "tenants": [{k: r[k] for k in ("clnt_id", "database", "version", "pending", "state")}
                        for r in rows],
        }))
    else:
        for f in findings:
            where = f" {f['file'] or ''} (version {f['version']})" if f["version"] else ""
            click.echo(f"clnt_id {f['clnt_id']} {f['database']}: {f['kind']}{where}: {f['detail']}")
        pending = sum(r["pending"] or 0 for r in rows)
        click.echo(f"{len(rows)} tenant(s) checked: {len(findings)} finding(s); "
                   f"{pending} pending migration(s) in all")
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if findings else EXIT_OK))


@cli.command("check-isolation")
@_json_flag
@click.pass_obj
def check_isolation(g: Globals, as_json: bool) -> None:
    """Shared mode: RLS coverage of every clnt_id table, the app role's rights, and
    a live probe as the app role with two tenants. Exit 1 naming every offender."""
    from . import app, report

    project = g.project()
    found, interrupted = app.run_async(lambda stop: app.check_isolation(project))
    if found is None:
        sys.exit(EXIT_INTERRUPTED)
    errors = [f for f in found if f.severity == "error"]
    if g.json or as_json:
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
@_json_flag
@click.pass_obj
def check_reversible(g: Globals, as_json: bool) -> None:
    """On a scratch database, apply each migration up, down, up again and compare
    the schema snapshots; report every difference by migration. Exit 1 on any."""
    from . import app, report

    inputs = app.load_inputs(g.project())
    found, interrupted = app.run_async(lambda stop: app.check_reversible(inputs))
    if found is None:
        sys.exit(EXIT_INTERRUPTED)
    if g.json or as_json:
        click.echo(report.to_json({"differences": [d.to_json() for d in found],
                                   "migrations": len(inputs.migrations)}))
    else:
        for d in found:
            state = f" [{d.sqlstate}]" if d.sqlstate else ""
            click.echo(f"{d.migration}: {d.phase}: {d.kind} {d.name}{state}: {d.detail}")
        click.echo(f"{len(inputs.migrations)} migration(s) checked up -> down -> up: "
                   f"{len(found)} difference(s)")
    sys.exit(EXIT_INTERRUPTED if interrupted else (EXIT_FAILED if found else EXIT_OK))


@cli.command()
@click.argument("description")
@click.option("--version", "version", metavar="V", help="Version to use instead of the next one.")
@click.pass_obj
def new(g: Globals, description: str, version: str | None) -> None:
    """Write the next versioned migration file into migrations/."""
    from .migrations import NEW_MIGRATION_TEMPLATE, load_migrations, new_migration_path

    project = g.project()
    folder = project.migrations_dir
    folder.mkdir(parents=True, exist_ok=True)
    existing = load_migrations(folder)
    path = new_migration_path(folder, description, existing, version)
    path.write_text(NEW_MIGRATION_TEMPLATE.format(description=description), encoding="utf-8")
    click.echo(str(path))


@cli.command()
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_json_flag
@click.pass_obj
def lint(g: Globals, files: tuple[Path, ...], as_json: bool) -> None:
    """Check migrations for risky DDL and tenancy rules (default: all of migrations/).

    Exit 1 when a rule of severity error fires. Accept a rule deliberately in
    the file with `-- tenantctl: allow <rule-id>`.
    """
    from . import app, report
    from .lint import RULES

    inputs = app.load_inputs(g.project())
    findings = app.lint(inputs, files)
    errors = sum(1 for f in findings if f.severity == "error")
    if g.json or as_json:
        click.echo(report.to_json({"findings": [f.to_json() for f in findings],
                                   "errors": errors, "rules": sorted(RULES)}))
    else:
        for f in findings:
            click.echo(f"{f.severity}: {report.finding_line(f)}")
            click.echo(f"    hint: {f.hint}")
        click.echo(f"{len(findings)} finding(s), {errors} error(s)")
    sys.exit(EXIT_FAILED if errors else EXIT_OK)


@cli.group()
def server() -> None:
    """The embedded PostgreSQL used when no server is configured."""


@server.command("start")
@click.pass_obj
def server_start(g: Globals) -> None:
    """Start the embedded server (commands also start it on demand)."""
    from . import app

    from .redact import redact_dsn

    project = g.project()
    click.echo(redact_dsn(app.ensure_server(project)))


@server.command("stop")
@click.pass_obj
def server_stop(g: Globals) -> None:
    """Stop the embedded server kept next to tenants.yaml."""
    from . import app

    stopped = app.stop_embedded(g.project())
    click.echo("stopped" if stopped else "not running")


@server.command("status")
@_json_flag
@click.pass_obj
def server_status(g: Globals, as_json: bool) -> None:
    """Is the embedded server running, and where is its data."""
    from . import app, report

    info = app.embedded_status(g.project())
    if g.json or as_json:
        click.echo(report.to_json(info))
    else:
        click.echo(f"{'running (pid %s)' % info['pid'] if info['running'] else 'stopped'}: "
                   f"{info['pgdata']}")


def _fail(exc: TenantctlError, *, debug: bool, as_json: bool) -> NoReturn:
    from .redact import redact

    if debug:
        traceback.print_exc()
    message, hint = redact(exc.message), redact(exc.hint) if exc.hint else None
    _err(f"tenantctl: error: {message}")
    if hint:
        _err(f"hint: {hint}")
    if as_json:
        import json

        click.echo(json.dumps({"error": {"message": message, "hint": hint,
                                         "exit_code": exc.exit_code}}))
    sys.exit(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
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
