"""What a move produced (per tenant and per run, the JSON report) and what a dry run
would do; the ledger row of a move."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .config import Project, TenantSpec
from .move_plan import Method, MoveError, method_for
from .move_registry import JournalEntry, Phase
from .outcome import APPLIED, FAILED, SKIPPED, UP_TO_DATE, TenantFailure, TenantResult
from .placement_check import Placement, Registered, compare, servers_declared


class MoveStatus(StrEnum):
    MOVED = "moved"
    UP_TO_DATE = "up_to_date"  # already where tenants.yaml says
    PLANNED = "planned"  # --dry-run: would be moved
    FAILED = "failed"
    SKIPPED = "skipped"  # interrupted (SIGINT/SIGTERM) before this tenant started


@dataclass(frozen=True)
class MoveResult:
    clnt_id: int
    status: MoveStatus
    source: Placement | None = None
    target: Placement | None = None
    method: Method | None = None
    version: str | None = None
    tables: dict[str, int] = field(default_factory=dict)  # rows copied per table
    duration_ms: int = 0
    kept_source: str | None = None
    recovered: str | None = None  # what a re-run did with an interrupted move
    error: TenantFailure | None = None

    def to_json(self) -> dict[str, Any]:
        def where(p: Placement | None) -> dict[str, str] | None:
            return None if p is None else {"mode": p.mode, "server": p.server,
                                           "database": p.database}

        out: dict[str, Any] = {
            "clnt_id": self.clnt_id, "status": self.status.value, "from": where(self.source),
            "to": where(self.target), "method": self.method.value if self.method else None,
            "version": self.version, "tables": dict(self.tables),
            "rows_copied": sum(self.tables.values()), "duration_ms": self.duration_ms,
        }
        if self.kept_source:
            out["kept_source"] = self.kept_source
        if self.recovered:
            out["recovered"] = self.recovered
        if self.error is not None:
            out["error"] = self.error.to_json()
        return out

    def line(self) -> str:
        """One line of text output."""
        head = f"clnt_id {self.clnt_id}: {self.status.value}"
        if self.source is not None and self.target is not None and self.source != self.target:
            head += f" from {self.source.describe()} to {self.target.describe()}"
        elif self.target is not None:
            head += f" ({self.target.describe()})"
        if self.method is not None:
            head += f" by {self.method.value}"
        if self.tables:
            head += (f", {sum(self.tables.values())} row(s) in {len(self.tables)} table(s)"
                     f" verified, {self.duration_ms} ms")
        for extra in (self.recovered, self.kept_source and f"kept: {self.kept_source}"):
            if extra:
                head += f"; {extra}"
        if self.error is not None:
            head += f"\n  error: {self.error.message}"
            if self.error.hint:
                head += f"\n  hint: {self.error.hint}"
        return head


@dataclass(frozen=True)
class MoveReport:
    run_id: str
    dry_run: bool
    duration_ms: int
    tenants: tuple[MoveResult, ...]

    @property
    def failed(self) -> bool:
        return any(r.status is MoveStatus.FAILED for r in self.tenants)

    def to_json(self) -> dict[str, Any]:
        summary = {s.value: sum(r.status is s for r in self.tenants) for s in MoveStatus}
        return {"run_id": self.run_id, "command": "move", "dry_run": self.dry_run,
                "duration_ms": self.duration_ms, "summary": summary,
                "tenants": [r.to_json() for r in self.tenants]}


def ledger_row(spec: TenantSpec, r: MoveResult) -> TenantResult:
    status = {MoveStatus.MOVED: APPLIED, MoveStatus.FAILED: FAILED,
              MoveStatus.SKIPPED: SKIPPED}.get(r.status, UP_TO_DATE)
    where = r.target or r.source
    return TenantResult(spec.clnt_id, where.database if where else spec.database,
                        where.mode if where else spec.mode, status, r.version, r.version,
                        duration_ms=r.duration_ms, error=r.error)


def planned(project: Project, spec: TenantSpec, registry: dict[int, Registered],
          entries: dict[int, JournalEntry]) -> MoveResult:
    entry = entries.get(spec.clnt_id)
    recovered = None
    if entry is not None:
        recovered = (f"an interrupted move ({entry.phase.value}) would be "
                     + ("finished" if entry.phase is Phase.CUTOVER else "undone") + " first")
    known = registry.get(spec.clnt_id)
    mismatch = compare(spec, known, server_declared=servers_declared(project)[spec.clnt_id])
    if mismatch is None:
        where = known.placement if known is not None else None
        status = MoveStatus.UP_TO_DATE if known is not None and known.placed else MoveStatus.FAILED
        error = None if status is MoveStatus.UP_TO_DATE else TenantFailure(
            f"clnt_id {spec.clnt_id} is not provisioned anywhere: nothing to move",
            hint="tenantctl provision it at its declared placement")
        return MoveResult(spec.clnt_id, status, where, where, recovered=recovered, error=error)
    try:
        method = method_for(mismatch.registered, mismatch.declared)
    except MoveError as exc:
        return MoveResult(spec.clnt_id, MoveStatus.FAILED, mismatch.registered, mismatch.declared,
                          error=TenantFailure(exc.message, hint=exc.hint))
    return MoveResult(spec.clnt_id, MoveStatus.PLANNED, mismatch.registered, mismatch.declared,
                      method, recovered=recovered)
