"""Pure planning: the migrations folder + a tenant's history -> what to do.

No I/O here. The history table is the source of truth; this module replays it
(ups add a version, downs remove it) and compares it with the folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from .migrations import Migration, Version

KIND_UP = "up"
KIND_DOWN = "down"
KIND_BASELINE = "baseline"
KIND_SEED = "seed"
KIND_REPAIR = "repair"


@dataclass(frozen=True)
class HistoryRow:
    """One row of ``tenantctl_schema_history``, as the planner needs it."""

    rank: int
    version: str
    description: str
    kind: str
    checksum: str
    success: bool
    statements_done: int | None = None


@dataclass(frozen=True)
class Drift:
    version: str
    filename: str
    applied_checksum: str
    file_checksum: str


@dataclass(frozen=True)
class TenantState:
    """A tenant's schema state, replayed from its history rows."""

    applied: dict[Version, HistoryRow]
    failed: dict[Version, HistoryRow]  # last attempt failed / partial, not applied since
    seeded: frozenset[int]  # clnt_ids whose seed ran (shared databases hold several)

    @property
    def version(self) -> Version | None:
        return max(self.applied) if self.applied else None

    @property
    def version_text(self) -> str | None:
        v = self.version
        return v.text if v else None


@dataclass(frozen=True)
class TenantPlan:
    from_version: str | None
    to_version: str | None
    pending: tuple[Migration, ...]
    drift: tuple[Drift, ...]
    unknown: tuple[str, ...]  # applied versions missing from the folder
    resume: dict[Version, int]  # partial no-transaction migrations: statements done
    # pending versions older than the newest applied one: history rows deleted by
    # hand, or a migration added to the folder below versions that already ran
    gaps: tuple[str, ...] = ()



def replay(history: list[HistoryRow] | tuple[HistoryRow, ...]) -> TenantState:
    applied: dict[Version, HistoryRow] = {}
    failed: dict[Version, HistoryRow] = {}
    seeded: set[int] = set()
    for row in sorted(history, key=lambda r: r.rank):
        if row.kind == KIND_SEED:
            if row.success:
                seeded.add(int(row.version))
            continue
        version = Version.parse(row.version)
        if not row.success:
            if row.kind == KIND_UP:
                failed[version] = row
            continue
        if row.kind in (KIND_UP, KIND_BASELINE):
            applied[version] = row
            failed.pop(version, None)
        elif row.kind == KIND_DOWN:
            applied.pop(version, None)
            failed.pop(version, None)
        elif row.kind == KIND_REPAIR and version in applied:
            applied[version] = row
    return TenantState(applied, failed, frozenset(seeded))


def plan_migrate(
    migrations: tuple[Migration, ...],
    history: list[HistoryRow] | tuple[HistoryRow, ...],
    target: Version | None = None,
) -> TenantPlan:
    """What ``migrate`` would do for one tenant (up to ``target`` if given)."""
    state = replay(history)
    by_version = {m.version: m for m in migrations}
    drift = tuple(
        Drift(v.text, by_version[v].filename, row.checksum, by_version[v].checksum)
        for v, row in sorted(state.applied.items())
        if v in by_version and row.kind != KIND_BASELINE and row.checksum != by_version[v].checksum
    )
    unknown = tuple(v.text for v in sorted(state.applied) if v not in by_version)
    pending = tuple(
        m
        for m in migrations
        if m.version not in state.applied and (target is None or not target < m.version)
    )
    resume = {
        v: row.statements_done or 0
        for v, row in state.failed.items()
        if v in by_version and not by_version[v].transactional and row.statements_done
    }
    to_version = state.version
    if pending:
        last = pending[-1].version
        to_version = last if to_version is None or to_version < last else to_version
    current = state.version
    gaps = tuple(m.version.text for m in pending if current is not None and m.version < current)
    return TenantPlan(
        from_version=state.version_text,
        to_version=to_version.text if to_version else None,
        pending=pending,
        drift=drift,
        unknown=unknown,
        resume=resume,
        gaps=gaps,
    )



# ---------------------------------------------------------------- schema marker
#
# After a tenant database is brought up to date, tenantctl records a marker in
# that database's own per-database settings (ALTER DATABASE ... SET
# tenantctl.schema = '<marker>'), which lives in a shared catalog readable from
# any database on the server. One query per server then tells a no-op run which
# tenants are already at the folder's latest version with the folder's exact
# checksums, without a session per tenant. The marker is written only after
# the work it describes committed, and cleared before anything moves a tenant
# backwards (rollback), so a stale marker can only ever cause a full check,
# never a skipped migration. Hand edits of the history table bypass it:
# `--no-skip` forces a full per-tenant session.

MARKER_SETTING = "tenantctl.schema"
_MARKER_FORMAT = "v1:{version}:{fingerprint}:{seeded}"


_FINGERPRINTS: dict[tuple[str, ...], str] = {}


