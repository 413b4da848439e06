"""Unfinished provisioning and hand-edited history are visible and healed (real PostgreSQL)."""

from __future__ import annotations

from conftest import Workspace

TENANTS = '  - { clnt_id: 1, name: "A", sites: [1, 2] }\n  - { clnt_id: 2, name: "B", sites: [1] }\n'


def setup(ws: Workspace) -> None:
    ws.write_config(TENANTS, extra="seed: seed/tenant_seed.sql\n")
    result = ws.cli("provision", "1")
    assert result.exit_code == 0, result.stderr


def test_clone_without_seed_shows_unfinished_and_migrate_finishes_it(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    # what a kill -9 between CREATE DATABASE ... TEMPLATE and the seed leaves behind
    template = f"{ws.prefix}_template"
    ws.fetch(None, f'CREATE DATABASE "{ws.db(2)}" TEMPLATE "{template}"')

    status = ws.cli("--json", "status")
    rows = {r["clnt_id"]: r for r in status.json()["tenants"]}
    assert rows[1]["state"] == "up_to_date" and rows[1]["seeded"] is True
    assert rows[2]["state"] == "unfinished" and rows[2]["seeded"] is False
    verify = ws.cli("--json", "verify")
    assert verify.exit_code == 1
    assert {(f["clnt_id"], f["kind"]) for f in verify.json()["findings"]} == {(2, "unfinished")}
    assert ws.cli("migrate", "--all", "--no-skip").exit_code == 0

    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 0
    assert ws.history(2)[-1]["kind"] == "seed"
    sites = ws.fetch(ws.db(2), "SELECT clnt_id, site_id FROM cvs_site_mast")
    assert [tuple(r) for r in sites] == [(2, 1)]
    assert ws.cli("verify").exit_code == 0
    assert {r["state"] for r in ws.cli("--json", "status").json()["tenants"]} == {"up_to_date"}


def test_provision_also_finishes_an_unseeded_clone(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    ws.fetch(None, f'CREATE DATABASE "{ws.db(2)}" TEMPLATE "{ws.prefix}_template"')
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 0
    assert {t["clnt_id"]: t.get("seeded", False) for t in result.json()["tenants"]} == {1: False, 2: True}


def test_verify_finds_history_rows_deleted_by_hand(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    assert ws.cli("verify", "1").exit_code == 0
    # a row in the middle: a gap below the newest applied version
    ws.fetch(ws.db(1), "DELETE FROM tenantctl_schema_history WHERE version = '1.0.1' AND kind = 'up'")
    result = ws.cli("--json", "verify", "1")
    assert result.exit_code == 1
    assert {(f["kind"], f["version"]) for f in result.json()["findings"]} == {("gap", "1.0.1")}
    status = ws.cli("--json", "status", "1").json()["tenants"][0]
    assert status["state"] == "gap" and status["gaps"] == ["1.0.1"]
    assert "not recorded: 1.0.1" in ws.cli("status", "1").stdout


def test_verify_finds_the_newest_rows_deleted_by_hand(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    ws.fetch(ws.db(1), "DELETE FROM tenantctl_schema_history WHERE version = '1.2.0' AND kind = 'up'")
    result = ws.cli("--json", "verify", "1")
    assert result.exit_code == 1
    findings = {(f["kind"], f["version"]) for f in result.json()["findings"]}
    assert findings == {("history-behind-marker", "1.2.0")}
