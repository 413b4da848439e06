"""status and verify: read every selected tenant's history (no locks, no writes).

Histories are read through the engine's fan-out (the same concurrency limits as
a run); the ledger adds each tenant's last outcome. :func:`verify_findings`
turns the rows into the findings ``verify`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from . import ledger, registry
from .config import TenantSpec
from .drivers.base import Driver
from .drivers.pg_version import ServerVersion
from .engine import Engine, RunOptions, group_units
from .errors import DatabaseError
from .executor import Unit
from .fleet import server_dsns, server_problem
from .inputs import Inputs
from .move_registry import read_registered
from .placement import on_servers, place
from .placement_check import Mismatch, reconcile
from .plan import marker_version, plan_migrate, replay


@dataclass(frozen=True)
class UnitState:
    """What one database's history says, before it is spread over its tenants."""

    state: str  # up_to_date | pending | drift | gap | not_provisioned | unreachable
    version: str | None = None
    pending: int | None = None
    partial_rows: tuple[tuple[str, int | None], ...] = ()  # (version, statements done)
    drift: tuple[tuple[str, str, str, str], ...] = ()  # (version, file, applied, file checksum)
    unknown: tuple[str, ...] = ()
    gaps: tuple[str, ...] = ()
    marker_ahead: str | None = None
    seeded: frozenset[int] = frozenset()
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class StatusRow:
    """One tenant's line of ``status`` (and the input of ``verify``)."""

    clnt_id: int
    name: str
    mode: str
    server: str
    database: str
    version: str | None
    latest: str | None
    pending: int | None
    state: str
    unit: UnitState = field(repr=False)
    seeded: bool | None = None
    last_status: str | None = None
    last_run_id: str | None = None
    last_error: dict[str, Any] | None = None
    move: Mismatch | None = None  # tenants.yaml places it elsewhere: move pending
    server_version: str | None = None  # PostgreSQL major.minor of the tenant's server
    server_supported: bool | None = None  # within tenantctl's supported range
    wave: str | None = None  # tenants.yaml's `wave:` (None: runs after the declared waves)

    def to_json(self) -> dict[str, Any]:
        u = self.unit
        moving = self.move
        return {
            "move_to": None if moving is None else {
                "mode": moving.declared.mode, "server": moving.declared.server,
                "database": moving.declared.database},
            "clnt_id": self.clnt_id, "name": self.name, "mode": self.mode, "wave": self.wave,
            "server": self.server, "server_version": self.server_version,
            "database": self.database, "version": self.version, "latest": self.latest,
            "pending": self.pending, "state": self.state,
            "partial": [v for v, _ in u.partial_rows],
            "drift": [f for _, f, _, _ in u.drift],
            "drift_detail": [{"version": v, "file": f, "applied_checksum": a, "file_checksum": c}
                             for v, f, a, c in u.drift],
            "unknown": list(u.unknown),
            "partial_rows": [{"version": v, "statements_done": d} for v, d in u.partial_rows],
            "gaps": list(u.gaps), "marker_ahead": u.marker_ahead, "seeded": self.seeded,
            "last_status": self.last_status, "last_run_id": self.last_run_id,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class VerifyFinding:
    clnt_id: int
    database: str
    kind: str  # missing-database, unreachable, drift, ahead, gap, history-behind-marker, ...
    detail: str
    version: str | None = None
    file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"clnt_id": self.clnt_id, "database": self.database, "kind": self.kind,
                "version": self.version, "file": self.file, "detail": self.detail}


