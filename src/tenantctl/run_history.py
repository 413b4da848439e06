"""Reading the run ledger back: ``tenantctl runs`` and ``tenantctl runs show``.

A run row says ``running`` from its start until it is closed. Whether its
process still lives is not in the row: the run holds a session-level advisory
lock keyed by its id in the control database (:func:`ledger.run_lock_key`) for
as long as its control connection is open. A ``running`` row whose lock no
session holds belongs to a process that died (``kill -9``, a lost machine, a
lost connection) and is shown ``abandoned``. Readers never write the ledger,
and work on control databases made by older tenantctl versions (absent columns
read as NULL).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .drivers.base import Session
from .errors import BadInputError, ErrorKind
from .ledger import later_columns
from .outcome import STATUSES, RunResult, TenantResult

# The run-level keys of a run's JSON report, in its order (the tenants' list among them).
REPORT_KEYS = ("run_id", "command", "dry_run", "target", "interrupted", "duration_ms", "summary",
               "tenants", "notes", "recording_error", "lint", "error")


class RunStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"  # its process died before closing the run


# Is the run's owner alive: its advisory lock (a bigint key: classid = high 32 bits,
# objid = low 32 bits, objsubid = 1) granted to some session of this database.
_ALIVE = """EXISTS (SELECT FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = (r.lock_key >> 32) & 4294967295
      AND l.objid::bigint = r.lock_key & 4294967295)"""


def _status_sql(columns: set[tuple[str, str]]) -> str:
    if ("tenantctl_runs", "lock_key") not in columns:
        return "r.status"  # no liveness lock to look at: as recorded
    # a run recorded by a tenantctl from before the lock (lock_key NULL) cannot be proven
    # alive: shown abandoned once it is unfinished, as a dead one would be
    return (f"CASE WHEN r.status = 'running' AND (r.lock_key IS NULL OR NOT {_ALIVE}) "
            "THEN 'abandoned' ELSE r.status END")


@dataclass(frozen=True)
class RunRow:
    """One run as ``tenantctl runs`` lists it."""

    run_id: str
    command: str
    status: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None
    summary: str | None  # JSON text: tenants per status
    tenants: int
    argv: list[str]
    os_user: str | None
    db_user: str
    host: str | None
    pid: int | None
    tool_version: str | None
    duration_ms: int | None = None  # the run's own measure (its report), when it finished

    @property
    def duration_s(self) -> float | None:
        if self.duration_ms is not None:
            return self.duration_ms / 1000
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def counts(self) -> dict[str, int]:
        doc: dict[str, int] = json.loads(self.summary) if self.summary else {}
        return doc

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "command": self.command, "status": self.status,
            "dry_run": self.dry_run, "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at) if self.finished_at else None,
            "duration_s": self.duration_s, "tenants": self.tenants, "summary": self.counts or None,
            "user": self.os_user, "db_user": self.db_user, "host": self.host, "pid": self.pid,
            "version": self.tool_version, "argv": self.argv,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _optional(columns: set[tuple[str, str]], table: str, column: str, alias: str,
              absent: str = "NULL") -> str:
    return f"{alias}.{column}" if (table, column) in columns else absent


async def list_runs(session: Session, *, limit: int = 20, command: str | None = None,
                    status: RunStatus | None = None) -> list[RunRow]:
    """The newest ``limit`` runs, newest first, optionally of one command or status."""
    columns = await later_columns(session)
    dry = _optional(columns, "tenantctl_runs", "dry_run", "r", "false")
    pid = _optional(columns, "tenantctl_runs", "pid", "r")
    stored = ("tenantctl_runs", "report") in columns
    took = "(r.report->>'duration_ms')::bigint" if stored else "NULL"
    # the report's summary keeps its key order (the jsonb column sorts them)
    summary = "coalesce((r.report->'summary')::text, r.summary::text)" if stored else "r.summary::text"
    sql = f"""
        SELECT * FROM (
            SELECT r.run_id::text AS run_id, r.command, {_status_sql(columns)} AS status,
                   {dry} AS dry_run, r.started_on AT TIME ZONE 'UTC' AS started_at,
                   r.finished_on AT TIME ZONE 'UTC' AS finished_at, {summary} AS summary,
                   cardinality(r.clnt_ids) AS tenants, r.argv, r.os_user, r.db_user, r.host,
                   {pid} AS pid, r.tool_version, {took} AS duration_ms
            FROM tenantctl_runs r
            WHERE $1::text IS NULL OR r.command = $1
        ) runs
        WHERE $2::text IS NULL OR status = $2
        ORDER BY started_at DESC, run_id LIMIT $3"""
    rows = await session.fetch_as(_RawRun, sql, command, status.value if status else None, limit)
    return [r.row() for r in rows]


@dataclass(frozen=True)
class _RawRun:
    run_id: str
    command: str
    status: str
    dry_run: bool
    started_at: datetime  # naive UTC (AT TIME ZONE 'UTC')
    finished_at: datetime | None
    summary: str | None
    tenants: int
    argv: list[str]
    os_user: str | None
    db_user: str
    host: str | None
    pid: int | None
    tool_version: str | None
    duration_ms: int | None

    def row(self) -> RunRow:
        from datetime import UTC

        finished = self.finished_at.replace(tzinfo=UTC) if self.finished_at else None
        return RunRow(self.run_id, self.command, self.status, self.dry_run,
                      self.started_at.replace(tzinfo=UTC), finished, self.summary, self.tenants,
                      list(self.argv), self.os_user, self.db_user, self.host, self.pid,
                      self.tool_version, self.duration_ms)


@dataclass(frozen=True)
class _RawTenant:
    clnt_id: int
    database: str
    mode: str | None
    status: str
    from_version: str | None
    to_version: str | None
    applied: list[str]
    reverted: list[str]
    attempts: int
    duration_ms: int
    error: str | None
    report: str | None

    def to_json(self) -> dict[str, Any]:
        if self.report is not None:
            doc: dict[str, Any] = json.loads(self.report)
            return doc
        # recorded by an older tenantctl: rebuilt from the columns it had
        error = json.loads(self.error) if self.error else None
        return TenantResult(
            self.clnt_id, self.database, self.mode or "database", self.status, self.from_version,
            self.to_version, tuple(self.applied), self.attempts, self.duration_ms,
            error=None, reverted=tuple(self.reverted),
        ).to_json() | ({"failed_migration": error.get("migration"), "error": error} if error else {})


@dataclass(frozen=True)
class _RawHeader:
    run_id: str
    command: str
    status: str
    dry_run: bool
    report: str | None


async def run_report(session: Session, run_id: str) -> tuple[RunStatus, dict[str, Any]]:
    """A run's status and its report, in the shape of the run's own ``--json`` report.

    A finished run's report is the one it printed (stored as JSON text, so even
    the key order is the same). An unfinished one (running, or abandoned) is
    assembled from the tenants it recorded so far: ``duration_ms`` is null and
    ``error.kind`` says ``abandoned`` when its process is gone.
    """
    try:
        run_id = str(uuid.UUID(run_id))
    except ValueError:
        raise BadInputError(f"{run_id!r} is not a run id (a UUID, as `tenantctl runs` lists them)"
                            ) from None
    columns = await later_columns(session)
    head = await session.fetch_one_as(
        _RawHeader, f"SELECT r.run_id::text AS run_id, r.command, {_status_sql(columns)} AS status, "
        f"{_optional(columns, 'tenantctl_runs', 'dry_run', 'r', 'false')} AS dry_run, "
        f"{_optional(columns, 'tenantctl_runs', 'report', 'r')}::text AS report "
        "FROM tenantctl_runs r WHERE r.run_id = $1::uuid", run_id)
    if head is None:
        raise BadInputError(f"run {run_id} is not in the ledger", hint="`tenantctl runs` lists them")
    position = _optional(columns, "tenantctl_run_tenants", "position", "t", "0")
    report = _optional(columns, "tenantctl_run_tenants", "report", "t")
    reverted = _optional(columns, "tenantctl_run_tenants", "reverted", "t", "'{}'::text[]")
    tenants = [t.to_json() for t in await session.fetch_as(
        _RawTenant, f"SELECT t.clnt_id, t.database, g.mode, t.status, t.from_version, "
        f"t.to_version, t.applied, {reverted} AS reverted, t.attempts, t.duration_ms, "
        f"t.error::text AS error, {report}::text AS report "
        "FROM tenantctl_run_tenants t LEFT JOIN tenantctl_tenants g USING (clnt_id) "
        f"WHERE t.run_id = $1::uuid ORDER BY {position} + 0, t.finished_on, t.clnt_id", run_id)]
    status = RunStatus(head.status)
    if head.report is not None:
        stored: dict[str, Any] = json.loads(head.report)
        stored["tenants"] = tenants
        return status, {key: stored[key] for key in REPORT_KEYS if key in stored}
    return status, _unfinished_report(head, status, tenants)


def _unfinished_report(head: _RawHeader, status: RunStatus,
                       tenants: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, int] = {s: sum(1 for t in tenants if t["status"] == s) for s in STATUSES}
    summary["migrations_applied"] = sum(len(t.get("applied", ())) for t in tenants)
    summary["migrations_reverted"] = sum(len(t.get("reverted", ())) for t in tenants)
    error = None
    if status is RunStatus.ABANDONED:
        error = {"kind": ErrorKind.ABANDONED.value,
                 "message": "the run's process ended without closing the run (killed, its machine "
                            "or its control connection lost); the tenants below are those it "
                            "recorded", "resume": f"--resume {head.run_id}"}
    elif status is not RunStatus.RUNNING:
        error = {"kind": ErrorKind.ERROR.value, "message": f"run {status.value}; recorded by an "
                 "older tenantctl without its report"}
    return {"run_id": head.run_id, "command": head.command, "dry_run": head.dry_run,
            "target": None, "interrupted": False, "duration_ms": None, "summary": summary,
            "tenants": tenants, "notes": [], "lint": [], "error": error}


def text_report(status: RunStatus, doc: dict[str, Any]) -> list[str]:
    """``runs show`` for people: a line per tenant, then the run's summary."""
    from .report import run_summary, tenant_line

    dry = bool(doc.get("dry_run"))
    results = [TenantResult.from_json(t) for t in doc["tenants"]]
    lines = [tenant_line(r, dry_run=dry) for r in results]
    run = RunResult(doc["run_id"], doc["command"], tuple(results), bool(doc.get("interrupted")),
                    doc.get("duration_ms") or 0, doc.get("target"), dry,
                    tuple(doc.get("notes") or ()), doc.get("recording_error"))
    lines.append(f"status: {status.value}")
    lines.append(run_summary(run))
    if status is RunStatus.ABANDONED:
        lines.append(f"abandoned: resume it with tenantctl {run.command} --resume {run.run_id}")
    return lines
