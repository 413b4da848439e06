"""tenantctl as a Python library: the CLI's commands as typed functions.

.. code-block:: python

    from tenantctl import api

    report = api.migrate("tenants.yaml", dsn=os.environ["TENANTCTL_DSN"], dry_run=True)
    report.exit_code   # 0, 1 or 130, as `tenantctl migrate --all --dry-run` would exit
    report.to_dict()   # exactly the document of `tenantctl migrate --all --dry-run --json`

    report = await api.amigrate("tenants.yaml", tenants=[1, 2], lock_wait="30s")

Every command has a blocking form (:func:`provision`, :func:`migrate`,
:func:`rollback`, :func:`status`, :func:`verify`) and an ``async`` twin
(:func:`aprovision`, ...), with the same parameters. Options are keyword-only
and carry the names of the CLI flags (``--dry-run`` is ``dry_run``,
``--resume RUN_ID`` is ``resume``, ``--report FILE`` is ``report``); an unknown
keyword is a ``TypeError``, as for any Python function, and ``mypy`` checks
callers. Durations are text as on the command line (``"5s"``, ``"500ms"``),
seconds, or a :class:`datetime.timedelta`.

``tenants``: ``None`` selects every tenant of tenants.yaml (``--all``);
otherwise the clnt_ids to work on. An empty selection is refused rather than
read as "all". :func:`rollback` of every tenant also needs ``yes=True``, as
``tenantctl rollback --all`` needs ``--yes`` without a terminal.

``config``: the path of tenants.yaml, or a :class:`~tenantctl.config.Project`
already loaded with :func:`tenantctl.config.load_project` (then its ``dsn=``
goes there). ``dsn``: the default server, as ``--dsn``. ``None`` resolves
exactly as the CLI without ``--dsn``: ``TENANTCTL_DSN`` if set, else
tenants.yaml's ``servers:``, else the embedded PostgreSQL kept next to
tenants.yaml in ``.tenantctl/`` (started on first use and left running, as
the CLI leaves it; ``tenantctl server stop`` stops it).

Nothing here prints, installs signal handlers or calls ``sys.exit``. A tenant
that fails is not an exception: it is in the report (``exit_code`` 1). What is
raised, all subclasses of :class:`~tenantctl.errors.TenantctlError` (with
``message``, ``hint`` and the CLI's ``exit_code``):

- :class:`ConfigError` (exit code 2): tenants.yaml missing or invalid, a
  clnt_id not in it, an empty ``tenants`` selection;
- :class:`MigrationFileError` (2): a file of the migrations folder;
- :class:`BadInputError` (2): any other refused input, before anything is
  touched: an option out of range (``concurrency=0``), a malformed duration,
  ``only_failed`` with ``resume``, a rollback target with a missing down
  script, lint errors under ``strict_lint``;
- :class:`ServerError` (1): a server could not be used at all (the embedded
  server does not start);
- :class:`DatabaseError` (1): the control database or a server refused a
  connection or statement outside any one tenant's work.

A value of the wrong type (``concurrency="8"``, ``tenants="1"``) is a
``TypeError``. Progress, retries, warnings and the embedded server's start-up
messages are records of the ``tenantctl`` logger (it does not propagate: add a
handler to it to see them). ``metrics_file`` writes what ``--metrics-file``
writes, except on a dry run; a file that cannot be written is named in the
report's ``notices``. ``stop``: an :class:`asyncio.Event` (async twins); once set, no new
tenant starts, in-flight ones finish their transaction, the rest are
``skipped`` and ``exit_code`` is 130, as after SIGINT. Cancelling the task
instead rolls back in-flight work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeAlias, TypeVar

from . import commands, documents, embedded, metrics
from .commands import ChangeRequest
from .config import INT2_MAX, Project, find_config, load_project, parse_duration
from .documents import RunReport, StatusReport, VerifyReport
from .errors import (
    BadInputError,
    ConfigError,
    DatabaseError,
    MigrationFileError,
    ServerError,
    TenantctlError,
)
from .outcome import RunResult, TenantResult
from .status import StatusRow, VerifyFinding
from .steps import Verb

__all__ = [
    "BadInputError", "Config", "ConfigError", "DatabaseError", "Duration", "MigrationFileError",
    "RunReport", "RunResult", "ServerError", "StatusReport", "StatusRow", "TenantResult",
    "TenantctlError", "VerifyFinding", "VerifyReport",
    "amigrate", "aprovision", "arollback", "astatus", "averify",
    "migrate", "provision", "rollback", "status", "verify",
]

Duration: TypeAlias = str | float | timedelta
"""``"5s"``, ``"500ms"``, ``"2min"``, seconds, or a timedelta."""
PathArg: TypeAlias = str | os.PathLike[str]
Config: TypeAlias = PathArg | Project
"""The path of tenants.yaml, or a :class:`~tenantctl.config.Project` from ``load_project``."""

# the ranges of the CLI's click.IntRange options (tests/test_api.py compares them)
CONCURRENCY_RANGE = (1, 1000)
RETRIES_RANGE = (0, 100)
MAX_FAILURES_RANGE = (1, None)

_log = logging.getLogger("tenantctl")
P = ParamSpec("P")
R = TypeVar("R")


# ------------------------------------------------------------------ input checks


def _tenant_ids(tenants: Iterable[int] | None) -> tuple[int, ...]:
    if tenants is None:
        return ()
    if isinstance(tenants, (str, bytes)) or not isinstance(tenants, Iterable):
        raise TypeError(f"tenants must be an iterable of clnt_ids (int) or None, not {tenants!r}")
    ids = tuple(tenants)
    for clnt_id in ids:
        if isinstance(clnt_id, bool) or not isinstance(clnt_id, int):
            raise TypeError(f"tenants: a clnt_id is an int, not {clnt_id!r}")
        if not 1 <= clnt_id <= INT2_MAX:
            raise BadInputError(f"tenants: clnt_id {clnt_id} is not in the range 1..{INT2_MAX}")
    if not ids:
        raise ConfigError("tenants: an empty selection",
                          hint="list clnt_ids, or pass tenants=None for every tenant")
    return ids


def _count(name: str, value: int | None, bounds: tuple[int, int | None]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {value!r}")
    low, high = bounds
    if value < low or (high is not None and value > high):
        upper = f"..{high}" if high is not None else " or more"
        raise BadInputError(f"{name}={value}: must be {low}{upper}")
    return value


def _duration(name: str, value: Duration | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"{name} must be a duration such as '5s', seconds or a timedelta, "
                        f"not {value!r}")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise BadInputError(f"{name}={value!r}: {exc}") from None
    return value if isinstance(value, str) else f"{seconds:.6f}s"


def _flags(**values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")


def _output_file(name: str, value: PathArg | None) -> PathArg | None:
    """--report/--junit: refused before the run when the file could not be written."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, not {value!r}")
    path = Path(value)
    if path.is_dir() or not path.parent.is_dir():
        raise BadInputError(f"{name}={str(path)!r}: not a file in an existing folder")
    return value


