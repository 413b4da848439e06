"""Supported PostgreSQL versions: mixed-major fleets, the supported range, tools that match.

Every test here spans two majors: the session's server (``pg_dsn``: 18, 15 or
16, whichever leg of the CI matrix runs) and a server of another major (a
throw-away Debian 15 cluster, or the embedded 18 when the session's server is
15), so each leg of the matrix runs a mixed fleet.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import pg_servers
from conftest import ExtraServers, Workspace
from tenantctl import commands
from tenantctl.config import load_project
from tenantctl.drivers.base import Session
from tenantctl.drivers.pg_version import (
    MIN_MAJOR,
    NEWEST_TESTED_MAJOR,
    CloneStrategy,
    ServerVersion,
    clone_strategy,
)
from tenantctl.drivers.postgres import PostgresDriver
from tenantctl.errors import ServerError
from tenantctl.pg_dumps import (
    TRANSACTION_TIMEOUT_LINE,
    RestoreMethod,
    archive_dumper_major,
    dump_database,
    restore_database,
)
from tenantctl.pg_tools import ClientTool, ToolName, available_tools, run_tool


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _version(dsn: str) -> ServerVersion:
    conn = await asyncpg.connect(dsn)
    try:
        return ServerVersion(int(await conn.fetchval("SELECT current_setting('server_version_num')")))
    finally:
        await conn.close()


async def _sql(dsn: str, database: str | None, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, database=database)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _exec(dsn: str, database: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, database=database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def other_dsn(pg_dsn: str, extra_servers: ExtraServers) -> Iterator[str]:
    """A server of another major than the session's: Debian's 15, or the embedded 18
    when the session's server is 15 itself."""
    if _run(_version(pg_dsn)).major == 15:
        yield extra_servers.dsn(1)
        return
    with pg_servers.start(15) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def pg15_dsn(pg_dsn: str, other_dsn: str) -> str:
    return pg_dsn if _run(_version(pg_dsn)).major == 15 else other_dsn


@pytest.fixture
def fleet(example_ws: Workspace, other_dsn: str) -> Iterator[Workspace]:
    """The shipped example on two servers of different majors: clnt_id 1 on the
    session's server (``main``, the default: control database, ledger), 2 and 3
    on ``other``."""
    example_ws.write_config(
        """\
        - { clnt_id: 1, name: "Acme Hospital", sites: [1, 2] }
        - { clnt_id: 2, name: "Klinik Müller", sites: [1], server: other }
        - { clnt_id: 3, name: "Beta Clinic", sites: [1], server: other }
        """,
        extra=f"""\
        seed: seed/tenant_seed.sql
        servers:
          main: {{ dsn: embedded }}
          other: {{ dsn: "{other_dsn}" }}
        default_server: main
        """,
    )
    yield example_ws
    _run(_drop_prefixed(other_dsn, example_ws.prefix))


