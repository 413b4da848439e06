"""Pure: which server a tenant without ``server:`` lives on, and ``--server`` selection.

A dedicated tenant that tenants.yaml gives no ``server:`` is placed once and
then pinned in the registry: later runs find it where it was put, whatever
the policy or the default server says by then. ``settings.placement``:

- ``default``: the default server;
- ``least-tenants``: the server with the fewest registered tenants (ties: the
  order of ``servers:``), skipping servers that reached ``max_tenants``.

A server at its ``max_tenants`` takes no new tenant under either policy; a
tenant no server can take is reported (its run fails it, naming why).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from .config import Project, TenantSpec
from .errors import BadInputError

if TYPE_CHECKING:
    from .registry import RegistryRow


class PlacementPolicy(StrEnum):
    DEFAULT = "default"
    LEAST_TENANTS = "least-tenants"


@dataclass(frozen=True)
class Placement:
    tenants: tuple[TenantSpec, ...]  # every placeable tenant of tenants.yaml, server resolved
    unplaced: Mapping[int, str]  # clnt_id -> why no server can take it

    def resolve(self, selected: Iterable[TenantSpec]) -> tuple[tuple[TenantSpec, ...], dict[int, str]]:
        """The selected tenants with their servers, and those that have none (why)."""
        by_id = {t.clnt_id: t for t in self.tenants}
        placed, failed = [], {}
        for t in selected:
            if t.clnt_id in by_id:
                placed.append(by_id[t.clnt_id])
            else:
                failed[t.clnt_id] = self.unplaced[t.clnt_id]
        return tuple(placed), failed


def place(project: Project, registry: Mapping[int, RegistryRow]) -> Placement:
    """Every tenant of tenants.yaml with its server: given, pinned, or chosen now."""
    policy = PlacementPolicy(project.settings.placement)
    order = list(project.servers)
    occupants: dict[int, str] = {
        r.clnt_id: r.server for r in registry.values() if r.active and r.mode == "database"}
    for t in project.tenants:
        if t.mode == "database" and t.server_given:
            occupants[t.clnt_id] = t.server
    placed: list[TenantSpec] = []
    unplaced: dict[int, str] = {}
    for t in project.tenants:
        if t.server_given or t.mode != "database":
            placed.append(t)
            continue
        pinned = registry.get(t.clnt_id)
        if pinned is not None and pinned.mode == "database":
            if pinned.server in project.servers:
                placed.append(replace(t, server=pinned.server))
            else:
                unplaced[t.clnt_id] = (f"the registry places clnt_id {t.clnt_id} on server "
                                       f"{pinned.server}, which tenants.yaml no longer lists")
            continue
        occupants.pop(t.clnt_id, None)
        counts = dict.fromkeys(order, 0)
        for server in occupants.values():
            if server in counts:
                counts[server] += 1
        if policy is PlacementPolicy.DEFAULT:
            candidates = [project.default_server]
        else:
            candidates = sorted(order, key=lambda s: (counts[s], order.index(s)))
        chosen = next((s for s in candidates if _has_room(project, s, counts[s])), None)
        if chosen is None:
            unplaced[t.clnt_id] = _full(project, policy, counts)
            continue
        occupants[t.clnt_id] = chosen
        placed.append(replace(t, server=chosen))
    return Placement(tuple(placed), unplaced)


def _has_room(project: Project, server: str, count: int) -> bool:
    cap = project.servers[server].max_tenants
    return cap is None or count < cap


def _full(project: Project, policy: PlacementPolicy, counts: dict[str, int]) -> str:
    if policy is PlacementPolicy.DEFAULT:
        server = project.default_server
        return (f"no room for a new tenant: the default server {server} holds {counts[server]} "
                f"tenant(s), its max_tenants is {project.servers[server].max_tenants}")
    full = ", ".join(f"{s} {counts[s]}/{project.servers[s].max_tenants}" for s in counts)
    return f"no room for a new tenant: every server is at its max_tenants ({full})"


def check_servers(project: Project, names: Iterable[str]) -> frozenset[str]:
    """``--server`` names, each one a server of tenants.yaml (else exit 2)."""
    wanted = frozenset(names)
    unknown = sorted(wanted - set(project.servers))
    if unknown:
        raise BadInputError(
            f"--server {', '.join(unknown)}: no such server in {project.path.name}",
            hint=f"servers: {', '.join(project.servers)}")
    return wanted


def on_servers(tenants: Iterable[TenantSpec], servers: frozenset[str]) -> tuple[TenantSpec, ...]:
    """The tenants living on ``servers`` (all of them when none are given)."""
    return tuple(t for t in tenants if not servers or t.server in servers)