def _load(config: Config, dsn: str | None) -> Project:
    if dsn is not None and not isinstance(dsn, str):
        raise TypeError("dsn must be a connection string or None")
    if isinstance(config, Project):
        if dsn is not None:
            raise TypeError("dsn= goes to load_project() when config is a loaded Project")
        return config
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"config must be the path of tenants.yaml or a Project, not {config!r}")
    return load_project(find_config(os.fspath(config), env={}), dsn=dsn)


async def _start_embedded(project: Project) -> None:
    """Start (or find) the embedded server off the event loop, its messages logged."""
    if any(project.is_embedded(name) for name in project.servers):
        await asyncio.to_thread(embedded.ensure_running, project.state_dir, on_wait=_log.warning)


def _argv(verb: Verb, config: Config, request: ChangeRequest) -> tuple[str, ...]:
    """What the ledger records as the run's command line: the CLI equivalent of the call
    (no DSN: a secret may be in it)."""
    path = config.path if isinstance(config, Project) else config
    out = ["tenantctl.api", verb.value, "--config", os.fspath(path)]
    out += [str(i) for i in request.ids] or ["--all"]
    for field in dataclasses.fields(ChangeRequest):
        value = getattr(request, field.name)
        if field.name in ("ids", "all") or value is None or value is False or value == ():
            continue
        flag = _FLAGS.get(field.name, "--" + field.name.replace("_", "-"))
        if isinstance(value, tuple):  # a repeatable option: --server a --server b
            out += [part for item in value for part in (flag, str(item))]
        else:
            out += [flag] if value is True else [flag, str(value)]
    return tuple(out)


