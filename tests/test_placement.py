"""Placement is pure: properties of least-tenants and default over random fleets."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tenantctl.config import ConfigFile, Project, Server, Settings, TenantSpec
from tenantctl.placement import place
from tenantctl.registry import RegistryRow

NAMES = ("a", "b", "c", "d")


def project(caps: list[int | None], new: int, placement: str,
            given_servers: dict[int, str]) -> Project:
    servers = {NAMES[i]: Server(dsn="postgresql://localhost/x", max_tenants=cap)
               for i, cap in enumerate(caps)}
    file = ConfigFile(settings=Settings(placement=placement))  # type: ignore[arg-type]
    tenants = tuple(
        TenantSpec(i, f"T{i}", (1,), "database", None, given_servers.get(i, "a"), f"db_{i}",
                   server_given=i in given_servers)
        for i in range(1, new + 1))
    return Project(Path("tenants.yaml"), file, servers, "a", tenants)


def registered(assignments: list[int], n_servers: int) -> dict[int, RegistryRow]:
    """Tenants 1001.. already living on servers (by index), not in tenants.yaml."""
    return {1001 + i: RegistryRow(1001 + i, "old", "database", NAMES[s % n_servers], f"old_{i}",
                                  None, None, False, False, None)
            for i, s in enumerate(assignments)}


@settings(max_examples=200, deadline=None)
@given(n_servers=st.integers(1, 4), new=st.integers(0, 40))
def test_least_tenants_on_an_empty_fleet_is_balanced(n_servers: int, new: int) -> None:
    p = project([None] * n_servers, new, "least-tenants", {})
    placed = place(p, {})
    counts = [sum(1 for t in placed.tenants if t.server == NAMES[i]) for i in range(n_servers)]
    assert sum(counts) == new and not placed.unplaced
    assert max(counts) - min(counts) <= 1


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n_servers=st.integers(1, 4), new=st.integers(0, 30),
       policy=st.sampled_from(["least-tenants", "default"]))
def test_no_server_is_filled_past_max_tenants(data: st.DataObject, n_servers: int, new: int,
                                              policy: str) -> None:
    caps = data.draw(st.lists(st.one_of(st.none(), st.integers(0, 12)), min_size=n_servers,
                              max_size=n_servers))
    old = data.draw(st.lists(st.integers(0, n_servers - 1), max_size=20))
    p = project(caps, new, policy, {})
    placed = place(p, registered(old, n_servers))
    before = {name: sum(1 for s in old if NAMES[s] == name) for name in p.servers}
    after = dict(before)
    for t in placed.tenants:
        after[t.server] += 1
    for i, name in enumerate(p.servers):
        if caps[i] is not None:
            assert after[name] - before[name] == 0 or after[name] <= caps[i]
    room = [name for name in p.servers if caps[NAMES.index(name)] is None
            or after[name] < caps[NAMES.index(name)]]
    if policy == "least-tenants":
        assert not placed.unplaced or not room  # nobody is refused while a server has room
    assert len(placed.tenants) + len(placed.unplaced) == new


def test_a_pinned_tenant_stays_and_an_explicit_server_counts() -> None:
    p = project([None, None], 3, "least-tenants", {1: "a"})
    pinned = {2: RegistryRow(2, "T2", "database", "a", "db_2", "1.0", "applied", True, False,
                             None)}
    placed = {t.clnt_id: t.server for t in place(p, pinned).tenants}
    assert placed == {1: "a", 2: "a", 3: "b"}
    gone = {2: RegistryRow(2, "T2", "database", "zz", "db_2", None, None, True, False, None)}
    result = place(p, gone)
    assert "server zz, which tenants.yaml no longer lists" in result.unplaced[2]
