"""The fan-out engine: many tenant databases at once, safely.

Work is grouped into *units*, one per database (a dedicated tenant database,
or the shared database with all its tenants). Units run under a global
semaphore and a per-server one, wave after wave; a failed wave stops the
later ones, a failure budget stops scheduling, and a stop event (SIGINT /
SIGTERM) lets in-flight units finish while the rest are reported skipped.

Per unit: connect -> poll the per-database advisory lock -> read history
(created on first use) -> plan -> apply pending migrations in order -> seed ->
close (the session-level lock ends with the session). Transient errors retry
the whole unit (tenacity, exponential backoff with jitter), which re-reads
history first, so a COMMIT lost with the connection is never applied twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from . import purpose
from .drivers import postgres
from .config import TenantSpec
from .errors import DatabaseError, LockNotAcquired, TenantctlError
from .migrations import Migration, Script, Version
from .outcome import APPLIED, FAILED, SKIPPED, UP_TO_DATE, TenantError, TenantResult
from .plan import at_latest, can_skip, make_marker, plan_migrate, plan_rollback, replay


@dataclass(frozen=True)
class RunOptions:
    command: str = "migrate"  # provision | migrate | rollback | repair
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


@dataclass(frozen=True)
class Unit:
    """One database and the tenants whose schema lives in it."""

    server: str
    database: str
    mode: str
    tenants: tuple[TenantSpec, ...]

    @property
    def wave(self) -> str | None:
        return next((t.wave for t in self.tenants if t.wave), None)


@dataclass
class _Progress:
    """What a unit achieved so far, kept across retry attempts."""

    from_version: str | None = None
    to_version: str | None = None
    applied: list[str] = field(default_factory=list)
    seeded: set[int] = field(default_factory=set)
    created: bool = False
    read_once: bool = False
    marked: bool = False  # skipped on the strength of its schema marker
    warnings: list[str] = field(default_factory=list)


class DriftDetected(TenantctlError):
    """An applied migration file was edited since it ran."""


def group_units(tenants: tuple[TenantSpec, ...]) -> list[Unit]:
    units: dict[tuple[str, str], list[TenantSpec]] = {}
    for t in tenants:
        units.setdefault((t.server, t.database), []).append(t)
    return [Unit(server, db, ts[0].mode, tuple(ts)) for (server, db), ts in units.items()]


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


ResultCallback = Callable[[TenantResult], Awaitable[None]]


class Engine:
    """Runs units. ``db`` is the database driver: the ``postgres`` module by
    default, or any object with the same functions (``tenantctl.fake`` is an
    in-memory one, used by the contract tests and the benchmark's simulation).
    """

    # CREATE DATABASE sessions kept open for reuse, per server. They count against
    # the server on top of --concurrency tenant sessions and the control session.
    MAX_IDLE_ADMINS = 2

    def __init__(
        self,
        migrations: tuple[Migration, ...],
        dsns: dict[str, str],
        options: RunOptions,
        *,
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
        db: Any = None,
        after_migrate: Callable[[Any, Unit, Any], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.db = db if db is not None else postgres
        # Called with the lock held after a unit's migrations, before its seeds;
        # returns warnings. Shared mode uses it to enforce Row-Level Security.
        self.after_migrate = after_migrate
        self.run_id = run_id
        self.migrations = migrations
        self.dsns = dsns
        self.options = options
        self.seed = seed
        self.existing = existing
        self.markers = markers or {}
        self.templates = templates or {}
        # how many of the folder's migrations the templates hold (all by default);
        # the rest run in each clone (they must run per tenant)
        self.template_migrations = (len(migrations) if template_migrations is None
                                    else template_migrations)
        # what each existing database was created for, and which registered
        # tenants live where (tenantctl.purpose module)
        self.purposes = purposes or {}
        self.claims = claims or {}
        self.on_result = on_result
        self.stop = stop or asyncio.Event()
        self._global = asyncio.Semaphore(options.concurrency)
        self._servers = {
            name: asyncio.Semaphore(cap) for name, cap in (server_caps or {}).items()
        }
        self._admins: dict[str, list[Any]] = {}
        self.failures = 0
        self._halt_reason: str | None = None

    async def close(self) -> None:
        """Close the reusable admin sessions (CREATE DATABASE connections)."""
        for sessions in self._admins.values():
            for session in sessions:
                await session.close()
        self._admins.clear()

    # ------------------------------------------------------------ scheduling

    async def run(self, units: list[Unit], waves: tuple[str, ...]) -> list[TenantResult]:
        results: list[TenantResult] = []
        for wave, members in order_waves(units, waves):
            if self._halt_reason is None and self.stop.is_set():
                self._halt_reason = "interrupted before start"
            if self._halt_reason is not None:
                for unit in members:
                    results.extend(await self._emit(self._skipped(unit, self._halt_reason)))
                continue
            wave_results = await asyncio.gather(*(self._guarded(u) for u in members))
            flat = [r for rs in wave_results for r in rs]
            results.extend(flat)
            if wave is not None and any(r.status == FAILED for r in flat):
                self._halt_reason = f"wave {wave!r} had failures; later waves not started"
        return results

    async def _guarded(self, unit: Unit) -> list[TenantResult]:
        wrong = purpose.mismatch(unit.database, purpose.for_unit(unit.mode, self._ids(unit)),
                                 self.purposes.get((unit.server, unit.database)))
        if wrong is not None:
            self.failures += 1
            error = TenantError(wrong, None, None, None, purpose.ADOPT_HINT)
            return await self._emit([
                TenantResult(t.clnt_id, unit.database, unit.mode, FAILED, error=error)
                for t in unit.tenants])
        if self._marked_up_to_date(unit):
            reason = self._should_skip()
            if reason is not None:
                return await self._emit(self._skipped(unit, reason))
            return await self._emit(self._marked_result(unit))
        server_sem = self._servers.get(unit.server)
        async with self._global:
            if server_sem is not None:
                await server_sem.acquire()
            try:
                reason = self._should_skip()
                if reason is not None:
                    results = self._skipped(unit, reason)
                else:
                    results = await self._run_unit(unit)
                    if any(r.status == FAILED for r in results):
                        self.failures += 1
            finally:
                if server_sem is not None:
                    server_sem.release()
        # Recording (ledger, progress) happens after the slot is free for the next tenant.
        return await self._emit(results)

    def _marked_up_to_date(self, unit: Unit) -> bool:
        """A dedicated database whose marker proves it is at the latest version."""
        opts = self.options
        if opts.command not in ("migrate", "provision"):
            return False
        if not opts.skip_marked or opts.target is not None or unit.mode != "database":
            return False
        marker = self.markers.get((unit.server, unit.database))
        need_seed = self._seeds(unit)
        return can_skip(marker, self.migrations, need_seed=need_seed)

    @staticmethod
    def _ids(unit: Unit) -> tuple[int, ...]:
        return tuple(t.clnt_id for t in unit.tenants)

    async def _adopt(self, session: Any, unit: Unit, progress: _Progress) -> None:
        """An existing database without a purpose tag: adopt it (and tag it) only
        when that cannot take over someone else's database."""
        key = (unit.server, unit.database)
        if key in self.purposes or progress.created:
            return
        expected = purpose.for_unit(unit.mode, self._ids(unit))
        has_history, has_objects = await self.db.database_contents(session)
        refusal = purpose.adoption_refusal(
            unit.database, expected, has_history=has_history, has_objects=has_objects,
            claimed_by=self.claims.get(key, ()))
        if refusal is not None:
            raise TenantctlError(refusal, hint=purpose.ADOPT_HINT)
        if not self.options.dry_run and await self.db.write_purpose(session, expected):
            self.purposes[key] = expected

    def _seeds(self, unit: Unit) -> bool:
        """Does this run seed the unit's tenants that were never seeded?

        provision does; so does a full migrate of a dedicated database, which
        finishes a provisioning interrupted between CREATE DATABASE and the
        seed (status shows such a tenant as ``unfinished``).
        """
        if self.seed is None:
            return False
        if self.options.command == "provision":
            return True
        return (self.options.command == "migrate" and unit.mode == "database"
                and self.options.target is None)

    def _marked_result(self, unit: Unit) -> list[TenantResult]:
        latest = self.migrations[-1].version.text
        return [
            TenantResult(t.clnt_id, unit.database, unit.mode, UP_TO_DATE, latest, latest)
            for t in unit.tenants
        ]

    def _should_skip(self) -> str | None:
        if self.stop.is_set():
            return "interrupted before start"
        budget = self.options.max_failures
        if budget is not None and self.failures >= budget:
            return f"failure budget of {budget} reached"
        return self._halt_reason

    async def _emit(self, results: list[TenantResult]) -> list[TenantResult]:
        if self.on_result is not None:
            for r in results:
                await self.on_result(r)
        return results

    @staticmethod
    def _skipped(unit: Unit, reason: str) -> list[TenantResult]:
        return [
            TenantResult(t.clnt_id, unit.database, unit.mode, SKIPPED, reason=reason)
            for t in unit.tenants
        ]

    # ------------------------------------------------------------ one unit

    async def run_single(self, unit: Unit) -> tuple[_Progress, int, TenantError | None, int]:
        """Run one unit with retries: (progress, attempts, error, duration_ms)."""
        started = time.monotonic()
        progress = _Progress()
        attempts = 0
        error: TenantError | None = None
        try:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.options.retries + 1),
                wait=wait_random_exponential(multiplier=0.2, max=self.options.retry_wait_max),
                retry=retry_if_exception(lambda e: _retryable(e) and not self.stop.is_set()),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    await self._attempt(unit, progress)
        except _MigrationFailed as exc:
            error = exc.as_error()
        except DatabaseError as exc:
            error = TenantError(exc.message, exc.sqlstate, exc.migration, exc.detail, exc.hint)
        except TenantctlError as exc:
            error = TenantError(exc.message, None, None, None, exc.hint)
        return progress, attempts, error, int((time.monotonic() - started) * 1000)

    async def _run_unit(self, unit: Unit) -> list[TenantResult]:
        progress, attempts, error, duration = await self.run_single(unit)
        if error is not None:
            status = FAILED
        elif progress.applied or progress.seeded or progress.created:
            status = APPLIED
        else:
            status = UP_TO_DATE
        return [
            TenantResult(
                clnt_id=t.clnt_id,
                database=unit.database,
                mode=unit.mode,
                status=status,
                from_version=progress.from_version,
                to_version=progress.to_version,
                applied=tuple(progress.applied),
                attempts=attempts,
                duration_ms=duration,
                created=progress.created,
                seeded=t.clnt_id in progress.seeded,
                error=error,
                warnings=tuple(progress.warnings),
            )
            for t in unit.tenants
        ]

    async def _attempt(self, unit: Unit, progress: _Progress) -> None:
        opts = self.options
        dsn = self.dsns[unit.server]
        if opts.command == "provision" and not opts.dry_run:
            if await self._ensure_database(unit, dsn, progress) and self.seed is None:
                return  # an exact clone of the current template: nothing left to do
        session = await self.db.connect(
            dsn, unit.database,
            lock_timeout=opts.lock_timeout,
            statement_timeout=opts.statement_timeout,
        )
        try:
            if opts.dry_run:
                await self._adopt(session, unit, progress)
                await self._plan_only(session, progress)
                return
            # Session-level lock: released when the session closes below
            # (one round trip less per tenant than an explicit unlock).
            await self.db.acquire_migration_lock(session, opts.lock_wait)
            await self._adopt(session, unit, progress)
            await self._migrate_locked(session, unit, progress)
        finally:
            await session.close()

    async def _ensure_database(self, unit: Unit, dsn: str, progress: _Progress) -> bool:
        """Create the unit's database if missing. True when it was cloned from the
        template and marked: it is then exactly at the folder's latest version
        (the template was checked against the folder this run), and the only
        remaining per-tenant work would be a seed."""
        if self.existing is not None and (unit.server, unit.database) in self.existing:
            return False
        template = self.templates.get(unit.server) if unit.mode == "database" else None
        admin = await self._admin(unit.server, dsn)
        cloned = False
        try:
            try:
                created = await self.db.create_database(admin, unit.database, template)
                cloned = created and template is not None
            except DatabaseError as exc:
                if template is None:
                    raise
                # Any clone failure (55006: someone is connected to the template;
                # 3D000: another run is rebuilding it) -> plain database, and no
                # more clone attempts on this server during this run.
                self.templates.pop(unit.server, None)
                progress.warnings.append(
                    f"template {template} unusable ([{exc.sqlstate}] {exc.message}); "
                    "created empty and migrated instead"
                )
                created = await self.db.create_database(admin, unit.database, None)
            progress.created = progress.created or created
            if created:
                tag = purpose.for_unit(unit.mode, self._ids(unit))
                if await self.db.write_purpose(admin, tag, unit.database):
                    self.purposes[(unit.server, unit.database)] = tag
            if cloned:
                held = self.migrations[self.template_migrations - 1].version.text
                progress.from_version = progress.to_version = held
                progress.read_once = True
                # a template stopped before a per-tenant migration: the clone
                # still needs a session that applies the rest
                cloned = self.template_migrations == len(self.migrations)
                if cloned and self.seed is None:
                    # The marker is set from the admin session: no session on the
                    # new database (its first connection costs as much as the clone).
                    await self.db.write_marker(
                        admin, make_marker(self.migrations, seeded=False), unit.database)
        except BaseException:
            await admin.close()
            raise
        idle = self._admins.setdefault(unit.server, [])
        if len(idle) < self.MAX_IDLE_ADMINS:
            idle.append(admin)
        else:
            await admin.close()
        return cloned

    async def _admin(self, server: str, dsn: str) -> Any:
        """An idle maintenance-database session for this server, reused across units."""
        idle = self._admins.get(server)
        while idle:
            session = idle.pop()
            if not session.closed:
                return session
        return await self.db.connect(dsn)

    async def _plan_only(self, session: Any, progress: _Progress) -> None:
        history = await self.db.read_history(session)
        plan = plan_migrate(self.migrations, history, self.options.target)
        progress.from_version = plan.from_version
        progress.to_version = plan.to_version
        progress.applied = [m.version.text for m in plan.pending]

    async def _migrate_locked(self, session: Any, unit: Unit, progress: _Progress) -> None:
        history = await self.db.open_history(session)
        if self.options.command == "rollback":
            await self._rollback_locked(session, unit, history, progress)
            return
        plan = plan_migrate(self.migrations, history, self.options.target)
        if not progress.read_once:
            progress.from_version = plan.from_version
            progress.read_once = True
        progress.to_version = plan.from_version
        if self.options.command == "repair":
            by_version = {m.version.text: m for m in self.migrations}
            for d in plan.drift:
                await self.db.record_repair(session, by_version[d.version], self.run_id)
                progress.applied.append(d.version)
            return
        if plan.drift and not self.options.allow_drift:
            names = ", ".join(f"{d.filename} (applied {d.applied_checksum[:12]}, file "
                              f"{d.file_checksum[:12]})" for d in plan.drift)
            raise DriftDetected(
                f"checksum drift: applied migration file(s) were edited: {names}",
                hint="restore the file(s), or record the edit deliberately with `tenantctl repair` "
                "(or pass --allow-drift for this run)",
            )
        if plan.unknown:
            progress.warnings.append(
                f"versions applied but missing from the folder: {', '.join(plan.unknown)}"
            )
        run_id = self.run_id
        for migration in plan.pending:
            try:
                if migration.transactional:
                    await self.db.apply_transactional(session, migration, run_id)
                else:
                    await self.db.apply_statements(
                        session, migration, run_id, plan.resume.get(migration.version, 0)
                    )
            except DatabaseError as exc:
                exc.migration = migration.filename
                if exc.transient:
                    raise
                raise _MigrationFailed(exc, migration) from exc
            progress.applied.append(migration.version.text)
            progress.to_version = _max_version(progress.to_version, migration.version.text)
        if plan.pending:
            # what follows (RLS enforcement, seeds, the marker) must not run in
            # whatever session state the last migration left behind
            await self.db.reset_session(session)
        if self.after_migrate is not None:
            try:
                progress.warnings.extend(await self.after_migrate(session, unit, self.options))
            except DatabaseError as exc:
                if exc.transient:
                    raise
                raise _MigrationFailed(exc, "(row-level security enforcement)") from exc
        seeded = replay(history).seeded
        if self._seeds(unit):
            for t in unit.tenants:
                if t.clnt_id in seeded or t.clnt_id in progress.seeded:
                    continue
                try:
                    await self.db.apply_seed(session, self.seed, t.clnt_id, t.name, t.sites, run_id)
                except DatabaseError as exc:
                    exc.migration = self.seed.path.name
                    if exc.transient:
                        raise
                    raise _MigrationFailed(exc, self.seed.path.name) from exc
                progress.seeded.add(t.clnt_id)
        if unit.mode in ("database", "template") and self.options.target is None:
            all_seeded = unit.mode == "database" and all(
                t.clnt_id in seeded or t.clnt_id in progress.seeded for t in unit.tenants)
            reached = progress.to_version
            if at_latest(self.migrations, plan, reached):
                marker = make_marker(self.migrations, seeded=all_seeded)
                if marker != self.markers.get((unit.server, unit.database)):
                    await self.db.write_marker(session, marker)


    async def _rollback_locked(
        self, session: Any, unit: Unit, history: list[Any], progress: _Progress
    ) -> None:
        assert self.options.target is not None
        plan = plan_rollback(self.migrations, history, self.options.target)
        if not progress.read_once:
            progress.from_version = plan.from_version
            progress.read_once = True
        progress.to_version = plan.from_version
        if plan.unknown:
            raise TenantctlError(
                f"applied version(s) {', '.join(plan.unknown)} are not in the folder: "
                "no down script to run",
                hint="restore those migration files (with their .down.sql) first",
            )
        if not plan.steps:
            return
        # The marker must never claim a version the tenant is leaving.
        await self.db.write_marker(session, None)
        remaining = set(replay(history).applied)
        for migration in plan.steps:
            try:
                await self.db.apply_down(session, migration, self.run_id)
            except DatabaseError as exc:
                exc.migration = migration.down.path.name if migration.down else migration.filename
                if exc.transient:
                    raise
                raise _MigrationFailed(exc, exc.migration) from exc
            progress.applied.append(migration.version.text)
            remaining.discard(migration.version)
            progress.to_version = max(remaining).text if remaining else None


class _MigrationFailed(Exception):
    """A permanent error inside one migration (or the seed)."""

    def __init__(self, error: DatabaseError, migration: Migration | str) -> None:
        super().__init__(error.message)
        self.error = error
        self.migration = migration if isinstance(migration, str) else migration.filename

    def as_error(self) -> TenantError:
        e = self.error
        return TenantError(e.message, e.sqlstate, self.migration, e.detail, e.hint)


def _max_version(current: str | None, new: str) -> str:
    if current is None or Version.parse(current) < Version.parse(new):
        return new
    return current
