"""Pure: does tenants.yaml still put each tenant where the registry says it lives?

tenants.yaml is the desired state; the registry (``tenantctl_tenants`` in the
control database) records where each tenant's data actually is. When the two
disagree on (mode, server, database), the changing commands refuse that
tenant instead of creating an empty database at the new place, and
``tenantctl move`` is the one way to bring the data there.

- A tenant the registry has never seen placed (no provisioning, no recorded
  version) has no data anywhere yet: its declared placement is simply taken.
- A dedicated tenant without ``server:`` in tenants.yaml lives wherever the
  registry has pinned it (:mod:`tenantctl.placement` resolves it before runs
  compare); :func:`compare` with ``server_declared=False`` ignores the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .config import Project, TenantSpec
from .modes import Mode


@dataclass(frozen=True)
class Placement:
    """Where one tenant's data lives."""

    mode: str
    server: str
    database: str

    def describe(self) -> str:
        if self.mode == Mode.SHARED:
            return f"shared database {self.database} on server {self.server}"
        return f"database {self.database} on server {self.server}"


@dataclass(frozen=True)
class Registered:
    """A tenant's row in the registry: its placement, and whether any data was put there."""

    clnt_id: int
    placement: Placement
    placed: bool  # provisioned, or a version recorded: something exists at the placement


@dataclass(frozen=True)
class Mismatch:
    """The registry and tenants.yaml place a tenant differently."""

    clnt_id: int
    registered: Placement
    declared: Placement

    @property
    def message(self) -> str:
        return (f"clnt_id {self.clnt_id}: tenants.yaml places it in "
                f"{self.declared.describe()}, but its data lives in "
                f"{self.registered.describe()} (registry): nothing was done")

    @property
    def hint(self) -> str:
        return (f"run `tenantctl move {self.clnt_id}` to move its data there, or revert the "
                "change in tenants.yaml")


def declared(spec: TenantSpec) -> Placement:
    return Placement(spec.mode, spec.server, spec.database)


def compare(spec: TenantSpec, registered: Registered | None, *,
            server_declared: bool = True) -> Mismatch | None:
    """The mismatch between a tenant's declared placement and its registered one, if any."""
    if registered is None or not registered.placed:
        return None
    want, have = declared(spec), registered.placement
    same_server = want.server == have.server or (not server_declared and want.mode == have.mode)
    if want.mode == have.mode and want.database == have.database and same_server:
        return None
    if not server_declared and want.mode == have.mode == Mode.DATABASE:
        want = replace(want, server=have.server)  # it would stay on its pinned server
    return Mismatch(spec.clnt_id, have, want)


def servers_declared(project: Project) -> dict[int, bool]:
    """Per clnt_id: does tenants.yaml name the tenant's server? A shared tenant's server
    is the shared database's, always known."""
    return {t.clnt_id: t.mode == Mode.SHARED or t.server_given for t in project.tenants}


@dataclass(frozen=True)
class Reconciled:
    """tenants.yaml's tenants placed where a run may work on them, and those refused."""

    tenants: tuple[TenantSpec, ...]  # undeclared servers pinned to the registry's
    mismatches: dict[int, Mismatch]

    def runnable(self, selected: Iterable[TenantSpec]) -> tuple[TenantSpec, ...]:
        """The selected tenants a run may touch, with their effective placement."""
        by_id = {t.clnt_id: t for t in self.tenants}
        return tuple(by_id[t.clnt_id] for t in selected if t.clnt_id not in self.mismatches)

    def refused(self, selected: Iterable[TenantSpec]) -> tuple[Mismatch, ...]:
        return tuple(self.mismatches[t.clnt_id] for t in selected if t.clnt_id in self.mismatches)

    def syncable(self) -> tuple[TenantSpec, ...]:
        """What the registry may record from tenants.yaml: every tenant whose data is not
        elsewhere (a mismatched tenant's registered placement changes only by a move)."""
        return tuple(t for t in self.tenants if t.clnt_id not in self.mismatches)


def reconcile(tenants: Iterable[TenantSpec], registry: Mapping[int, Registered],
              server_declared: Mapping[int, bool]) -> Reconciled:
    effective: list[TenantSpec] = []
    mismatches: dict[int, Mismatch] = {}
    for spec in tenants:
        known = registry.get(spec.clnt_id)
        declared_server = server_declared.get(spec.clnt_id, True)
        mismatch = compare(spec, known, server_declared=declared_server)
        if mismatch is not None:
            mismatches[spec.clnt_id] = mismatch
        elif known is not None and known.placed and not declared_server:
            spec = replace(spec, server=known.placement.server)
        effective.append(spec)
    return Reconciled(tuple(effective), mismatches)


def reconcile_project(project: Project, registry: Mapping[int, Registered]) -> Reconciled:
    return reconcile(project.tenants, registry, servers_declared(project))
