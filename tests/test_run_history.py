"""Run history (`tenantctl runs`, `runs show`) and error.kind, on real PostgreSQL.

A run killed with `kill -9` is caused for real: a subprocess run blocks on a
tenant's migration lock held by this test's session, and is killed while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from typing import Any

import asyncpg

from conftest import Workspace
from tenantctl.drivers.postgres import MIGRATION_LOCK_KEY
from tenantctl.ledger import CONTROL_DDL

THREE = """\
  - { clnt_id: 1, name: "Acme", sites: [1] }
  - { clnt_id: 2, name: "Beta", sites: [1] }
  - { clnt_id: 3, name: "Gamma", sites: [1] }
"""
INIT = "create table cvs_usr_mast (clnt_id int2 not null, usr_id int not null);\n"
# fails in tenant 2's database only
FAILS_IN_2 = """\
do $$ begin
  if current_database() like '%\\_client\\_2' then
    raise exception 'tenant 2 cannot take this';
  end if;
end $$;
create table cvs_more (clnt_id int2 not null);
"""


def three_tenants(ws: Workspace) -> None:
    ws.write_config(THREE)
    ws.add_migration("v1.0.0_init.sql", INIT)


def runs(ws: Workspace, *args: str) -> list[dict[str, Any]]:
    result = ws.cli("runs", "--json", *args)
    assert result.exit_code == 0, result.stderr
    listed: list[dict[str, Any]] = result.json()["runs"]
    return listed


def test_runs_lists_a_normal_and_a_failed_run_newest_first_with_who_and_where(
        ws: Workspace) -> None:
    three_tenants(ws)
    first = ws.cli("provision", "--all", "--json")
    assert first.exit_code == 0, first.stderr
    ws.add_migration("v1.0.1_more.sql", FAILS_IN_2)
    second = ws.cli("migrate", "--all", "--json")
    assert second.exit_code == 1
    listed = runs(ws)
    assert [r["run_id"] for r in listed] == [second.json()["run_id"], first.json()["run_id"]]
    failed, ok = listed
    assert (failed["command"], failed["status"], failed["dry_run"]) == ("migrate", "failed", False)
    assert (ok["command"], ok["status"]) == ("provision", "ok")
    assert failed["summary"]["failed"] == 1 and failed["summary"]["applied"] == 2
    assert ok["summary"]["applied"] == 3 and ok["tenants"] == 3
    for r in listed:
        assert r["started_at"].endswith("Z") and r["finished_at"].endswith("Z")
        assert r["duration_s"] >= 0
        assert r["pid"] == os.getpid()  # in-process CLI: this test's process ran it
        assert r["host"] and r["version"] and r["db_user"]
        assert "--dsn" in r["argv"]
    # filters and limit
    assert [r["run_id"] for r in runs(ws, "--command", "provision")] == [ok["run_id"]]
    assert [r["run_id"] for r in runs(ws, "--status", "failed")] == [failed["run_id"]]
    assert [r["run_id"] for r in runs(ws, "--limit", "1")] == [failed["run_id"]]
    # the text table names both
    text = ws.cli("runs")
    assert text.exit_code == 0 and failed["run_id"] in text.stdout and "failed" in text.stdout
    assert "1 FAILED" in text.stdout and "3 applied" in text.stdout


def test_runs_show_prints_the_report_the_run_printed(ws: Workspace) -> None:
    three_tenants(ws)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_more.sql", FAILS_IN_2)
    dry = ws.cli("migrate", "--all", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    real = ws.cli("migrate", "--all", "--json")
    assert real.exit_code == 1
    for original in (real.json(), dry.json()):
        shown = ws.cli("runs", "show", original["run_id"], "--json")
        assert shown.exit_code == 0, shown.stderr
        assert shown.json() == original
        assert shown.stdout == real.stdout if original is real.json() else True
    assert real.stdout == ws.cli("runs", "show", real.json()["run_id"], "--json").stdout
    # the dry run is listed, marked dry, and did not become "the last run" for --only-failed
    (listed_dry,) = [r for r in runs(ws) if r["run_id"] == dry.json()["run_id"]]
    assert listed_dry["dry_run"] is True and listed_dry["status"] == "ok"
    again = ws.cli("migrate", "--only-failed", "--dry-run", "--json")
    assert [t["clnt_id"] for t in again.json()["tenants"]] == [2]
    # --resume of a dry run is refused: it changed nothing
    refused = ws.cli("migrate", "--resume", dry.json()["run_id"])
    assert refused.exit_code == 2 and "dry run" in refused.stderr
    # people's view: a line per tenant, then the summary
    text = ws.cli("runs", "show", real.json()["run_id"])
    assert text.exit_code == 0
    assert "tenant 2 cannot take this" in text.stdout and "status: failed" in text.stdout
    # unknown and malformed ids are bad input
    missing = ws.cli("runs", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.exit_code == 2 and "not in the ledger" in missing.stderr
    bad = ws.cli("runs", "show", "last-night")
    assert bad.exit_code == 2 and "not a run id" in bad.stderr and "Traceback" not in bad.stderr


async def _kill_while_blocked(ws: Workspace) -> tuple[str, str]:
    """Hold tenant 1's migration lock, start a real run in a subprocess, see it
    `running` while it waits, kill -9 it; the run id and the status `runs` shows
    while it was alive."""
    holder = await asyncpg.connect(ws.dsn, database=ws.db(1))
    proc = None
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY)
        proc = await asyncio.create_subprocess_exec(
            *ws.subprocess_cmd("migrate", "1", "--lock-wait", "300s"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        control = await asyncpg.connect(ws.dsn, database=ws.control_db)
        try:
            deadline = time.monotonic() + 60
            run_id = None
            while run_id is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    run_id = await control.fetchval(
                        "SELECT run_id::text FROM tenantctl_runs WHERE status = 'running'")
            assert run_id is not None, "the run never started"
        finally:
            await control.close()
        alive = await asyncio.to_thread(runs, ws)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        return run_id, next(r["status"] for r in alive if r["run_id"] == run_id)
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await holder.close()


def test_a_killed_run_shows_abandoned_not_running_forever(ws: Workspace) -> None:
    three_tenants(ws)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_more.sql", "create table cvs_more (clnt_id int2 not null);")
    run_id, while_alive = asyncio.run(_kill_while_blocked(ws))
    assert while_alive == "running"
    # the server notices the dead client's closed socket and ends its session (and the lock)
    deadline = time.monotonic() + 60
    status = "running"
    while status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = next(r["status"] for r in runs(ws) if r["run_id"] == run_id)
    assert status == "abandoned"
    assert [r["run_id"] for r in runs(ws, "--status", "abandoned")] == [run_id]
    assert runs(ws, "--status", "running") == []
    shown = ws.cli("runs", "show", run_id, "--json")
    assert shown.exit_code == 0, shown.stderr
    doc = shown.json()
    assert doc["error"]["kind"] == "abandoned" and doc["duration_ms"] is None
    assert doc["tenants"] == []  # it was killed before tenant 1 finished
    assert "--resume" in ws.cli("runs", "show", run_id).stdout
    # the abandoned run can be resumed: tenant 1 is what it left unfinished
    resumed = ws.cli("migrate", "--resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert [t["clnt_id"] for t in resumed.json()["tenants"]] == [1]


async def _execute(dsn: str, database: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, database=database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_a_control_database_from_an_older_tenantctl_keeps_working(ws: Workspace) -> None:
    three_tenants(ws)
    ws.fetch(None, f'CREATE DATABASE "{ws.control_db}"')
    old_ddl = CONTROL_DDL.split("-- added later")[0]
    asyncio.run(_execute(ws.dsn, ws.control_db, old_ddl))
    ws.fetch(ws.control_db, "INSERT INTO tenantctl_runs (run_id, command, argv, clnt_ids, status) "
             "VALUES ('11111111-1111-1111-1111-111111111111', 'migrate', '{}', '{1}', 'ok')")
    ws.fetch(ws.control_db, "INSERT INTO tenantctl_run_tenants (run_id, clnt_id, database, status,"
             " to_version, applied) VALUES ('11111111-1111-1111-1111-111111111111', 1, 'x', "
             "'applied', '1.0.0', '{1.0.0}')")
    # read before any new run: nothing is altered, absent columns read as NULL
    (old,) = runs(ws)
    assert old["status"] == "ok" and old["dry_run"] is False and old["pid"] is None
    shown = ws.cli("runs", "show", old["run_id"], "--json")
    assert shown.exit_code == 0, shown.stderr
    assert shown.json()["tenants"][0]["applied"] == ["1.0.0"]
    # a new run brings the ledger to the current shape and is listed with the old one
    new = ws.cli("provision", "--all", "--json")
    assert new.exit_code == 0, new.stderr
    assert [r["run_id"] for r in runs(ws)] == [new.json()["run_id"], old["run_id"]]
    assert ws.cli("runs", "show", new.json()["run_id"], "--json").json() == new.json()


def test_error_kind_tells_an_unreachable_control_database_from_failed_tenants(
        ws: Workspace) -> None:
    three_tenants(ws)
    dead = "postgresql://postgres@127.0.0.1:1/postgres"
    result = ws.cli("--dsn", dead, "migrate", "--all", "--json")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    error = result.json()["error"]
    assert error["kind"] == "control_unreachable" and error["exit_code"] == 1
    assert "127.0.0.1" in error["message"] or "not reachable" in error["message"]
    assert ws.cli("--dsn", dead, "runs", "--json").json()["error"]["kind"] == "control_unreachable"
    # bad input and failed tenants have kinds of their own; a good run has none
    assert ws.cli("migrate", "--all", "--to", "9.9", "--json").json()["error"]["kind"] == "bad_input"
    ok = ws.cli("provision", "--all", "--json")
    assert ok.exit_code == 0 and ok.json()["error"] is None
    ws.add_migration("v1.0.1_more.sql", FAILS_IN_2)
    failed = ws.cli("migrate", "--all", "--json")
    assert failed.exit_code == 1
    assert failed.json()["error"]["kind"] == "tenants_failed"
    assert failed.json()["error"]["message"] == "1 of 3 tenant(s) failed"


def test_one_dead_server_and_every_dead_server_are_kinds_of_their_own(ws: Workspace) -> None:
    ws.write_config(THREE + '  - { clnt_id: 4, name: "Delta", sites: [1], server: other }\n',
                    extra="servers:\n  main: { dsn: embedded }\n"
                          "  other: { dsn: 'postgresql://postgres@127.0.0.1:2/x' }\n")
    ws.add_migration("v1.0.0_init.sql", INIT)
    # one server down: its tenant fails naming it, the other server's tenants go on
    one = ws.cli("provision", "--all", "--json")  # main is the test server (--dsn)
    assert one.exit_code == 1
    assert one.json()["error"]["kind"] == "server_unreachable"
    rows = {t["clnt_id"]: t for t in one.json()["tenants"]}
    assert rows[4]["status"] == "failed" and "server other (127.0.0.1:2)" in rows[4]["error"]["message"]
    assert [rows[i]["status"] for i in (1, 2, 3)] == ["applied"] * 3
    # every tenant's server down (the control database's server answers)
    ws.write_config('  - { clnt_id: 4, name: "Delta", sites: [1], server: other }\n',
                    extra="servers:\n  main: { dsn: embedded }\n"
                          "  other: { dsn: 'postgresql://postgres@127.0.0.1:2/x' }\n")
    every = ws.cli("migrate", "--all", "--json")
    assert every.exit_code == 1
    assert every.json()["error"]["kind"] == "all_servers_unreachable"
    # the control database's server down: nothing can be recorded
    dead = ws.cli("--dsn", "postgresql://postgres@127.0.0.1:1/x", "migrate", "--all", "--json")
    assert dead.exit_code == 1
    assert dead.json()["error"]["kind"] == "control_unreachable"
    assert "main (127.0.0.1:1)" in dead.json()["error"]["message"]