async def collect_status(driver: Driver, inputs: Inputs, tenants: tuple[TenantSpec, ...],
                         concurrency: int,
                         moves: dict[int, Mismatch] | None = None) -> list[StatusRow]:
    """Each tenant: mode, database, version (from its own history), pending, last error."""
    project = inputs.project
    units = group_units(tenants)
    dsns = server_dsns(project, {u.server for u in units} | {project.default_server})
    markers: dict[tuple[str, str], str] = {}
    versions: dict[str, ServerVersion] = {}
    down: dict[str, dict[str, Any]] = {}  # one probe per server: its tenants, unreachable
    for server in sorted({u.server for u in units}):
        try:
            async with await driver.connect(dsns[server]) as admin:
                versions[server] = await driver.server_version(admin)
                markers.update(
                    {(server, db): m for db, m in (await driver.read_markers(admin)).items()})
        except DatabaseError as exc:
            down[server] = {"sqlstate": exc.sqlstate,
                            "message": server_problem(server, dsns[server], exc)}
    engine = Engine(inputs.migrations, dsns, RunOptions(concurrency=concurrency), driver=driver)

    async def read(unit: Unit) -> UnitState:
        if unit.server in down:
            return UnitState("unreachable", error=down[unit.server])
        try:
            session = await driver.connect(dsns[unit.server], unit.database)
        except DatabaseError as exc:
            if exc.sqlstate == "3D000":
                return UnitState("not_provisioned", pending=len(inputs.migrations))
            return UnitState("unreachable", error={"sqlstate": exc.sqlstate, "message": exc.message})
        try:
            async with session:
                history = await driver.read_history(session)
        except DatabaseError as exc:  # a permission, a timeout, a connection lost mid-read
            return UnitState("unreachable", error={"sqlstate": exc.sqlstate, "message": exc.message})
        return _unit_state(inputs, history, markers.get((unit.server, unit.database)))

    async def bounded_read(unit: Unit) -> UnitState:
        return await engine.bounded(unit, read)

    states = await engine.map_units(units, bounded_read)
    by_id = {t.clnt_id: (u, s) for u, s in zip(units, states, strict=True) for t in u.tenants}
    outcomes: dict[int, ledger.LastOutcome] = {}
    try:
        control = await ledger.connect_existing(driver, dsns[project.default_server],
                                                project.file.control_database)
    except DatabaseError:
        control = None  # the default server is down: its own tenants say so above
    if control is not None:
        async with control:
            outcomes = await ledger.last_outcomes(control)
    seed_configured = project.seed_path is not None
    rows = []
    for t in tenants:
        unit, unit_state = by_id[t.clnt_id]
        known = outcomes.get(t.clnt_id)
        seeds = seed_configured and unit.policy.seeds_on_migrate
        seeded = None if not seeds else t.clnt_id in unit_state.seeded
        state = unit_state.state
        if seeds and not seeded and state in ("up_to_date", "pending"):
            state = "unfinished"
        # a drift failure whose file was restored since is history: the ledger keeps it,
        # status shows the present (other failures stay shown until a run succeeds)
        last = known.error if known else None
        resolved = bool(last and last.get("kind") == "drift" and not unit_state.drift)
        version = versions.get(t.server)
        rows.append(StatusRow(
            t.clnt_id, t.name, t.mode, t.server, unit.database, unit_state.version, inputs.latest,
            unit_state.pending, state, unit_state, seeded,
            server_version=version.text if version else None,
            server_supported=version.supported if version else None,
            last_status=known.last_status if known else None,
            last_run_id=known.last_run_id if known else None,
            last_error=unit_state.error or (known.error if known and not resolved else None),
            move=(moves or {}).get(t.clnt_id),
            wave=t.wave,
        ))
        if rows[-1].move is not None and state != "unreachable":
            rows[-1] = replace(rows[-1], state="move_pending")
    return rows


def _unit_state(inputs: Inputs, history: list[Any], marker: str | None) -> UnitState:
    plan = plan_migrate(inputs.migrations, history)
    replayed = replay(history)
    if plan.drift:
        summary = "drift"
    elif plan.gaps:
        summary = "gap"
    elif plan.pending:
        summary = "pending"
    else:
        summary = "up_to_date"
    claimed = marker_version(marker)
    behind = claimed is not None and replayed.version is not None and replayed.version < claimed
    return UnitState(
        summary, plan.from_version, len(plan.pending),
        partial_rows=tuple((v.text, r.statements_done) for v, r in replayed.failed.items()),
        drift=tuple((d.version, d.filename, d.applied_checksum, d.file_checksum) for d in plan.drift),
        unknown=plan.unknown, gaps=plan.gaps,
        marker_ahead=claimed.text if behind and claimed is not None else None,
        seeded=replayed.seeded,
    )


