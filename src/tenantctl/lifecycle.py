"""A lifecycle command (baseline, deprovision, restore) as one run of the ledger.

These commands work tenant by tenant, outside the migration engine, but are
audited like a migrate: the run and each tenant's outcome are rows of the
control database, and the registry is brought in line with tenants.yaml
(placements pinned) before any tenant is touched. Their report is the usual
JSON shape, each tenant row carrying what the command adds (``archive``,
``baselined``, ...).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from . import ledger, registry
from .config import Project
from .drivers.base import Driver, Session
from .fleet import server_dsns
from .outcome import FAILED, RunResult, TenantFailure, TenantResult
from .placement import Placement
from .runs import open_control_or_name_server


@dataclass(frozen=True)
class LifecycleResult:
    """One tenant's outcome, and what the command adds to its JSON row."""

    result: TenantResult
    server: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "server": self.server, **self.extra}

    def line(self) -> str:
        r = self.result
        head = f"clnt_id {r.clnt_id:>5}  {r.database:<24} ({self.server})"
        if r.status == FAILED and r.error is not None:
            return f"{head} FAILED: [{r.error.sqlstate or '-'}] {r.error.message}"
        details = "; ".join(f"{k}: {_text(v)}" for k, v in self.extra.items()
                            if v not in (None, [], "", {}))
        return f"{head} {r.status}" + (f" ({details})" if details else "")


def _text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


@dataclass(frozen=True)
class LifecycleReport:
    run: RunResult
    tenants: tuple[LifecycleResult, ...]

    @property
    def failed(self) -> bool:
        return self.run.failed

    def to_json(self) -> dict[str, Any]:
        doc = self.run.to_json()
        counts: dict[str, int] = {}
        for t in self.tenants:
            counts[t.result.status] = counts.get(t.result.status, 0) + 1
        doc["summary"].update(counts)
        doc["tenants"] = [t.to_json() for t in self.tenants]
        return doc

    def text(self) -> str:
        lines = [t.line() for t in self.tenants]
        counts: dict[str, int] = {}
        for t in self.tenants:
            counts[t.result.status] = counts.get(t.result.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing to do"
        lines.append(f"{self.run.command} run {self.run.run_id}: {len(self.tenants)} tenant(s): "
                     f"{summary} in {self.run.duration_ms / 1000:.1f}s")
        lines += [f"note: {note}" for note in self.run.notes]
        return "\n".join(lines)


def failed(clnt_id: int, database: str, mode: str, server: str, message: str, *,
           sqlstate: str | None = None, hint: str | None = None) -> LifecycleResult:
    return LifecycleResult(TenantResult(clnt_id, database, mode, FAILED,
                                        error=TenantFailure(message, sqlstate, hint=hint)), server)


class LedgerRun:
    """The control database session of one lifecycle run: placements pinned,
    the run opened, each outcome recorded as it comes, the run closed."""

    def __init__(self, project: Project, command: str, control: Session,
                 recorder: ledger.Ledger, placement: Placement) -> None:
        self.project = project
        self.command = command
        self.control = control
        self.recorder = recorder
        self.placement = placement
        self.run_id = str(uuid.uuid4())
        self.results: list[LifecycleResult] = []
        self._started = time.monotonic()

    @classmethod
    async def open(cls, driver: Driver, project: Project, command: str) -> LedgerRun:
        dsn = server_dsns(project, {project.default_server})[project.default_server]
        control = await open_control_or_name_server(driver, project, dsn)
        try:
            recorder = ledger.Ledger(control)
            placement = await registry.pin(control, recorder, project)
        except BaseException:
            await control.close()
            raise
        return cls(project, command, control, recorder, placement)

    async def start(self, clnt_ids: list[int], argv: tuple[str, ...]) -> None:
        await self.recorder.start_run(self.run_id, self.command, clnt_ids, argv)

    async def record(self, outcome: LifecycleResult) -> None:
        self.results.append(outcome)
        await self.recorder.record(self.run_id, outcome.result, provisioned=False)

    async def finish(self, notes: tuple[str, ...] = ()) -> LifecycleReport:
        run = RunResult(self.run_id, self.command, tuple(o.result for o in self.results),
                        duration_ms=int((time.monotonic() - self._started) * 1000),
                        notes=notes)
        await self.recorder.finish_run(run)
        return LifecycleReport(run, tuple(self.results))

    async def __aenter__(self) -> LedgerRun:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.control.close()
