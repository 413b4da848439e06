"""Pure: what one unit (one database) must do, as a list of typed steps.

The verb (provision, migrate, rollback, repair) is decided here, once; the
engine executes the steps in order without knowing which verb produced them,
the way alembic's ``RevisionStep`` list drives its runner. A step that fails
stops the unit: later steps (the schema marker in particular) never run, so a
marker can only describe work that committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum

from .config import TenantSpec
from .migrations import Migration, Version
from .plan import HistoryRow, at_latest, make_marker, plan_migrate, plan_rollback, replay


class Verb(StrEnum):
    """The commands that change tenants (their value is the command's name)."""

    PROVISION = "provision"
    MIGRATE = "migrate"
    ROLLBACK = "rollback"
    REPAIR = "repair"


class StepKind(Enum):
    APPLY = "apply"  # run an up migration (transactional, or statement by statement)
    REVERT = "revert"  # run a down script
    REPAIR = "repair"  # re-record an edited file's checksum
    ENFORCE = "enforce"  # the unit's mode brings its guarantees in line (shared: RLS)
    SEED = "seed"  # run the seed for one tenant
    MARK = "mark"  # write (or clear) the database's schema marker


@dataclass(frozen=True)
class Step:
    kind: StepKind
    migration: Migration | None = None  # APPLY, REVERT, REPAIR
    resume_from: int = 0  # APPLY of a partial no-transaction migration
    tenant: TenantSpec | None = None  # SEED
    marker: str | None = None  # MARK (None clears it); APPLY: also set, in its transaction
    version_after: str | None = None  # the unit's version once this step is done

    @property
    def label(self) -> str:
        """What a failure of this step is reported against (a file name)."""
        if self.migration is None:
            return self.kind.value
        if self.kind is StepKind.REVERT and self.migration.down is not None:
            return self.migration.down.path.name
        return self.migration.filename


@dataclass(frozen=True)
class Refusal:
    """The unit must not be touched at all (drift, unknown versions...)."""

    message: str
    hint: str
    drift: bool = False


@dataclass(frozen=True)
class UnitPlan:
    from_version: str | None
    to_version: str | None  # before any step ran (progress moves it per step)
    steps: tuple[Step, ...] = ()
    warnings: tuple[str, ...] = ()
    refusal: Refusal | None = None


@dataclass(frozen=True)
class UnitContext:
    """What the planner needs to know about a unit besides its history."""

    tenants: tuple[TenantSpec, ...] = ()
    seeds: bool = False  # run the seed for tenants never seeded
    enforces: bool = False  # the mode has guarantees to enforce after a change (shared mode)
    marks: bool = False  # the database's schema marker is maintained (dedicated, template)
    marker_seeded: bool = False  # the marker's "seeded" flag (every tenant seeded)
    current_marker: str | None = None
    seeded_before: frozenset[int] = field(default_factory=frozenset)


def plan_unit(
    verb: Verb,
    migrations: tuple[Migration, ...],
    history: Iterable[HistoryRow],
    *,
    target: Version | None = None,
    allow_drift: bool = False,
    context: UnitContext = UnitContext(),
) -> UnitPlan:
    """The steps ``verb`` takes on one unit, given its history."""
    history = tuple(history)
    if verb is Verb.ROLLBACK:
        assert target is not None, "rollback needs a target"
        return _plan_rollback(migrations, history, target, context)
    plan = plan_migrate(migrations, history, target)
    if verb is Verb.REPAIR:
        by_version = {m.version.text: m for m in migrations}
        repairs = tuple(Step(StepKind.REPAIR, by_version[d.version], version_after=plan.from_version)
                        for d in plan.drift)
        return UnitPlan(plan.from_version, plan.from_version, repairs)
    if plan.drift and not allow_drift:
        names = ", ".join(f"{d.filename} (applied {d.applied_checksum[:12]}, file "
                          f"{d.file_checksum[:12]})" for d in plan.drift)
        return UnitPlan(plan.from_version, plan.from_version, refusal=Refusal(
            f"checksum drift: applied migration file(s) were edited: {names}",
            "restore the file(s), or record the edit deliberately with `tenantctl repair` "
            "(or pass --allow-drift for this run)", drift=True))
    warnings: tuple[str, ...] = ()
    if plan.unknown:
        warnings = (f"versions applied but missing from the folder: {', '.join(plan.unknown)}",)
    steps: list[Step] = []
    reached = plan.from_version
    for migration in plan.pending:
        reached = _max_version(reached, migration.version.text)
        steps.append(Step(StepKind.APPLY, migration,
                          resume_from=plan.resume.get(migration.version, 0), version_after=reached))
    if context.enforces:
        steps.append(Step(StepKind.ENFORCE, version_after=reached))
    seeded = replay(history).seeded
    if context.seeds:
        steps.extend([Step(StepKind.SEED, tenant=t, version_after=reached)
                      for t in context.tenants if t.clnt_id not in seeded])
    if context.marks and target is None and at_latest(migrations, plan, reached):
        all_seeded = context.marker_seeded and all(
            t.clnt_id in seeded or context.seeds for t in context.tenants)
        marker = make_marker(migrations, seeded=all_seeded)
        if marker != context.current_marker:
            steps.append(Step(StepKind.MARK, marker=marker, version_after=reached))
    return UnitPlan(plan.from_version, plan.from_version, tuple(steps), warnings)


def _plan_rollback(migrations: tuple[Migration, ...], history: tuple[HistoryRow, ...],
                   target: Version, context: UnitContext) -> UnitPlan:
    plan = plan_rollback(migrations, history, target)
    if plan.unknown:
        return UnitPlan(plan.from_version, plan.from_version, refusal=Refusal(
            f"applied version(s) {', '.join(plan.unknown)} are not in the folder: "
            "no down script to run",
            "restore those migration files (with their .down.sql) first"))
    if not plan.steps:
        return UnitPlan(plan.from_version, plan.from_version)
    # The marker must never claim a version the tenant is leaving.
    steps = [Step(StepKind.MARK, marker=None, version_after=plan.from_version)]
    remaining = set(replay(history).applied)
    for migration in plan.steps:
        remaining.discard(migration.version)
        after = max(remaining).text if remaining else None
        steps.append(Step(StepKind.REVERT, migration, version_after=after))
    if context.enforces:
        steps.append(Step(StepKind.ENFORCE, version_after=plan.to_version))
    return UnitPlan(plan.from_version, plan.from_version, tuple(steps))


def fold_marker(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """The steps with a final marker write folded into the transactional migration
    just before it: one commit and one round trip less per tenant, and the marker
    commits with the migration that makes it true.

    Only for a session that can always set the marker (the driver says which: a
    refused ALTER DATABASE would fail the migration with it). Anything else between
    the last migration and the marker (a seed, row-level security) keeps it apart.
    """
    if len(steps) < 2:
        return steps
    last, mark = steps[-2], steps[-1]
    if (mark.kind is not StepKind.MARK or mark.marker is None or last.kind is not StepKind.APPLY
            or last.migration is None or not last.migration.transactional or last.resume_from):
        return steps
    return (*steps[:-2], replace(last, marker=mark.marker))


def _max_version(current: str | None, new: str) -> str:
    if current is None or Version.parse(current) < Version.parse(new):
        return new
    return current