_FLAGS = {"resume_run": "--resume", "servers": "--server"}  # request fields named apart from their flag


def _servers(server: str | Iterable[str] | None) -> tuple[str, ...]:
    """``--server NAME`` (repeatable): one name or several."""
    if server is None:
        return ()
    names = (server,) if isinstance(server, str) else tuple(server)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"server must be a server name (str) or several, not {name!r}")
    if not names:
        raise ConfigError("server: an empty selection", hint="name a server, or pass server=None")
    return names


# ------------------------------------------------------------------ the commands


_COUNTS = {"concurrency": CONCURRENCY_RANGE, "retries": RETRIES_RANGE,
           "max_failures": MAX_FAILURES_RANGE}
_DURATIONS = ("lock_timeout", "statement_timeout", "lock_wait")
_TEXTS = ("to", "resume", "server")  # a version, a run id, server name(s) (checked by _servers)


def _change_request(tenants: Iterable[int] | None, options: dict[str, Any]) -> ChangeRequest:
    """The typed request of a changing command, every option checked as the CLI checks it."""
    ids = _tenant_ids(tenants)
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if name in _COUNTS:
            fields[name] = _count(name, value, _COUNTS[name])
        elif name in _DURATIONS:
            fields[name] = _duration(name, value)
        elif name in _TEXTS:
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, not {value!r}")
            fields[name] = value
        else:
            _flags(**{name: value})
            fields[name] = value
    fields["resume_run"] = fields.pop("resume")
    fields["servers"] = _servers(fields.pop("server"))
    return ChangeRequest(ids=ids, all=not ids and not fields["servers"], **fields)


def _write_metrics(path: Path, sample: metrics.RunMetrics) -> str | None:
    """--metrics-file: merge this run in (as the CLI does); why it could not, or None."""
    try:
        metrics.write(path, sample)
    except OSError as exc:
        return f"--metrics-file {path}: not written: {exc}"
    return None


async def _change(verb: Verb, config: Config, dsn: str | None, tenants: Iterable[int] | None,
                  options: dict[str, Any], files: dict[str, PathArg | None],
                  stop: asyncio.Event | None) -> RunReport:
    started = time.monotonic()
    report, junit = _output_file("report", files["report"]), _output_file("junit", files["junit"])
    metrics_path = _output_file("metrics_file", files["metrics_file"])
    metrics_file = None if metrics_path is None or options["dry_run"] else Path(metrics_path)
    try:
        change = _change_request(tenants, options)

        def prepare() -> tuple[Project, commands.PreparedRun]:
            project = _load(config, dsn)
            return project, commands.prepare(project, verb, change)

        project, prepared = await asyncio.to_thread(prepare)
        await _start_embedded(project)
        run = await commands.execute(prepared, stop=stop, argv=_argv(verb, config, change))
    except TenantctlError as exc:  # as the CLI: a run that could not run is in the metrics too
        if metrics_file is not None:
            _write_metrics(metrics_file, metrics.RunMetrics.of_failure(
                verb.value, exc.exit_code, time.time(), time.monotonic() - started))
        raise
    done = RunReport(run, prepared.notices, stop is not None and stop.is_set())
    if metrics_file is not None:
        problem = _write_metrics(metrics_file, metrics.RunMetrics.of_run(
            run, done.exit_code, time.time(), prepared.inputs.latest))
        if problem:  # the run happened: its report is returned, with why the file was not written
            done = dataclasses.replace(done, notices=(*done.notices, problem))
    documents.write_run_files(run, documents.run_document(run), report_file=report,
                              junit_file=junit)
    return done


