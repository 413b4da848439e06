"""What a run says on stderr while it goes: one stdlib logger, two formats.

Every line tenantctl writes to stderr (progress, retries, warnings, errors)
is a record of the ``tenantctl`` logger carrying an :class:`Event` and its
fields (``clnt_id``, ``database``, ``server``, ``version``, ``duration_ms``,
``error``, ...); the run id comes from the running run's context. stdout is
left to the report alone.

- ``--log-format text`` (the default): on a terminal, messages as they are
  (the live progress bar shows the tenants); elsewhere (cron, CI, a pipe) one
  plain line per message, each line starting with an ISO-8601 UTC timestamp.
- ``--log-format json``: one JSON object per line, with ``ts``, ``level``,
  ``event``, ``run_id``, ``message`` and the event's fields.

``--quiet`` keeps only warnings and errors (no per-tenant lines).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outcome import RunResult, TenantResult

LOGGER = logging.getLogger("tenantctl")
LOGGER.addHandler(logging.NullHandler())  # a library says nothing unless the CLI configures it
LOGGER.propagate = False

_RUN_ID: ContextVar[str | None] = ContextVar("tenantctl_run_id", default=None)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Event(StrEnum):
    RUN_START = "run_start"
    RUN_END = "run_end"
    TENANT_START = "tenant_start"
    TENANT_RESULT = "tenant_result"
    RETRY = "retry"
    WARNING = "warning"  # notices, lint findings, notes of the run, server recovery
    ERROR = "error"  # the command stopped: its message (and hint)


PER_TENANT = frozenset({Event.TENANT_START, Event.TENANT_RESULT, Event.RETRY})
RUN_BOUNDS = frozenset({Event.RUN_START, Event.RUN_END})  # the report on stdout says as much


def utc_timestamp(created: float) -> str:
    """ISO-8601 in UTC with milliseconds: ``2026-11-23T02:00:01.123Z``."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _event(record: logging.LogRecord) -> str:
    return str(getattr(record, "event", Event.WARNING))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        doc: dict[str, Any] = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "event": _event(record),
            "run_id": fields.get("run_id") or getattr(record, "run_id", None),
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in fields.items() if v is not None and k != "run_id"})
        return json.dumps(doc, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    """``<ts> <level> <message>``; every line of a multi-line message carries the stamp."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{utc_timestamp(record.created)} {record.levelname.lower():<7} "
        return "\n".join(head + line for line in record.getMessage().splitlines() or [""])


class TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, rich's
    redirect while the live progress bar runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


class _Shown(logging.Filter):
    """Which records reach stderr, by format, terminal and --quiet."""

    def __init__(self, *, quiet: bool, live: bool, plain: bool) -> None:
        super().__init__()
        self.quiet, self.live, self.plain = quiet, live, plain

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _RUN_ID.get()
        event = _event(record)
        if self.quiet:
            return record.levelno >= logging.WARNING and event not in PER_TENANT | RUN_BOUNDS
        if self.live:  # the progress bar shows the tenants (failures included) and the run
            hidden = (PER_TENANT - {Event.RETRY}) | RUN_BOUNDS
            return record.levelno >= logging.WARNING and event not in hidden
        if self.plain:  # a line per tenant result is enough in cron mail
            return event != Event.TENANT_START
        return True


_configured = False


def configure(fmt: LogFormat | None, *, quiet: bool = False) -> LogFormat:
    """Send the ``tenantctl`` logger to stderr in ``fmt`` (text when None); returns
    the format chosen. Called once per command; a second call replaces the first."""
    global _configured
    fmt = fmt or LogFormat.TEXT
    tty = sys.stderr.isatty()
    handler = _Stderr()
    if fmt is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TerminalFormatter() if tty else PlainFormatter())
    handler.addFilter(_Shown(quiet=quiet, live=fmt is LogFormat.TEXT and tty,
                             plain=fmt is LogFormat.TEXT and not tty))
    for old in [h for h in LOGGER.handlers if isinstance(h, _Stderr)]:
        LOGGER.removeHandler(old)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    _configured = True
    return fmt


def reset() -> None:
    """Detach the stderr handler (the end of an in-process command)."""
    global _configured
    for old in [h for h in LOGGER.handlers if isinstance(h, _Stderr)]:
        LOGGER.removeHandler(old)
    _configured = False


def bind_run(run_id: str) -> None:
    """Records from here on (in this task and those it starts) carry ``run_id``."""
    _RUN_ID.set(run_id)


def event(name: Event, message: str, *, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, message, extra={"event": name, "fields": fields})


def warning(message: str, **fields: Any) -> None:
    """A warning; printed plainly to stderr when no command configured logging
    (tenantctl used as a library still hears about a server's crash recovery)."""
    if not _configured:
        print(message, file=sys.stderr, flush=True)
        return
    event(Event.WARNING, message, level=logging.WARNING, **fields)


def error(message: str, **fields: Any) -> None:
    """The command's fatal error (plain stderr when logging is not configured)."""
    if not _configured:
        print(message, file=sys.stderr, flush=True)
        return
    event(Event.ERROR, message, level=logging.ERROR, **fields)


def error_fields(error: Any) -> dict[str, Any] | None:
    """A failure's fields for a log record (sqlstate, message, migration, line)."""
    if error is None:
        return None
    doc: dict[str, Any] = error.to_json()
    return {k: doc[k] for k in ("sqlstate", "message", "migration", "line", "kind") if k in doc}


def tenant_result(result: TenantResult, line: str, *, server: str | None) -> None:
    level = logging.ERROR if result.status == "failed" else logging.INFO
    event(Event.TENANT_RESULT, line, level=level, clnt_id=result.clnt_id,
          database=result.database, server=server, status=result.status,
          version=result.to_version, from_version=result.from_version,
          applied=list(result.applied) or None, reverted=list(result.reverted) or None,
          attempts=result.attempts, duration_ms=result.duration_ms,
          error=error_fields(result.error), reason=result.reason)


def run_end(run: RunResult, exit_code: int, line: str) -> None:
    """The run's last record: its outcome, counts, duration and exit code."""
    error = run.error_json()
    level = logging.INFO if exit_code == 0 else logging.ERROR
    event(Event.RUN_END, line, level=level, run_id=run.run_id, command=run.command,
          dry_run=run.dry_run, exit_code=exit_code, duration_ms=run.duration_ms,
          summary=run.to_json()["summary"], error=error)