def folder_fingerprint(migrations: tuple[Migration, ...]) -> str:
    """Digest of every (version, checksum) pair: changes when any file changes."""
    import hashlib

    cache_key = tuple(m.checksum + m.version.text for m in migrations)
    cached = _FINGERPRINTS.get(cache_key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for m in migrations:
        digest.update(f"{m.version.key}\0{m.checksum}\n".encode())
    _FINGERPRINTS[cache_key] = result = digest.hexdigest()[:32]
    return result


def make_marker(migrations: tuple[Migration, ...], *, seeded: bool) -> str | None:
    """The marker of a tenant fully at this folder's latest version."""
    if not migrations:
        return None
    return _MARKER_FORMAT.format(
        version=migrations[-1].version.text,
        fingerprint=folder_fingerprint(migrations),
        seeded=int(seeded),
    )


def marker_version(marker: str | None) -> Version | None:
    """The version a schema marker says its database reached, if it is one of ours."""
    parts = (marker or "").split(":")
    if len(parts) != 4 or parts[0] != "v1":
        return None
    try:
        return Version.parse(parts[1])
    except ValueError:
        return None


def can_skip(marker: str | None, migrations: tuple[Migration, ...], *, need_seed: bool) -> bool:
    """True when the marker proves the tenant is at the latest version of exactly
    this folder (and seeded, when seeding is part of the job)."""
    if not marker or not migrations:
        return False
    parts = marker.split(":")
    if len(parts) != 4 or parts[0] != "v1":
        return False
    _, version, fingerprint, seeded = parts
    if version != migrations[-1].version.text or fingerprint != folder_fingerprint(migrations):
        return False
    return seeded == "1" or not need_seed


@dataclass(frozen=True)
class VouchedHistory:
    """The history a schema marker vouches for (see :func:`vouched_history`)."""

    version: str  # the marker's version: the history's last row must be its up row
    rows: tuple[HistoryRow, ...]
    seeded: bool  # the marker says every tenant of its database was seeded


def vouched_history(marker: str | None, migrations: tuple[Migration, ...],
                    clnt_ids: tuple[int, ...]) -> VouchedHistory | None:
    """What a tenant's history holds, as far as its marker proves it.

    A marker is written only when its tenant was exactly at the folder's latest
    version then, every migration applied and none drifted or unknown. When the
    marker's version is still in the folder and the files up to it are exactly
    those it was written for (its fingerprint), the tenant's applied set is
    those files, with their checksums: what replaying its history gives, as
    long as nothing was recorded since. The caller checks that last part with
    the lock held (the history's last row is still the marker version's ``up``
    row: a failed or partial attempt, a repair or a later migration adds a row);
    hand edits of the history table are trusted as the no-op skip trusts them
    (``--no-skip`` reads everything). None when the marker proves nothing here.
    """
    parts = (marker or "").split(":")
    if len(parts) != 4 or parts[0] != "v1":
        return None
    _, version, fingerprint, seeded = parts
    upto = next((i for i, m in enumerate(migrations) if m.version.text == version), None)
    if upto is None or folder_fingerprint(migrations[:upto + 1]) != fingerprint:
        return None
    rows = [HistoryRow(rank, m.version.text, m.description, KIND_UP, m.checksum, True)
            for rank, m in enumerate(migrations[:upto + 1], start=1)]
    if seeded == "1":
        rows += [HistoryRow(len(rows) + i, str(clnt_id), f"seed clnt_id {clnt_id}", KIND_SEED,
                            "", True) for i, clnt_id in enumerate(clnt_ids, start=1)]
    return VouchedHistory(version, tuple(rows), seeded == "1")


def at_latest(migrations: tuple[Migration, ...], plan: TenantPlan, reached: str | None) -> bool:
    """After a run: is the tenant exactly at the folder's latest, with nothing odd?"""
    return bool(
        migrations
        and not plan.drift
        and not plan.unknown
        and reached == migrations[-1].version.text
    )


@dataclass(frozen=True)
class RollbackPlan:
    from_version: str | None
    to_version: str | None
    steps: tuple[Migration, ...]  # newest first
    unknown: tuple[str, ...]  # applied above the target but not in the folder


def plan_rollback(
    migrations: tuple[Migration, ...],
    history: list[HistoryRow] | tuple[HistoryRow, ...],
    target: Version,
) -> RollbackPlan:
    """Down scripts to run, newest first, to bring a tenant back to ``target``."""
    state = replay(history)
    by_version = {m.version: m for m in migrations}
    above = sorted((v for v in state.applied if target < v), reverse=True)
    unknown = tuple(v.text for v in above if v not in by_version)
    steps = tuple(by_version[v] for v in above if v in by_version)
    remaining = [v for v in state.applied if not target < v]
    return RollbackPlan(
        from_version=state.version_text,
        to_version=max(remaining).text if remaining else None,
        steps=steps,
        unknown=unknown,
    )


def missing_downs(migrations: tuple[Migration, ...], target: Version) -> list[str]:
    """Expected down-script names missing for any migration newer than ``target``."""
    return [
        m.filename.removesuffix(".sql") + ".down.sql"
        for m in migrations
        if target < m.version and m.down is None
    ]