async def aprovision(
    config: Config, *, dsn: str | None = None, tenants: Iterable[int] | None = None,
    server: str | Iterable[str] | None = None, dry_run: bool = False,
    concurrency: int | None = None, max_failures: int | None = None,
    fail_fast: bool = False, lock_timeout: Duration | None = None,
    statement_timeout: Duration | None = None, lock_wait: Duration | None = None,
    retries: int | None = None, only_failed: bool = False, resume: str | None = None,
    no_skip: bool = False, no_template: bool = False, strict_lint: bool = False,
    strict: bool = False, report: PathArg | None = None, junit: PathArg | None = None,
    metrics_file: PathArg | None = None, stop: asyncio.Event | None = None,
) -> RunReport:
    """``tenantctl provision``: create, migrate, seed and register tenants (idempotent)."""
    options = {"server": server, "dry_run": dry_run, "concurrency": concurrency, "max_failures": max_failures,
               "fail_fast": fail_fast, "lock_timeout": lock_timeout,
               "statement_timeout": statement_timeout, "lock_wait": lock_wait, "retries": retries,
               "only_failed": only_failed, "resume": resume, "no_skip": no_skip,
               "no_template": no_template, "strict_lint": strict_lint, "strict": strict}
    return await _change(Verb.PROVISION, config, dsn, tenants, options,
                         {"report": report, "junit": junit, "metrics_file": metrics_file}, stop)


async def amigrate(
    config: Config, *, dsn: str | None = None, tenants: Iterable[int] | None = None,
    server: str | Iterable[str] | None = None, to: str | None = None, dry_run: bool = False,
    concurrency: int | None = None,
    max_failures: int | None = None, fail_fast: bool = False,
    lock_timeout: Duration | None = None, statement_timeout: Duration | None = None,
    lock_wait: Duration | None = None, retries: int | None = None, only_failed: bool = False,
    resume: str | None = None, allow_drift: bool = False, no_skip: bool = False,
    strict_lint: bool = False, strict: bool = False, report: PathArg | None = None,
    junit: PathArg | None = None, metrics_file: PathArg | None = None,
    stop: asyncio.Event | None = None,
) -> RunReport:
    """``tenantctl migrate``: apply pending migrations (up to ``to``) to the tenants."""
    options = {"server": server, "to": to, "dry_run": dry_run, "concurrency": concurrency,
               "max_failures": max_failures, "fail_fast": fail_fast, "lock_timeout": lock_timeout,
               "statement_timeout": statement_timeout, "lock_wait": lock_wait, "retries": retries,
               "only_failed": only_failed, "resume": resume, "allow_drift": allow_drift,
               "no_skip": no_skip, "strict_lint": strict_lint, "strict": strict}
    return await _change(Verb.MIGRATE, config, dsn, tenants, options,
                         {"report": report, "junit": junit, "metrics_file": metrics_file}, stop)


