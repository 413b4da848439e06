"""The driver contract: every Driver passes the same suite (golang-migrate's
``database/testing`` idea). A new driver is done when it passes this file;
the in-memory fake stays honest because PostgreSQL runs the same tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Workspace
from tenantctl.drivers.base import Driver
from tenantctl.drivers.fake import FakeDriver
from tenantctl.drivers.pg_version import CloneStrategy
from tenantctl.drivers.postgres import DRIVER
from tenantctl.errors import DatabaseError, LockNotAcquired
from tenantctl.migrations import Migration, load_migrations, read_script
from tenantctl.plan import replay


@pytest.fixture(params=["fake", "postgres"])
def driver(request: pytest.FixtureRequest, ws: Workspace) -> tuple[Driver, str]:
    if request.param == "fake":
        return FakeDriver(), "fake://"
    return DRIVER, ws.dsn


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def migrations(ws: Workspace) -> tuple[Migration, ...]:
    ws.add_migration("v1_a.sql", "create table a (clnt_id int2);")
    ws.add_migration("v1_a.down.sql", "drop table a;")
    ws.add_migration("v2_b.sql", "-- tenantctl: no-transaction\ncreate table b (clnt_id int2);\n"
                                 "create table c (clnt_id int2);")
    return load_migrations(ws.migrations)


def with_database(ws: Workspace, driver: tuple[Driver, str],
                  body: Callable[[Driver, str, str], Awaitable[None]]) -> None:
    db, dsn = driver

    async def go() -> None:
        name = ws.db(1)
        async with await db.connect(dsn) as admin:
            assert await db.create_database(admin, name) is True
        await body(db, dsn, name)

    run(go())


def test_databases_are_created_once_listed_tagged_and_dropped(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    db, dsn = driver

    async def go() -> None:
        name = ws.db(1)
        async with await db.connect(dsn) as admin:
            assert await db.create_database(admin, name) is True
            assert await db.create_database(admin, name) is False  # existed: not an error
            assert await db.existing_databases(admin, [name, ws.db(2)]) == {name}
            assert await db.max_connections(admin) > 0
            assert "plpgsql" in await db.available_extensions(admin)
            assert await db.write_purpose(admin, "tenant:1", name) is True
            assert await db.write_marker(admin, "v1:1:abc:0", name) is True
            assert (await db.read_purposes(admin)).get(name) == "tenant:1"
            assert (await db.read_markers(admin)).get(name) == "v1:1:abc:0"
            assert await db.write_marker(admin, None, name) is True
            assert name not in await db.read_markers(admin)
            await db.drop_database(admin, name)
            assert await db.existing_databases(admin, [name]) == set()

    run(go())


@pytest.mark.parametrize("strategy", list(CloneStrategy))
def test_the_server_version_is_known_and_templates_clone_with_each_strategy(  # type: ignore[no-untyped-def]
        ws: Workspace, driver, strategy: CloneStrategy) -> None:
    db, dsn = driver

    async def go() -> None:
        async with await db.connect(dsn) as admin:
            version = await db.server_version(admin)
            assert version.supported and version.major >= 15
            assert await db.create_database(admin, ws.db(1)) is True
            assert await db.create_database(admin, ws.db(2), ws.db(1), strategy=strategy) is True
            assert await db.create_database(admin, ws.db(2), ws.db(1), strategy=strategy) is False
            assert await db.existing_databases(admin, [ws.db(2)]) == {ws.db(2)}

    run(go())


def test_a_missing_database_is_3d000(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    db, dsn = driver
    with pytest.raises(DatabaseError) as caught:
        run(db.connect(dsn, ws.db(9)))
    assert caught.value.sqlstate == "3D000"


def test_the_lock_is_exclusive_polled_and_dies_with_the_session(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    async def body(db: Driver, dsn: str, name: str) -> None:
        first = await db.connect(dsn, name)
        assert await db.acquire_migration_lock(first, 1.0) >= 0
        async with await db.connect(dsn, name) as second:
            with pytest.raises(LockNotAcquired):
                await db.acquire_migration_lock(second, 0.2)
            await first.close()
            assert await db.acquire_migration_lock(second, 1.0) >= 0

    with_database(ws, driver, body)


def test_the_lock_can_check_the_histories_last_row_in_passing(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    """acquire_lock_checking_last: the lock is taken in every case; True only when the
    history's last row is that version's successful up row."""
    ms = migrations(ws)
    ws.add_migration("v3_bad.sql", "-- tenantctl: no-transaction\ncreate table d (x int);\nselect 1/0;")
    bad = load_migrations(ws.migrations)[-1]

    async def body(db: Driver, dsn: str, name: str) -> None:
        async def exclusive(s: Any) -> None:
            async with await db.connect(dsn, name) as other:
                with pytest.raises(LockNotAcquired):
                    await db.acquire_migration_lock(other, 0.1)

        async with await db.connect(dsn, name) as s:  # no history table yet
            assert await db.acquire_lock_checking_last(s, 1.0, "1") is False
            await exclusive(s)
            assert await db.open_history(s) == []
        async with await db.connect(dsn, name) as s:  # an empty history
            assert await db.acquire_lock_checking_last(s, 1.0, "1") is False
            await exclusive(s)
            await db.apply_transactional(s, ms[0], None)
        async with await db.connect(dsn, name) as s:
            assert await db.acquire_lock_checking_last(s, 1.0, "1") is True
            await exclusive(s)
            assert await db.acquire_lock_checking_last(s, 1.0, "2") is False  # held: re-entrant
            await db.apply_statements(s, ms[1], None, 0)
            with pytest.raises(DatabaseError):
                await db.apply_statements(s, bad, None, 0)  # a partial attempt: a failed row
        async with await db.connect(dsn, name) as s:
            assert await db.acquire_lock_checking_last(s, 1.0, "2") is False
            assert await db.acquire_lock_checking_last(s, 1.0, "3") is False
            await db.apply_down(s, ms[0], None)
        async with await db.connect(dsn, name) as s:
            assert await db.acquire_lock_checking_last(s, 1.0, "1") is False  # a down row
        async with await db.connect(dsn, name) as first:
            await db.acquire_migration_lock(first, 1.0)
            async with await db.connect(dsn, name) as second:
                with pytest.raises(LockNotAcquired):
                    await db.acquire_lock_checking_last(second, 0.2, "1")

    with_database(ws, driver, body)


def test_history_is_created_on_first_use_and_records_every_kind(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    ms = migrations(ws)
    seed_path = ws.dir / "seed.sql"
    seed_path.write_text("select 1;")
    seed = read_script(seed_path)

    async def body(db: Driver, dsn: str, name: str) -> None:
        async with await db.connect(dsn, name) as s:
            await db.acquire_migration_lock(s, 1.0)
            assert await db.database_contents(s) == (False, False)
            assert await db.read_history(s) == []
            with pytest.raises(DatabaseError) as caught:
                await db.read_history(s, missing_ok=False)
            assert caught.value.sqlstate == "42P01"
            assert await db.open_history(s) == []
            assert (await db.database_contents(s))[0] is True
            await db.apply_transactional(s, ms[0], None)
            await db.apply_statements(s, ms[1], None, 0)
            await db.apply_seed(s, seed, 1, "A", (1,), None)
            await db.record_repair(s, ms[0], None)
            await db.apply_down(s, ms[0], None)
            history = await db.read_history(s)
        kinds = [(r.version, r.kind, r.success) for r in history]
        assert kinds == [("1", "up", True), ("2", "up", True), ("1", "seed", True),
                         ("1", "repair", True), ("1", "down", True)]
        assert [r.rank for r in history] == [1, 2, 3, 4, 5]
        state = replay(history)
        assert sorted(v.text for v in state.applied) == ["2"] and state.seeded == {1}

    with_database(ws, driver, body)


def test_a_failing_migration_leaves_no_history_row(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    ws.add_migration("v1_bad.sql", "select 1/0;")
    (bad,) = load_migrations(ws.migrations)

    async def body(db: Driver, dsn: str, name: str) -> None:
        async with await db.connect(dsn, name) as s:
            await db.acquire_migration_lock(s, 1.0)
            await db.open_history(s)
            with pytest.raises(DatabaseError) as caught:
                await db.apply_transactional(s, bad, None)
            assert caught.value.sqlstate == "22012"
            assert await db.read_history(s) == []

    with_database(ws, driver, body)


def test_a_marker_rides_in_a_migrations_transaction(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    """apply_transactional(marker=...): the marker is set when the migration commits,
    and not at all when it fails (the test server's role is a superuser)."""
    ws.add_migration("v1_a.sql", "create table a (clnt_id int2);")
    ws.add_migration("v2_bad.sql", "select 1/0;")
    good, bad = load_migrations(ws.migrations)

    async def body(db: Driver, dsn: str, name: str) -> None:
        async with await db.connect(dsn, name) as s:
            assert s.superuser is True and db.marks_in_transaction(s) is True
            await db.acquire_migration_lock(s, 1.0)
            await db.open_history(s)
            await db.apply_transactional(s, good, None, marker="v1:1:abc:0")
            with pytest.raises(DatabaseError):
                await db.apply_transactional(s, bad, None, marker="v1:2:def:0")
            assert [r.version for r in await db.read_history(s)] == ["1"]
        async with await db.connect(dsn) as admin:
            assert (await db.read_markers(admin)).get(name) == "v1:1:abc:0"

    with_database(ws, driver, body)


def test_copy_streams_a_tenants_rows_between_databases(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    """COPY out of one database (all rows, or one tenant's) into another, in COPY
    text format: NULLs, tabs, backslashes and non-ASCII survive, counts are returned."""
    ws.add_migration("v1_t.sql", "create table t (clnt_id int2, note text, n int);")
    (create,) = load_migrations(ws.migrations)
    rows = "1\tplain\t1\n2\t\\N\t2\n1\ttab\\there \\\\ é 漢\t3\n".encode()

    async def body(db: Driver, dsn: str, name: str) -> None:
        other = ws.db(2)
        async with await db.connect(dsn) as admin:
            assert await db.create_database(admin, other) is True
        for database in (name, other):
            async with await db.connect(dsn, database) as s:
                await db.acquire_migration_lock(s, 1.0)
                await db.open_history(s)
                await db.apply_transactional(s, create, None)

        async def chunks() -> Any:
            yield rows[:7]  # chunks need not end at a row
            yield rows[7:]

        async with await db.connect(dsn, name) as source, await db.connect(dsn, other) as target:
            assert await source.copy_rows_in("public", "t", ["clnt_id", "note", "n"], chunks()) == 3
            out: list[bytes] = []

            async def sink(chunk: bytes) -> None:
                out.append(chunk)

            assert await source.copy_rows_out("public", "t", ["clnt_id", "note", "n"], sink,
                                              where_column="clnt_id", equals=1) == 2
            assert b"".join(out) == "1\tplain\t1\n1\ttab\\there \\\\ é 漢\t3\n".encode()

            async def replay_out() -> Any:
                for chunk in out:
                    yield chunk

            assert await target.copy_rows_in("public", "t", ["clnt_id", "note", "n"],
                                              replay_out()) == 2
            everything: list[bytes] = []

            async def keep(chunk: bytes) -> None:
                everything.append(chunk)

            assert await target.copy_rows_out("public", "t", ["n", "note"], keep) == 2
            assert sorted(b"".join(everything).decode().splitlines()) == [
                "1\tplain", "3\ttab\\there \\\\ é 漢"]
            with pytest.raises(DatabaseError) as caught:
                await target.copy_rows_out("public", "missing", ["n"], keep)
            assert caught.value.sqlstate == "42P01"

    with_database(ws, driver, body)


def test_sessions_close_with_async_with(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    db, dsn = driver

    async def go() -> None:
        async with await db.connect(dsn) as admin:
            pass
        assert admin.closed

    run(go())


def test_folder_fixture_is_valid(tmp_path: Path) -> None:
    """The contract's own migrations load (guards the suite against a silent no-op)."""
    ws = Workspace(tmp_path, "", "x")
    ws.migrations.mkdir()
    assert [m.version.text for m in migrations(ws)] == ["1", "2"]
