"""One unit's work on its database: create it if asked, lock it, plan, run the steps.

A *unit* is one database and the tenants whose schema lives in it (a dedicated
tenant database, the shared database with all its tenants, or the
provisioning template). Per unit: connect (a dedicated session) -> poll the
per-database advisory lock -> check the database is this unit's (purpose tag)
-> read history (created on first use; or, for a marked tenant, taken from its
marker when the lock's round trip shows nothing was recorded since) -> plan
(pure, :mod:`tenantctl.steps`)
-> execute each step -> close (the session-level lock ends with the session).
Retries and scheduling are the engine's; this module does one attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from . import purpose
from .config import TenantSpec
from .drivers.base import Driver, Session
from .drivers.pg_version import CloneStrategy
from .errors import DatabaseError, DriftDetected, MigrationFailed, TenantctlError
from .migrations import Migration, Script, Version
from .modes import Mode, ModePolicy, policy
from .plan import HistoryRow, VouchedHistory, make_marker, vouched_history
from .steps import Step, StepKind, UnitContext, UnitPlan, Verb, fold_marker, plan_unit


@dataclass(frozen=True)
class Unit:
    """One database and the tenants whose schema lives in it."""

    server: str
    database: str
    mode: Mode
    tenants: tuple[TenantSpec, ...]

    @property
    def wave(self) -> str | None:
        return next((t.wave for t in self.tenants if t.wave), None)

    @property
    def policy(self) -> ModePolicy:
        return policy(self.mode)

    @property
    def clnt_ids(self) -> tuple[int, ...]:
        return tuple(t.clnt_id for t in self.tenants)


def run_seeds(unit: Unit, *, has_seed: bool, verb: Verb, target: Version | None) -> bool:
    """Does a run of ``verb`` seed the unit's tenants that were never seeded (see Executor.seeds)?"""
    if not has_seed:
        return False
    if verb is Verb.PROVISION:
        return True
    return verb is Verb.MIGRATE and unit.policy.seeds_on_migrate and target is None


@dataclass
class Progress:
    """What a unit achieved so far, kept across retry attempts."""

    from_version: str | None = None
    to_version: str | None = None
    applied: list[str] = field(default_factory=list)
    reverted: list[str] = field(default_factory=list)
    seeded: set[int] = field(default_factory=set)
    created: bool = False
    read_once: bool = False
    warnings: list[str] = field(default_factory=list)


# Called with the lock held after a unit's migrations (shared mode: enforce
# row-level security); returns warnings.
EnforceHook = Callable[[Session, Unit], Awaitable[list[str]]]


