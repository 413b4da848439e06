"""Hardening of the per-tenant session: each migration starts from the same
session state, a released lock is detected before anything is recorded, history
ranks never collide, empty migrations are recorded no-ops (real PostgreSQL)."""

from __future__ import annotations

from conftest import Workspace

ONE = '  - { clnt_id: 1, name: "A", sites: [1] }\n'


def test_session_state_does_not_leak_into_the_next_migration(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t0 (clnt_id int2);")
    ws.add_migration("v1.0.1_set_things.sql", """\
        create schema x;
        set search_path = x;
        select set_config('work_mem', '77kB', false);
        create temp table tmp_a (v int);
        prepare p as select 1;
        set role pg_read_all_data;
        """)
    ws.add_migration("v1.0.2_after.sql", """\
        reset role;
        create temp table tmp_a (v int);
        prepare p as select 2;
        create table seen as select current_setting('search_path') as sp,
            current_setting('work_mem') as wm, current_setting('lock_timeout') as lt,
            current_user::text as u;
        """)
    ws.add_migration("v1.0.3_no_tx.sql", """\
        -- tenantctl: no-transaction
        set search_path = x;
        create table in_x (clnt_id int2);
        """)
    ws.add_migration("v1.0.4_after_no_tx.sql", "create table t4 (clnt_id int2);")
    result = ws.cli("provision", "--all", "--json", "--lock-timeout", "4s")
    assert result.exit_code == 0, result.stdout + result.stderr
    row = ws.fetch(ws.db(1), "SELECT * FROM public.seen")[0]
    assert row["sp"] == '"$user", public'
    assert row["wm"] == "4MB"  # the server default, not 77kB
    assert row["lt"] == "4s"  # the startup packet's value survives the reset
    assert row["u"] == ws.fetch(None, "SELECT current_user::text AS u")[0]["u"]
    tables = {(r["schemaname"], r["tablename"]) for r in ws.fetch(
        ws.db(1), "SELECT schemaname, tablename FROM pg_tables WHERE tablename IN ('in_x', 't4')")}
    # within one no-transaction migration the SET applies; the next one starts clean
    assert tables == {("x", "in_x"), ("public", "t4")}


def test_a_migration_that_releases_the_lock_fails_and_records_nothing(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t0 (clnt_id int2);")
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_unlock.sql", """\
        select pg_advisory_unlock_all();
        create table t1 (clnt_id int2);
        """)
    result = ws.cli("migrate", "--all", "--json")
    assert result.exit_code == 1
    error = result.json()["tenants"][0]["error"]
    assert "lock was released" in error["message"]
    assert error["migration"] == "v1.0.1_unlock.sql"
    assert ws.versions(1) == ["1.0.0"]
    assert "t1" not in ws.tables(1)


def test_a_no_transaction_migration_that_releases_the_lock_stops_there(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t0 (clnt_id int2);")
    ws.add_migration("v1.0.1_unlock.sql", """\
        -- tenantctl: no-transaction
        select pg_advisory_unlock_all();
        create table t1 (clnt_id int2);
        """)
    result = ws.cli("provision", "--all", "--json", "--no-template")
    assert result.exit_code == 1
    assert "lock was released" in result.json()["tenants"][0]["error"]["message"]
    assert "t1" not in ws.tables(1)  # the statement after the unlock never ran
    assert ws.versions(1) == ["1.0.0"]


def test_history_ranks_do_not_depend_on_a_sequence(ws: Workspace) -> None:
    """A clone or a crash can leave an identity sequence behind the table."""
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t0 (clnt_id int2);")
    ws.add_migration("v1.0.1_more.sql", "create table t1 (clnt_id int2);")
    assert ws.cli("provision", "--all").exit_code == 0
    # the shape earlier versions created, with its sequence behind the rows
    ws.fetch(ws.db(1), "ALTER TABLE tenantctl_schema_history ALTER COLUMN installed_rank "
                       "ADD GENERATED ALWAYS AS IDENTITY (START WITH 1)")
    ws.add_migration("v1.0.2_next.sql", "create table t2 (clnt_id int2);")
    result = ws.cli("migrate", "--all", "--json", "--no-skip")
    assert result.exit_code == 0, result.stdout
    ranks = [r["installed_rank"] for r in ws.fetch(
        ws.db(1), "SELECT installed_rank FROM tenantctl_schema_history ORDER BY 1")]
    assert ranks == list(range(1, len(ranks) + 1))
    assert ws.versions(1) == ["1.0.0", "1.0.1", "1.0.2"]


def test_a_rolled_back_migration_leaves_no_gap_in_ranks(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t0 (clnt_id int2);")
    ws.add_migration("v1.0.1_fails.sql", "create table t1 (clnt_id int2); select 1/0;")
    assert ws.cli("provision", "--all", "--no-template").exit_code == 1
    (ws.migrations / "v1.0.1_fails.sql").write_text("create table t1 (clnt_id int2);")
    assert ws.cli("migrate", "--all").exit_code == 0
    ranks = [r["installed_rank"] for r in ws.fetch(
        ws.db(1), "SELECT installed_rank FROM tenantctl_schema_history ORDER BY 1")]
    assert ranks == [1, 2]


def test_empty_and_comment_only_migrations_are_recorded_no_ops(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t0 (clnt_id int2);")
    ws.add_migration("v1.0.1_placeholder.sql", "-- reserved for the billing team\n/* nothing yet */\n")
    ws.add_migration("v1.0.2_empty.sql", "")
    ws.add_migration("v1.0.2_empty.down.sql", "   \n")
    ws.add_migration("v1.0.3_no_tx_empty.sql", "-- tenantctl: no-transaction\n")
    ws.add_migration("v1.0.4_after.sql", "create table t4 (clnt_id int2);")
    for template in ((), ("--no-template",)):
        result = ws.cli("provision", "--all", "--json", *template)
        assert result.exit_code == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert ws.versions(1) == ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4"]
        assert ws.cli("rollback", "1", "--to", "1.0.1").exit_code == 2  # 1.0.3/1.0.4 have no down
        ws.fetch(None, f'DROP DATABASE "{ws.db(1)}" WITH (FORCE)')
    runs = ws.fetch(ws.control_db, "SELECT status FROM tenantctl_runs WHERE command = 'provision'")
    assert {r["status"] for r in runs} == {"ok"}
