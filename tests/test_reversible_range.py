"""check-reversible --from/--to/--pending, the cached base, frozen 'now' literals and the
output grouped per object: on a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from conftest import Workspace, assert_refused
from tenantctl.reversible import Difference
from tenantctl.reversible_range import base_database, select_range
from tenantctl.reversible_report import group_differences
from tenantctl.reversible_snapshot import FROZEN, normalise

ONE_TENANT = '  - { clnt_id: 1, name: "A", sites: [1] }\n'


def table_migration(ws: Workspace, version: str, table: str, *, forgetful: bool = False) -> None:
    """v<version>_<table>.sql creates a table; its down drops it (or, forgetful, does nothing)."""
    ws.add_migration(f"v{version}_{table}.sql", f"create table {table} (id int primary key);\n")
    ws.add_migration(f"v{version}_{table}.down.sql", "select 1;\n" if forgetful else f"drop table {table};\n")


def base_db(ws: Workspace) -> str:
    return f"{ws.control_db}_reversible_base"


def no_scratch_left(ws: Workspace) -> bool:
    return not ws.fetch(None, "SELECT 1 FROM pg_database WHERE datname LIKE 'tenantctl\\_scratch\\_%'")


def db_oid(ws: Workspace, name: str) -> Any:
    rows = ws.fetch(None, "SELECT oid FROM pg_database WHERE datname = $1", name)
    return rows[0]["oid"] if rows else None


def purpose_of(ws: Workspace, name: str) -> list[str]:
    rows = ws.fetch(None, "SELECT c FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, "
                    "unnest(s.setconfig) c WHERE d.datname = $1 AND c LIKE 'tenantctl.purpose=%'", name)
    return [r["c"] for r in rows]


def tables_in(ws: Workspace, database: str) -> set[str]:
    rows = ws.fetch(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


# ------------------------------------------------------------------ pure


def test_select_range_is_inclusive_and_open_ended(ws: Workspace) -> None:
    from tenantctl.migrations import load_migrations

    for i in range(4):
        table_migration(ws, f"1.0.{i}", f"t{i}")
    migrations = load_migrations(ws.migrations)

    def names(ms: tuple[Any, ...]) -> list[str]:
        return [m.version.text for m in ms]

    assert names(select_range(migrations, "1.0.1", "1.0.2")) == ["1.0.1", "1.0.2"]
    assert names(select_range(migrations, "v1.0.2", None)) == ["1.0.2", "1.0.3"]
    assert names(select_range(migrations, None, "1.0.0")) == ["1.0.0"]
    assert names(select_range(migrations, None, None)) == names(migrations)


def test_base_name_fits_postgres_limit() -> None:
    assert base_database("tenantctl") == "tenantctl_reversible_base"
    long = base_database("c" * 63)
    assert len(long) == 63 and long.endswith("_reversible_base")


def test_normalise_replaces_only_frozen_now_literals() -> None:
    view = "SELECT t.id, '2026-11-23 17:00:00.123456'::timestamp without time zone AS seen FROM t;"
    assert normalise(view) == f"SELECT t.id, {FROZEN}::timestamp without time zone AS seen FROM t;"
    assert normalise("'2026-11-23 17:00:00.5+05:30'::timestamp with time zone") == (
        f"{FROZEN}::timestamp with time zone")
    assert normalise("'17:00:00.25'::time without time zone") == f"{FROZEN}::time without time zone"
    for kept in ("'2020-01-01'::date", "'2020-01-01 00:00:00'::timestamp without time zone",
                 "'2026-11-23 17:00:00.123456'::text"):
        assert normalise(kept) == kept


def test_grouping_is_one_line_per_object() -> None:
    def d(kind: str, name: str, detail: str, obj: str, change: str = "added") -> Difference:
        return Difference("v1_x.sql", "down", kind, name, detail, object=obj, change=change)

    found = [d("column", f"public.t.c{i}", "not restored by down: +not null", "table public.t", "changed")
             for i in range(12)]
    found.append(d("index", "public.t_ix", "left behind by down: CREATE INDEX", "table public.t"))
    found.append(d("function", "public.f()", "left behind by down: CREATE FUNCTION", "function public.f()"))
    found.append(Difference("v2_y.sql", "error", "up", "v2_y.sql", "up failed: boom", sqlstate="42P01"))
    assert [g.line for g in group_differences(found)] == [
        "v1_x.sql: down: function public.f(): left behind by down: CREATE FUNCTION",
        "v1_x.sql: down: table public.t: 12 column(s) not restored by down; 1 index(es) left behind by down",
        "v2_y.sql: error: up v2_y.sql [42P01]: up failed: boom",
    ]


# ------------------------------------------------------------------ --from / --to


def test_range_checks_only_from_to(ws: Workspace) -> None:
    ws.write_config(ONE_TENANT)
    table_migration(ws, "1.0.0", "t0", forgetful=True)  # before the range: not reported
    table_migration(ws, "1.0.1", "t1")
    table_migration(ws, "1.0.2", "t2", forgetful=True)
    table_migration(ws, "1.0.3", "t3")
    ws.add_migration("v1.0.4_bad.sql", "create index nowhere_ix on nowhere (id);\n")  # after it: never run
    result = ws.cli("--json", "check-reversible", "--from", "1.0.1", "--to", "1.0.3")
    assert result.exit_code == 1, result.stdout + result.stderr
    report = result.json()
    assert report["checked"] == ["v1.0.1_t1.sql", "v1.0.2_t2.sql", "v1.0.3_t3.sql"]
    assert report["migrations"] == 3
    assert report["range"] == {"from": "1.0.1", "to": "1.0.3", "pending": False}
    assert {(d["migration"], d["phase"]) for d in report["differences"]} == {("v1.0.2_t2.sql", "down")}
    base = report["base"]
    assert (base["status"], base["migrations"], base["up_to"], base["database"]) == (
        "built", 1, "1.0.0", base_db(ws))
    assert no_scratch_left(ws)

    # only the upper bound: no base needed; the forgetful 1.0.0 is reported now
    upper = ws.cli("--json", "check-reversible", "--to", "1.0.1").json()
    assert upper["checked"] == ["v1.0.0_t0.sql", "v1.0.1_t1.sql"] and upper["base"]["status"] == "none"
    assert {d["migration"] for d in upper["differences"]} == {"v1.0.0_t0.sql"}

    # a single migration, from a different base: the old one is replaced
    single = ws.cli("check-reversible", "--from", "1.0.3", "--to", "1.0.3")
    assert single.exit_code == 0, single.stdout + single.stderr
    assert "base: 3 earlier migration(s) (up to 1.0.2) built into" in single.stdout
    assert "(the earlier migrations changed)" in single.stdout
    assert "1 migration(s) checked up -> down -> up: 0 difference(s)" in single.stdout
    assert tables_in(ws, base_db(ws)) == {"t0", "t1", "t2"}
    assert no_scratch_left(ws)


def test_range_with_unknown_versions_is_refused(ws: Workspace) -> None:
    ws.write_config(ONE_TENANT)
    table_migration(ws, "1.0.0", "t0")
    table_migration(ws, "1.0.1", "t1")
    assert_refused(ws, "check-reversible", "--from", "9.9.9",
                   says="--from 9.9.9: no migration with that version in migrations/")
    assert_refused(ws, "check-reversible", "--to", "1.0.7", says="--to 1.0.7: no migration with that version")
    assert_refused(ws, "check-reversible", "--to", "latest", says="--to: 'latest' is not a version")
    assert_refused(ws, "check-reversible", "--from", "1.0.1", "--to", "1.0.0",
                   says="--from 1.0.1 is after --to 1.0.0")


# ------------------------------------------------------------------ the cached base


def test_cached_base_is_reused_and_rebuilt_after_a_file_changes(ws: Workspace) -> None:
    ws.write_config(ONE_TENANT)
    table_migration(ws, "1.0.0", "t0")
    table_migration(ws, "1.0.1", "t1")
    table_migration(ws, "1.0.2", "t2")
    first = ws.cli("check-reversible", "--from", "1.0.2")
    assert first.exit_code == 0, first.stdout + first.stderr
    assert f"base: 2 earlier migration(s) (up to 1.0.1) built into {base_db(ws)} in " in first.stdout
    assert purpose_of(ws, base_db(ws)) == ["tenantctl.purpose=scratch"]
    assert tables_in(ws, base_db(ws)) == {"t0", "t1"}  # the earlier ones only, no history table
    built = db_oid(ws, base_db(ws))

    second = ws.cli("check-reversible", "--from", "1.0.2")
    assert second.exit_code == 0, second.stdout + second.stderr
    assert f"base: 2 earlier migration(s) (up to 1.0.1) reused from {base_db(ws)}" in second.stdout
    assert db_oid(ws, base_db(ws)) == built

    # a checked file changes: the base (earlier files only) is still good
    ws.add_migration("v1.0.2_t2.sql", "create table t2 (id int primary key, note text);\n")
    assert "reused from" in ws.cli("check-reversible", "--from", "1.0.2").stdout

    # an earlier file changes: the base is dropped and built again
    ws.add_migration("v1.0.0_t0.sql", "create table t0 (id int primary key, extra text);\n")
    third = ws.cli("--json", "check-reversible", "--from", "1.0.2")
    assert third.exit_code == 0, third.stdout + third.stderr
    assert third.json()["base"]["status"] == "rebuilt"
    assert db_oid(ws, base_db(ws)) != built
    cols = ws.fetch(base_db(ws), "SELECT column_name FROM information_schema.columns WHERE table_name = 't0'")
    assert {r["column_name"] for r in cols} == {"id", "extra"}
    assert no_scratch_left(ws)


def test_untagged_database_at_the_base_name_is_never_dropped(ws: Workspace) -> None:
    ws.write_config(ONE_TENANT)
    table_migration(ws, "1.0.0", "t0")
    table_migration(ws, "1.0.1", "t1")
    ws.fetch(None, f'CREATE DATABASE "{base_db(ws)}"')
    ws.fetch(base_db(ws), "CREATE TABLE someone_elses (id int)")
    result = ws.cli("check-reversible", "--from", "1.0.1")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "base: 1 earlier migration(s) (up to 1.0.0) applied to the scratch database" in result.stdout
    assert "not dropped" in result.stdout
    assert tables_in(ws, base_db(ws)) == {"someone_elses"}
    assert no_scratch_left(ws)


def test_failing_earlier_migration_is_reported_and_no_base_kept(ws: Workspace) -> None:
    ws.write_config(ONE_TENANT)
    ws.add_migration("v1.0.0_bad.sql", "create index nowhere_ix on nowhere (id);\n")
    table_migration(ws, "1.0.1", "t1")
    result = ws.cli("--json", "check-reversible", "--from", "1.0.1")
    assert result.exit_code == 1
    (d,) = result.json()["differences"]
    assert (d["migration"], d["phase"], d["kind"], d["sqlstate"]) == ("v1.0.0_bad.sql", "error", "up", "42P01")
    assert "building the base" in d["detail"]
    assert result.json()["base"]["status"] == "failed"
    assert base_db(ws) not in ws.databases() and no_scratch_left(ws)


@pytest.mark.slow
def test_concurrent_checks_never_clone_a_base_being_rebuilt(ws: Workspace) -> None:
    """Two checks at once wanting different bases: the lock makes them take turns."""
    ws.write_config(ONE_TENANT)
    for i in range(4):
        table_migration(ws, f"1.0.{i}", f"t{i}")
    procs = [subprocess.Popen(ws.subprocess_cmd("--json", "check-reversible", "--from", version),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for version in ("1.0.1", "1.0.3", "1.0.1", "1.0.3")]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
        reports.append(json.loads(out))
    assert [len(r["checked"]) for r in reports] == [3, 1, 3, 1]
    assert {r["base"]["status"] for r in reports} <= {"built", "rebuilt", "reused"}
    assert no_scratch_left(ws)


# ------------------------------------------------------------------ --pending


def test_pending_checks_what_a_tenant_behind_lacks(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1] }\n  - { clnt_id: 2, name: "B", sites: [1] }\n')
    table_migration(ws, "1.0.0", "t0")
    table_migration(ws, "1.0.1", "t1")
    assert ws.cli("provision", "--all").exit_code == 0
    table_migration(ws, "1.0.2", "t2")
    table_migration(ws, "1.0.3", "t3", forgetful=True)
    assert ws.cli("migrate", "1").exit_code == 0  # tenant 2 stays at 1.0.1

    behind = ws.cli("--json", "check-reversible", "--pending")
    assert behind.exit_code == 1, behind.stdout + behind.stderr
    report = behind.json()
    assert report["checked"] == ["v1.0.2_t2.sql", "v1.0.3_t3.sql"]
    assert (report["base"]["status"], report["base"]["migrations"]) == ("built", 2)
    assert {d["migration"] for d in report["differences"]} == {"v1.0.3_t3.sql"}
    narrowed = ws.cli("--json", "check-reversible", "--pending", "--to", "1.0.2").json()
    assert narrowed["checked"] == ["v1.0.2_t2.sql"] and narrowed["differences"] == []

    assert ws.cli("migrate", "2").exit_code == 0
    caught_up = ws.cli("check-reversible", "--pending")
    assert caught_up.exit_code == 0, caught_up.stdout + caught_up.stderr
    assert "0 migration(s) checked up -> down -> up: 0 difference(s)" in caught_up.stdout

    # a tenant without a database has applied nothing: everything is pending
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1] }\n  - { clnt_id: 2, name: "B", sites: [1] }\n'
                    '  - { clnt_id: 3, name: "C", sites: [1] }\n')
    new_tenant = ws.cli("--json", "check-reversible", "--pending").json()
    assert len(new_tenant["checked"]) == 4 and new_tenant["base"]["status"] == "none"
    assert ws.db(3) not in ws.databases() and no_scratch_left(ws)


# ------------------------------------------------------------------ frozen 'now'


def test_now_in_views_defaults_and_checks_is_not_a_difference(ws: Workspace) -> None:
    ws.write_config(ONE_TENANT)
    table_migration(ws, "1.0.0", "t")
    ws.add_migration("v1.0.1_seen.sql", """\
        create view seen as select id, 'now'::timestamp as at from t;
        alter table t add column created timestamp default 'now'::timestamp
            constraint created_past check (created <= 'now'::timestamptz + interval '1 day');
        create materialized view seen_m as select id, 'now'::timestamptz as at from t;
        """)
    ws.add_migration("v1.0.1_seen.down.sql", """\
        drop materialized view seen_m;
        drop view seen;
        alter table t drop column created;
        """)
    ws.add_migration("v1.0.2_seen_more.sql", """\
        drop view seen;
        create view seen as select id, 'now'::timestamp as at, 1 as n from t;
        """)
    ws.add_migration("v1.0.2_seen_more.down.sql", """\
        drop view seen;
        create view seen as select id, 'now'::timestamp as at from t;
        """)
    ok = ws.cli("--json", "check-reversible")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert ok.json()["differences"] == [] and ok.json()["migrations"] == 3

    # a literal written by hand is still compared
    ws.add_migration("v1.0.3_cutoff.sql", "create view cutoff as select '2020-01-01'::date as d;\n")
    ws.add_migration("v1.0.3_cutoff.down.sql", "drop view cutoff;\n")
    ws.add_migration("v1.0.4_cutoff.sql", "create or replace view cutoff as select '2021-01-01'::date as d;\n")
    ws.add_migration("v1.0.4_cutoff.down.sql",
                     "create or replace view cutoff as select '2020-01-02'::date as d;\n")  # wrong date
    bad = ws.cli("check-reversible", "--from", "1.0.3")
    assert bad.exit_code == 1
    lines = [line for line in bad.stdout.splitlines() if line.startswith("v1.0.")]
    assert len(lines) == 1 and lines[0].startswith("v1.0.4_cutoff.sql: down: view public.cutoff: not restored")


# ------------------------------------------------------------------ grouped output


def test_text_output_is_one_line_per_object(ws: Workspace) -> None:
    ws.write_config(ONE_TENANT)
    columns = ", ".join(f"c{i} text" for i in range(1, 12))
    ws.add_migration("v1.0.0_usr.sql", f"create table usr (id serial primary key, {columns});\n")
    ws.add_migration("v1.0.0_usr.down.sql", "select 1;\n")  # forgets the whole table
    ws.add_migration("v1.0.1_not_null.sql", "alter table usr "
                     + ", ".join(f"alter column c{i} set not null" for i in range(1, 6)) + ";\n")
    ws.add_migration("v1.0.1_not_null.down.sql", "select 1;\n")
    text = ws.cli("check-reversible")
    assert text.exit_code == 1
    assert text.stdout.splitlines() == [
        "v1.0.0_usr.sql: down: table public.usr: left behind by down: relkind r "
        "(with 12 column(s), 1 constraint(s), 1 sequence(s))",
        "v1.0.1_not_null.sql: down: table public.usr: 5 column(s) not restored by down",
        "2 migration(s) checked up -> down -> up: 20 difference(s) in 2 object(s); details: --json",
    ]
    report = ws.cli("--json", "check-reversible").json()
    diffs = report["differences"]
    assert len(diffs) == 20 and {d["object"] for d in diffs} == {"table public.usr"}
    assert {"migration", "phase", "kind", "name", "detail", "sqlstate", "change"} <= set(diffs[0])
    assert sum(1 for d in diffs if d["kind"] == "column" and d["migration"] == "v1.0.1_not_null.sql") == 5
    assert [(o["migration"], o["object"], o["differences"]) for o in report["objects"]] == [
        ("v1.0.0_usr.sql", "table public.usr", 15), ("v1.0.1_not_null.sql", "table public.usr", 5)]
