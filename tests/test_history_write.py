"""A transactional migration and its history row travel in one round trip, as SQL
text: the values are quoted by quote_literal, the lock is checked by the
insert itself, the failing line is still found (real PostgreSQL)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Workspace
from tenantctl.drivers.pg_session import quote_literal
from tenantctl.drivers.postgres import DRIVER, MIGRATION_LOCK_KEY
from tenantctl.errors import LockLost
from tenantctl.migrations import load_migrations

ONE = '  - { clnt_id: 1, name: "A", sites: [1] }\n'


TEXT = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60),
    st.text("'\\\"$;-é\n\tE", max_size=20),  # the characters quoting is about
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXT, st.booleans())
def test_a_quoted_literal_reads_back_exactly(
        server: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], value: str,
        conforming: bool) -> None:
    """Whatever standard_conforming_strings is (a database may switch it off)."""
    loop, conn = server

    async def read_back() -> str:
        await conn.execute(f"SET standard_conforming_strings = {'on' if conforming else 'off'}")
        try:
            return str(await conn.fetchval(f"SELECT {quote_literal(value)}::text"))
        finally:
            await conn.execute("RESET standard_conforming_strings")

    assert loop.run_until_complete(read_back()) == value


def test_a_literal_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote_literal("a\x00b")


def test_hostile_file_names_are_recorded_exactly(ws: Workspace) -> None:
    ws.write_config(ONE)
    names = ["v1.0.0_it's_a_'quote'.sql", "v1.0.1_back\\slash_\\'.sql", "v1.0.2_ünï_漢字_$$.sql",
             "v1.0.3_E'x'_--_;drop.sql"]
    for i, name in enumerate(names):
        ws.add_migration(name, f"create table t{i} (clnt_id int2);")
    result = ws.cli("provision", "--all", "--json", "--no-template")
    assert result.exit_code == 0, result.stdout + result.stderr
    rows = ws.fetch(ws.db(1), "SELECT version, description, script FROM tenantctl_schema_history "
                              "WHERE kind = 'up' ORDER BY installed_rank")
    assert [r["script"] for r in rows] == names
    assert [r["description"] for r in rows] == [
        "it's a 'quote'", "back\\slash \\'", "ünï 漢字 $$", "E'x' -- ;drop"]
    assert ws.cli("verify", "--all").exit_code == 0  # the checksums read back match the files


def test_the_check_keeps_the_lock_held_once_and_refuses_a_lost_one(ws: Workspace) -> None:
    """Held: the migration commits and the session still holds the lock exactly once
    (the check releases and retakes one hold). Released by the script while another
    session takes the lock: nothing is recorded and the other session keeps it."""
    ws.add_migration("v1_a.sql", "create table a (clnt_id int2);")
    ws.add_migration("v2_b.sql", "select pg_advisory_unlock_all();\nselect pg_sleep(0.3);\n"
                                 "create table b (clnt_id int2);")
    first, second = load_migrations(ws.migrations)
    key = MIGRATION_LOCK_KEY

    async def go() -> None:
        name = ws.db(1)
        async with await DRIVER.connect(ws.dsn) as admin:
            await DRIVER.create_database(admin, name)
        async with await DRIVER.connect(ws.dsn, name) as s, \
                await DRIVER.connect(ws.dsn, name) as other:
            await DRIVER.acquire_migration_lock(s, 1.0)
            await DRIVER.open_history(s)
            await DRIVER.apply_transactional(s, first, None)
            holds = await s.fetch_value(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND objid = $1::bigint", key & 0xFFFFFFFF)
            assert holds == 1  # one session-level hold, no transaction-level one left
            assert await s.fetch_value("SELECT pg_advisory_unlock($1)", key) is True
            assert await s.fetch_value("SELECT pg_advisory_unlock($1)", key) is False  # once
            await DRIVER.acquire_migration_lock(s, 1.0)

            # the script releases the lock; the other session takes it before the row is written
            task = asyncio.create_task(_take_when_free(other, key))
            with pytest.raises(LockLost):
                await DRIVER.apply_transactional(s, second, None)
            assert task.done()  # taken during the script's sleep: refused as another's, not as free
            assert await task is True
            assert [r.version for r in await DRIVER.read_history(s)] == ["1"]
            assert await s.fetch_value("SELECT to_regclass('b') IS NULL") is True
            assert await other.fetch_value(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                "AND objid = $1::bigint", key & 0xFFFFFFFF) == 1  # still the other's

    asyncio.run(go())


async def _take_when_free(session, key: int) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(200):
        if await session.fetch_value("SELECT pg_try_advisory_lock($1)", key):
            return True
        await asyncio.sleep(0.005)
    return False


def test_a_failing_line_is_found_past_the_timeouts_sent_ahead(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t (clnt_id int2);")
    ws.add_migration("v1.0.1_slow.sql", "-- tenantctl: statement-timeout 5s\n"
                                        "-- tenantctl: lock-timeout 2s\n"
                                        "insert into t values (1);\n"
                                        "select nosuchcolumn\n  from t;\n")
    result = ws.cli("provision", "--all", "--json", "--no-template")
    assert result.exit_code == 1
    error = result.json()["tenants"][0]["error"]
    assert (error["sqlstate"], error["migration"], error["line"]) == ("42703", "v1.0.1_slow.sql", 4)
    assert ws.versions(1) == ["1.0.0"]


def test_the_timeouts_apply_to_the_migration_only(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_slow.sql", "-- tenantctl: statement-timeout 1s\n"
                                        "create table seen (st text);\n"
                                        "insert into seen values (current_setting('statement_timeout'));\n")
    ws.add_migration("v1.0.1_after.sql",
                     "insert into seen values (current_setting('statement_timeout'));\n")
    result = ws.cli("provision", "--all", "--json", "--no-template", "--statement-timeout", "0")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert [r["st"] for r in ws.fetch(ws.db(1), "SELECT st FROM seen")] == ["1s", "0"]


def test_execution_time_is_the_servers(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_sleep.sql", "select pg_sleep(0.12);")
    assert ws.cli("provision", "--all", "--no-template").exit_code == 0
    (row,) = ws.fetch(ws.db(1), "SELECT execution_ms FROM tenantctl_schema_history WHERE kind = 'up'")
    assert 120 <= row["execution_ms"] < 10_000


def test_a_deferred_constraint_failing_at_commit_fails_that_migration(ws: Workspace) -> None:
    """COMMIT travels in the migration's own query string: its failure is the
    migration's, nothing is recorded, and the next tenant run starts clean."""
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table p (id int primary key);")
    ws.add_migration("v1.0.1_deferred.sql", """\
        create table c (clnt_id int2, p_id int references p (id) deferrable initially deferred);
        insert into c values (1, 42);
        """)
    result = ws.cli("provision", "--all", "--json", "--no-template")
    assert result.exit_code == 1
    error = result.json()["tenants"][0]["error"]
    assert (error["sqlstate"], error["migration"]) == ("23503", "v1.0.1_deferred.sql")
    assert ws.versions(1) == ["1.0.0"]
    assert "c" not in ws.tables(1)
    ws.add_migration("v1.0.1_deferred.sql", """\
        create table c (clnt_id int2, p_id int references p (id) deferrable initially deferred);
        """)
    assert ws.cli("migrate", "--all").exit_code == 0
    assert ws.versions(1) == ["1.0.0", "1.0.1"]
