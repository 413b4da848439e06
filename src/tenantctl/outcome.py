"""What a run produced: frozen per-tenant results and the run they belong to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorKind, is_connection_failure

APPLIED = "applied"
REVERTED = "reverted"  # rollback: down scripts ran
UP_TO_DATE = "up_to_date"
FAILED = "failed"
SKIPPED = "skipped"
STATUSES = (APPLIED, REVERTED, UP_TO_DATE, FAILED, SKIPPED)
DONE = (APPLIED, REVERTED, UP_TO_DATE)  # a tenant the run finished with


@dataclass(frozen=True)
class TenantFailure:
    message: str
    sqlstate: str | None = None
    migration: str | None = None
    detail: str | None = None
    hint: str | None = None
    line: int | None = None  # the line of ``migration`` the error points at, when known
    kind: str | None = None  # "drift" when an applied file was edited; None for the others

    @property
    def where(self) -> str | None:
        """``file:line`` (or the file alone) the failure happened in."""
        if self.migration is None:
            return None
        return f"{self.migration}:{self.line}" if self.line else self.migration

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TenantFailure:
        return cls(doc.get("message", ""), doc.get("sqlstate"), doc.get("migration"),
                   doc.get("detail"), doc.get("hint"), doc.get("line"), doc.get("kind"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sqlstate": self.sqlstate,
            "message": self.message,
            "migration": self.migration,
        }
        if self.line is not None:
            out["line"] = self.line
        if self.kind is not None:
            out["kind"] = self.kind
        if self.detail:
            out["detail"] = self.detail
        if self.hint:
            out["hint"] = self.hint
        return out


@dataclass(frozen=True)
class TenantResult:
    clnt_id: int
    database: str
    mode: str
    status: str
    from_version: str | None = None
    to_version: str | None = None
    applied: tuple[str, ...] = ()  # versions committed by this run (up migrations, repairs)
    attempts: int = 0
    duration_ms: int = 0
    created: bool = False
    seeded: bool = False
    error: TenantFailure | None = None
    reason: str | None = None  # why a tenant was skipped
    warnings: tuple[str, ...] = ()
    reverted: tuple[str, ...] = ()  # versions whose down script this run committed

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TenantResult:
        """The inverse of :meth:`to_json` (a report read back from the ledger)."""
        error = doc.get("error")
        return cls(
            doc["clnt_id"], doc["database"], doc["mode"], doc["status"], doc.get("from_version"),
            doc.get("to_version"), tuple(doc.get("applied") or ()), doc.get("attempts", 0),
            doc.get("duration_ms", 0), bool(doc.get("created")), bool(doc.get("seeded")),
            TenantFailure.from_json(error) if error else None, doc.get("reason"),
            tuple(doc.get("warnings") or ()), tuple(doc.get("reverted") or ()))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clnt_id": self.clnt_id,
            "database": self.database,
            "mode": self.mode,
            "status": self.status,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "applied": list(self.applied),
            "attempts": self.attempts,
            "duration_ms": self.duration_ms,
        }
        if self.created:
            out["created"] = True
        if self.seeded:
            out["seeded"] = True
        if self.reverted:
            out["reverted"] = list(self.reverted)
        if self.error is not None:
            # what committed is in applied/reverted; where it stopped is apart from it
            out["failed_migration"] = self.error.migration
            out["error"] = self.error.to_json()
        if self.reason:
            out["reason"] = self.reason
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class RunResult:
    run_id: str
    command: str
    tenants: tuple[TenantResult, ...]
    interrupted: bool = False
    duration_ms: int = 0
    target: str | None = None
    dry_run: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    # the ledger could not take a result: scheduling stopped, and the run failed
    recording_error: str | None = None
    # lint findings (as JSON) of the migrations that were pending for the run's tenants
    lint: tuple[dict[str, Any], ...] = ()

    def count(self, status: str) -> int:
        return sum(1 for t in self.tenants if t.status == status)

    @property
    def failed(self) -> bool:
        return self.recording_error is not None or any(t.status == FAILED for t in self.tenants)

    @property
    def error_kind(self) -> ErrorKind | None:
        """Why the run did not end well (None when it did); see :class:`ErrorKind`."""
        if self.interrupted:
            return ErrorKind.INTERRUPTED
        if self.recording_error is not None:
            return ErrorKind.RECORDING_FAILED
        failed = [t for t in self.tenants if t.status == FAILED]
        if not failed:
            return None
        if all(t.error is not None and is_connection_failure(t.error.sqlstate) for t in failed):
            # every failure is a server that did not answer: all of them, or some
            if len(failed) == len(self.tenants):
                return ErrorKind.ALL_SERVERS_UNREACHABLE
            return ErrorKind.SERVER_UNREACHABLE
        return ErrorKind.TENANTS_FAILED

    def error_json(self) -> dict[str, Any] | None:
        kind = self.error_kind
        if kind is None:
            return None
        failed = self.count(FAILED)
        messages = {
            ErrorKind.INTERRUPTED: "interrupted: tenants not started are reported skipped",
            ErrorKind.RECORDING_FAILED: self.recording_error or "",
            ErrorKind.ALL_SERVERS_UNREACHABLE: f"no tenant's server could be reached "
                                               f"({failed} tenant(s) failed to connect)",
            ErrorKind.SERVER_UNREACHABLE: f"{failed} of {len(self.tenants)} tenant(s) failed: "
                                          "their server could not be reached; the others ran",
        }
        message = messages.get(kind, f"{failed} of {len(self.tenants)} tenant(s) failed")
        return {"kind": kind.value, "message": message}

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "dry_run": self.dry_run,
            "target": self.target,
            "interrupted": self.interrupted,
            "duration_ms": self.duration_ms,
            "summary": {
                **{s: self.count(s) for s in STATUSES},
                # migrations committed, failed tenants' included (tenant counts are above)
                "migrations_applied": sum(len(t.applied) for t in self.tenants),
                "migrations_reverted": sum(len(t.reverted) for t in self.tenants),
            },
            "tenants": [t.to_json() for t in self.tenants],
            "notes": list(self.notes),
            **({"recording_error": self.recording_error} if self.recording_error else {}),
            "lint": list(self.lint),
            "error": self.error_json(),
        }
