"""Faults caused for real: a second process, kill -9, SIGTERM, a session holding
a lock, pg_terminate_backend, a failing canary, a failure budget, a failed
CREATE INDEX CONCURRENTLY. Each test says what it injects and what must hold.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import asyncpg
import pytest

from conftest import Workspace

pytestmark = pytest.mark.slow


def tenants(n: int, first_wave: str | None = None) -> str:
    lines = []
    for i in range(1, n + 1):
        wave = f", wave: {first_wave}" if first_wave and i == 1 else ""
        lines.append(f'  - {{ clnt_id: {i}, name: "T{i}", sites: [1]{wave} }}\n')
    return "".join(lines)


BASE = """\
    create table cvs_usr_mast (clnt_id int2 not null, site_id int2 not null, usr_id int not null,
                               usr_nm text, primary key (clnt_id, site_id, usr_id));
    create table cvs_run_log (clnt_id int2 not null, version text not null);
    insert into cvs_run_log values (1, '1.0.0');
"""


def slow_migration(version: str, table: str, sleep: float) -> str:
    return (f"create table {table} (clnt_id int2 not null);\n"
            f"insert into cvs_run_log values (1, '{version}');\n"
            f"select pg_sleep({sleep});\n")


def start(ws: Workspace, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(ws.subprocess_cmd(*args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, json.loads(out) if out.strip() else {}, err


def wait_for(predicate, timeout: float = 30.0, every: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def tenantctl_backends(ws: Workspace) -> list[asyncpg.Record]:
    return ws.fetch(None, "SELECT pid, datname, state, wait_event_type, query FROM pg_stat_activity "
                    "WHERE application_name = 'tenantctl' AND datname LIKE $1", ws.prefix + "%")


def assert_history_matches_objects(ws: Workspace, ids: range, versions: dict[str, str]) -> None:
    """For every tenant: a version is in history iff its table exists and ran once."""
    existing = ws.databases()
    for i in ids:
        if ws.db(i) not in existing:
            continue
        tables = ws.tables(i)
        if "tenantctl_schema_history" not in tables:
            assert not (tables - {"tenantctl_schema_history"}), f"tenant {i}: objects without history"
            continue
        applied = set(ws.versions(i))
        for version, table in versions.items():
            assert (version in applied) == (table in tables), (i, version, applied, tables)
        if "cvs_run_log" in tables:
            log = [r["version"] for r in ws.fetch(ws.db(i), "SELECT version FROM cvs_run_log")]
            assert sorted(log) == sorted(applied), (i, log, applied)


def test_two_overlapping_runs_apply_each_migration_once(ws: Workspace) -> None:
    ws.write_config(tenants(6))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_a.sql", slow_migration("1.0.1", "cvs_a", 0.2))
    ws.add_migration("v1.0.2_b.sql", slow_migration("1.0.2", "cvs_b", 0.2))
    first = start(ws, "--json", "migrate", "--all", "--concurrency", "3")
    second = start(ws, "--json", "migrate", "--all", "--concurrency", "3")
    (c1, d1, _), (c2, d2, _) = finish(first), finish(second)
    assert (c1, c2) == (0, 0)
    for i in range(1, 7):
        assert ws.versions(i) == ["1.0.0", "1.0.1", "1.0.2"]
        log = [r["version"] for r in ws.fetch(ws.db(i), "SELECT version FROM cvs_run_log")]
        assert sorted(log) == ["1.0.0", "1.0.1", "1.0.2"], "a migration ran twice"
    statuses = {t["status"] for d in (d1, d2) for t in d["tenants"]}
    assert statuses <= {"applied", "up_to_date"}
    applied_by = [t["clnt_id"] for d in (d1, d2) for t in d["tenants"] if t["status"] == "applied"]
    assert sorted(applied_by) == list(range(1, 7)), "each tenant applied by exactly one run"


def test_kill_9_mid_run_leaves_consistent_tenants_and_rerun_heals(ws: Workspace) -> None:
    n = 8
    ws.write_config(tenants(n))
    ws.add_migration("v1.0.0_base.sql", BASE)
    versions = {"1.0.1": "cvs_a", "1.0.2": "cvs_b", "1.0.3": "cvs_c"}
    for v, table in versions.items():
        ws.add_migration(f"v{v}_{table}.sql", slow_migration(v, table, 0.15))
    proc = start(ws, "provision", "--all", "--concurrency", "3", "--no-template")
    # wait until some tenant is mid-way, then kill -9
    wait_for(lambda: len(ws.databases()) >= 3 and any(
        "pg_sleep" in (b["query"] or "") for b in tenantctl_backends(ws)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # orphaned backends notice the dead client and roll back; wait for them to go
    wait_for(lambda: not tenantctl_backends(ws), timeout=30)
    assert_history_matches_objects(ws, range(1, n + 1), versions)
    partial = [i for i in range(1, n + 1) if ws.db(i) not in ws.databases()
               or "tenantctl_schema_history" not in ws.tables(i) or len(ws.versions(i)) < 4]
    assert partial, "the kill came too late to test anything"
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 0, result.stderr
    for i in range(1, n + 1):
        assert ws.versions(i) == ["1.0.0", "1.0.1", "1.0.2", "1.0.3"]
    assert_history_matches_objects(ws, range(1, n + 1), versions)
    # the killed run is in the ledger as never finished; --only-failed finds nothing left
    runs = ws.fetch(ws.control_db, "SELECT status FROM tenantctl_runs ORDER BY started_on")
    assert [r["status"] for r in runs] == ["running", "ok"]


def test_sigterm_stops_scheduling_and_exits_130(ws: Workspace) -> None:
    n = 10
    ws.write_config(tenants(n))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_a.sql", slow_migration("1.0.1", "cvs_a", 0.4))
    report = ws.dir / "report.json"
    proc = start(ws, "--json", "migrate", "--all", "--concurrency", "1", "--report", str(report))
    wait_for(lambda: any("pg_sleep" in (b["query"] or "") for b in tenantctl_backends(ws)))
    proc.send_signal(signal.SIGTERM)
    code, doc, _ = finish(proc)
    assert code == 130
    assert doc["interrupted"] is True and json.loads(report.read_text()) == doc
    statuses = [t["status"] for t in doc["tenants"]]
    assert "failed" not in statuses
    assert statuses.count("applied") >= 1 and statuses.count("skipped") >= 1
    for t in doc["tenants"]:
        assert ws.versions(t["clnt_id"]) == (["1.0.0", "1.0.1"] if t["status"] == "applied" else ["1.0.0"])
    # the run can be resumed: only the skipped tenants are selected
    again = ws.cli("--json", "migrate", "--only-failed")
    assert again.exit_code == 0, again.stderr
    assert sorted(t["clnt_id"] for t in again.json()["tenants"]) == sorted(
        t["clnt_id"] for t in doc["tenants"] if t["status"] == "skipped")
    assert all(ws.versions(i) == ["1.0.0", "1.0.1"] for i in range(1, n + 1))


def test_lock_timeout_keeps_application_queries_flowing(ws: Workspace) -> None:
    """A long application transaction holds a lock; the migration's ALTER queues
    behind it and would block every new query on the table. lock_timeout makes it
    give up; a third session's SELECT waits at most about lock_timeout."""
    ws.write_config(tenants(1))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "1").exit_code == 0
    ws.add_migration("v1.0.1_alter.sql", "alter table cvs_usr_mast add column usr_email text;")

    async def scenario() -> tuple[float, int, dict]:
        holder = await asyncpg.connect(ws.dsn, database=ws.db(1))
        reader = await asyncpg.connect(ws.dsn, database=ws.db(1))
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.fetch("SELECT * FROM cvs_usr_mast")  # AccessShareLock until commit
            proc = await asyncio.create_subprocess_exec(
                *ws.subprocess_cmd("--json", "migrate", "1", "--lock-timeout", "1s",
                                   "--retries", "1"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            # wait until the ALTER is queued on the lock (ask from outside the
            # holder's transaction: pg_stat_activity is a per-transaction snapshot)
            for _ in range(400):
                waiting = await reader.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tenantctl' "
                    "AND wait_event_type = 'Lock'")
                if waiting:
                    break
                await asyncio.sleep(0.025)
            assert waiting, "the migration never queued behind the application's lock"
            t0 = time.monotonic()
            await reader.fetchval("SELECT count(*) FROM cvs_usr_mast")
            blocked = time.monotonic() - t0
            out, err = await proc.communicate()
            assert b"Traceback" not in err
            await tx.rollback()
            return blocked, proc.returncode or 0, json.loads(out)
        finally:
            await holder.close()
            await reader.close()

    blocked, code, doc = asyncio.run(scenario())
    assert blocked < 1.0 + 0.5, f"an application SELECT was blocked {blocked:.2f}s"
    (t,) = doc["tenants"]
    assert code == 1 and t["status"] == "failed"
    assert t["error"]["sqlstate"] == "55P03" and t["attempts"] == 2
    assert t["error"]["migration"] == "v1.0.1_alter.sql"
    assert ws.versions(1) == ["1.0.0"]
    # the application transaction is gone: the next run applies it
    assert ws.cli("migrate", "1").exit_code == 0
    assert ws.versions(1) == ["1.0.0", "1.0.1"]


def test_terminated_backend_is_retried_to_success(ws: Workspace) -> None:
    ws.write_config(tenants(2))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_slow.sql", slow_migration("1.0.1", "cvs_a", 1.0))
    proc = start(ws, "--json", "migrate", "--all")
    victims = wait_for(lambda: [b for b in tenantctl_backends(ws) if "pg_sleep" in (b["query"] or "")])
    victim = victims[0]
    ws.fetch(None, "SELECT pg_terminate_backend($1)", victim["pid"])
    code, doc, err = finish(proc)
    assert code == 0, err
    by_db = {t["database"]: t for t in doc["tenants"]}
    assert by_db[victim["datname"]]["status"] == "applied"
    assert by_db[victim["datname"]]["attempts"] == 2
    for i in (1, 2):
        assert ws.versions(i) == ["1.0.0", "1.0.1"]
        log = [r["version"] for r in ws.fetch(ws.db(i), "SELECT version FROM cvs_run_log")]
        assert sorted(log) == ["1.0.0", "1.0.1"]
    attempts = ws.fetch(ws.control_db, "SELECT max(attempts) AS a FROM tenantctl_run_tenants t "
                        "JOIN tenantctl_runs r USING (run_id) WHERE r.command = 'migrate'")
    assert attempts[0]["a"] == 2


def test_failed_canary_stops_later_waves(ws: Workspace) -> None:
    ws.write_config(tenants(4, first_wave="canary"))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.fetch(ws.db(1), "INSERT INTO cvs_usr_mast VALUES (1, 1, 1, NULL)")
    ws.add_migration("v1.0.1_not_null.sql", "alter table cvs_usr_mast alter column usr_nm set not null;")
    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 1
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert by_id[1]["status"] == "failed" and by_id[1]["error"]["sqlstate"] == "23502"
    for i in (2, 3, 4):
        assert by_id[i]["status"] == "skipped" and "canary" in by_id[i]["reason"]
        assert ws.versions(i) == ["1.0.0"]


def test_max_failures_and_fail_fast(ws: Workspace) -> None:
    ws.write_config(tenants(6))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_broken.sql", "select 1 / 0;")
    result = ws.cli("--json", "migrate", "--all", "--concurrency", "1", "--max-failures", "2")
    assert result.exit_code == 1
    statuses = [t["status"] for t in result.json()["tenants"]]
    assert statuses.count("failed") == 2 and statuses.count("skipped") == 4
    assert {t["error"]["sqlstate"] for t in result.json()["tenants"] if t.get("error")} == {"22012"}
    fast = ws.cli("--json", "migrate", "--all", "--concurrency", "1", "--fail-fast")
    statuses = [t["status"] for t in fast.json()["tenants"]]
    assert statuses.count("failed") == 1 and statuses.count("skipped") == 5


def test_failed_create_index_concurrently_resumes_without_blind_rerun(ws: Workspace) -> None:
    ws.write_config(tenants(1))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "1").exit_code == 0
    ws.fetch(ws.db(1), "INSERT INTO cvs_usr_mast VALUES (1, 1, 1, 'dup'), (1, 1, 2, 'dup')")
    ws.add_migration("v1.0.1_indexes.sql", """\
        -- tenantctl: no-transaction
        create index concurrently cvs_usr_mast_nm_ix on cvs_usr_mast (clnt_id, site_id, usr_nm);
        create unique index concurrently cvs_usr_mast_nm_uk on cvs_usr_mast (clnt_id, site_id, usr_nm);
    """)
    result = ws.cli("--json", "migrate", "1")
    assert result.exit_code == 1
    (t,) = result.json()["tenants"]
    assert t["error"]["sqlstate"] == "23505" and t["error"]["migration"] == "v1.0.1_indexes.sql"
    (row,) = [r for r in ws.history(1) if r["version"] == "1.0.1"]
    assert (row["success"], row["statements_done"]) == (False, 1)  # partial: first statement done
    valid = lambda: {r["relname"]: r["indisvalid"] for r in ws.fetch(ws.db(1), (  # noqa: E731
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname LIKE 'cvs_usr_mast_nm_%'"))}
    assert valid() == {"cvs_usr_mast_nm_ix": True, "cvs_usr_mast_nm_uk": False}
    status = ws.cli("--json", "status").json()["tenants"][0]
    assert status["partial"] == ["1.0.1"] and status["pending"] == 1

    ws.fetch(ws.db(1), "UPDATE cvs_usr_mast SET usr_nm = 'other' WHERE usr_id = 2")
    again = ws.cli("--json", "migrate", "1")
    # statement 1 has no IF NOT EXISTS: re-running it would fail with 42P07
    assert again.exit_code == 0, again.stdout
    assert valid() == {"cvs_usr_mast_nm_ix": True, "cvs_usr_mast_nm_uk": True}
    rows = [r for r in ws.history(1) if r["version"] == "1.0.1"]
    assert [(r["success"], r["statements_done"]) for r in rows] == [(True, 2)]
