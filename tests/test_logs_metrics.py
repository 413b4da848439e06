"""--log-format (structured logs on stderr) and --metrics-file (Prometheus text), on
real PostgreSQL; the metrics file is read with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Workspace
from tenantctl import metrics

THREE = """\
  - { clnt_id: 1, name: "Acme", sites: [1] }
  - { clnt_id: 2, name: "Beta", sites: [1] }
  - { clnt_id: 3, name: "Gamma", sites: [1] }
"""
INIT = "create table cvs_usr_mast (clnt_id int2 not null, usr_id int not null);\n"
FAILS_IN_2 = """\
do $$ begin
  if current_database() like '%\\_client\\_2' then
    raise exception 'tenant 2 cannot take this';
  end if;
end $$;
create table cvs_more (clnt_id int2 not null);
"""
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines, "nothing logged"
    out = [json.loads(line) for line in lines]  # every line is one JSON object
    for record in out:
        assert datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).utcoffset() is not None
        assert record["ts"].endswith("Z")
        assert {"ts", "level", "event", "run_id", "message"} <= record.keys()
    return out


def test_json_log_of_a_three_tenant_run_with_one_failure(ws: Workspace) -> None:
    ws.write_config(THREE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_more.sql", FAILS_IN_2)
    result = ws.cli("--log-format", "json", "--json", "migrate", "--all")
    assert result.exit_code == 1
    report = result.json()  # stdout is the report alone
    records = json_lines(result.stderr)
    events = [r["event"] for r in records]
    assert events[0] == "run_start" and events[-1] == "run_end"
    assert events.count("tenant_start") == 3 and events.count("tenant_result") == 3
    run_records = [r for r in records if r["event"] not in ("warning", "error")]
    assert {r["run_id"] for r in run_records} == {report["run_id"]}
    results = {r["clnt_id"]: r for r in records if r["event"] == "tenant_result"}
    assert results[2]["level"] == "error" and results[2]["status"] == "failed"
    assert "tenant 2 cannot take this" in results[2]["error"]["message"]
    assert results[2]["error"]["migration"] == "v1.0.1_more.sql"
    for ok in (1, 3):
        assert results[ok]["level"] == "info" and results[ok]["version"] == "1.0.1"
        assert results[ok]["database"] == ws.db(ok) and results[ok]["server"] == "default"
        assert isinstance(results[ok]["duration_ms"], int)
    starts = [r for r in records if r["event"] == "tenant_start"]
    assert {r["clnt_id"] for r in starts} == {1, 2, 3}
    end = records[-1]
    assert end["exit_code"] == 1 and end["error"]["kind"] == "tenants_failed"
    assert end["summary"]["failed"] == 1 and end["summary"]["applied"] == 2
    assert isinstance(end["duration_ms"], int)


def test_text_lines_off_a_terminal_each_carry_an_utc_timestamp(ws: Workspace) -> None:
    ws.write_config(THREE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_more.sql", FAILS_IN_2)
    (ws.migrations / "README.md").write_text("notes")  # a warning line too
    result = ws.cli("migrate", "--all")
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) >= 5  # run start, warning, three tenants, run end
    for line in lines:
        assert STAMP.match(line), line
    assert any("README.md" in line and " warning " in line for line in lines)
    assert any("FAILED" in line and "tenant 2 cannot take this" in line for line in lines)
    assert "migrate run" in result.stdout  # the summary stays on stdout
    # a fatal error is a timestamped line too
    bad = ws.cli("migrate", "--all", "--to", "7.7")
    assert bad.exit_code == 2 and all(STAMP.match(line) for line in bad.stderr.splitlines())
    # --quiet: no per-tenant lines, warnings stay
    quiet = ws.cli("--quiet", "migrate", "--all")
    assert "clnt_id" not in quiet.stderr and "README.md" in quiet.stderr


async def _hold_table_lock(ws: Workspace, run: Any) -> Any:
    conn = await asyncpg.connect(ws.dsn, database=ws.db(1))
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE cvs_usr_mast IN ACCESS EXCLUSIVE MODE")
            return await asyncio.to_thread(run)
    finally:
        await conn.close()


def test_retries_are_logged_with_the_error_that_caused_them(ws: Workspace) -> None:
    ws.write_config(THREE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    assert ws.cli("provision", "1").exit_code == 0
    ws.add_migration("v1.0.1_alter.sql", "alter table cvs_usr_mast add column usr_nm text;\n")
    result = asyncio.run(_hold_table_lock(ws, lambda: ws.cli(
        "--log-format", "json", "migrate", "1", "--lock-timeout", "100ms", "--retries", "1")))
    assert result.exit_code == 1
    records = json_lines(result.stderr)
    (retry,) = [r for r in records if r["event"] == "retry"]
    assert retry["level"] == "warning" and retry["clnt_id"] == 1 and retry["attempt"] == 1
    assert retry["error"]["sqlstate"] == "55P03"
    (failed,) = [r for r in records if r["event"] == "tenant_result"]
    assert failed["attempts"] == 2 and failed["error"]["sqlstate"] == "55P03"


def families(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric name -> {sorted labels: value}, as prometheus_client reads the file."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_file_is_prometheus_text_and_keeps_the_last_success(ws: Workspace,
                                                                     tmp_path: Path) -> None:
    ws.write_config(THREE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    prom = tmp_path / "textfile" / "tenantctl.prom"
    prom.parent.mkdir()
    assert ws.cli("provision", "--all", "--metrics-file", str(prom)).exit_code == 0
    first = families(prom)
    provision = (("command", "provision"),)
    assert first["tenantctl_run_tenants"][(("command", "provision"), ("status", "applied"))] == 3
    assert first["tenantctl_run_tenants"][(("command", "provision"), ("status", "failed"))] == 0
    assert first["tenantctl_run_exit_code"][provision] == 0
    assert first["tenantctl_tenants_pending_migrations"][()] == 0
    assert first["tenantctl_run_duration_seconds"][provision] >= 0
    # a migrate that succeeds, then one that fails: its last success stays where it was
    ws.add_migration("v1.0.1_ok.sql", "create table cvs_ok (clnt_id int2 not null);\n")
    assert ws.cli("migrate", "--all", "--metrics-file", str(prom)).exit_code == 0
    migrate = (("command", "migrate"),)
    success = families(prom)["tenantctl_run_last_success_timestamp_seconds"][migrate]
    ws.add_migration("v1.0.2_more.sql", FAILS_IN_2)
    assert ws.cli("migrate", "--all", "--metrics-file", str(prom)).exit_code == 1
    after = families(prom)
    assert after["tenantctl_run_last_success_timestamp_seconds"][migrate] == success
    assert after["tenantctl_run_last_timestamp_seconds"][migrate] >= success
    assert after["tenantctl_run_exit_code"][migrate] == 1
    assert after["tenantctl_run_tenants"][(("command", "migrate"), ("status", "failed"))] == 1
    assert after["tenantctl_tenants_pending_migrations"][()] == 1
    # the provision series are carried over untouched
    assert after["tenantctl_run_last_success_timestamp_seconds"][provision] == \
        first["tenantctl_run_last_success_timestamp_seconds"][provision]
    # a run that cannot reach its control database is written too, last success kept
    dead = ws.cli("--dsn", "postgresql://postgres@127.0.0.1:1/x", "migrate", "--all",
                  "--metrics-file", str(prom))
    assert dead.exit_code == 1
    final = families(prom)
    assert final["tenantctl_run_exit_code"][migrate] == 1
    assert final["tenantctl_run_last_success_timestamp_seconds"][migrate] == success
    # a dry run leaves the file alone (it changed nothing)
    before = prom.read_text()
    assert ws.cli("migrate", "--all", "--dry-run", "--metrics-file", str(prom)).exit_code in (0, 1)
    assert prom.read_text() == before
    # only the file itself is left in the directory (the temporary one was renamed)
    assert [p.name for p in prom.parent.iterdir()] == ["tenantctl.prom"]


def test_metrics_file_in_a_missing_directory_is_bad_input(ws: Workspace, tmp_path: Path) -> None:
    ws.write_config(THREE)
    ws.add_migration("v1.0.0_init.sql", INIT)
    result = ws.cli("provision", "--all", "--metrics-file", str(tmp_path / "nope" / "x.prom"))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert ws.databases() == set()


@pytest.mark.parametrize("value", ['plain', 'quo"te', "back\\slash", "new\nline", "é ☃"])
def test_label_values_are_escaped_and_read_back(value: str) -> None:
    run = metrics.RunMetrics(value, 0, 1700000000.5, 1.25, {"applied": 1}, 0)
    text = metrics.render(metrics.merge({}, run))
    (family,) = [f for f in text_string_to_metric_families(text)
                 if f.name == "tenantctl_run_exit_code"]
    assert family.samples[0].labels == {"command": value}
    assert metrics.parse_samples(text) == metrics.merge({}, run)