@dataclass
class Executor:
    """Everything one attempt on one unit needs; shared by all units of a run."""

    driver: Driver
    migrations: tuple[Migration, ...]
    dsns: dict[str, str]
    verb: Verb
    target: Version | None = None
    dry_run: bool = False
    allow_drift: bool = False
    lock_timeout: float = 5.0
    statement_timeout: float = 0.0
    lock_wait: float = 120.0
    run_id: str | None = None
    seed: Script | None = None
    existing: set[tuple[str, str]] | None = None  # None: not known, try to create
    markers: dict[tuple[str, str], str] = field(default_factory=dict)
    templates: dict[str, str] = field(default_factory=dict)  # server -> template database
    clone_strategies: dict[str, CloneStrategy] = field(default_factory=dict)  # server -> how
    template_migrations: int = 0  # how many of the migrations the templates hold
    purposes: dict[tuple[str, str], str] = field(default_factory=dict)
    claims: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    trust_markers: bool = True  # plan a marked tenant from its marker (not --no-skip)
    enforce: EnforceHook | None = None
    admins: dict[str, list[Session]] = field(default_factory=dict)

    # CREATE DATABASE sessions kept open for reuse, per server. They count against
    # the server on top of the tenant sessions and the control session.
    MAX_IDLE_ADMINS = 2

    async def close(self) -> None:
        """Close the reusable admin sessions."""
        for sessions in self.admins.values():
            for session in sessions:
                await session.close()
        self.admins.clear()

    def seeds(self, unit: Unit) -> bool:
        """Does this run seed the unit's tenants that were never seeded? provision
        does; so does a full migrate of a dedicated database, which finishes a
        provisioning interrupted between CREATE DATABASE and the seed."""
        return run_seeds(unit, has_seed=self.seed is not None, verb=self.verb, target=self.target)

    # ------------------------------------------------------------ one attempt

    async def attempt(self, unit: Unit, progress: Progress) -> None:
        dsn = self.dsns[unit.server]
        if self.dry_run and self._would_create(unit):
            self._plan_new_database(unit, progress)
            return
        provisioning = self.verb is Verb.PROVISION and not self.dry_run
        if provisioning and await self._ensure_database(unit, dsn, progress) and self.seed is None:
            return  # an exact clone of the current template: nothing left to do
        async with await self.driver.connect(
            dsn, unit.database, lock_timeout=self.lock_timeout,
            statement_timeout=self.statement_timeout,
        ) as session:
            if self.dry_run:
                await self._adopt(session, unit, progress)
                await self._plan_only(session, unit, progress)
                return
            # Session-level lock: released when the session closes
            # (one round trip less per tenant than an explicit unlock).
            history: list[HistoryRow] | None = None
            vouched = self._vouched(unit)
            if vouched is None:
                await self.driver.acquire_migration_lock(session, self.lock_wait)
            elif await self.driver.acquire_lock_checking_last(session, self.lock_wait,
                                                              vouched.version):
                history = list(vouched.rows)  # nothing recorded since the marker
            await self._adopt(session, unit, progress)
            await self._run_plan(session, unit, progress, history)

    def _vouched(self, unit: Unit) -> VouchedHistory | None:
        """The history the unit's marker vouches for, when this attempt may plan
        from it: a migrate (or provision) of a dedicated database to the latest
        version, markers trusted, and the marker says enough about seeds. Saves
        the history read (two round trips) per tenant; the lock's round trip
        checks that the history's last row is still the marker's."""
        if (not self.trust_markers or self.target is not None or unit.mode is not Mode.DATABASE
                or self.verb not in (Verb.MIGRATE, Verb.PROVISION)):
            return None
        vouched = vouched_history(self.markers.get((unit.server, unit.database)),
                                  self.migrations, unit.clnt_ids)
        if vouched is None or (self.seeds(unit) and not vouched.seeded):
            return None  # which tenants were seeded is in the history only
        return vouched

    def _plan(self, unit: Unit, history: list[HistoryRow], progress: Progress) -> UnitPlan:
        """The unit's steps for this verb (the same plan for a dry run and a real
        one); a refusal (drift, unknown versions) fails the unit."""
        mode = unit.policy
        context = UnitContext(
            tenants=unit.tenants, seeds=self.seeds(unit),
            enforces=mode.enforces and self.enforce is not None, marks=mode.marks,
            marker_seeded=mode.marker_seeded,
            current_marker=self.markers.get((unit.server, unit.database)),
        )
        plan = plan_unit(self.verb, self.migrations, history, target=self.target,
                         allow_drift=self.allow_drift, context=context)
        self._start(plan, progress)
        if plan.refusal is not None:
            error = DriftDetected if plan.refusal.drift else TenantctlError
            raise error(plan.refusal.message, hint=plan.refusal.hint)
        progress.warnings.extend(plan.warnings)
        return plan

    async def _run_plan(self, session: Session, unit: Unit, progress: Progress,
                        history: list[HistoryRow] | None = None) -> None:
        # every step leaves the session as it opened (the driver's contract):
        # what follows a migration never runs in the session state it left
        if history is None:
            history = await self.driver.open_history(session)
        plan = self._plan(unit, history, progress)
        steps = plan.steps
        if self.driver.marks_in_transaction(session):
            steps = fold_marker(steps)
        for step in steps:
            await self._execute(session, unit, step, progress)

    @staticmethod
    def _start(plan: UnitPlan, progress: Progress) -> None:
        if not progress.read_once:
            progress.from_version = plan.from_version
            progress.read_once = True
        progress.to_version = plan.to_version

    async def _execute(self, session: Session, unit: Unit, step: Step, progress: Progress) -> None:
        """Run one step; a permanent database error fails the unit at this step."""
        try:
            await self._dispatch(session, unit, step, progress)
        except DatabaseError as exc:
            if step.kind in (StepKind.MARK, StepKind.REPAIR):
                raise  # not a migration's failure: reported as the database error it is
            if step.kind is StepKind.ENFORCE:
                label = "(row-level security enforcement)"
            else:
                label = self.seed.path.name if step.kind is StepKind.SEED and self.seed else step.label
                exc.migration = label
            if exc.transient:
                raise
            raise MigrationFailed(exc, label) from exc
        if step.kind in (StepKind.APPLY, StepKind.REPAIR):
            assert step.migration is not None
            progress.applied.append(step.migration.version.text)
        elif step.kind is StepKind.REVERT:
            assert step.migration is not None
            progress.reverted.append(step.migration.version.text)
        if step.kind in (StepKind.APPLY, StepKind.REVERT):
            progress.to_version = step.version_after
        elif step.kind is StepKind.SEED:
            assert step.tenant is not None
            progress.seeded.add(step.tenant.clnt_id)

    async def _dispatch(self, session: Session, unit: Unit, step: Step, progress: Progress) -> None:
        driver, run_id = self.driver, self.run_id
        if step.kind is StepKind.APPLY:
            assert step.migration is not None
            if step.migration.transactional:
                await driver.apply_transactional(session, step.migration, run_id,
                                                 marker=step.marker)
            else:
                await driver.apply_statements(session, step.migration, run_id, step.resume_from)
        elif step.kind is StepKind.REVERT:
            assert step.migration is not None
            await driver.apply_down(session, step.migration, run_id)
        elif step.kind is StepKind.REPAIR:
            assert step.migration is not None
            await driver.record_repair(session, step.migration, run_id)
        elif step.kind is StepKind.ENFORCE:
            assert self.enforce is not None
            progress.warnings.extend(await self.enforce(session, unit))
        elif step.kind is StepKind.SEED:
            assert step.tenant is not None and self.seed is not None
            t = step.tenant
            await driver.apply_seed(session, self.seed, t.clnt_id, t.name, t.sites, run_id)
        elif step.kind is StepKind.MARK:
            await driver.write_marker(session, step.marker)

    async def _plan_only(self, session: Session, unit: Unit, progress: Progress) -> None:
        """Dry run: the real run's plan, reported as if its steps had run (what
        would be applied, reverted, re-recorded or seeded); nothing is executed."""
        self._report_planned(self._plan(unit, await self.driver.read_history(session), progress),
                             progress)

    def _would_create(self, unit: Unit) -> bool:
        """Dry run of a provisioning whose database does not exist yet."""
        return (self.verb is Verb.PROVISION and self.existing is not None
                and (unit.server, unit.database) not in self.existing)

    def _plan_new_database(self, unit: Unit, progress: Progress) -> None:
        """Dry run: the database provisioning would create, planned from an empty
        history (every migration, then the seed of each tenant)."""
        progress.created = True
        self._report_planned(self._plan(unit, [], progress), progress)

    @staticmethod
    def _report_planned(plan: UnitPlan, progress: Progress) -> None:
        progress.applied.clear()  # a retried attempt reports its plan once
        progress.reverted.clear()
        progress.seeded.clear()
        for step in plan.steps:
            if step.kind in (StepKind.APPLY, StepKind.REPAIR):
                assert step.migration is not None
                progress.applied.append(step.migration.version.text)
            elif step.kind is StepKind.REVERT:
                assert step.migration is not None
                progress.reverted.append(step.migration.version.text)
            elif step.kind is StepKind.SEED:
                assert step.tenant is not None
                progress.seeded.add(step.tenant.clnt_id)
            if step.kind in (StepKind.APPLY, StepKind.REVERT):
                progress.to_version = step.version_after

    # ------------------------------------------------------------ whose database

    async def _adopt(self, session: Session, unit: Unit, progress: Progress) -> None:
        """An existing database without a purpose tag: adopt it (and tag it) only
        when that cannot take over someone else's database."""
        key = (unit.server, unit.database)
        if key in self.purposes or progress.created:
            return
        expected = unit.policy.purpose(unit.clnt_ids)
        has_history, has_objects = await self.driver.database_contents(session)
        refusal = purpose.adoption_refusal(
            unit.database, expected, has_history=has_history, has_objects=has_objects,
            claimed_by=self.claims.get(key, ()), own=unit.clnt_ids)
        if refusal is not None:
            raise TenantctlError(refusal, hint=purpose.ADOPT_HINT)
        if not self.dry_run and await self.driver.write_purpose(session, expected):
            self.purposes[key] = expected

    def wrong_database(self, unit: Unit) -> str | None:
        """Why the unit's database, tagged for another purpose, must not be touched."""
        return purpose.mismatch(unit.database, unit.policy.purpose(unit.clnt_ids),
                                self.purposes.get((unit.server, unit.database)))

    # ------------------------------------------------------------ provisioning

    async def _ensure_database(self, unit: Unit, dsn: str, progress: Progress) -> bool:
        """Create the unit's database if missing. True when it was cloned from a
        template holding every migration and marked: it is then exactly at the
        folder's latest version, and the only per-tenant work left is a seed."""
        if self.existing is not None and (unit.server, unit.database) in self.existing:
            return False
        template = self.templates.get(unit.server) if unit.policy.clones_template else None
        admin = await self._admin(unit.server, dsn)
        try:
            cloned = await self._create(admin, unit, template, progress)
        except BaseException:
            await admin.close()
            raise
        idle = self.admins.setdefault(unit.server, [])
        if len(idle) < self.MAX_IDLE_ADMINS:
            idle.append(admin)
        else:
            await admin.close()
        return cloned

    async def _create(self, admin: Session, unit: Unit, template: str | None,
                      progress: Progress) -> bool:
        try:
            created = await self.driver.create_database(
                admin, unit.database, template, strategy=self.clone_strategies.get(unit.server))
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
                "created empty and migrated instead")
            created = await self.driver.create_database(admin, unit.database, None)
            cloned = False
        progress.created = progress.created or created
        if not created:
            return False
        # A clone of a template holding every migration is exactly at the latest
        # version; without a seed to run, its marker is written with its purpose
        # tag from the admin session, in one commit, and the new database gets no
        # session at all (its first connection costs as much as the clone).
        complete = cloned and self.template_migrations == len(self.migrations)
        marker = make_marker(self.migrations, seeded=False) if complete and self.seed is None else None
        tag = unit.policy.purpose(unit.clnt_ids)
        if await self.driver.write_purpose(admin, tag, unit.database, marker=marker):
            self.purposes[(unit.server, unit.database)] = tag
        if not cloned:
            return False
        held = self.migrations[self.template_migrations - 1].version.text
        progress.from_version = progress.to_version = held
        progress.read_once = True
        # a template stopped before a per-tenant migration: the clone still
        # needs a session that applies the rest
        return complete

    async def _admin(self, server: str, dsn: str) -> Session:
        """An idle maintenance-database session for this server, reused across units."""
        idle = self.admins.get(server)
        while idle:
            session = idle.pop()
            if not session.closed:
                return session
        return await self.driver.connect(dsn)
