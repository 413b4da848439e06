"""An application that is not XOS: tenant column ``tenant_id``, no sites, no ``cvs_``
names. It provisions and migrates in database mode and in shared mode, its seed
reads the tenant's values (sites empty), RLS isolates tenants on ``tenant_id``,
and check-isolation is green, then catches a missing or loose policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Workspace

INIT = """\
create table acct_profile (tenant_id int2 not null primary key, name text not null,
                           site_count int not null);
create table acct_note (tenant_id int2 not null, note_id int not null, body text not null,
                        primary key (tenant_id, note_id));
create table plan_ref (plan_cd text primary key, plan_nm text not null);
insert into plan_ref values ('free', 'Free'), ('pro', 'Pro');
"""
RELEASE = "alter table acct_note add column tag text;\n"

# The seed reads the tenant's id under the generic name and the sites ('' when none).
SEED = """\
insert into acct_profile (tenant_id, name, site_count)
values (current_setting('tenantctl.tenant_id')::int2, current_setting('tenantctl.tenant_name'),
        cardinality(string_to_array(current_setting('tenantctl.sites'), ',')::int2[]));
insert into acct_note (tenant_id, note_id, body)
values (current_setting('tenantctl.clnt_id')::int2, 1, 'welcome '
        || current_setting('tenantctl.tenant_name'));
