"""Every changing command's --dry-run against the real run that follows it (issue 13, item 4).

A dry run reads each tenant's history and plans with the real run's planner;
the real run right after it must then do exactly what the dry run said.
"""

from __future__ import annotations

from typing import Any

from conftest import Workspace

TWO = '  - { clnt_id: 1, name: "A", sites: [1, 2] }\n  - { clnt_id: 2, name: "B", sites: [1] }\n'
SEED = "seed: seed/tenant_seed.sql\n"


def outcome(doc: dict[str, Any], *, cloned: bool = False) -> list[tuple[Any, ...]]:
    """What a report says happened to each tenant (timings and attempts left out).

    ``cloned``: a database cloned from the template is reported by the real run as
    coming *from* the template's version with nothing applied; the dry run, which
    builds no template, says it would be created and brought to that version.
    """
    return [(t["clnt_id"], t["status"], None if cloned else t["from_version"], t["to_version"],
             None if cloned else t["applied"], t.get("reverted", []),
             t.get("created", False), t.get("seeded", False), t.get("error", {}).get("kind"))
            for t in doc["tenants"]]


def dry_then_real(ws: Workspace, *args: str, cloned: bool = False) -> tuple[Any, Any]:
    """The dry run (nothing may change), then the real run; their reports."""
    before = {db: ws.fetch(db, "SELECT count(*) AS n FROM tenantctl_schema_history")[0]["n"]
              for db in ws.databases() if "_client_" in db}
    databases = ws.databases() - {ws.control_db}  # the ledger records dry runs too
    dry = ws.cli("--json", *args, "--dry-run")
    assert ws.databases() - {ws.control_db} == databases, "a dry run created or dropped a database"
    assert before == {db: ws.fetch(db, "SELECT count(*) AS n FROM tenantctl_schema_history")[0]["n"]
                      for db in before}, "a dry run wrote history"
    real = ws.cli("--json", *args)
    assert dry.exit_code == real.exit_code, (dry.stderr, real.stderr)
    assert dry.json()["dry_run"] is True and real.json()["dry_run"] is False
    assert outcome(dry.json(), cloned=cloned) == outcome(real.json(), cloned=cloned)
    return dry, real


