"""Run options on a real PostgreSQL: lint gate, drift refusal, reports, resume."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conftest import Workspace

TENANTS = '  - { clnt_id: 1, name: "A", sites: [1] }\n  - { clnt_id: 2, name: "B", sites: [1] }\n'
BASE = ("create table cvs_usr_mast (clnt_id int2 not null, site_id int2 not null, usr_id int not null,"
        " usr_nm text, primary key (clnt_id, site_id, usr_id));\n")
RISKY = "alter table cvs_usr_mast drop column usr_nm;\n"


def setup(ws: Workspace) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0


def test_lint_command_and_migrate_warnings(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("lint").exit_code == 0
    ws.add_migration("v1.0.1_drop.sql", RISKY)
    result = ws.cli("lint", "--json")
    assert result.exit_code == 1
    (finding,) = result.json()["findings"]
    assert (finding["rule"], finding["file"], finding["line"]) == ("ban-drop-column", "v1.0.1_drop.sql", 1)
    # migrate warns and goes on: the nightly job is not stopped by lint
    run = ws.cli("--json", "migrate", "--all")
    assert run.exit_code == 0
    assert "lint error: v1.0.1_drop.sql:1: [ban-drop-column]" in run.stderr
    assert [f["rule"] for f in run.json()["lint"]] == ["ban-drop-column"]


def test_strict_lint_refuses_before_anything_runs(ws: Workspace) -> None:
    setup(ws)
    ws.add_migration("v1.0.1_drop.sql", RISKY)
    result = ws.cli("migrate", "--all", "--strict-lint")
    assert result.exit_code == 2 and "strict lint" in result.stderr
    assert ws.versions(1) == ["1.0.0"]
    # accepted deliberately in the file: runs
    ws.add_migration("v1.0.1_drop.sql", "-- tenantctl: allow ban-drop-column\n" + RISKY)
    assert ws.cli("migrate", "--all", "--strict-lint").exit_code == 0
    assert ws.versions(1) == ["1.0.0", "1.0.1"]


def test_edited_applied_file_is_drift_and_refused(ws: Workspace) -> None:
    setup(ws)
    ws.add_migration("v1.0.0_base.sql", BASE + "-- edited after it ran\n")
    ws.add_migration("v1.0.1_more.sql", "alter table cvs_usr_mast add column usr_email text;")
    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 1
    for t in result.json()["tenants"]:
        assert t["status"] == "failed" and "v1.0.0_base.sql" in t["error"]["message"]
        assert "repair" in t["error"]["hint"]
    assert ws.versions(1) == ["1.0.0"]
    status = ws.cli("--json", "status").json()["tenants"]
    assert {r["state"] for r in status} == {"drift"}
    assert ws.cli("migrate", "--all", "--allow-drift").exit_code == 0
    assert ws.versions(1) == ["1.0.0", "1.0.1"]


def test_junit_report_one_case_per_tenant(ws: Workspace) -> None:
    setup(ws)
    ws.fetch(ws.db(2), "INSERT INTO cvs_usr_mast VALUES (2, 1, 1, NULL)")
    ws.add_migration("v1.0.1_nn.sql", "alter table cvs_usr_mast alter column usr_nm set not null;")
    junit = ws.dir / "junit.xml"
    assert ws.cli("migrate", "--all", "--junit", str(junit)).exit_code == 1
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases[f"clnt_id 2 ({ws.db(2)})"].find("failure").get("type") == "23502"
    assert cases[f"clnt_id 1 ({ws.db(1)})"].find("failure") is None


def test_resume_a_given_run(ws: Workspace) -> None:
    setup(ws)
    ws.fetch(ws.db(2), "INSERT INTO cvs_usr_mast VALUES (2, 1, 1, NULL)")
    ws.add_migration("v1.0.1_nn.sql", "alter table cvs_usr_mast alter column usr_nm set not null;")
    first = ws.cli("--json", "migrate", "--all")
    run_id = first.json()["run_id"]
    ws.fetch(ws.db(2), "UPDATE cvs_usr_mast SET usr_nm = 'x'")
    again = ws.cli("--json", "migrate", "--resume", run_id)
    assert again.exit_code == 0
    assert [(t["clnt_id"], t["status"]) for t in again.json()["tenants"]] == [(2, "applied")]
    bad = ws.cli("migrate", "--resume", "not-a-run")
    assert bad.exit_code == 2 and "not a run id" in bad.stderr
    unknown = ws.cli("migrate", "--resume", "00000000-0000-0000-0000-000000000000")
    assert unknown.exit_code == 2 and "no such run" in unknown.stderr


def test_migrate_reports_lint_only_for_what_was_pending(ws: Workspace) -> None:
    setup(ws)
    ws.add_migration("v1.0.1_drop.sql", RISKY)
    quiet = ws.cli("--quiet", "--json", "migrate", "--all")
    assert "lint error" not in quiet.stderr  # --quiet silences the warnings...
    assert [f["rule"] for f in quiet.json()["lint"]] == ["ban-drop-column"]  # ...not the report
    # applied everywhere: the old finding is not repeated on every later run
    again = ws.cli("--json", "migrate", "--all")
    assert again.exit_code == 0 and "lint error" not in again.stderr
    assert again.json()["lint"] == []
    assert ws.cli("lint").exit_code == 1  # `tenantctl lint` still shows everything