"""


def _project(ws: Workspace, tenants: str, shared: str = "") -> None:
    (ws.dir / "seed").mkdir(exist_ok=True)
    (ws.dir / "seed" / "seed.sql").write_text(SEED)
    ws.add_migration("v1.0.0_init.sql", INIT)
    ws.write_config(tenants, extra="tenant_column: tenant_id\nseed: seed/seed.sql\n"
                    f"shared: {{ global_tables: [plan_ref]{shared} }}\n")


def test_database_mode_without_sites(ws: Workspace) -> None:
    _project(ws, '  - { clnt_id: 1, name: "Ünïcode GmbH" }\n'
                 '  - { clnt_id: 2, name: "Empty", sites: [] }\n'
                 '  - { clnt_id: 3, name: "Sited", sites: [7, 9] }\n')
    # --strict-lint: the tenancy rules find tenant_id in every table (plan_ref is global)
    result = ws.cli("--json", "provision", "--all", "--strict-lint")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert result.json()["lint"] == []
    for clnt_id, name, sites in ((1, "Ünïcode GmbH", 0), (2, "Empty", 0), (3, "Sited", 2)):
        rows = ws.fetch(ws.db(clnt_id), "SELECT p.tenant_id, p.name, p.site_count, n.body "
                        "FROM acct_profile p JOIN acct_note n USING (tenant_id)")
        assert [tuple(r) for r in rows] == [(clnt_id, name, sites, f"welcome {name}")]
    registry = ws.fetch(ws.control_db, "SELECT clnt_id, sites FROM tenantctl_tenants ORDER BY 1")
    assert [(r["clnt_id"], r["sites"]) for r in registry] == [(1, []), (2, []), (3, [7, 9])]

    ws.add_migration("v1.1.0_note_tag.sql", RELEASE)
    migrated = ws.cli("--json", "migrate", "--all", "--strict-lint")
    assert migrated.exit_code == 0, migrated.stderr
    assert {t["status"] for t in migrated.json()["tenants"]} == {"applied"}
    assert all(ws.versions(i) == ["1.0.0", "1.1.0"] for i in (1, 2, 3))
    status = ws.cli("--json", "status").json()["tenants"]
    assert {(t["clnt_id"], t["state"]) for t in status} == {(1, "up_to_date"), (2, "up_to_date"),
                                                          (3, "up_to_date")}

    # `tenantctl new` names the project's column, not XOS's
    path = ws.cli("new", "add note color").stdout.splitlines()[0]  # then its .down.sql
    text = Path(path).read_text(encoding="utf-8")
    assert "tenant_id" in text and "clnt_id" not in text


def test_xos_example_seed_names_a_tenant_without_sites(example_ws: Workspace) -> None:
    ws = example_ws
    ws.write_config('  - { clnt_id: 1, name: "Sited", sites: [1] }\n'
                    '  - { clnt_id: 2, name: "Siteless" }\n', extra="seed: seed/tenant_seed.sql\n")
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 1
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert by_id[1]["status"] == "applied"
    error = by_id[2]["error"]
    assert by_id[2]["status"] == "failed" and error["sqlstate"] == "P0001"
    assert error["message"].endswith("XOS tenant 2 has no sites") and "sites: [1]" in error["hint"]
    assert not ws.fetch(ws.db(2), "SELECT * FROM cvs_usr_mast")  # the seed left nothing


@pytest.fixture
def shared_ws(ws: Workspace) -> Iterator[Workspace]:
    _project(ws, '  - { clnt_id: 1, name: "One", mode: shared }\n'
                 '  - { clnt_id: 2, name: "Two", mode: shared, sites: [] }\n'
                 '  - { clnt_id: 3, name: "Three", mode: shared, sites: [1, 2, 3] }\n'
                 '  - { clnt_id: 4, name: "Dedicated" }\n',
             shared=f", database: {ws.prefix}_pool, app_role: {ws.prefix}_web, "
                    f"owner_role: {ws.prefix}_tbl_owner")
    yield ws
    ws.fetch(None, f'DROP DATABASE IF EXISTS "{ws.prefix}_pool" WITH (FORCE)')
    for role in (f"{ws.prefix}_web", f"{ws.prefix}_tbl_owner"):
        if ws.fetch(None, "SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            ws.fetch(None, f'DROP OWNED BY "{role}"')
            ws.fetch(None, f'DROP ROLE "{role}"')


def _policies(ws: Workspace) -> dict[str, str]:
    rows = ws.fetch(f"{ws.prefix}_pool", "SELECT polrelid::regclass::text AS t, "
                    "pg_get_expr(polqual, polrelid) AS q FROM pg_policy ORDER BY 1")
    return {r["t"]: r["q"] for r in rows}


def _errors(result_json: dict[str, object]) -> set[tuple[str, str | None]]:
    findings = result_json["findings"]
    assert isinstance(findings, list)
    return {(f["check"], f["table"]) for f in findings if f["severity"] == "error"}


def test_shared_mode_isolates_on_tenant_id(shared_ws: Workspace) -> None:
    ws = shared_ws
    pool = f"{ws.prefix}_pool"
    result = ws.cli("--json", "provision", "--all", "--strict-lint")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert {t["database"] for t in result.json()["tenants"] if t["clnt_id"] != 4} == {pool}
    notes = ws.fetch(pool, "SELECT tenant_id, body FROM acct_note ORDER BY 1")
    assert [tuple(r) for r in notes] == [(1, "welcome One"), (2, "welcome Two"), (3, "welcome Three")]
    assert [tuple(r) for r in ws.fetch(pool, "SELECT clnt_id, sites FROM tenantctl_shared_tenants "
                                       "ORDER BY 1")] == [(1, []), (2, []), (3, [1, 2, 3])]
    # the policy compares tenant_id; the tables without it got none
    policies = _policies(ws)
    assert set(policies) == {"acct_note", "acct_profile"}
    assert all(q.startswith("(tenant_id = ( SELECT") and "app.current_tenant" in q for q in policies.values())
    forced = ws.fetch(pool, "SELECT relname, relrowsecurity AND relforcerowsecurity AS f FROM pg_class "
                      "WHERE relname IN ('acct_note', 'acct_profile', 'plan_ref') ORDER BY 1")
    assert [tuple(r) for r in forced] == [("acct_note", True), ("acct_profile", True), ("plan_ref", False)]

    ok = ws.cli("--json", "check-isolation")
    assert ok.exit_code == 0, ok.stdout
    assert ok.json()["isolated"] is True
    checks = {f["check"] for f in ok.json()["findings"]}
    assert "probe-skipped" not in checks and "probe-error" not in checks  # the live probe ran

    # a release on the shared database: migrated, still isolated, nothing re-written
    ws.add_migration("v1.1.0_note_tag.sql", RELEASE)
    migrated = ws.cli("--json", "migrate", "--all", "--strict-lint")
    assert migrated.exit_code == 0, migrated.stderr
    assert ws.fetch(pool, "SELECT count(*) AS n FROM information_schema.columns "
                    "WHERE table_name = 'acct_note' AND column_name = 'tag'")[0]["n"] == 1
    assert ws.cli("check-isolation").exit_code == 0

    # a deliberately missing policy is caught, and the next run puts it back
    ws.fetch(pool, "DROP POLICY tenantctl_tenant ON acct_note")
    missing = ws.cli("--json", "check-isolation")
    assert missing.exit_code == 1
    assert ("policy-missing", "public.acct_note") in _errors(missing.json())
    assert "acct_note" in ws.cli("check-isolation").stdout
    assert ws.cli("migrate", "--all").exit_code == 0
    assert ws.cli("check-isolation").exit_code == 0

    # a permissive policy that ignores tenant_id (it names another column) opens the table:
    # the catalog audit says so, and the live probe reads other tenants' rows through it
    ws.fetch(pool, "CREATE POLICY by_note ON acct_note FOR SELECT TO PUBLIC USING (note_id > 0)")
    loose = ws.cli("--json", "check-isolation")
    assert loose.exit_code == 1
    assert {("policy-not-tenant-bound", "public.acct_note"),
            ("probe-cross-tenant-read", "public.acct_note")} <= _errors(loose.json())
    ws.fetch(pool, "DROP POLICY by_note ON acct_note")

    # a table carrying the XOS column is no tenant table here: not protected, reported
    ws.add_migration("v1.2.0_legacy.sql",
                     "-- tenantctl: allow tenant-table-needs-clnt-id\n"
                     "create table legacy_log (clnt_id int2 not null, msg text);\n")
    run = ws.cli("--json", "--quiet", "migrate", "--all")
    assert run.exit_code == 0, run.stderr
    warnings = [w for t in run.json()["tenants"] for w in t.get("warnings", ())]
    assert any("legacy_log has no tenant_id" in w for w in warnings), warnings
    assert "legacy_log" not in _policies(ws)

    # switching the column on a live database: the old tenant tables lose that status,
    # check-isolation says the app role can still reach them; the XOS-style table is now protected
    text = ws.config.read_text()
    ws.config.write_text(text.replace("tenant_column: tenant_id", "tenant_column: clnt_id"))
    switched = ws.cli("--json", "--quiet", "migrate", "--all")
    assert switched.exit_code == 0, switched.stderr
    assert _policies(ws)["legacy_log"].startswith("(clnt_id = ( SELECT")
    after = ws.cli("--json", "check-isolation")
    assert after.exit_code == 1
    assert {("unprotected-table", "public.acct_note"),
            ("unprotected-table", "public.acct_profile")} <= _errors(after.json())
    assert not {c for c, t in _errors(after.json()) if t == "public.legacy_log"}


def test_non_integer_tenant_column_is_named_not_a_42883(shared_ws: Workspace) -> None:
    ws = shared_ws
    ws.add_migration("v1.0.1_docs.sql", "create table acct_doc (tenant_id text not null, doc text,\n"
                     "                       primary key (tenant_id, doc));\n")
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 1
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert by_id[4]["status"] == "applied"  # the dedicated tenant has no policy to enforce
    for i in (1, 2, 3):
        error = by_id[i]["error"]
        assert by_id[i]["status"] == "failed"
        assert "tenant column tenant_id is not an integer in public.acct_doc (text)" in error["message"]
        assert "smallint" in error["hint"]
    assert _policies(ws) == {}  # enforcement is one transaction: nothing half-done


def test_shared_deprovision_deletes_by_tenant_id(shared_ws: Workspace) -> None:
    """Offboarding a shared tenant deletes its rows by tenant_id; a table that merely has a
    column named clnt_id (no tenant column here) is left alone."""
    ws = shared_ws
    pool = f"{ws.prefix}_pool"
    ws.add_migration("v1.0.1_legacy.sql", "-- tenantctl: allow tenant-table-needs-clnt-id\n"
                     "create table legacy_log (clnt_id int2 not null, msg text);\n"
                     "insert into legacy_log values (2, 'not a tenant row under tenant_id');\n")
    assert ws.cli("provision", "--all").exit_code == 0
    config = ws.config.read_text()
    ws.config.write_text("".join(line for line in config.splitlines(keepends=True)
                                 if '"Two"' not in line))
    result = ws.cli("--json", "deprovision", "2", "--no-archive", "--yes")
    assert result.exit_code == 0, result.stderr + result.stdout
    (row,) = result.json()["tenants"]
    assert row["status"] == "deprovisioned"
    assert row["deleted"] == {"public.acct_note": 1, "public.acct_profile": 1}
    assert [r["tenant_id"] for r in ws.fetch(pool, "SELECT tenant_id FROM acct_note ORDER BY 1")] == [1, 3]
    assert [r["clnt_id"] for r in ws.fetch(pool, "SELECT clnt_id FROM legacy_log")] == [2]
