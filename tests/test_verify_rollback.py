"""verify, repair and rollback on a real PostgreSQL, with the shipped XOS migrations."""

from __future__ import annotations

from conftest import Workspace

TENANTS = '  - { clnt_id: 1, name: "A", sites: [1, 2] }\n  - { clnt_id: 2, name: "B", sites: [1] }\n'
ALL = ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.2.0"]


def setup(ws: Workspace) -> None:
    ws.write_config(TENANTS, extra="seed: seed/tenant_seed.sql\n")
    result = ws.cli("provision", "--all")
    assert result.exit_code == 0, result.stderr


def test_verify_clean_then_edited_file_then_repair(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    assert ws.cli("verify").exit_code == 0
    path = ws.migrations / "v1.0.1_create_grp_and_usr_grp_tables.sql"
    path.write_text(path.read_text() + "\n-- a comment added after release\n")
    result = ws.cli("--json", "verify")
    assert result.exit_code == 1
    findings = result.json()["findings"]
    assert {(f["clnt_id"], f["kind"], f["version"], f["file"]) for f in findings} == {
        (1, "drift", "1.0.1", path.name), (2, "drift", "1.0.1", path.name)}
    text = ws.cli("verify", "1")
    assert f"clnt_id 1 {ws.db(1)}: drift {path.name} (version 1.0.1)" in text.stdout
    # migrate refuses the drifting tenants and says how to proceed
    assert ws.cli("migrate", "--all").exit_code == 1
    repaired = ws.cli("--json", "repair", "--all")
    assert repaired.exit_code == 0, repaired.stderr
    assert [t["applied"] for t in repaired.json()["tenants"]] == [["1.0.1"], ["1.0.1"]]
    assert ws.cli("verify").exit_code == 0
    assert ws.cli("migrate", "--all").exit_code == 0
    runs = ws.fetch(ws.control_db, "SELECT command FROM tenantctl_runs ORDER BY started_on")
    assert "repair" in [r["command"] for r in runs]


def test_verify_reports_tenant_ahead_of_folder_and_missing_database(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    (ws.migrations / "v1.2.0_add_usr_locale_and_lgn_hist.sql").unlink()
    (ws.migrations / "v1.2.0_add_usr_locale_and_lgn_hist.down.sql").unlink()
    ws.write_config(TENANTS + '  - { clnt_id: 3, name: "C", sites: [1] }\n', extra="seed: seed/tenant_seed.sql\n")
    result = ws.cli("--json", "verify")
    assert result.exit_code == 1
    kinds = {(f["clnt_id"], f["kind"], f["version"]) for f in result.json()["findings"]}
    assert kinds == {(1, "ahead", "1.2.0"), (2, "ahead", "1.2.0"), (3, "missing-database", None)}


def test_rollback_then_migrate_forward(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    ws.fetch(ws.db(1), "INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_lgn, usr_nm) VALUES (1, 1, 'jdoe', 'J Doe')")
    result = ws.cli("--json", "rollback", "1", "--to", "1.0.2")
    assert result.exit_code == 0, result.stderr
    (t,) = result.json()["tenants"]
    assert (t["from_version"], t["to_version"], t["status"], t["reverted"], t["applied"]) == (
        "1.2.0", "1.0.2", "reverted", ["1.2.0", "1.1.0"], [])
    assert not {"cvs_ordr_hdr", "cvs_ordr_dtl", "cvs_usr_lgn_hist"} & ws.tables(1)
    kinds = [r["kind"] for r in ws.history(1)]
    assert kinds.count("down") == 2
    status = {r["clnt_id"]: r for r in ws.cli("--json", "status").json()["tenants"]}
    assert (status[1]["version"], status[1]["pending"]) == ("1.0.2", 2)
    assert (status[2]["version"], status[2]["pending"]) == ("1.2.0", 0)
    # data in kept tables survives; a later migrate brings the tenant forward again
    forward = ws.cli("--json", "migrate", "--all")
    assert forward.exit_code == 0
    assert {t["clnt_id"]: t["applied"] for t in forward.json()["tenants"]} == {1: ["1.1.0", "1.2.0"], 2: []}
    assert {"cvs_ordr_hdr", "cvs_usr_lgn_hist"} <= ws.tables(1)
    assert ws.fetch(ws.db(1), "SELECT count(*) AS n FROM cvs_usr_mast WHERE usr_lgn = 'jdoe'")[0]["n"] == 1


def test_rollback_with_missing_down_script_refuses_and_changes_nothing(example_ws: Workspace) -> None:
    ws = example_ws
    setup(ws)
    (ws.migrations / "v1.1.0_create_ordr_hdr_and_dtl_tables.down.sql").unlink()
    before = ws.history(1)
    result = ws.cli("rollback", "--all", "--to", "1.0.0")
    assert result.exit_code == 2
    assert "v1.1.0_create_ordr_hdr_and_dtl_tables.down.sql" in result.stderr
    assert ws.history(1) == before and "cvs_ordr_hdr" in ws.tables(1)


def test_failing_down_script_stops_that_tenant_atomically(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1] }\n')
    ws.add_migration("v1.0.0_a.sql", "create table cvs_a (clnt_id int2 not null);")
    ws.add_migration("v1.0.0_a.down.sql", "drop table cvs_a;")
    ws.add_migration("v1.0.1_b.sql", "create table cvs_b (clnt_id int2 not null);")
    ws.add_migration("v1.0.1_b.down.sql", "drop table cvs_b; drop table cvs_not_there;")
    assert ws.cli("provision", "1").exit_code == 0
    result = ws.cli("--json", "rollback", "1", "--to", "1.0.0")
    assert result.exit_code == 1
    (t,) = result.json()["tenants"]
    assert t["error"]["sqlstate"] == "42P01" and t["error"]["migration"] == "v1.0.1_b.down.sql"
    assert "cvs_b" in ws.tables(1) and ws.versions(1) == ["1.0.0", "1.0.1"]
