"""provision / migrate / status against a real PostgreSQL."""

from __future__ import annotations

import json

from conftest import Workspace

TENANTS = """\
  - { clnt_id: 1, name: "Acme Hospital", sites: [1, 2] }
  - { clnt_id: 2, name: "Beta Clinic", sites: [1] }
  - { clnt_id: 3, name: "Canary Co", sites: [1] }
"""

INIT = """\
    create table cvs_usr_mast (
        clnt_id int2 not null, site_id int2 not null, usr_id int not null,
        usr_nm text not null, rcrd_stat int2 not null default 1,
        primary key (clnt_id, site_id, usr_id));
"""


def setup(ws: Workspace, tenants: str = TENANTS) -> None:
    ws.write_config(tenants)
    ws.add_migration("v1.0.0_init.sql", INIT)


def test_provision_creates_databases_at_latest_and_is_idempotent(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config(TENANTS, extra="seed: seed/tenant_seed.sql\n")
    result = ws.cli("provision", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    latest = sorted(p.name for p in ws.migrations.glob("v*.sql") if not p.name.endswith(".down.sql"))
    assert {t["status"] for t in doc["tenants"]} == {"applied"}
    assert all(t["created"] and t["seeded"] for t in doc["tenants"])
    assert {ws.db(i) for i in (1, 2, 3)} <= ws.databases()
    for i in (1, 2, 3):
        assert len(ws.versions(i)) == len(latest)
        assert ws.history(i)[-1]["kind"] == "seed"
    # seed rows carry the tenant's own clnt_id and sites
    sites = ws.fetch(ws.db(1), "SELECT clnt_id, site_id FROM cvs_site_mast ORDER BY site_id")
    assert [tuple(r) for r in sites] == [(1, 1), (1, 2)]
    # registered in the control database
    reg = ws.fetch(ws.control_db, "SELECT clnt_id, name, provisioned_on IS NOT NULL AS p FROM tenantctl_tenants ORDER BY 1")
    assert [(r["clnt_id"], r["name"], r["p"]) for r in reg] == [
        (1, "Acme Hospital", True), (2, "Beta Clinic", True), (3, "Canary Co", True)]

    before = {i: ws.history(i) for i in (1, 2, 3)}
    again = ws.cli("provision", "--all", "--json")
    assert again.exit_code == 0, again.stderr
    assert {t["status"] for t in again.json()["tenants"]} == {"up_to_date"}
    assert {i: ws.history(i) for i in (1, 2, 3)} == before


def test_new_release_is_applied_to_all(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_add_usr_email.sql", "alter table cvs_usr_mast add column usr_email text;")
    ws.add_migration("v1.1.0_add_grp.sql", """\
        create table cvs_grp_mast (clnt_id int2 not null, site_id int2 not null, grp_id int not null,
                                   primary key (clnt_id, site_id, grp_id));""")
    result = ws.cli("migrate", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    for t in result.json()["tenants"]:
        assert (t["status"], t["from_version"], t["to_version"], t["applied"]) == (
            "applied", "1.0.0", "1.1.0", ["1.0.1", "1.1.0"])
    for i in (1, 2, 3):
        assert ws.versions(i) == ["1.0.0", "1.0.1", "1.1.0"]
        assert "cvs_grp_mast" in ws.tables(i)
    runs = ws.fetch(ws.control_db, "SELECT command, status FROM tenantctl_runs ORDER BY started_on")
    assert [(r["command"], r["status"]) for r in runs] == [("provision", "ok"), ("migrate", "ok")]


def test_data_dependent_failure_is_atomic_and_isolated(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "--all").exit_code == 0
    # tenant 2 has data that violates the new constraint
    ws.fetch(ws.db(2), "INSERT INTO cvs_usr_mast VALUES (2, 1, 1, 'dup'), (2, 1, 2, 'dup')")
    ws.add_migration("v1.0.1_unique_names.sql", """\
        create table cvs_usr_note (clnt_id int2 not null, site_id int2 not null, note text);
        alter table cvs_usr_mast add constraint cvs_usr_mast_nm_uk unique (clnt_id, site_id, usr_nm);
    """)
    ws.add_migration("v1.0.2_after.sql", "alter table cvs_usr_mast add column usr_email text;")
    result = ws.cli("migrate", "--all", "--json")
    assert result.exit_code == 1
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    failed = by_id[2]
    assert failed["status"] == "failed"
    assert failed["error"]["sqlstate"] == "23505"
    assert failed["error"]["migration"] == "v1.0.1_unique_names.sql"
    assert failed["to_version"] == "1.0.0"
    # atomic: the table created earlier in the failing migration is not there, no history row
    assert "cvs_usr_note" not in ws.tables(2)
    assert ws.versions(2) == ["1.0.0"]
    # the others went on to the end
    for i in (1, 3):
        assert by_id[i]["status"] == "applied" and ws.versions(i) == ["1.0.0", "1.0.1", "1.0.2"]
    # the ledger knows the failure
    row = ws.fetch(ws.control_db, "SELECT last_status, last_error FROM tenantctl_tenants WHERE clnt_id = 2")[0]
    assert row["last_status"] == "failed" and json.loads(row["last_error"])["sqlstate"] == "23505"
    status = ws.cli("status", "--json").json()["tenants"]
    assert {r["clnt_id"]: r["pending"] for r in status} == {1: 0, 2: 2, 3: 0}
    assert [r["last_error"]["sqlstate"] for r in status if r["clnt_id"] == 2] == ["23505"]

    # fix the data, re-run: the failed tenant catches up, the others are untouched
    ws.fetch(ws.db(2), "DELETE FROM cvs_usr_mast WHERE usr_id = 2")
    again = ws.cli("migrate", "--all", "--json")
    assert again.exit_code == 0
    assert {t["clnt_id"]: t["status"] for t in again.json()["tenants"]} == {
        1: "up_to_date", 2: "applied", 3: "up_to_date"}


def test_subset_run_touches_only_its_tenants(ws: Workspace) -> None:
    setup(ws)
    result = ws.cli("provision", "1", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert [t["clnt_id"] for t in result.json()["tenants"]] == [1, 3]
    assert ws.db(2) not in ws.databases()
    ws.add_migration("v1.0.1_x.sql", "create table cvs_x (clnt_id int2 not null);")
    assert ws.cli("migrate", "3").exit_code == 0
    assert ws.versions(3) == ["1.0.0", "1.0.1"] and ws.versions(1) == ["1.0.0"]


def test_migrate_of_unprovisioned_tenant_fails_with_hint(ws: Workspace) -> None:
    setup(ws)
    result = ws.cli("migrate", "2", "--json")
    assert result.exit_code == 1
    (t,) = result.json()["tenants"]
    assert t["status"] == "failed" and t["error"]["sqlstate"] == "3D000"
    assert ws.db(2) not in ws.databases()


def test_dry_run_changes_nothing(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "1").exit_code == 0
    ws.add_migration("v1.0.1_x.sql", "create table cvs_x (clnt_id int2 not null);")
    result = ws.cli("migrate", "1", "--dry-run", "--json")
    assert result.exit_code == 0
    (t,) = result.json()["tenants"]
    assert t["applied"] == ["1.0.1"] and result.json()["dry_run"] is True
    assert ws.versions(1) == ["1.0.0"]


def test_to_version(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "2").exit_code == 0
    for v in ("1.0.1", "1.0.2", "1.0.3"):
        ws.add_migration(f"v{v}_m.sql", f"create table cvs_{v.replace('.', '_')} (clnt_id int2 not null);")
    result = ws.cli("migrate", "2", "--to", "1.0.2", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["tenants"][0]["to_version"] == "1.0.2"
    assert ws.versions(2) == ["1.0.0", "1.0.1", "1.0.2"]
    bad = ws.cli("migrate", "2", "--to", "9.9")
    assert bad.exit_code == 2 and "no migration with that version" in bad.stderr


def test_hostile_tenant_name_is_stored_as_data(ws: Workspace) -> None:
    hostile = "Robert'); DROP DATABASE postgres; --\\\""
    ws.write_config(f'  - {{ clnt_id: 9, name: "{hostile}", sites: [1] }}\n')
    ws.add_migration("v1.0.0_init.sql", INIT)
    (ws.dir / "seed.sql").write_text(
        "INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_id, usr_nm) VALUES "
        "(current_setting('tenantctl.clnt_id')::int2, 1, 1, current_setting('tenantctl.tenant_name'));\n")
    text = ws.config.read_text().replace("tenants:\n", "seed: seed.sql\ntenants:\n")
    ws.config.write_text(text)
    result = ws.cli("provision", "9", "--json")
    assert result.exit_code == 0, result.stderr
    name = "Robert'); DROP DATABASE postgres; --\""
    assert ws.fetch(ws.db(9), "SELECT usr_nm FROM cvs_usr_mast")[0]["usr_nm"] == name
    assert ws.fetch(ws.control_db, "SELECT name FROM tenantctl_tenants")[0]["name"] == name
    assert ws.fetch(None, "SELECT 1 FROM pg_database WHERE datname = 'postgres'")


def test_new_writes_next_version(ws: Workspace) -> None:
    setup(ws)
    result = ws.cli("new", "add usr tables")
    assert result.exit_code == 0, result.stderr
    up, down = result.stdout.splitlines()  # the migration, then its down companion
    assert up.endswith("migrations/v1.0.1_add_usr_tables.sql")
    assert down.endswith("migrations/v1.0.1_add_usr_tables.down.sql")
    assert (ws.migrations / "v1.0.1_add_usr_tables.sql").read_text().startswith("-- add usr tables")


def test_history_table_shape(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "1").exit_code == 0
    cols = ws.fetch(ws.db(1), "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'tenantctl_schema_history'")
    types = {r["column_name"]: r["data_type"] for r in cols}
    for name, kind in {"version": "text", "description": "text", "checksum": "text",
                       "installed_by": "text", "installed_on": "timestamp with time zone",
                       "execution_ms": "integer", "success": "boolean"}.items():
        assert types[name] == kind
    (row,) = ws.fetch(ws.db(1), "SELECT * FROM tenantctl_schema_history")
    assert (row["version"], row["description"], row["success"]) == ("1.0.0", "init", True)
    assert row["installed_by"] == ws.fetch(None, "SELECT current_user AS u")[0]["u"]
