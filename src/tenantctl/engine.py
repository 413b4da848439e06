"""The fan-out engine: many tenant databases at once, safely.

Units (one database each, see :mod:`tenantctl.executor`) run under a global
concurrency limit and a per-server one, wave after wave, each wave in one
``asyncio.TaskGroup``. A failed wave stops the later ones, a failure budget
stops scheduling, and a stop event (SIGINT / SIGTERM) lets in-flight units
finish while the rest are reported skipped. Every unit that starts ends with
a result: an unexpected error in a unit becomes that unit's failure, and an
error while recording a result (the ledger) stops scheduling but never
abandons the units still running.

Transient errors retry the whole unit (tenacity, exponential backoff with
jitter), which re-reads history first, so a COMMIT lost with its connection is
never applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from . import logs
from .config import TenantSpec
from .drivers.base import Driver
from .drivers.pg_version import CloneStrategy
from .errors import DatabaseError, DriftDetected, LockNotAcquired, MigrationFailed, TenantctlError
from .executor import EnforceHook, Executor, Progress, Unit, run_seeds
from .logs import Event
from .migrations import Migration, Script, Version
from .modes import Mode
from .outcome import APPLIED, FAILED, REVERTED, SKIPPED, UP_TO_DATE, TenantFailure, TenantResult
from .plan import can_skip
from .steps import Verb

R = TypeVar("R")


@dataclass(frozen=True)
class RunOptions:
    verb: Verb = Verb.MIGRATE
    target: Version | None = None
    dry_run: bool = False
    concurrency: int = 8
    max_failures: int | None = None
    lock_timeout: float = 5.0
    statement_timeout: float = 0.0
    lock_wait: float = 120.0
    retries: int = 3
    allow_drift: bool = False
    retry_wait_max: float = 10.0
    skip_marked: bool = True  # trust schema markers to skip up-to-date tenants
    use_template: bool = True  # provision by cloning the template database
    strict: bool = False  # problems found before the run (missing extensions) refuse it
    wave_pause: float = 0.0  # seconds to wait between waves (a stop signal ends the wait)


@dataclass(frozen=True)
class UnitOutcome:
    """One unit's run, all attempts included."""

    progress: Progress
    attempts: int
    failure: TenantFailure | None
    duration_ms: int


def group_units(tenants: tuple[TenantSpec, ...]) -> list[Unit]:
    units: dict[tuple[str, str], list[TenantSpec]] = {}
    for t in tenants:
        units.setdefault((t.server, t.database), []).append(t)
    return [Unit(server, db, Mode(ts[0].mode), tuple(ts)) for (server, db), ts in units.items()]


def marked_up_to_date(options: RunOptions, unit: Unit, markers: dict[tuple[str, str], str],
                      migrations: tuple[Migration, ...], *, has_seed: bool) -> bool:
    """Will the run skip this unit on its marker alone (no session: nothing to do)?"""
    if options.verb not in (Verb.MIGRATE, Verb.PROVISION):
        return False
    if not options.skip_marked or options.target is not None or unit.mode is not Mode.DATABASE:
        return False
    need_seed = run_seeds(unit, has_seed=has_seed, verb=options.verb, target=options.target)
    return can_skip(markers.get((unit.server, unit.database)), migrations, need_seed=need_seed)


def order_waves(units: list[Unit], waves: tuple[str, ...]) -> list[tuple[str | None, list[Unit]]]:
    """Declared waves first, in declared order, then everything else."""
    ordered: list[tuple[str | None, list[Unit]]] = []
    for name in waves:
        members = [u for u in units if u.wave == name]
        if members:
            ordered.append((name, members))
    rest = [u for u in units if u.wave not in waves]
    if rest:
        ordered.append((None, rest))
    return ordered


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, LockNotAcquired):
        return False  # already waited lock_wait; the other run is busy
    return isinstance(exc, DatabaseError) and exc.transient


def _log_retry(unit: Unit) -> Callable[[RetryCallState], None]:
    """A ``retry`` event per tenant of the unit before tenacity sleeps."""

    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        sqlstate = getattr(exc, "sqlstate", None)
        message = getattr(exc, "message", str(exc))
        for t in unit.tenants:
            logs.event(
                Event.RETRY, f"clnt_id {t.clnt_id:>5}  {unit.database}: attempt "
                f"{state.attempt_number} failed: [{sqlstate or '-'}] {message}; retrying in "
                f"{wait:.1f}s", level=logging.WARNING, clnt_id=t.clnt_id, database=unit.database,
                server=unit.server, attempt=state.attempt_number, retry_in_ms=int(wait * 1000),
                error={"sqlstate": sqlstate, "message": message})

    return log


ResultCallback = Callable[[TenantResult], Awaitable[None]]
# told before a --wave-pause wait: (the wave that comes next, None: the unwaved rest; seconds)
PauseCallback = Callable[[str | None, float], None]


