"""What a run produced: frozen per-tenant results and the run they belong to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

    def count(self, status: str) -> int:
        return sum(1 for t in self.tenants if t.status == status)

    @property
    def failed(self) -> bool:
        return self.recording_error is not None or any(t.status == FAILED for t in self.tenants)

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
        }
