"""check-reversible: up / down / up on a scratch database, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import EXAMPLE_MIGRATIONS, Workspace
from tenantctl.drivers import postgres
from tenantctl.errors import BadInputError
from tenantctl.migrations import load_migrations
from tenantctl.reversible import KINDS, Difference, check_reversible, diff, snapshot

TABLE_UP = "create table t (id int primary key, name text not null);\n"
TABLE_DOWN = "drop table t;\n"


def scratch(ws: Workspace) -> str:
    return f"{ws.prefix}_scratch"


def check(ws: Workspace) -> list[Difference]:
    """Run the check on ws.migrations and assert the scratch database is gone afterwards."""
    try:
        return asyncio.run(check_reversible(ws.dsn, load_migrations(ws.migrations), scratch_name=scratch(ws)))
    finally:
        assert scratch(ws) not in ws.databases()


def found(diffs: list[Difference]) -> list[tuple[str, str, str, str]]:
    return [(d.migration, d.phase, d.kind, d.name) for d in diffs]


def with_table(ws: Workspace) -> None:
    ws.add_migration("v1.0.0_t.sql", TABLE_UP)
    ws.add_migration("v1.0.0_t.down.sql", TABLE_DOWN)


# ------------------------------------------------------------------ diff (pure)


def test_diff_reports_added_removed_changed_sorted() -> None:
    before = {
        "index": {"public.a_ix": "CREATE INDEX a_ix ON public.a USING btree (x)\nvalid true"},
        "table": {"public.a": "relkind r\nrow security false", "public.gone": "relkind r"},
        "column": {"public.a.x": "type integer"},
    }
    after = {
        "index": {"public.a_ix": "CREATE INDEX a_ix ON public.a USING btree (x)\nvalid true"},
        "table": {"public.a": "relkind r\nrow security true", "public.new": "relkind r\nowner me"},
        "column": {"public.a.x": "type integer"},
        "trigger": {"public.a.trg": "CREATE TRIGGER trg AFTER INSERT ON public.a"},
    }
    assert diff(before, after) == [
        ("table", "public.a", "changed: -row security false; +row security true"),
        ("table", "public.gone", "removed: relkind r"),
        ("table", "public.new", "added: relkind r"),
        ("trigger", "public.a.trg", "added: CREATE TRIGGER trg AFTER INSERT ON public.a"),
    ]
    assert diff(after, after) == []
    assert diff({}, {}) == []


def test_diff_detail_is_short() -> None:
    body = "CREATE FUNCTION public.f()\n" + "\n".join(f"line {i} " + "x" * 80 for i in range(50))
    ((kind, name, detail),) = diff({"function": {"public.f()": body}}, {"function": {}})
    assert (kind, name) == ("function", "public.f()")
    assert detail == "removed: CREATE FUNCTION public.f()"
    changed = diff({"function": {"f": body}}, {"function": {"f": body.replace("line 7", "line 7!")}})
    assert len(changed[0][2]) <= 209


def test_difference_to_json() -> None:
    d = Difference("v1_x.sql", "error", "up", "v1_x.sql", "up failed: boom", sqlstate="42P01")
    assert d.to_json() == {"migration": "v1_x.sql", "phase": "error", "kind": "up", "name": "v1_x.sql",
                           "detail": "up failed: boom", "sqlstate": "42P01"}


# ------------------------------------------------------------------ snapshot


async def _snapshots(ws: Workspace, scripts: dict[str, str]) -> dict[str, Any]:
    admin = await postgres.connect(ws.dsn)
    out = {}
    try:
        for suffix, sql in scripts.items():
            name = f"{ws.prefix}_{suffix}"
            await postgres.create_database(admin, name)
            session = await postgres.connect(ws.dsn, name)
            try:
                await session.execute(sql)
                out[suffix] = await snapshot(session)
                await postgres.ensure_history(session)  # tenantctl's own table: never in a snapshot
                assert await snapshot(session) == out[suffix]
            finally:
                await session.close()
    finally:
        await admin.close()
    return out


def test_snapshot_is_independent_of_oids_and_creation_order(ws: Workspace) -> None:
    a = """
        create table a (x int); alter table a add primary key (x);
        create table b (y int references a (x) on delete cascade, z text);
        create index b_z_ix on b (z) where z <> '';
        create type mood as enum ('sad', 'ok');
        create function f() returns trigger language plpgsql as $$ begin return new; end $$;
        create trigger b_trg before insert on b for each row execute function f();
        alter table b enable row level security;
        create policy b_pol on b using (z is not null);
        create view v as select x from a;
        create statistics b_st (dependencies) on y, z from b;
        create rule b_rule as on delete to b do instead nothing;
        set search_path = pg_catalog, public;
    """
    b = """
        create type mood as enum ('sad', 'ok');
        create function f() returns trigger language plpgsql as $$ begin return new; end $$;
        create table a (x int primary key);
        create view v as select x from a;
        create table b (y int, z text);
        alter table b add foreign key (y) references a (x) on delete cascade;
        create policy b_pol on b using (z is not null);
        alter table b enable row level security;
        create trigger b_trg before insert on b for each row execute function f();
        create rule b_rule as on delete to b do instead nothing;
        create index b_z_ix on b (z) where z <> '';
        create statistics b_st (dependencies) on y, z from b;
        set search_path = nothing_here;
    """
    snaps = asyncio.run(_snapshots(ws, {"a": a, "b": b}))
    assert snaps["a"] == snaps["b"]
    snap = snaps["a"]
    assert list(snap) == list(KINDS)
    assert list(snap["column"]) == sorted(snap["column"])
    assert set(snap["table"]) == {"public.a", "public.b"}
    assert "row security true" in snap["table"]["public.b"]
    assert snap["index"]["public.b_z_ix"].startswith("CREATE INDEX b_z_ix ON public.b")
    assert "public.a.a_pkey" in snap["constraint"] and "public.a_pkey" not in snap["index"]
    assert set(snap["function"]) == {"public.f()"}
    assert set(snap["trigger"]) == {"public.b.b_trg"} and set(snap["policy"]) == {"public.b.b_pol"}
    assert snap["type"]["public.mood"] == "enum 'sad', 'ok'"
    assert set(snap["view"]) == {"public.v"}
    assert set(snap["rule"]) == {"public.b.b_rule"} and set(snap["statistics"]) == {"public.b_st"}
    assert "plpgsql" in snap["extension"] and "public" in snap["schema"]


# ------------------------------------------------------------------ check_reversible


def test_shipped_migrations_are_reversible(ws: Workspace) -> None:
    migrations = load_migrations(EXAMPLE_MIGRATIONS)
    assert migrations and all(m.down is not None for m in migrations)
    assert asyncio.run(check_reversible(ws.dsn, migrations, scratch_name=scratch(ws))) == []
    assert scratch(ws) not in ws.databases()


def test_down_that_forgets_an_index(ws: Workspace) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_name_ix.sql", "alter table t add column note text;\n"
                     "create index t_name_ix on t (name);\n")
    ws.add_migration("v1.0.1_name_ix.down.sql", "alter table t drop column note;\n")
    # Checked after the faulty one (the trial was rolled back to "v1.0.1 applied").
    ws.add_migration("v1.0.2_more.sql", "create index t_note_ix on t (note);\n")
    ws.add_migration("v1.0.2_more.down.sql", "drop index t_note_ix;\n")
    (d,) = check(ws)
    assert (d.migration, d.phase, d.kind, d.name) == ("v1.0.1_name_ix.sql", "down", "index", "public.t_name_ix")
    assert d.detail.startswith("left behind by down: CREATE INDEX t_name_ix ON public.t")
    assert d.sqlstate is None


@pytest.mark.parametrize(
    ("up", "down", "expected"),
    [
        ("alter table t add column lcl text not null default 'en';", "select 1;",
         [("column", "public.t.lcl", "left behind by down: type text")]),
        ("alter table t drop column name;", "alter table t add column name text;",
         [("column", "public.t.name", "not restored by down: -not null")]),
        ("alter table t alter column name set default 'x';", "alter table t alter column name drop default;"
         "\nalter table t alter column name type varchar(10);",
         [("column", "public.t.name", "not restored by down: -type text; +type character varying(10)")]),
    ],
    ids=["left-behind", "restored-without-not-null", "type-changed"],
)
def test_down_that_gets_a_column_wrong(ws: Workspace, up: str, down: str, expected: list[Any]) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_col.sql", up + "\n")
    ws.add_migration("v1.0.1_col.down.sql", down + "\n")
    diffs = check(ws)
    assert [(d.migration, d.phase) for d in diffs] == [("v1.0.1_col.sql", "down")] * len(expected)
    assert [(d.kind, d.name, d.detail) for d in diffs] == expected


AUDIT_UP = """\
create function t_audit_fn() returns trigger language plpgsql as $$
begin
    return new;
