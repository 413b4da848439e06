"""Pure: placement comparison (placement_check.py) and move planning (move_plan.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantctl.config import TenantSpec
from tenantctl.move_plan import Method, MoveError, dependency_order, kept_name, method_for
from tenantctl.placement_check import Placement, Registered, compare, reconcile


def spec(clnt_id: int = 7, mode: str = "database", server: str = "a",
         database: str = "cvs_client_7") -> TenantSpec:
    return TenantSpec(clnt_id, "T", (1,), mode, None, server, database)


def at(mode: str = "database", server: str = "a", database: str = "cvs_client_7",
       placed: bool = True, clnt_id: int = 7) -> Registered:
    return Registered(clnt_id, Placement(mode, server, database), placed)


def test_the_same_placement_is_no_mismatch() -> None:
    assert compare(spec(), at()) is None


@pytest.mark.parametrize("registered", [
    at(server="b"), at(database="other_db"), at(mode="shared", database="cvs_shared"),
])
def test_any_difference_is_a_mismatch_naming_both_placements(registered: Registered) -> None:
    mismatch = compare(spec(), registered)
    assert mismatch is not None
    assert mismatch.registered == registered.placement
    assert mismatch.declared == Placement("database", "a", "cvs_client_7")
    assert registered.placement.describe() in mismatch.message
    assert "database cvs_client_7 on server a" in mismatch.message
    assert "tenantctl move 7" in mismatch.hint and "revert" in mismatch.hint


def test_nothing_placed_yet_means_the_declaration_is_taken() -> None:
    assert compare(spec(), None) is None
    assert compare(spec(), at(server="b", placed=False)) is None


def test_an_undeclared_server_is_wherever_the_registry_pinned_it() -> None:
    assert compare(spec(), at(server="b"), server_declared=False) is None
    # but another database name still needs a move, on the pinned server
    mismatch = compare(spec(), at(server="b", database="old"), server_declared=False)
    assert mismatch is not None and mismatch.declared.server == "b"
    # and so does a change of mode
    assert compare(spec(), at(mode="shared", server="b", database="s"),
                   server_declared=False) is not None


def test_reconcile_pins_undeclared_servers_and_refuses_mismatches() -> None:
    one, two, three = spec(1, database="d1"), spec(2, database="d2"), spec(3, database="d3")
    registry = {1: at(clnt_id=1, server="b", database="d1"),
                2: at(clnt_id=2, server="b", database="d2"),
                3: at(clnt_id=3, database="d3")}
    result = reconcile((one, two, three), registry, {1: False, 2: True, 3: True})
    assert [t.server for t in result.runnable((one, two, three))] == ["b", "a"]
    assert [m.clnt_id for m in result.refused((one, two, three))] == [2]
    assert [t.clnt_id for t in result.syncable()] == [1, 3]
    assert result.syncable()[0].server == "b", "the registry keeps the pinned server"


def test_the_move_method_follows_the_modes() -> None:
    dedicated, other = Placement("database", "a", "x"), Placement("database", "b", "x")
    shared = Placement("shared", "a", "cvs_shared")
    assert method_for(dedicated, other) is Method.DUMP
    assert method_for(shared, dedicated) is Method.COPY
    assert method_for(dedicated, shared) is Method.COPY
    with pytest.raises(MoveError, match="shared database itself"):
        method_for(shared, Placement("shared", "b", "cvs_shared"))


def test_parents_come_before_children_and_self_references_are_fine() -> None:
    tables = ["public.lines", "public.orders", "public.users", "public.sites"]
    refs = [("public.lines", "public.orders"), ("public.orders", "public.users"),
            ("public.users", "public.sites"), ("public.users", "public.users"),
            ("public.lines", "other.outside")]
    assert dependency_order(tables, refs) == ["public.sites", "public.users", "public.orders",
                                              "public.lines"]


def test_a_foreign_key_cycle_is_refused_naming_the_tables() -> None:
    with pytest.raises(MoveError, match=r"cycle between public\.a, public\.b"):
        dependency_order(["public.a", "public.b", "public.c"],
                         [("public.a", "public.b"), ("public.b", "public.a")])


@given(st.lists(st.integers(0, 12), min_size=1, max_size=13, unique=True),
       st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=40))
def test_any_acyclic_graph_is_ordered_completely(nodes: list[int],
                                                 edges: list[tuple[int, int]]) -> None:
    # orient every edge from a later node to an earlier one: acyclic by construction
    rank = {n: i for i, n in enumerate(nodes)}
    refs = [(f"t{a}", f"t{b}") if rank[a] >= rank[b] else (f"t{b}", f"t{a}")
            for a, b in edges if a in rank and b in rank]
    names = [f"t{n}" for n in nodes]
    order = dependency_order(names, refs)
    assert sorted(order) == sorted(names)
    position = {n: i for i, n in enumerate(order)}
    assert all(position[parent] <= position[child] for child, parent in refs)


@pytest.mark.parametrize("name", ["cvs_client_7", "x" * 63, "ä" * 31 + "x"])
def test_a_kept_name_fits_63_bytes_and_says_when(name: str) -> None:
    kept = kept_name(name, datetime(2026, 11, 23, 18, 30, 5, tzinfo=UTC))
    assert kept.endswith("_moved_20261123183005")
    assert len(kept.encode()) <= 63
    assert kept.startswith(name.encode()[:10].decode("utf-8", "ignore"))