def test_provision_dry_run_of_missing_databases_says_would_create(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config(TWO, extra=SEED)
    text = ws.cli("provision", "--all", "--dry-run", "--no-template")
    assert text.exit_code == 0, text.stderr
    assert "would create database" in text.stderr and "would seed" in text.stderr
    assert "3D000" not in text.stderr + text.stdout
    assert ws.databases() - {ws.control_db} == set()
    dry, real = dry_then_real(ws, "provision", "--all", "--no-template")
    assert real.exit_code == 0
    assert [t["created"] for t in real.json()["tenants"]] == [True, True]
    assert dry.json()["tenants"][0]["applied"] == ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.2.0"]
    # a third tenant, cloned from the template this time: the same words, the same end state
    ws.write_config(TWO + '  - { clnt_id: 3, name: "C", sites: [1] }\n', extra=SEED)
    _, real = dry_then_real(ws, "provision", "--all", cloned=True)
    assert [t["status"] for t in real.json()["tenants"]] == ["up_to_date", "up_to_date", "applied"]
    assert ws.versions(3)[-1] == "1.2.0"


def test_migrate_dry_run_matches_the_run_including_a_drift_refusal(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config(TWO, extra=SEED)
    assert ws.cli("provision", "--all").exit_code == 0
    assert ws.cli("rollback", "1", "--to", "1.0.1").exit_code == 0
    text = ws.cli("migrate", "--all", "--dry-run")
    assert "would apply 1.0.2, 1.1.0, 1.2.0" in text.stderr
    _, real = dry_then_real(ws, "migrate", "--all")
    assert [t["applied"] for t in real.json()["tenants"]] == [["1.0.2", "1.1.0", "1.2.0"], []]
    # an edited applied file: the real run refuses that tenant (drift), so must the dry run
    path = ws.migrations / "v1.0.1_create_grp_and_usr_grp_tables.sql"
    path.write_text(path.read_text() + "\n-- edited after release\n")
    ws.fetch(None, f"ALTER DATABASE {ws.db(1)} RESET tenantctl.schema")
    _, real = dry_then_real(ws, "migrate", "1", "--no-skip")
    assert real.exit_code == 1 and real.json()["tenants"][0]["error"]["kind"] == "drift"


def test_rollback_dry_run_lists_what_would_be_reverted(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config(TWO, extra=SEED)
    assert ws.cli("provision", "--all").exit_code == 0
    text = ws.cli("rollback", "--all", "--to", "1.0.2", "--dry-run")
    assert text.exit_code == 0, text.stderr
    assert "would revert 1.2.0, 1.1.0" in text.stderr
    assert "up to date" not in text.stderr
    assert "2 tenant(s): 2 to revert" in text.stdout and "dry run: nothing changed" in text.stdout
    _, real = dry_then_real(ws, "rollback", "--all", "--to", "1.0.2", "--yes")
    assert [t["reverted"] for t in real.json()["tenants"]] == [["1.2.0", "1.1.0"]] * 2
    assert "cvs_ordr_hdr" not in ws.tables(1)
    # nothing left to revert: both say so
    _, real = dry_then_real(ws, "rollback", "--all", "--to", "1.0.2", "--yes")
    assert [t["status"] for t in real.json()["tenants"]] == ["up_to_date"] * 2


def test_rollback_to_0_dry_run_then_real_run_back_to_empty(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config(TWO, extra=SEED)
    assert ws.cli("provision", "--all").exit_code == 0
    _, real = dry_then_real(ws, "rollback", "1", "--to", "0")
    (tenant,) = real.json()["tenants"]
    assert (tenant["from_version"], tenant["to_version"]) == ("1.2.0", None)
    assert tenant["reverted"] == ["1.2.0", "1.1.0", "1.0.2", "1.0.1", "1.0.0"]
    assert real.json()["target"] == "0"
    assert ws.tables(1) == {"tenantctl_schema_history"}
    assert ws.versions(2)[-1] == "1.2.0"  # not listed, not touched
    status = {r["clnt_id"]: r for r in ws.cli("--json", "status").json()["tenants"]}
    assert (status[1]["version"], status[1]["pending"]) == (None, 5)
    forward = ws.cli("--json", "migrate", "1")
    assert forward.exit_code == 0 and forward.json()["tenants"][0]["to_version"] == "1.2.0"


def test_rollback_to_0_refuses_naming_every_missing_down_script(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config(TWO, extra=SEED)
    assert ws.cli("provision", "--all").exit_code == 0
    (ws.migrations / "v1.0.0_create_site_and_usr_tables.down.sql").unlink()
    (ws.migrations / "v1.1.0_create_ordr_hdr_and_dtl_tables.down.sql").unlink()
    before = ws.history(1)
    result = ws.cli("rollback", "1", "--to", "0")
    assert result.exit_code == 2, result.stderr
    assert "cannot roll back to 0: 2 down script(s) missing" in result.stderr
    assert "v1.0.0_create_site_and_usr_tables.down.sql" in result.stderr
    assert "v1.1.0_create_ordr_hdr_and_dtl_tables.down.sql" in result.stderr
    assert "Traceback" not in result.stderr
    assert ws.history(1) == before
    assert ws.cli("migrate", "--all", "--to", "0").exit_code == 2  # only rollback knows 0


def test_repair_dry_run_says_what_would_be_re_recorded(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config(TWO, extra=SEED)
    assert ws.cli("provision", "--all").exit_code == 0
    path = ws.migrations / "v1.0.1_create_grp_and_usr_grp_tables.sql"
    path.write_text(path.read_text() + "\n-- a comment added after release\n")
    text = ws.cli("repair", "--all", "--dry-run")
    assert text.exit_code == 0, text.stderr
    assert "would re-record 1.0.1" in text.stderr and "would apply" not in text.stderr
    _, real = dry_then_real(ws, "repair", "--all")
    assert [t["applied"] for t in real.json()["tenants"]] == [["1.0.1"], ["1.0.1"]]
    assert [r["kind"] for r in ws.history(1)].count("repair") == 1
    again = ws.cli("repair", "--all")
    assert "re-recorded" not in again.stderr and "up to date" in again.stderr