end;
$$;
create trigger t_audit_trg before insert on t for each row execute function t_audit_fn();
"""


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        ("drop trigger t_audit_trg on t;", {("function", "public.t_audit_fn()")}),
        ("drop function t_audit_fn() cascade;", set()),
        ("alter table t disable trigger t_audit_trg;",
         {("function", "public.t_audit_fn()"), ("trigger", "public.t.t_audit_trg")}),
    ],
    ids=["forgets-function", "cascade-is-complete", "forgets-both"],
)
def test_down_that_forgets_a_trigger_or_function(ws: Workspace, down: str, expected: set[Any]) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_audit.sql", AUDIT_UP)
    ws.add_migration("v1.0.1_audit.down.sql", down + "\n")
    diffs = check(ws)
    assert {(d.kind, d.name) for d in diffs} == expected
    assert all((d.migration, d.phase) == ("v1.0.1_audit.sql", "down") for d in diffs)
    assert all(d.detail.startswith("left behind by down") for d in diffs)


def test_missing_down_is_reported_and_the_check_goes_on(ws: Workspace) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_no_down.sql", "create table u (id int references t (id));\n")
    ws.add_migration("v1.0.2_uses_u.sql", "create index u_id_ix on u (id);\n")
    ws.add_migration("v1.0.2_uses_u.down.sql", "select 1;\n")  # forgets the index
    assert found(check(ws)) == [
        ("v1.0.1_no_down.sql", "missing-down", "migration", "v1.0.1_no_down.sql"),
        ("v1.0.2_uses_u.sql", "down", "index", "public.u_id_ix"),
    ]


def test_failing_up_stops_the_check_with_its_sqlstate(ws: Workspace) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_bad.sql", "create index nowhere_ix on nowhere (id);\n")
    ws.add_migration("v1.0.1_bad.down.sql", "drop index nowhere_ix;\n")
    ws.add_migration("v1.0.2_later.sql", "create table later (id int);\n")  # never reached
    (d,) = check(ws)
    assert (d.migration, d.phase, d.kind, d.name, d.sqlstate) == (
        "v1.0.1_bad.sql", "error", "up", "v1.0.1_bad.sql", "42P01")
    assert "nowhere" in d.detail


def test_failing_down_stops_the_check_with_its_sqlstate(ws: Workspace) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_ix.sql", "create index t_name_ix on t (name);\n")
    ws.add_migration("v1.0.1_ix.down.sql", "drop index t_nmae_ix;\n")  # typo
    ws.add_migration("v1.0.2_later.sql", "create table later (id int);\n")  # never reached
    (d,) = check(ws)
    assert (d.migration, d.phase, d.kind, d.name, d.sqlstate) == (
        "v1.0.1_ix.sql", "error", "down", "v1.0.1_ix.down.sql", "42704")


def test_up_not_repeatable_after_down(ws: Workspace) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_row.sql", "insert into t values (1, 'one');\n")
    ws.add_migration("v1.0.1_row.down.sql", "update t set name = name where false;\n")  # keeps the row
    (d,) = check(ws)
    assert (d.migration, d.phase, d.kind, d.sqlstate) == ("v1.0.1_row.sql", "error", "redo", "23505")


def test_redo_that_builds_a_different_schema(ws: Workspace) -> None:
    ws.add_migration("v1.0.0_seq.sql", "create sequence gen_seq;\n")
    ws.add_migration("v1.0.0_seq.down.sql", "drop sequence gen_seq;\n")
    ws.add_migration("v1.0.1_gen.sql", """\
        do $$ begin execute format('create table gen_%s (a int)', nextval('gen_seq')); end $$;
        """)
    ws.add_migration("v1.0.1_gen.down.sql", """\
        do $$ declare r record; begin
          for r in select relname from pg_class where relname like 'gen\\_%' and relkind = 'r' loop
            execute format('drop table %I', r.relname);
          end loop;
        end $$;
        """)
    assert found(check(ws)) == [
        ("v1.0.1_gen.sql", "redo", "column", "public.gen_1.a"),
        ("v1.0.1_gen.sql", "redo", "column", "public.gen_2.a"),
        ("v1.0.1_gen.sql", "redo", "table", "public.gen_1"),
        ("v1.0.1_gen.sql", "redo", "table", "public.gen_2"),
    ]


CIC_UP = "-- tenantctl: no-transaction\ncreate index concurrently t_name_ix on t (name);\n"


def test_no_transaction_migration_with_concurrent_index(ws: Workspace) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_cic.sql", CIC_UP)
    ws.add_migration("v1.0.1_cic.down.sql", "-- tenantctl: no-transaction\ndrop index concurrently t_name_ix;\n")
    ws.add_migration("v1.0.2_after.sql", "create table after_cic (id int);\n")
    ws.add_migration("v1.0.2_after.down.sql", "drop table after_cic;\n")
    assert check(ws) == []


def test_no_transaction_down_that_forgets_its_index(ws: Workspace) -> None:
    with_table(ws)
    ws.add_migration("v1.0.1_cic.sql", CIC_UP.replace("concurrently", "concurrently if not exists"))
    ws.add_migration("v1.0.1_cic.down.sql", "-- tenantctl: no-transaction\nvacuum t;\n")
    ws.add_migration("v1.0.2_after.sql", "create table after_cic (id int);\n")  # still checked
    assert found(check(ws)) == [
        ("v1.0.1_cic.sql", "down", "index", "public.t_name_ix"),
        ("v1.0.2_after.sql", "missing-down", "migration", "v1.0.2_after.sql"),
    ]


def test_existing_scratch_database_is_refused_and_kept(ws: Workspace) -> None:
    with_table(ws)
    ws.fetch(None, f'create database "{scratch(ws)}"')
    with pytest.raises(BadInputError, match="already exists"):
        asyncio.run(check_reversible(ws.dsn, load_migrations(ws.migrations), scratch_name=scratch(ws)))
    assert scratch(ws) in ws.databases()


def test_check_reversible_command(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1] }\n')
    ok = ws.cli("check-reversible")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert "5 migration(s) checked up -> down -> up: 0 difference(s)" in ok.stdout
    down = ws.migrations / "v1.2.0_add_usr_locale_and_lgn_hist.down.sql"
    down.write_text("ALTER TABLE cvs_usr_mast DROP COLUMN lcl_cd;\n")  # forgets the new table
    bad = ws.cli("--json", "check-reversible")
    assert bad.exit_code == 1
    diffs = bad.json()["differences"]
    assert diffs and {d["migration"] for d in diffs} == {"v1.2.0_add_usr_locale_and_lgn_hist.sql"}
    assert not ws.fetch(None, "SELECT 1 FROM pg_database WHERE datname LIKE 'tenantctl_scratch_%'")
