"""Failures say where and what, once; reports say what really happened (real PostgreSQL)."""

from __future__ import annotations

from conftest import Workspace
from tenantctl.report import one_line

ONE = '  - { clnt_id: 1, name: "A", sites: [1] }\n'
INIT = "create table t (clnt_id int2 not null, v text);"


def test_error_in_a_long_transactional_migration_names_its_line(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    ws.add_migration("v1.0.1_long.sql", "-- é comments first\n" + "\n".join(
        ["insert into t values (1, 'ü');"] * 5 + ["select nosuchcolumn", "  from t;"]))
    result = ws.cli("provision", "--all", "--json", "--no-template")
    assert result.exit_code == 1
    error = result.json()["tenants"][0]["error"]
    assert (error["sqlstate"], error["migration"], error["line"]) == ("42703", "v1.0.1_long.sql", 7)
    assert "v1.0.1_long.sql:7: [42703]" in result.stderr  # the progress line


def test_error_in_a_no_transaction_migration_names_its_statement_line(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", INIT + "\ncreate unique index t_v on t (v);")
    ws.add_migration("v1.0.1_no_tx.sql", "-- tenantctl: no-transaction\n\n"
                                         "insert into t values (1, 'a');\n\n"
                                         "insert into t\n  values (1, 'a');\n")
    result = ws.cli("provision", "--all", "--json", "--no-template")
    error = result.json()["tenants"][0]["error"]
    assert (error["sqlstate"], error["line"]) == ("23505", 5)


def test_the_hint_is_not_repeated_inside_the_message(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "select 1::int + 'a'::text;")
    error = ws.cli("provision", "--all", "--json", "--no-template").json()["tenants"][0]["error"]
    assert error["hint"] and error["hint"] not in error["message"]
    assert "HINT" not in error["message"]


def test_a_failed_tenant_reports_what_committed_and_where_it_stopped(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_ok.sql", "alter table t add column w int;")
    ws.add_migration("v1.0.2_bad.sql", "select 1/0;")
    doc = ws.cli("migrate", "--all", "--json").json()
    (row,) = doc["tenants"]
    assert (row["status"], row["applied"], row["failed_migration"]) == ("failed", ["1.0.1"], "v1.0.2_bad.sql")
    assert doc["summary"]["failed"] == 1 and doc["summary"]["migrations_applied"] == 1


def test_rollback_rows_say_reverted(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    ws.add_migration("v1.0.1_w.sql", "alter table t add column w int;")
    ws.add_migration("v1.0.1_w.down.sql", "alter table t drop column w;")
    assert ws.cli("provision", "--all").exit_code == 0
    doc = ws.cli("rollback", "1", "--to", "1.0.0", "--json").json()
    (row,) = doc["tenants"]
    assert (row["status"], row["reverted"], row["applied"]) == ("reverted", ["1.0.1"], [])
    assert doc["summary"]["reverted"] == 1 and doc["summary"]["applied"] == 0
    # a rollback the ledger saw finish is not "unfinished"
    assert ws.cli("rollback", "--only-failed", "--to", "1.0.0", "--yes", "--json").json()["tenants"] == []


def test_drift_says_restore_or_repair_and_status_forgets_it_once_restored(ws: Workspace) -> None:
    ws.write_config(ONE)
    path = ws.add_migration("v1.0.0_init.sql", INIT)
    assert ws.cli("provision", "--all").exit_code == 0
    path.write_text(INIT + "\n-- edited after release\n")
    result = ws.cli("migrate", "--all", "--no-skip")
    assert result.exit_code == 1
    assert "tenantctl repair 1" in result.stdout and "re-run them" not in result.stdout
    row = ws.cli("--json", "status").json()["tenants"][0]
    assert row["state"] == "drift" and row["last_error"] is not None
    path.write_text(INIT)
    row = ws.cli("--json", "status").json()["tenants"][0]
    assert (row["state"], row["last_error"]) == ("up_to_date", None)


def test_table_cells_are_one_line() -> None:
    assert one_line("first line\n  HINT:  second\tline ") == "first line HINT: second line"


def test_status_survives_a_history_it_cannot_read(ws: Workspace) -> None:
    ws.write_config(ONE + '  - { clnt_id: 2, name: "B", sites: [1] }\n')
    ws.add_migration("v1.0.0_init.sql", INIT)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.fetch(ws.db(1), "ALTER TABLE tenantctl_schema_history RENAME COLUMN checksum TO checksum_old")
    result = ws.cli("--json", "status")
    # every tenant reported; exit 1 because one could not be read (state unreachable)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    rows = {r["clnt_id"]: r for r in result.json()["tenants"]}
    assert rows[1]["state"] == "unreachable" and rows[1]["last_error"]["sqlstate"] == "42703"
    assert rows[2]["state"] == "up_to_date"


def test_the_ledger_records_what_a_rollback_reverted(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    ws.add_migration("v1.0.1_w.sql", "alter table t add column w int;")
    ws.add_migration("v1.0.1_w.down.sql", "alter table t drop column w;")
    assert ws.cli("provision", "--all").exit_code == 0
    assert ws.cli("rollback", "1", "--to", "1.0.0").exit_code == 0
    rows = ws.fetch(ws.control_db, "SELECT status, applied, reverted FROM tenantctl_run_tenants "
                                   "WHERE status = 'reverted'")
    assert [(r["applied"], r["reverted"]) for r in rows] == [([], ["1.0.1"])]


def test_a_control_database_of_an_earlier_version_is_brought_to_the_current_shape(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.fetch(ws.control_db, "ALTER TABLE tenantctl_run_tenants DROP COLUMN reverted")
    assert ws.cli("migrate", "--all", "--no-skip").exit_code == 0
    rows = ws.fetch(ws.control_db, "SELECT count(*) AS n FROM tenantctl_run_tenants WHERE reverted = '{}'")
    assert rows[0]["n"] == 2
