"""The ledger's group-committed tenant rows: every outcome is in the ledger when
the run ends, and a ledger that stops taking rows stops the run (caused for
real: a migration kills the control database's session)."""

from __future__ import annotations

from conftest import Workspace

TENANTS = "".join(f"  - {{ clnt_id: {i}, name: T{i}, sites: [1] }}\n" for i in range(1, 7))


def setup(ws: Workspace, concurrency: int) -> None:
    ws.write_config(TENANTS, extra=f"settings: {{concurrency: {concurrency}}}\n")
    ws.add_migration("v1.0.0_base.sql", "CREATE TABLE cvs_usr_mast (clnt_id int2, usr_id int);")
    assert ws.cli("provision", "--all").exit_code == 0


def test_every_outcome_is_in_the_ledger_when_the_run_ends(ws: Workspace) -> None:
    setup(ws, concurrency=3)
    ws.add_migration("v1.0.1_more.sql", "ALTER TABLE cvs_usr_mast ADD COLUMN note text;")
    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 0, result.stderr
    run_id = result.json()["run_id"]
    rows = ws.fetch(ws.control_db, "SELECT clnt_id, status, applied FROM tenantctl_run_tenants "
                    "WHERE run_id = $1 ORDER BY clnt_id", run_id)
    assert [(r["clnt_id"], r["status"], r["applied"]) for r in rows] == [
        (i, "applied", ["1.0.1"]) for i in range(1, 7)]


def test_a_ledger_that_stops_taking_rows_stops_the_run(ws: Workspace) -> None:
    """The first tenant's migration kills the control database's session: its row
    cannot be written. The run starts no later tenant (it waits for each row),
    skips the rest, reports the recording failure and exits 1."""
    setup(ws, concurrency=1)
    ws.add_migration("v1.0.1_cut_the_ledger.sql", f"""
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = '{ws.control_db}' AND pid <> pg_backend_pid();
        """)
    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 1
    doc = result.json()
    assert doc["recording_error"].startswith("recording results failed")
    by_status: dict[str, list[int]] = {}
    for tenant in doc["tenants"]:
        by_status.setdefault(tenant["status"], []).append(tenant["clnt_id"])
    assert by_status["applied"] == [1]
    assert by_status["skipped"] == [i for i in range(1, 7) if i not in by_status["applied"]]
    for clnt_id in by_status["skipped"]:
        assert ws.versions(clnt_id) == ["1.0.0"]  # never started