async def _drop_prefixed(dsn: str, prefix: str) -> None:
    for row in await _sql(dsn, None, "SELECT datname FROM pg_database WHERE datname LIKE $1",
                          prefix + "%"):
        await _sql(dsn, None, f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')


# ------------------------------------------------------------ mixed-version fleets


def test_a_fleet_of_two_majors_is_provisioned_migrated_and_verified_in_one_run(
        fleet: Workspace, pg_dsn: str, other_dsn: str) -> None:
    main_version, other_version = _run(_version(pg_dsn)), _run(_version(other_dsn))
    assert main_version.major != other_version.major

    provisioned = fleet.cli("--json", "provision", "--all")
    assert provisioned.exit_code == 0, provisioned.stderr
    assert [t["status"] for t in provisioned.json()["tenants"]] == ["applied"] * 3
    for database in (fleet.db(2), fleet.db(3)):  # on the other server, cloned from its own template
        rows = _run(_sql(other_dsn, database, "SELECT count(*) AS n FROM cvs_site_mast"))
        assert rows[0]["n"] >= 1
    assert fleet.db(2) not in fleet.databases()  # nothing of server other's landed on main

    fleet.add_migration("v1.3.0_add_site_note.sql",
                        "ALTER TABLE cvs_site_mast ADD COLUMN site_note text;\n")
    migrated = fleet.cli("--json", "migrate", "--all")
    assert migrated.exit_code == 0, migrated.stderr
    assert [t["applied"] for t in migrated.json()["tenants"]] == [["1.3.0"]] * 3

    status = fleet.cli("--json", "status")
    assert status.exit_code == 0, status.stderr
    doc = status.json()
    assert doc["servers"] == [
        {"name": "main", "version": main_version.text, "supported": True},
        {"name": "other", "version": other_version.text, "supported": True},
    ]
    assert [(t["server"], t["server_version"], t["state"]) for t in doc["tenants"]] == [
        ("main", main_version.text, "up_to_date"), ("other", other_version.text, "up_to_date"),
        ("other", other_version.text, "up_to_date")]
    text = fleet.cli("status")
    assert text.stdout.splitlines()[-1] == (
        f"3 tenant(s) on 2 server(s): 3 up_to_date; per server: main 1 (PostgreSQL "
        f"{main_version.text}), other 2 (PostgreSQL {other_version.text})")
    verified = fleet.cli("verify")
    assert verified.exit_code == 0, verified.stdout + verified.stderr


class ReportsOldVersion(PostgresDriver):
    """The real driver, except that the server at ``old_dsn`` reports PostgreSQL 14.11
    (no server below 15 can run on this machine; everything else is real)."""

    def __init__(self, old_dsn: str) -> None:
        self.old_dsn = old_dsn
        # the sessions themselves, not their id(): a closed session's id is reused by
        # a later one, which then passed for the old server (a flaky failure on CI)
        self.old_sessions: list[Session] = []

    async def connect(self, dsn: str, database: str | None = None, **kwargs: Any) -> Any:
        session = await super().connect(dsn, database, **kwargs)
        if dsn == self.old_dsn:
            self.old_sessions.append(session)
        return session

    async def server_version(self, admin: Session) -> ServerVersion:
        if any(admin is old for old in self.old_sessions):
            return ServerVersion(140011)
        return await super().server_version(admin)


def test_a_server_below_the_range_fails_its_tenants_untouched_and_the_others_go_on(
        example_ws: Workspace) -> None:
    # "old" is the session's server under another DSN string: its databases would
    # land next to main's, where the test can see that none was created
    old_dsn = example_ws.dsn + ("&" if "?" in example_ws.dsn else "?") + "application_name=old"
    example_ws.write_config(
        """\
        - { clnt_id: 1, name: "Acme Hospital", sites: [1] }
        - { clnt_id: 2, name: "Old Clinic", sites: [1], server: old }
        """,
        extra=f"""\
        servers:
          main: {{ dsn: embedded }}
          old: {{ dsn: "{old_dsn}" }}
        """,
    )
    project = load_project(example_ws.config, dsn=example_ws.dsn)
    driver = ReportsOldVersion(old_dsn)
    run = _run(commands.provision(project, commands.ChangeRequest(all=True), driver=driver))
    by_id = {t.clnt_id: t for t in run.tenants}
    assert by_id[1].status == "applied", by_id[1].error
    assert by_id[2].status == "failed"
    assert by_id[2].error is not None
    assert by_id[2].error.message == (
        f"server old runs PostgreSQL 14.11, below the supported range ({MIN_MAJOR} to "
        f"{NEWEST_TESTED_MAJOR}): its tenants were not touched")
    assert "upgrade the server" in (by_id[2].error.hint or "")
    assert example_ws.db(2) not in example_ws.databases()
    # the ledger has it, as any other failure
    row = example_ws.fetch(example_ws.control_db, "SELECT last_status FROM tenantctl_tenants "
                           "WHERE clnt_id = 2")
    assert row[0]["last_status"] == "failed"


def test_a_default_server_below_the_range_refuses_the_run_before_anything(
        example_ws: Workspace) -> None:
    example_ws.write_config('- { clnt_id: 1, name: "Acme Hospital", sites: [1] }\n')
    project = load_project(example_ws.config, dsn=example_ws.dsn)
    driver = ReportsOldVersion(example_ws.dsn)
    with pytest.raises(ServerError, match=r"server default runs PostgreSQL 14\.11, below the "
                                          r"supported range \(15 to 18\)") as refused:
        _run(commands.provision(project, commands.ChangeRequest(all=True), driver=driver))
    assert refused.value.kind == "unsupported_server" and refused.value.exit_code == 1
    assert example_ws.databases() == set()  # no control database, no template, no tenant


def test_versions_read_as_major_and_minor() -> None:
    assert ServerVersion(150018).text == "15.18" and ServerVersion(150018).major == 15
    assert ServerVersion(180001).supported and not ServerVersion(140011).supported
    assert ServerVersion(190000).note("x") == ("server x runs PostgreSQL 19.0, newer than the "
                                               "newest tested major (18)")
    assert ServerVersion(180006).note("x") is None


# ------------------------------------------------------------ template clone strategy


def _requested_checkpoints(dsn: str) -> int:
    """Checkpoints requested (not timed): FILE_COPY asks for one per clone."""
    view = ("SELECT num_requested AS n FROM pg_stat_checkpointer"
            if _run(_version(dsn)).major >= 17 else
            "SELECT checkpoints_req AS n FROM pg_stat_bgwriter")
    return int(_run(_sql(dsn, None, view))[0]["n"])


@pytest.mark.parametrize("setting", ["file_copy", "wal_log"])
def test_template_strategy_setting_decides_how_tenants_are_cloned(
        example_ws: Workspace, setting: str) -> None:
    tenants = "".join(f'- {{ clnt_id: {i}, name: "T{i}", sites: [1] }}\n' for i in range(1, 5))
    example_ws.write_config(tenants, extra=f"seed: seed/tenant_seed.sql\nsettings: {{ template_strategy: {setting} }}\n")
    assert example_ws.cli("provision", "1").exit_code == 0  # builds the template
    before = _requested_checkpoints(example_ws.dsn)
    result = example_ws.cli("--json", "provision", "2", "3", "4")
    assert result.exit_code == 0, result.stderr
    assert {t["status"] for t in result.json()["tenants"]} == {"applied"}
    assert {r[0] for r in example_ws.fetch(example_ws.db(3), "SELECT site_id FROM cvs_site_mast")}
    taken = _requested_checkpoints(example_ws.dsn) - before
    if setting == "file_copy":
        assert taken >= 3, taken  # one per clone
    else:
        assert taken == 0, taken


def test_an_unknown_template_strategy_is_refused(ws: Workspace) -> None:
    ws.write_config('- { clnt_id: 1, name: "A", sites: [1] }\n',
                    extra="settings: { template_strategy: fast }\n")
    result = ws.cli("provision", "--all")
    assert result.exit_code == 2
    assert "settings.template_strategy" in result.stderr and "'wal_log'" in result.stderr
    assert "Traceback" not in result.stderr
    assert ws.databases() == set()


def test_auto_picks_the_measured_faster_strategy_and_a_setting_overrides_it() -> None:
    for num in (150018, 160002, 170005, 180006):
        version = ServerVersion(num)
        assert clone_strategy(version, CloneStrategy.AUTO) is not CloneStrategy.AUTO
        assert clone_strategy(version, CloneStrategy.FILE_COPY) is CloneStrategy.FILE_COPY
        assert clone_strategy(version, CloneStrategy.WAL_LOG) is CloneStrategy.WAL_LOG


# ------------------------------------------------------------ client tools across majors


def _tool(name: ToolName, major: int) -> ClientTool:
    found = [t for t in available_tools(name) if t.major == major]
    assert found, f"{name.value} {major} is not installed"
    return found[0]


@pytest.fixture
def source_on_15(pg15_dsn: str) -> Iterator[tuple[str, str]]:
    """A database on the 15 server whose data and code hold the very line that
    pg_restore 17+ writes and 15 rejects."""
    prefix = "t" + secrets.token_hex(4)
    source = f"{prefix}_src"
    _run(_sql(pg15_dsn, None, f'CREATE DATABASE "{source}"'))
    _run(_exec(pg15_dsn, source, """
        CREATE TABLE note (clnt_id int2 NOT NULL, body text NOT NULL);
        INSERT INTO note VALUES (1, 'Zürich — 東京'), (1, 'SET transaction_timeout = 0;');
        CREATE TABLE line (body text);
        INSERT INTO line VALUES ('SET transaction_timeout = 0;');
        CREATE FUNCTION relax() RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
        SET transaction_timeout = 0;
        END $$;
        CREATE VIEW note_v WITH (security_invoker = true) AS SELECT * FROM note;
    """))
    yield prefix, source
    _run(_drop_prefixed(pg15_dsn, prefix))


async def _contents(dsn: str, database: str) -> tuple[Any, ...]:
    notes = await _sql(dsn, database, "SELECT clnt_id, body FROM note ORDER BY body")
    lines = await _sql(dsn, database, "SELECT body FROM line")
    body = await _sql(dsn, database, "SELECT prosrc FROM pg_proc WHERE proname = 'relax'")
    view = await _sql(dsn, database, "SELECT reloptions FROM pg_class WHERE relname = 'note_v'")
    return ([tuple(r) for r in notes], [tuple(r) for r in lines], body[0]["prosrc"],
            view[0]["reloptions"])


def test_a_pg_restore_18_cannot_restore_into_15_directly(source_on_15: tuple[str, str],
                                                          pg15_dsn: str, tmp_path: Path) -> None:
    """Why tenantctl does not simply run the newest pg_restore: 15 rejects its first SET."""
    prefix, source = source_on_15
    archive = tmp_path / "t.dump"
    version = _run(_version(pg15_dsn))
    _run(dump_database(pg15_dsn, source, version, archive, pg_dump=_tool(ToolName.PG_DUMP, 18)))
    _run(_sql(pg15_dsn, None, f'CREATE DATABASE "{prefix}_direct"'))
    from tenantctl.pg_tools import libpq_target

    url, env = libpq_target(pg15_dsn, f"{prefix}_direct")
    with pytest.raises(ServerError, match='unrecognized configuration parameter "transaction_timeout"'):
        _run(run_tool(_tool(ToolName.PG_RESTORE, 18), ["--exit-on-error", f"--dbname={url}",
                                                       str(archive)], env=env, what="direct"))


def test_18_tools_dump_and_restore_a_15_database_through_tenantctl(
        source_on_15: tuple[str, str], pg15_dsn: str, tmp_path: Path) -> None:
    prefix, source = source_on_15
    version = _run(_version(pg15_dsn))
    archive = tmp_path / "t.dump"
    _run(dump_database(pg15_dsn, source, version, archive, pg_dump=_tool(ToolName.PG_DUMP, 18)))
    assert _run(archive_dumper_major(archive)) == 18
    target = f"{prefix}_restored"
    _run(_sql(pg15_dsn, None, f'CREATE DATABASE "{target}"'))
    restored = _run(restore_database(archive, pg15_dsn, target, version, options=["--no-owner"]))
    assert restored.method is RestoreMethod.SCRIPT  # only a 17+ pg_restore reads this archive
    assert restored.pg_restore.major == 18 and restored.psql is not None
    assert restored.psql.major >= 18
    restored_contents = _run(_contents(pg15_dsn, target))
    assert restored_contents == _run(_contents(pg15_dsn, source))
    # the SET line was dropped from the header only: data and function body keep it
    assert ("SET transaction_timeout = 0;",) in restored_contents[1]
    assert TRANSACTION_TIMEOUT_LINE in restored_contents[2]


def test_the_default_pairing_dumps_15_with_15_tools_and_restores_directly(
        source_on_15: tuple[str, str], pg15_dsn: str, tmp_path: Path) -> None:
    prefix, source = source_on_15
    version = _run(_version(pg15_dsn))
    archive = tmp_path / "t.dump"
    dumped_by = _run(dump_database(pg15_dsn, source, version, archive))
    assert dumped_by.major == 15  # the oldest pg_dump that can dump a 15 server
    target = f"{prefix}_restored"
    _run(_sql(pg15_dsn, None, f'CREATE DATABASE "{target}"'))
    restored = _run(restore_database(archive, pg15_dsn, target, version, options=["--no-owner"]))
    assert restored.method is RestoreMethod.DIRECT and restored.pg_restore.major == 15
    assert _run(_contents(pg15_dsn, target)) == _run(_contents(pg15_dsn, source))


def test_a_restore_that_fails_names_the_database_and_changes_nothing(
        source_on_15: tuple[str, str], pg15_dsn: str, tmp_path: Path) -> None:
    prefix, source = source_on_15
    version = _run(_version(pg15_dsn))
    archive = tmp_path / "t.dump"
    _run(dump_database(pg15_dsn, source, version, archive, pg_dump=_tool(ToolName.PG_DUMP, 18)))
    target = f"{prefix}_clash"
    _run(_sql(pg15_dsn, None, f'CREATE DATABASE "{target}"'))
    _run(_sql(pg15_dsn, target, "CREATE TABLE line (other int)"))  # the restore collides here
    with pytest.raises(ServerError, match=f"restoring t.dump into {target}: .*already exists"):
        _run(restore_database(archive, pg15_dsn, target, version, options=["--no-owner"]))
    tables = _run(_sql(pg15_dsn, target, "SELECT relname FROM pg_class WHERE relname IN "
                                         "('note', 'line') ORDER BY 1"))
    assert [r["relname"] for r in tables] == ["line"]  # one transaction: nothing else was left


# ------------------------------------------------------------ upgrade by move


def test_moving_a_tenant_from_15_to_18_is_the_per_tenant_upgrade(
        example_ws: Workspace, pg_dsn: str, other_dsn: str) -> None:
    """The documented upgrade path: declare the tenant on the newer server, then
    ``tenantctl move``. Data, history and seed come across; the 15 copy is gone."""
    on_15 = "main" if _run(_version(pg_dsn)).major == 15 else "other"
    on_18 = "other" if on_15 == "main" else "main"
    dsn_of = {"main": pg_dsn, "other": other_dsn}
    assert _run(_version(dsn_of[on_18])).major > 15

    def configure(server: str) -> None:
        example_ws.write_config(
            f"""\
            - {{ clnt_id: 1, name: "Acme Hospital", sites: [1, 2] }}
            - {{ clnt_id: 2, name: "Klinik Müller", sites: [1], server: {server} }}
            """,
            extra=f"""\
            seed: seed/tenant_seed.sql
            servers:
              main: {{ dsn: embedded }}
              other: {{ dsn: "{other_dsn}" }}
            default_server: main
            """,
        )

    configure(on_15)
    try:
        provisioned = example_ws.cli("--json", "provision", "--all")
        assert provisioned.exit_code == 0, provisioned.stderr
        db = example_ws.db(2)
        _run(_exec(dsn_of[on_15], db, "UPDATE cvs_site_mast SET site_nm = 'Müller – Süd ✓' "
                                      "WHERE clnt_id = 2"))
        before = _run(_sql(dsn_of[on_15], db, "SELECT * FROM cvs_site_mast ORDER BY 1, 2"))
        history = _run(_sql(dsn_of[on_15], db, "SELECT version, checksum FROM tenantctl_schema_history "
                                               "ORDER BY installed_rank"))

        configure(on_18)
        refused = example_ws.cli("migrate", "2")  # declared elsewhere: refused until moved
        assert refused.exit_code == 1 and "tenantctl move 2" in refused.stdout
        moved = example_ws.cli("--json", "move", "2")
        assert moved.exit_code == 0, moved.stdout + moved.stderr

        after = _run(_sql(dsn_of[on_18], db, "SELECT * FROM cvs_site_mast ORDER BY 1, 2"))
        assert [dict(r) for r in after] == [dict(r) for r in before]
        assert [tuple(r) for r in _run(_sql(
            dsn_of[on_18], db,
            "SELECT version, checksum FROM tenantctl_schema_history ORDER BY installed_rank"
        ))] == [tuple(r) for r in history]
        gone = _run(_sql(dsn_of[on_15], None, "SELECT 1 FROM pg_database WHERE datname = $1", db))
        assert gone == []
        status = example_ws.cli("--json", "status", "2")
        assert status.exit_code == 0, status.stderr
        row = status.json()["tenants"][0]
        assert (row["server"], row["state"]) == (on_18, "up_to_date")
        assert int(row["server_version"].split(".")[0]) > 15
        assert example_ws.cli("verify").exit_code == 0
    finally:
        _run(_drop_prefixed(other_dsn, example_ws.prefix))