async def arollback(
    config: Config, *, to: str, dsn: str | None = None, tenants: Iterable[int] | None = None,
    server: str | Iterable[str] | None = None, yes: bool = False, dry_run: bool = False,
    concurrency: int | None = None,
    max_failures: int | None = None, fail_fast: bool = False,
    lock_timeout: Duration | None = None, statement_timeout: Duration | None = None,
    lock_wait: Duration | None = None, retries: int | None = None, only_failed: bool = False,
    resume: str | None = None, no_skip: bool = False, strict_lint: bool = False,
    strict: bool = False, report: PathArg | None = None, junit: PathArg | None = None,
    metrics_file: PathArg | None = None, stop: asyncio.Event | None = None,
) -> RunReport:
    """``tenantctl rollback --to V``: run down scripts newest-first until the tenants are at ``to``.

    Without listed ``tenants`` (every tenant, or a ``server``'s) it needs ``yes=True``
    (a dry run does not); a missing down script refuses the whole run before
    anything changes.
    """
    _flags(yes=yes)
    if tenants is None and not yes and not dry_run:
        what = "of every tenant" if server is None else "of a server's tenants"
        raise BadInputError(f"a rollback {what} needs yes=True",
                            hint="list the tenants to roll back, or pass yes=True")
    options = {"server": server, "to": to, "dry_run": dry_run, "concurrency": concurrency,
               "max_failures": max_failures, "fail_fast": fail_fast, "lock_timeout": lock_timeout,
               "statement_timeout": statement_timeout, "lock_wait": lock_wait, "retries": retries,
               "only_failed": only_failed, "resume": resume, "no_skip": no_skip,
               "strict_lint": strict_lint, "strict": strict}
    return await _change(Verb.ROLLBACK, config, dsn, tenants, options,
                         {"report": report, "junit": junit, "metrics_file": metrics_file}, stop)


async def _read(config: Config, dsn: str | None, tenants: Iterable[int] | None,
                concurrency: int | None) -> tuple[Project, tuple[int, ...], int | None]:
    ids = _tenant_ids(tenants)
    concurrency = _count("concurrency", concurrency, CONCURRENCY_RANGE)
    project = await asyncio.to_thread(_load, config, dsn)
    await _start_embedded(project)
    return project, ids, concurrency


async def astatus(config: Config, *, dsn: str | None = None, tenants: Iterable[int] | None = None,
                  server: str | Iterable[str] | None = None, concurrency: int | None = None,
                  stop: asyncio.Event | None = None) -> StatusReport:
    """``tenantctl status``: each tenant's version, pending migrations and state.
    Reads only: no lock is taken and nothing is written."""
    project, ids, concurrency = await _read(config, dsn, tenants, concurrency)
    result = await commands.status(project, ids, concurrency=concurrency, servers=_servers(server))
    return StatusReport(result.rows, result.latest, stop is not None and stop.is_set())


async def averify(config: Config, *, dsn: str | None = None, tenants: Iterable[int] | None = None,
                  server: str | Iterable[str] | None = None, concurrency: int | None = None,
                  stop: asyncio.Event | None = None) -> VerifyReport:
    """``tenantctl verify``: every tenant's history against the folder (drift, gaps,
    unknown versions, missing databases); ``exit_code`` 1 on any finding."""
    project, ids, concurrency = await _read(config, dsn, tenants, concurrency)
    result = await commands.verify(project, ids, concurrency=concurrency, servers=_servers(server))
    return VerifyReport(result.rows, result.findings, stop is not None and stop.is_set())


# ------------------------------------------------------------------ blocking forms


def _blocking(twin: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """The blocking form of an async command, with the same parameters."""
    name = twin.__name__[1:]

    @functools.wraps(twin)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        coroutine = twin(*args, **kwargs)  # a wrong keyword is a TypeError here
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        coroutine.close()
        raise RuntimeError(f"tenantctl.api.{name}() blocks and an event loop is running in this "
                           f"thread: use `await tenantctl.api.{twin.__name__}(...)` instead")

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{twin.__doc__}\n\nBlocking form of :func:`{twin.__name__}`; same parameters."
    return call


provision = _blocking(aprovision)
migrate = _blocking(amigrate)
rollback = _blocking(arollback)
status = _blocking(astatus)
verify = _blocking(averify)