def verify_findings(rows: list[StatusRow]) -> list[VerifyFinding]:
    """Every problem ``verify`` reports, one per finding (tenant, version, file, what)."""
    out: list[VerifyFinding] = []
    for row in rows:
        u = row.unit

        def add(kind: str, detail: str, version: str | None = None, file: str | None = None,
                row: StatusRow = row) -> None:
            out.append(VerifyFinding(row.clnt_id, row.database, kind, detail, version, file))

        if row.state == ORPHANED:
            add("orphaned", f"in the registry (server {row.server}, database {row.database}) but "
                "no longer in tenants.yaml: `tenantctl deprovision` it, or list it again")
        elif row.state == "not_provisioned" and row.server == UNPLACED:
            add("unplaced", str((row.last_error or {}).get("message")))
        elif row.state == "not_provisioned":
            add("missing-database", "the database does not exist (tenantctl provision)")
        elif row.state == "unreachable":
            add("unreachable", str((row.last_error or {}).get("message")))
        for version, file, applied, now in u.drift:
            add("drift", f"applied with checksum {applied[:12]}, file now {now[:12]}: the file "
                "was edited after it ran", version, file)
        for v in u.unknown:
            add("ahead", "applied in the database but not in the migrations folder", v)
        for v in u.gaps:
            add("gap", "not recorded in the history, but newer versions are: its row was "
                "deleted by hand, or the file was added below versions that already ran; "
                "migrate would run it again out of order", v)
        if u.marker_ahead:
            add("history-behind-marker", f"the database's schema marker says it reached "
                f"{u.marker_ahead}, but its history ends at {row.version}: history rows "
                "were deleted by hand, or the database was restored from an older backup",
                u.marker_ahead)
        if row.move is not None:
            add("move-pending", f"{row.move.message}; {row.move.hint}")
        if row.state == "unfinished":
            add("unfinished", "provisioning did not finish: the database exists but the "
                "seed has not run (the next provision or migrate runs it)")
        for v, done in u.partial_rows:
            add("partial", f"failed/partial no-transaction migration ({done or 0} statement(s) "
                "done); migrate resumes it", v)
    return out


ORPHANED = "orphaned"


def _where_it_lives(spec: TenantSpec, mismatch: Mismatch | None) -> TenantSpec:
    if mismatch is None:
        return spec
    have = mismatch.registered
    return replace(spec, mode=have.mode, server=have.server, database=have.database)

UNPLACED = "-"  # the server column of a tenant no server can take


async def fleet_status(driver: Driver, inputs: Inputs, tenants: tuple[TenantSpec, ...],
                       servers: frozenset[str], concurrency: int, *,
                       orphans: bool) -> list[StatusRow]:
    """:func:`collect_status` with placement: tenants without ``server:`` where the
    registry pinned them (or where placement would put them), only those on
    ``servers`` when given, plus (``orphans``) the registered tenants tenants.yaml
    no longer lists. Reads only; pins nothing."""
    project = inputs.project
    dsn = server_dsns(project, {project.default_server})[project.default_server]
    try:
        known = await registry.read_existing(driver, dsn, project.file.control_database)
    except DatabaseError:
        known = {}  # the default server is down: placement falls back to tenants.yaml's
    placed, unplaced = place(project, known).resolve(tenants)
    try:
        where = await read_registered(driver, dsn, project.file.control_database)
    except DatabaseError:
        where = {}
    # a tenant with a move pending is read where its data is (the registry's placement)
    checked = reconcile(placed, where, {})
    placed = tuple(_where_it_lives(t, checked.mismatches.get(t.clnt_id)) for t in placed)
    placed = on_servers(placed, servers)
    rows = await collect_status(driver, inputs, placed, concurrency,
                                checked.mismatches) if placed else []
    if not servers:
        rows += [StatusRow(t.clnt_id, t.name, t.mode, UNPLACED, t.database, None, inputs.latest,
                           len(inputs.migrations), "not_provisioned", UnitState("not_provisioned"),
                           last_error={"sqlstate": None, "message": unplaced[t.clnt_id]})
                 for t in tenants if t.clnt_id in unplaced]
    if orphans:
        listed = {t.clnt_id for t in project.tenants}
        rows += [StatusRow(r.clnt_id, r.name, r.mode, r.server, r.database, r.version,
                           inputs.latest, None, ORPHANED, UnitState(ORPHANED, r.version),
                           last_status=r.last_status)
                 for r in known.values()
                 if r.clnt_id not in listed and r.active and (not servers or r.server in servers)]
    order = {t.clnt_id: i for i, t in enumerate(project.tenants)}
    return sorted(rows, key=lambda r: (order.get(r.clnt_id, len(order)), r.clnt_id))