class Engine:
    """Runs units through the :class:`~tenantctl.drivers.base.Driver` it is given
    (PostgreSQL, or the in-memory fake of the contract tests and the benchmark)."""

    def __init__(
        self,
        migrations: tuple[Migration, ...],
        dsns: dict[str, str],
        options: RunOptions,
        *,
        driver: Driver,
        seed: Script | None = None,
        server_caps: dict[str, int] | None = None,
        existing: set[tuple[str, str]] | None = None,
        markers: dict[tuple[str, str], str] | None = None,
        templates: dict[str, str] | None = None,
        template_migrations: int | None = None,
        purposes: dict[tuple[str, str], str] | None = None,
        claims: dict[tuple[str, str], tuple[int, ...]] | None = None,
        on_result: ResultCallback | None = None,
        stop: asyncio.Event | None = None,
        run_id: str | None = None,
        enforce: EnforceHook | None = None,
        clone_strategies: dict[str, CloneStrategy] | None = None,
        on_pause: PauseCallback | None = None,
    ) -> None:
        self.options = options
        self.on_pause = on_pause
        self.migrations = migrations
        self.executor = Executor(
            driver, migrations, dsns, options.verb, target=options.target,
            dry_run=options.dry_run, allow_drift=options.allow_drift,
            lock_timeout=options.lock_timeout, statement_timeout=options.statement_timeout,
            lock_wait=options.lock_wait, run_id=run_id, seed=seed, existing=existing,
            markers=markers or {}, templates=templates or {},
            template_migrations=len(migrations) if template_migrations is None
            else template_migrations,
            purposes=purposes or {}, claims=claims or {}, enforce=enforce,
            clone_strategies=clone_strategies or {}, trust_markers=options.skip_marked,
        )
        self.on_result = on_result
        self.stop = stop or asyncio.Event()
        self._global = asyncio.Semaphore(options.concurrency)
        self._servers = {
            name: asyncio.Semaphore(cap) for name, cap in (server_caps or {}).items()
        }
        self.failures = 0
        self._halt_reason: str | None = None
        self.recording_error: BaseException | None = None  # first failure of on_result

    async def close(self) -> None:
        """Close the reusable admin sessions (CREATE DATABASE connections)."""
        await self.executor.close()

    # ------------------------------------------------------------ scheduling

    async def run(self, units: list[Unit], waves: tuple[str, ...]) -> list[TenantResult]:
        results: list[TenantResult] = []
        for index, (wave, members) in enumerate(order_waves(units, waves)):
            if index > 0:
                await self._pause_before(wave)
            if self._halt_reason is None and self.stop.is_set():
                self._halt_reason = "interrupted before start"
            if self._halt_reason is not None:
                for unit in members:
                    results.extend(await self._emit(self._skipped(unit, self._halt_reason)))
                continue
            flat = [r for rs in await self.map_units(members, self._guarded) for r in rs]
            results.extend(flat)
            if wave is not None and any(r.status == FAILED for r in flat):
                self._halt_reason = f"wave {wave!r} had failures; later waves not started"
        return results

    async def _pause_before(self, wave: str | None) -> None:
        """--wave-pause: wait before the next wave (not in a dry run, nor when the run
        is stopping anyway); SIGINT/SIGTERM end the wait and the later waves are skipped."""
        pause = self.options.wave_pause
        if pause <= 0 or self.options.dry_run or self._should_skip() is not None:
            return
        if self.on_pause is not None:
            self.on_pause(wave, pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=pause)

    async def map_units(self, units: list[Unit],
                        work: Callable[[Unit], Coroutine[Any, Any, R]]) -> list[R]:
        """``work`` for every unit at once, in one TaskGroup: results in unit order.

        Every task is awaited before this returns, also when it is cancelled
        (a second SIGINT), so nothing outlives the run.
        """
        try:
            async with asyncio.TaskGroup() as group:
                tasks: list[asyncio.Task[R]] = [group.create_task(work(unit)) for unit in units]
        except ExceptionGroup as failed:
            # the siblings are cancelled and awaited by now; report the first
            # failure itself, as a plain exception the CLI translates
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def bounded(self, unit: Unit, work: Callable[[Unit], Awaitable[R]]) -> R:
        """``work(unit)`` inside the global and the unit's server concurrency limits."""
        server_sem = self._servers.get(unit.server)
        async with self._global:
            if server_sem is None:
                return await work(unit)
            async with server_sem:
                return await work(unit)

    async def _guarded(self, unit: Unit) -> list[TenantResult]:
        wrong = self.executor.wrong_database(unit)
        if wrong is not None:
            self.failures += 1
            from .purpose import ADOPT_HINT

            failure = TenantFailure(wrong, hint=ADOPT_HINT)
            return await self._emit([TenantResult(t.clnt_id, unit.database, unit.mode, FAILED,
                                                  error=failure) for t in unit.tenants])
        if self._marked_up_to_date(unit):
            reason = self._should_skip()
            if reason is not None:
                return await self._emit(self._skipped(unit, reason))
            return await self._emit(self._marked_result(unit))
        results = await self.bounded(unit, self._unit_results)
        # Recording (ledger, progress) happens after the slot is free for the next tenant.
        return await self._emit(results)

    async def _unit_results(self, unit: Unit) -> list[TenantResult]:
        reason = self._should_skip()
        if reason is not None:
            return self._skipped(unit, reason)
        for t in unit.tenants:
            logs.event(Event.TENANT_START, f"clnt_id {t.clnt_id:>5}  {unit.database}: started",
                       clnt_id=t.clnt_id, database=unit.database, server=unit.server)
        try:
            results = await self._run_unit(unit)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug must cost this unit, not the run's report
            failure = TenantFailure(f"internal error: {type(exc).__name__}: {exc}")
            results = [TenantResult(t.clnt_id, unit.database, unit.mode, FAILED, error=failure)
                       for t in unit.tenants]
        if any(r.status == FAILED for r in results):
            self.failures += 1
        return results

    def _marked_up_to_date(self, unit: Unit) -> bool:
        """A database whose marker proves it is at the latest version."""
        return marked_up_to_date(self.options, unit, self.executor.markers, self.migrations,
                                 has_seed=self.executor.seed is not None)

    def _marked_result(self, unit: Unit) -> list[TenantResult]:
        latest = self.migrations[-1].version.text
        return [TenantResult(t.clnt_id, unit.database, unit.mode, UP_TO_DATE, latest, latest)
                for t in unit.tenants]

    def _should_skip(self) -> str | None:
        if self.stop.is_set():
            return "interrupted before start"
        budget = self.options.max_failures
        if budget is not None and self.failures >= budget:
            return f"failure budget of {budget} reached"
        return self._halt_reason

    async def _emit(self, results: list[TenantResult]) -> list[TenantResult]:
        """Hand results to the callback; a failing callback stops scheduling
        (the error is kept for the run's report) but loses no result."""
        if self.on_result is None or self.recording_error is not None:
            return results
        try:
            for r in results:
                await self.on_result(r)
        except Exception as exc:
            self.recording_error = exc
            self._halt_reason = f"recording results failed ({type(exc).__name__}: {exc})"
        return results

    @staticmethod
    def _skipped(unit: Unit, reason: str) -> list[TenantResult]:
        return [TenantResult(t.clnt_id, unit.database, unit.mode, SKIPPED, reason=reason)
                for t in unit.tenants]

    # ------------------------------------------------------------ one unit

    async def run_single(self, unit: Unit) -> UnitOutcome:
        """Run one unit, retrying transient errors."""
        started = time.monotonic()
        progress = Progress()
        attempts = 0
        failure: TenantFailure | None = None
        try:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.options.retries + 1),
                wait=wait_random_exponential(multiplier=0.2, max=self.options.retry_wait_max),
                retry=retry_if_exception(lambda e: _retryable(e) and not self.stop.is_set()),
                before_sleep=_log_retry(unit),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    await self.executor.attempt(unit, progress)
        except MigrationFailed as exc:
            e = exc.error
            failure = TenantFailure(e.message, e.sqlstate, exc.migration, e.detail, e.hint, e.line)
        except DatabaseError as exc:
            failure = TenantFailure(exc.message, exc.sqlstate, exc.migration, exc.detail, exc.hint,
                                    exc.line)
        except TenantctlError as exc:
            kind = "drift" if isinstance(exc, DriftDetected) else None
            failure = TenantFailure(exc.message, None, None, None, exc.hint, kind=kind)
        except Exception as exc:  # a bug costs this unit, and keeps what it committed
            failure = TenantFailure(f"internal error: {type(exc).__name__}: {exc}")
        return UnitOutcome(progress, attempts, failure, int((time.monotonic() - started) * 1000))

    async def _run_unit(self, unit: Unit) -> list[TenantResult]:
        outcome = await self.run_single(unit)
        progress = outcome.progress
        if outcome.failure is not None:
            status = FAILED
        elif progress.reverted:
            status = REVERTED
        elif progress.applied or progress.seeded or progress.created:
            status = APPLIED
        else:
            status = UP_TO_DATE
        return [
            TenantResult(
                clnt_id=t.clnt_id, database=unit.database, mode=unit.mode, status=status,
                from_version=progress.from_version, to_version=progress.to_version,
                applied=tuple(progress.applied), reverted=tuple(progress.reverted),
                attempts=outcome.attempts,
                duration_ms=outcome.duration_ms, created=progress.created,
                seeded=t.clnt_id in progress.seeded, error=outcome.failure,
                warnings=tuple(progress.warnings),
            )
            for t in unit.tenants
        ]
