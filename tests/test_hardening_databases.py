"""Never touch the wrong database; never share per-tenant secrets through the template
(real PostgreSQL)."""

from __future__ import annotations

from conftest import Workspace

TWO = '  - { clnt_id: 1, name: "A", sites: [1] }\n  - { clnt_id: 2, name: "B", sites: [1] }\n'
INIT = "create table t (clnt_id int2 not null, v text);"


def purpose(ws: Workspace, database: str) -> str | None:
    rows = ws.fetch(None, "SELECT c FROM pg_db_role_setting s JOIN pg_database d ON d.oid = "
                    "s.setdatabase, unnest(s.setconfig) c WHERE d.datname = $1 AND "
                    "c LIKE 'tenantctl.purpose=%'", database)
    return rows[0]["c"].split("=", 1)[1] if rows else None


def test_every_database_tenantctl_creates_carries_its_purpose(ws: Workspace) -> None:
    ws.write_config(TWO)
    ws.add_migration("v1_init.sql", INIT)
    assert ws.cli("provision", "1").exit_code == 0
    assert ws.cli("provision", "2", "--no-template").exit_code == 0
    assert purpose(ws, ws.db(1)) == "tenant:1"
    assert purpose(ws, ws.db(2)) == "tenant:2"
    assert purpose(ws, f"{ws.prefix}_template") == "template"
    assert purpose(ws, ws.control_db) == "control"


def test_a_tenant_pointed_at_another_tenants_database_is_refused(ws: Workspace) -> None:
    ws.write_config(TWO)
    ws.add_migration("v1_init.sql", INIT)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.fetch(ws.db(1), "INSERT INTO t VALUES (1, 'tenant one')")
    # tenant 2 removed; tenant 3 now points at tenant 1's database
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1], database: other_1 }\n'
                    f'  - {{ clnt_id: 3, name: "C", sites: [1], database: {ws.db(1)} }}\n')
    ws.add_migration("v2_more.sql", "alter table t add column w int;")
    result = ws.cli("--json", "migrate", "3")
    assert result.exit_code == 1
    error = result.json()["tenants"][0]["error"]
    assert "created by tenantctl for tenant 1, not for tenant 3" in error["message"]
    assert ws.versions(1) == ["1"]  # nothing ran in tenant 1's database


def test_an_untagged_database_with_foreign_objects_is_not_adopted(ws: Workspace) -> None:
    foreign = f"{ws.prefix}_billing"
    ws.fetch(None, f'CREATE DATABASE "{foreign}"')
    ws.fetch(foreign, "CREATE TABLE invoices (id int)")
    ws.write_config(f'  - {{ clnt_id: 1, name: "A", sites: [1], database: {foreign} }}\n')
    ws.add_migration("v1_init.sql", INIT)
    result = ws.cli("--json", "provision", "1")
    assert result.exit_code == 1
    assert "tenantctl did not create it" in result.json()["tenants"][0]["error"]["message"]
    tables = {r["tablename"] for r in ws.fetch(foreign, "SELECT tablename FROM pg_tables "
                                                        "WHERE schemaname = 'public'")}
    assert tables == {"invoices"}  # no history table, no migration
    assert purpose(ws, foreign) is None
    # the dry run says the same, and changes nothing either
    assert ws.cli("provision", "1", "--dry-run").exit_code == 1


def test_an_untagged_empty_or_legacy_database_is_adopted_and_tagged(ws: Workspace) -> None:
    ws.write_config(TWO)
    ws.add_migration("v1_init.sql", INIT)
    ws.fetch(None, f'CREATE DATABASE "{ws.db(1)}"')  # empty: e.g. created by a DBA in advance
    assert ws.cli("provision", "--all").exit_code == 0
    assert purpose(ws, ws.db(1)) == "tenant:1"
    # a database migrated by a tenantctl from before purpose tags
    ws.fetch(None, f'ALTER DATABASE "{ws.db(2)}" RESET tenantctl.purpose')
    ws.add_migration("v2_more.sql", "alter table t add column w int;")
    assert ws.cli("migrate", "--all").exit_code == 0
    assert purpose(ws, ws.db(2)) == "tenant:2"
    assert ws.versions(2) == ["1", "2"]


def test_template_database_that_is_not_a_template_is_never_dropped(ws: Workspace) -> None:
    template = f"{ws.prefix}_template"
    ws.fetch(None, f'CREATE DATABASE "{template}"')
    ws.fetch(template, "CREATE TABLE precious AS SELECT 42 AS id")
    ws.write_config(TWO)
    ws.add_migration("v1_init.sql", INIT)
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 0, result.stdout
    assert any("not dropped" in n for n in result.json()["notes"])
    assert ws.fetch(template, "SELECT id FROM precious")[0]["id"] == 42
    assert ws.versions(1) == ["1"]


def test_control_database_holding_foreign_objects_is_refused(ws: Workspace) -> None:
    ws.fetch(None, f'CREATE DATABASE "{ws.control_db}"')
    ws.fetch(ws.control_db, "CREATE TABLE payroll (id int)")
    ws.write_config(TWO)
    ws.add_migration("v1_init.sql", INIT)
    result = ws.cli("provision", "--all")
    assert result.exit_code == 1
    assert "refusing to put the run ledger in it" in result.stderr
    assert ws.fetch(ws.control_db, "SELECT to_regclass('tenantctl_runs') AS r")[0]["r"] is None


SECRET = """\
create table app_secret (clnt_id int2 not null default 0, v text not null default gen_random_uuid()::text);
insert into app_secret default values;
"""


def test_template_clones_do_not_share_random_values(ws: Workspace) -> None:
    ws.write_config(TWO + '  - { clnt_id: 3, name: "C", sites: [1] }\n')
    ws.add_migration("v1_init.sql", INIT)
    ws.add_migration("v2_secret.sql", SECRET)
    ws.add_migration("v3_after.sql", "create table u (clnt_id int2);")
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 0, result.stdout
    notes = " ".join(result.json()["notes"])
    assert "template stops before v2_secret.sql" in notes and "gen_random_uuid" in notes
    secrets = {ws.fetch(ws.db(i), "SELECT v FROM app_secret")[0]["v"] for i in (1, 2, 3)}
    assert len(secrets) == 3
    for i in (1, 2, 3):
        assert ws.versions(i) == ["1", "2", "3"]
    # the template holds what precedes the per-tenant migration only
    template = f"{ws.prefix}_template"
    assert ws.fetch(template, "SELECT to_regclass('app_secret') AS r")[0]["r"] is None


def test_per_tenant_directive_keeps_a_migration_out_of_the_template(ws: Workspace) -> None:
    ws.write_config(TWO)
    ws.add_migration("v1_init.sql", INIT)
    ws.add_migration("v2_keys.sql", "-- tenantctl: per-tenant\n"
                                    "insert into t select 0, md5(clock_timestamp()::text || pg_backend_pid());")
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 0, result.stdout
    values = {ws.fetch(ws.db(i), "SELECT v FROM t")[0]["v"] for i in (1, 2)}
    assert len(values) == 2
