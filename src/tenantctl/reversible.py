"""``tenantctl check-reversible``: do the down scripts really undo their ups?

On a scratch database (dropped afterwards, also on failure), for each checked
migration in version order: snapshot the catalog (S0), up, snapshot (S1),
down, snapshot (S2) compared with S0 (phase ``down``), up again, snapshot (S3)
compared with S1 (phase ``redo``). No down script: phase ``missing-down``, the
up stays applied and the check goes on. An up, down or redo that fails: phase
``error`` with its SQLSTATE, and the check stops. A migration that is not
checked but lies between checked ones is applied (up only) on the way.

When both scripts are transactional, down/S2/redo/S3 run in one outer
transaction that is rolled back, so the database returns exactly to S1 even
after an incomplete down (whose redo is skipped: from a state other than S0
it proves nothing). A no-transaction script cannot be rewound: down and redo
then run for real.

Snapshots: :mod:`tenantctl.reversible_snapshot`. Which migrations are checked,
and the cached database they start from: :mod:`tenantctl.reversible_range`.
Grouping the differences per object: :mod:`tenantctl.reversible_report`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .drivers.base import Driver, Session
from .drivers.postgres import DRIVER
from .errors import BadInputError, DatabaseError
from .migrations import Migration, Script, Version
from .reversible_snapshot import KINDS, SNAPSHOT_SQL, Snapshot, normalise, snapshot
from .rollback import rolled_back

__all__ = ["KINDS", "SNAPSHOT_SQL", "Difference", "Snapshot", "apply_unchecked", "check_reversible",
           "diff", "experiment", "normalise", "object_of", "snapshot"]


def _short(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _changes(before: Snapshot, after: Snapshot) -> list[tuple[str, str, str, str]]:
    """(change, kind, name, detail) with change one of added / removed / changed."""
    out = []
    for kind in sorted(set(before) | set(after)):
        old, new = before.get(kind, {}), after.get(kind, {})
        for name in sorted(set(old) | set(new)):
            if name not in old:
                out.append(("added", kind, name, _short(new[name].split("\n", 1)[0])))
            elif name not in new:
                out.append(("removed", kind, name, _short(old[name].split("\n", 1)[0])))
            elif old[name] != new[name]:
                was, now = old[name].split("\n"), new[name].split("\n")
                lines = ([f"-{x}" for x in was if x not in now][:2]
                         + [f"+{x}" for x in now if x not in was][:2])
                out.append(("changed", kind, name, _short("; ".join(lines) or "line order differs", 200)))
    return out


def diff(before: Snapshot, after: Snapshot) -> list[tuple[str, str, str]]:
    """Pure: (kind, name, detail) for every object added, removed or changed, sorted."""
    return [(kind, name, f"{change}: {detail}") for change, kind, name, detail in _changes(before, after)]


@dataclass(frozen=True)
class Difference:
    """One finding of check-reversible."""

    migration: str  # the up script's file name
    phase: str  # "down" | "redo" | "missing-down" | "error"
    kind: str  # an object kind of KINDS; for "error" the failed step: up / down / redo
    name: str  # qualified object name; for "error"/"missing-down" a script file name
    detail: str
    sqlstate: str | None = None  # phase "error" only
    # phases "down" and "redo" only: the object the difference belongs to (a column,
    # constraint, index, trigger, rule, policy, statistics object or owned sequence
    # belongs to its table or view: "table public.t"), and added / removed / changed
    object: str | None = None
    change: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("object", "change"):
            if out[key] is None:
                del out[key]
        return out


# Kinds whose names are <schema>.<relation>.<name>: they belong to that relation.
_CHILD_KINDS = frozenset({"column", "constraint", "trigger", "rule", "policy"})


def _split_name(name: str) -> list[str]:
    """Pure: the parts of a qualified name as format('%I.%I') wrote it (quotes kept)."""
    parts: list[str] = []
    current, quoted = "", False
    for ch in name:
        if ch == '"':
            quoted = not quoted  # a doubled quote inside a quoted name toggles twice
        if ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _line_value(definition: str | None, prefix: str) -> str | None:
    for line in (definition or "").split("\n"):
        if line.startswith(prefix):
            return line[len(prefix):]
    return None


def object_of(kind: str, name: str, before: Snapshot, after: Snapshot) -> str:
    """Pure: the object a catalog difference belongs to, as "<kind> <qualified name>"."""
    parent: str | None = None
    if kind in _CHILD_KINDS:
        parts = _split_name(name)
        parent = ".".join(parts[:2]) if len(parts) > 2 else None
    elif kind in ("index", "statistics", "sequence"):
        definition = before.get(kind, {}).get(name) or after.get(kind, {}).get(name)
        owner = _line_value(definition, "owned by " if kind == "sequence" else "table ")
        if owner is not None:
            qualified = _split_name(owner.removesuffix(" (identity)"))
            parent = ".".join(qualified[:2]) if len(qualified) >= 2 else None
    if parent is None:
        return f"{kind} {name}"
    is_view = parent in before.get("view", {}) or parent in after.get("view", {})
    return f"{'view' if is_view else 'table'} {parent}"


_WORDING = {
    "down": {"added": "left behind by down", "removed": "missing after down (was there before up)",
             "changed": "not restored by down"},
    "redo": {"added": "only after redo", "removed": "missing after redo", "changed": "differs after redo"},
}


def _compare(migration: Migration, phase: str, expected: Snapshot, actual: Snapshot) -> list[Difference]:
    return [Difference(migration.filename, phase, kind, name, f"{_WORDING[phase][change]}: {detail}",
                       object=object_of(kind, name, expected, actual), change=change)
            for change, kind, name, detail in _changes(expected, actual)]


def _error(migration: Migration, step: str, script: Script, exc: DatabaseError, note: str = "") -> Difference:
    return Difference(migration.filename, "error", step, script.path.name,
                      f"{step} failed{note}: {exc}", sqlstate=exc.sqlstate)


async def _apply(session: Session, script: Script) -> None:
    if not script.statements:
        return  # an empty or comment-only script: a no-op
    if script.transactional:
        async with session.transaction():  # a savepoint inside a trial
            await session.execute(script.sql)
    else:
        for statement in script.statements:
            await session.execute(statement.sql)


async def _down_and_redo(
    session: Session, m: Migration, s0: Snapshot, s1: Snapshot, out: list[Difference], rewinding: bool
) -> tuple[bool, Snapshot]:
    """Down, compare with S0, redo, compare with S1. Returns (stop, snapshot of the end state)."""
    assert m.down is not None
    try:
        await _apply(session, m.down)
    except DatabaseError as exc:
        out.append(_error(m, "down", m.down, exc))
        return True, s1
    down_diffs = _compare(m, "down", s0, await snapshot(session))
    out.extend(down_diffs)
    if down_diffs and rewinding:
        return False, s1  # the rollback restores S1; a redo from here would prove nothing
    try:
        await _apply(session, m.up)
    except DatabaseError as exc:
        note = f" (after a down that left {len(down_diffs)} difference(s))" if down_diffs else ""
        out.append(_error(m, "redo", m.up, exc, note))
        return True, s1
    s3 = await snapshot(session)
    out.extend(_compare(m, "redo", s1, s3))
    return False, s3


async def experiment(session: Session, migrations: tuple[Migration, ...],
                     checked: frozenset[Version] | None = None) -> list[Difference]:
    """up -> down -> up of each migration in ``checked`` (None: all), in order, on the
    connected database; the others are applied (up only) on the way."""
    out: list[Difference] = []
    state: Snapshot | None = None
    for m in migrations:
        if checked is not None and m.version not in checked:
            failed = await apply_unchecked(session, (m,), "on the way to the next checked migration")
            if failed is not None:
                out.append(failed)
                break
            state = None
            continue
        s0 = state if state is not None else await snapshot(session)
        try:
            await _apply(session, m.up)
        except DatabaseError as exc:
            out.append(_error(m, "up", m.up, exc))
            break
        state = s1 = await snapshot(session)
        if m.down is None:
            out.append(Difference(m.filename, "missing-down", "migration", m.filename,
                                  "no down script: cannot be undone; the check goes on with it applied"))
            continue
        if m.up.transactional and m.down.transactional:
            async with rolled_back(session):  # the trial: back to S1 whatever happens in it
                stop, _ = await _down_and_redo(session, m, s0, s1, out, rewinding=True)
        else:
            stop, state = await _down_and_redo(session, m, s0, s1, out, rewinding=False)
        if stop:
            break
    return out


async def apply_unchecked(session: Session, migrations: tuple[Migration, ...],
                          why: str) -> Difference | None:
    """Apply the up scripts without a check; the first failure as a phase "error" finding."""
    for m in migrations:
        try:
            await _apply(session, m.up)
        except DatabaseError as exc:
            return _error(m, "up", m.up, exc, f" ({why})")
    return None


async def check_reversible(
    dsn: str, migrations: tuple[Migration, ...], *, scratch_name: str, driver: Driver | None = None
) -> list[Difference]:
    """Run the up/down/up experiment on every migration, on a new (empty) scratch database,
    dropped afterwards. ``driver`` opens the connections (None: PostgreSQL).

    Ranges, --pending and the cached base: :func:`tenantctl.reversible_range.check_range`.
    """
    db = DRIVER if driver is None else driver
    async with await db.connect(dsn) as admin:
        if not await db.create_database(admin, scratch_name):
            raise BadInputError(f"scratch database {scratch_name} already exists",
                                hint="drop it, or choose another scratch name")
        try:
            async with await db.connect(dsn, scratch_name) as session:
                return await experiment(session, migrations)
        finally:
            await db.drop_database(admin, scratch_name)
