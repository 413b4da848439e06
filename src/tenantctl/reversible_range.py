"""Which migrations check-reversible checks, and the cached database they start from.

``--from V`` / ``--to W`` choose a range (inclusive, either bound optional);
``--pending`` the migrations that at least one tenant has not applied. The
scratch database must first reach the state before the first checked
migration: the earlier migrations' up scripts, not checked. That state is kept
between runs in a base database (``<control_database>_reversible_base``),
tagged ``tenantctl.purpose = scratch`` and marked with the fingerprint of the
earlier migrations' versions and checksums; the scratch database is created
from it with ``CREATE DATABASE … TEMPLATE``. When the fingerprint differs the
base is dropped and rebuilt; a database of that name without the ``scratch``
tag is never dropped (the earlier migrations are then applied to the scratch
database itself). Building and cloning hold a server-level advisory lock, so
concurrent checks never clone a base that another one is rebuilding.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import purpose
from .drivers.base import Driver, Session
from .drivers.postgres import DRIVER
from .errors import BadInputError, DatabaseError
from .inputs import known_version
from .migrations import Migration, Version
from .plan import can_skip, folder_fingerprint, make_marker
from .reversible import Difference, apply_unchecked, experiment
from .status import StatusRow

BASE_SUFFIX = "_reversible_base"
_SCRATCH_EXISTS_HINT = "drop it, or choose another scratch name"


def base_database(control_database: str) -> str:
    """The cached base's name: derived from the project's control database (at most 63 bytes)."""
    return control_database[: 63 - len(BASE_SUFFIX)] + BASE_SUFFIX


def _lock_key(name: str) -> int:
    """A server-level advisory lock key of its own per base database."""
    return int.from_bytes(hashlib.sha256(f"tenantctl-reversible:{name}".encode()).digest()[:8],
                          "big", signed=True)


# ---------------------------------------------------------------- selection (pure)


def select_range(migrations: tuple[Migration, ...], from_version: str | None,
                 to_version: str | None, folder: str = "migrations") -> tuple[Migration, ...]:
    """The migrations from ``from_version`` to ``to_version`` (inclusive; None: open).
    Raises BadInputError for a version that is not in the folder."""
    low = known_version(migrations, "--from", from_version, folder)
    high = known_version(migrations, "--to", to_version, folder)
    if low is not None and high is not None and high < low:
        raise BadInputError(f"--from {from_version} is after --to {to_version}")
    return tuple(m for m in migrations
                 if (low is None or not m.version < low) and (high is None or not high < m.version))


def pending_versions(migrations: tuple[Migration, ...],
                     rows: list[StatusRow]) -> tuple[frozenset[Version], tuple[str, ...]]:
    """Versions at least one tenant has not applied (and notes): a tenant without a
    database, or one that cannot be reached, counts as having nothing applied."""
    everything = {m.version for m in migrations}
    wanted: set[Version] = set()
    notes: list[str] = []
    for row in rows:
        if row.state in ("not_provisioned", "unreachable") or row.version is None:
            if row.state == "unreachable":
                notes.append(f"tenant {row.clnt_id} ({row.database}) unreachable: counted as "
                             "having nothing applied")
            wanted |= everything
            continue
        current = Version.parse(row.version)
        wanted |= {v for v in everything if current < v}
        wanted |= {Version.parse(v) for v in row.unit.gaps}
    return frozenset(wanted), tuple(notes)


# ---------------------------------------------------------------- the cached base


@dataclass(frozen=True)
class Base:
    """Where the checked migrations started: ``status`` is none (nothing before them),
    built, rebuilt, reused, uncached (applied to the scratch database) or failed."""

    status: str
    migrations: int  # earlier migrations it holds
    up_to: str | None = None  # the last of them
    database: str | None = None  # the cached base, when one was used
    fingerprint: str | None = None
    duration_ms: int | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def line(self) -> str | None:
        if self.status == "none":
            return None
        what = f"{self.migrations} earlier migration(s) (up to {self.up_to})"
        if self.status == "reused":
            return f"base: {what} reused from {self.database}"
        if self.status in ("built", "rebuilt"):
            why = " (the earlier migrations changed)" if self.status == "rebuilt" else ""
            return f"base: {what} built into {self.database}{why} in {self.duration_ms} ms"
        if self.status == "uncached":
            return f"base: {what} applied to the scratch database" + (
                f" ({self.note})" if self.note else "")
        return f"base: {what} could not be built"


async def _clone_base(db: Driver, dsn: str, scratch: str, name: str, earlier: tuple[Migration, ...],
                      lock_wait: float) -> tuple[Base, Difference | None]:
    """Create ``scratch`` from the cached base ``name`` (built or rebuilt first when the
    earlier migrations changed); (base, the failure that stopped the build, if any)."""
    fingerprint = folder_fingerprint(earlier)

    def base(status: str, database: str | None = None, ms: int | None = None,
             note: str | None = None) -> Base:
        return Base(status, len(earlier), earlier[-1].version.text, database, fingerprint, ms, note)

    start = time.monotonic()
    async with await db.connect(dsn) as keeper:  # holds the lock until the clone is made
        await db.acquire_migration_lock(keeper, lock_wait, key=_lock_key(name))
        tag = (await db.read_purposes(keeper)).get(name)
        existed = bool(await db.existing_databases(keeper, [name]))
        if existed and tag != purpose.SCRATCH:
            refusal = purpose.mismatch(name, purpose.SCRATCH, tag) or (
                f"database {name} exists but was not created by tenantctl as check-reversible's base: "
                "not dropped")
            await _create_scratch(db, keeper, scratch)
            return base("uncached", note=refusal), None
        marker = (await db.read_markers(keeper)).get(name)
        status = "reused"
        if not (existed and can_skip(marker, earlier, need_seed=False)):
            status = "rebuilt" if existed else "built"
            failed = await _build(db, dsn, keeper, name, earlier)
            if isinstance(failed, str):
                await _create_scratch(db, keeper, scratch)
                return base("uncached", note=failed), None
            if failed is not None:
                return base("failed", name), failed
        try:
            created = await db.create_database(keeper, scratch, template=name)
        except DatabaseError as exc:  # 55006: someone else is connected to the base
            await _create_scratch(db, keeper, scratch)
            return base("uncached", note=f"could not clone {name}: [{exc.sqlstate}] {exc.message}"), None
        if not created:
            raise BadInputError(f"scratch database {scratch} already exists", hint=_SCRATCH_EXISTS_HINT)
        await db.write_purpose(keeper, purpose.SCRATCH, scratch)
    return base(status, name, round((time.monotonic() - start) * 1000)), None


async def _build(db: Driver, dsn: str, keeper: Session, name: str,
                 earlier: tuple[Migration, ...]) -> Difference | str | None:
    """Drop the (tagged) base and build it again from the earlier migrations' up scripts,
    marked with their fingerprint only once they all applied. Returns the failure that
    stopped it, or why no base can be kept (text), or None."""
    await db.drop_database(keeper, name)
    await db.create_database(keeper, name)
    if not await db.write_purpose(keeper, purpose.SCRATCH, name):
        await db.drop_database(keeper, name)  # untagged, it could never be dropped again
        return f"not permitted to tag {name} with its purpose: no base kept"
    async with await db.connect(dsn, name) as session:
        failed = await apply_unchecked(session, earlier, "building the base the checked "
                                       "migrations start from")
    if failed is not None:
        await db.drop_database(keeper, name)
        return failed
    await db.write_marker(keeper, make_marker(earlier, seeded=False), name)
    return None


async def _create_scratch(db: Driver, admin: Session, scratch: str) -> None:
    if not await db.create_database(admin, scratch):
        raise BadInputError(f"scratch database {scratch} already exists", hint=_SCRATCH_EXISTS_HINT)
    await db.write_purpose(admin, purpose.SCRATCH, scratch)


# ---------------------------------------------------------------- the check


@dataclass(frozen=True)
class RangeResult:
    checked: tuple[Migration, ...]
    differences: list[Difference]
    base: Base


async def check_range(
    dsn: str, migrations: tuple[Migration, ...], checked: tuple[Migration, ...], *,
    scratch_name: str, base_name: str | None, lock_wait: float = 120.0, driver: Driver | None = None,
) -> RangeResult:
    """up -> down -> up of ``checked`` (a subset of ``migrations``) on a scratch database
    brought to the state before the first of them: cloned from the cached base
    ``base_name``, or (None) built in place. Migrations between checked ones are applied
    on the way; later ones are not run. The scratch database is dropped afterwards."""
    if not checked:
        return RangeResult((), [], Base("none", 0))
    db = DRIVER if driver is None else driver
    first, last = migrations.index(checked[0]), migrations.index(checked[-1])
    earlier, body = migrations[:first], migrations[first:last + 1]
    async with await db.connect(dsn) as admin:
        if earlier and base_name is not None:
            base, failed = await _clone_base(db, dsn, scratch_name, base_name, earlier, lock_wait)
            if failed is not None:
                return RangeResult(checked, [failed], base)
        else:
            await _create_scratch(db, admin, scratch_name)
            base = (Base("uncached", len(earlier), earlier[-1].version.text,
                         fingerprint=folder_fingerprint(earlier)) if earlier else Base("none", 0))
        try:
            async with await db.connect(dsn, scratch_name) as session:
                if base.status == "uncached":
                    failed = await apply_unchecked(
                        session, earlier, "bringing the scratch database to the state before "
                        "the first checked migration")
                    if failed is not None:
                        return RangeResult(checked, [failed], base)
                found = await experiment(session, body, frozenset(m.version for m in checked))
        finally:
            await db.drop_database(admin, scratch_name)
    return RangeResult(checked, found, base)
