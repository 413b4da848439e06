"""Shared mode end to end through the CLI: mixed registry, RLS enforced after every
run, check-isolation green, then catching NO FORCE / DISABLE, new tables protected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import Workspace


@pytest.fixture
def shared_ws(example_ws: Workspace) -> Iterator[Workspace]:
    ws = example_ws
    ws.write_config(
        '  - { clnt_id: 1, name: "Small One", sites: [1], mode: shared }\n'
        '  - { clnt_id: 2, name: "Small Two", sites: [1, 2], mode: shared }\n'
        '  - { clnt_id: 3, name: "Small Three", sites: [1], mode: shared }\n'
        '  - { clnt_id: 4, name: "Big Four", sites: [1] }\n',
        extra=f"seed: seed/tenant_seed.sql\n"
              f"shared: {{ database: {ws.prefix}_shared, app_role: {ws.prefix}_app, "
              f"owner_role: {ws.prefix}_owner }}\n",
    )
    yield ws
    ws.fetch(None, f'DROP DATABASE IF EXISTS "{ws.prefix}_shared" WITH (FORCE)')
    ws.fetch(None, f'DROP DATABASE IF EXISTS "{ws.prefix}_template" WITH (FORCE)')
    for role in (f"{ws.prefix}_app", f"{ws.prefix}_owner"):
        if ws.fetch(None, "SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            ws.fetch(None, f'DROP OWNED BY "{role}"')
            ws.fetch(None, f'DROP ROLE "{role}"')


def rls(ws: Workspace) -> dict[str, tuple[bool, bool]]:
    rows = ws.fetch(f"{ws.prefix}_shared",
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
                    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'clnt_id' "
                    "WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace "
                    "AND c.relname NOT LIKE 'tenantctl\\_%'")
    return {r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"]) for r in rows}


def test_mixed_registry_rls_and_check_isolation(shared_ws: Workspace) -> None:
    ws = shared_ws
    shared = f"{ws.prefix}_shared"
    result = ws.cli("--json", "provision", "--all")
    assert result.exit_code == 0, result.stderr
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert {by_id[i]["database"] for i in (1, 2, 3)} == {shared}
    assert by_id[4]["database"] == ws.db(4)
    assert ws.databases() >= {shared, ws.db(4)}
    assert not {ws.db(i) for i in (1, 2, 3)} & ws.databases(), "no database for shared tenants"
    # one history in the shared database, seeds per tenant, registry rows
    assert [r["version"] for r in ws.fetch(shared, "SELECT version FROM tenantctl_schema_history "
                                           "WHERE kind = 'up'")] == ["1.0.0", "1.0.1", "1.0.2", "1.1.0", "1.2.0"]
    sites = ws.fetch(shared, "SELECT clnt_id, count(*) AS n FROM cvs_site_mast GROUP BY 1 ORDER BY 1")
    assert [(r["clnt_id"], r["n"]) for r in sites] == [(1, 1), (2, 2), (3, 1)]
    assert [r["clnt_id"] for r in ws.fetch(shared, "SELECT clnt_id FROM tenantctl_shared_tenants ORDER BY 1")] == [1, 2, 3]
    # every tenant table: RLS enabled and forced
    flags = rls(ws)
    assert flags and set(flags.values()) == {(True, True)}
    status = {r["clnt_id"]: r for r in ws.cli("--json", "status").json()["tenants"]}
    assert {status[i]["version"] for i in (1, 2, 3, 4)} == {"1.2.0"}
    assert status[1]["mode"] == "shared"

    ok = ws.cli("--json", "check-isolation")
    assert ok.exit_code == 0, ok.stdout
    assert ok.json()["isolated"] is True

    # provisioning a shared tenant again is a no-op
    history = ws.fetch(shared, "SELECT * FROM tenantctl_schema_history ORDER BY 1")
    again = ws.cli("--json", "provision", "2")
    assert again.exit_code == 0 and again.json()["tenants"][0]["status"] == "up_to_date"
    assert ws.fetch(shared, "SELECT * FROM tenantctl_schema_history ORDER BY 1") == history

    # someone weakens two tables: check-isolation names both
    ws.fetch(shared, "ALTER TABLE cvs_usr_mast NO FORCE ROW LEVEL SECURITY")
    ws.fetch(shared, "ALTER TABLE cvs_ordr_dtl DISABLE ROW LEVEL SECURITY")
    bad = ws.cli("--json", "check-isolation")
    assert bad.exit_code == 1
    tables = {f["table"] for f in bad.json()["findings"] if f["severity"] == "error"}
    assert {"public.cvs_usr_mast", "public.cvs_ordr_dtl"} <= tables
    text = ws.cli("check-isolation")
    assert "cvs_usr_mast" in text.stdout and "cvs_ordr_dtl" in text.stdout and "NOT isolated" in text.stdout

    # the next run repairs it; a release adding a clnt_id table is protected without policy SQL
    ws.add_migration("v1.3.0_add_usr_note.sql",
                     "create table cvs_usr_note (clnt_id int2 not null, site_id int2 not null, "
                     "note_id int not null, note text, primary key (clnt_id, site_id, note_id));\n")
    ws.add_migration("v1.3.0_add_usr_note.down.sql", "drop table cvs_usr_note;\n")
    run = ws.cli("--json", "migrate", "--all")
    assert run.exit_code == 0, run.stderr
    assert rls(ws)["cvs_usr_note"] == (True, True)
    assert set(rls(ws).values()) == {(True, True)}
    assert ws.cli("check-isolation").exit_code == 0


def test_table_without_clnt_id_is_reported(shared_ws: Workspace) -> None:
    ws = shared_ws
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.3.0_ref.sql", "create table cvs_cntry_ref (cntry_cd text primary key);\n")
    result = ws.cli("--json", "--quiet", "migrate", "--all")
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert any("cvs_cntry_ref" in w and "global_tables" in w for w in by_id[1]["warnings"])
