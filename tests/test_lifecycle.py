"""Tenant lifecycle on a real server: adopting a database built without tenantctl
(baseline, also from Flyway's history), orphans, deprovision with an archive,
and restore from it with the rows back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Workspace, assert_refused, run
from tenantctl.pg_tools import ToolName, find_tool, libpq_target, run_tool

NOTES = "CREATE TABLE cvs_note (clnt_id int2 NOT NULL, note_id int NOT NULL, body text,\n" \
        "                       PRIMARY KEY (clnt_id, note_id));\n"
TAGS = "ALTER TABLE cvs_note ADD COLUMN tag text;\n"
LIKES = ("CREATE TABLE cvs_like (clnt_id int2 NOT NULL, note_id int NOT NULL, n int NOT NULL,\n"
         "  PRIMARY KEY (clnt_id, note_id),\n"
         "  FOREIGN KEY (clnt_id, note_id) REFERENCES cvs_note (clnt_id, note_id));\n")
SEED = "INSERT INTO cvs_note (clnt_id, note_id, body) " \
       "VALUES (current_setting('tenantctl.clnt_id')::int2, 0, 'seeded');\n"


def three_migrations(ws: Workspace) -> None:
    ws.add_migration("v1.0.0_notes.sql", NOTES)
    ws.add_migration("v1.0.1_tags.sql", TAGS)
    ws.add_migration("v1.0.2_likes.sql", LIKES)


def psql(ws: Workspace, database: str, *files: Path) -> None:
    """Build a database as a DBA would by hand: psql -f each file, no tenantctl."""
    tool = find_tool(ToolName.PSQL, at_least=0)
    url, env = libpq_target(ws.dsn, database)
    for file in files:
        run(run_tool(tool, ["--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--dbname", url, "-f",
                            str(file)], env=env, what=f"psql -f {file.name}"))


def create_by_hand(ws: Workspace, clnt_id: int, *files: str) -> None:
    ws.fetch(None, f'CREATE DATABASE "{ws.db(clnt_id)}"')
    psql(ws, ws.db(clnt_id), *(ws.migrations / f for f in files))
    ws.fetch(ws.db(clnt_id), "INSERT INTO cvs_note (clnt_id, note_id, body, tag) "
             "SELECT $1, g, 'note ' || g, 't' FROM generate_series(1, 50) g", clnt_id)


def test_baseline_adopts_a_psql_built_database_then_migrate_applies_the_rest(
        ws: Workspace) -> None:
    three_migrations(ws)
    ws.write_config("- { clnt_id: 1, name: Adopted, sites: [1] }\n")
    create_by_hand(ws, 1, "v1.0.0_notes.sql", "v1.0.1_tags.sql")
    # without baseline, tenantctl refuses a database it did not create
    refused = ws.cli("migrate", "1", "--json")
    assert refused.exit_code == 1 and "holds objects" in refused.stdout
    result = ws.cli("baseline", "1", "--version", "1.0.1", "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = result.json()["tenants"]
    assert (row["status"], row["to_version"], row["baselined"]) == (
        "baselined", "1.0.1", ["1.0.0", "1.0.1"])
    assert [(h["version"], h["kind"]) for h in ws.history(1)] == [
        ("1.0.0", "baseline"), ("1.0.1", "baseline")]
    migrate = ws.cli("migrate", "1", "--json")
    assert migrate.exit_code == 0, migrate.stdout
    assert migrate.json()["tenants"][0]["applied"] == ["1.0.2"]
    assert ws.fetch(ws.db(1), "SELECT count(*) AS n FROM cvs_note")[0]["n"] == 50
    assert ws.cli("verify").exit_code == 0
    registered = ws.fetch(ws.control_db, "SELECT server, database, version FROM tenantctl_tenants")
    assert [tuple(r) for r in registered] == [("default", ws.db(1), "1.0.2")]
    runs = ws.fetch(ws.control_db, "SELECT command, status FROM tenantctl_runs ORDER BY started_on")
    assert [tuple(r) for r in runs] == [("migrate", "failed"), ("baseline", "ok"),
                                        ("migrate", "ok")]
    # a database with tenantctl history is not baselined again
    again = ws.cli("baseline", "1", "--version", "1.0.0")
    assert again.exit_code == 2
    assert "already has tenantctl history (3 row(s), at version 1.0.2)" in again.stderr


def test_baseline_refusals_change_nothing(ws: Workspace) -> None:
    three_migrations(ws)
    ws.write_config("- { clnt_id: 1, name: A, sites: [1] }\n- { clnt_id: 2, name: B, sites: [1] }\n")
    assert_refused(ws, "baseline", "1", "--version", "1.7", says="--version 1.7: no migration "
                   "with that version in migrations/")
    assert_refused(ws, "baseline", "1", says="--version V or --from-flyway")
    assert_refused(ws, "baseline", "1", "--version", "1.0.0", "--from-flyway",
                   says="--version V or --from-flyway")
    create_by_hand(ws, 1, "v1.0.0_notes.sql", "v1.0.1_tags.sql")
    before = ws.databases()
    # one tenant cannot be adopted: neither is, and nothing is created
    result = ws.cli("baseline", "1", "2", "--version", "1.0.1")
    assert result.exit_code == 2
    assert f"clnt_id 2 ({ws.db(2)} on server default): the database does not exist" in result.stderr
    assert ws.databases() == before
    assert ws.fetch(ws.db(1), "SELECT to_regclass('tenantctl_schema_history') AS t")[0]["t"] is None
    ws.fetch(None, f'CREATE DATABASE "{ws.db(2)}"')
    empty = ws.cli("baseline", "2", "--version", "1.0.1")
    assert empty.exit_code == 2 and "holds no tables" in empty.stderr


FLYWAY_DDL = """
CREATE TABLE flyway_schema_history (
    installed_rank int PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL,
    type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum int,
    installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(),
    execution_time int NOT NULL, success boolean NOT NULL)"""


def flyway_rows(ws: Workspace, clnt_id: int, rows: list[tuple[int, str | None, str, str, bool]]) -> None:
    ws.fetch(ws.db(clnt_id), FLYWAY_DDL)
    for rank, version, kind, script, ok in rows:
        ws.fetch(ws.db(clnt_id), "INSERT INTO flyway_schema_history (installed_rank, version, "
                 "description, type, script, installed_by, execution_time, success) "
                 "VALUES ($1, $2, 'x', $3, $4, 'flyway', 5, $5)", rank, version, kind, script, ok)


def test_baseline_from_flyway_maps_its_version_to_the_folder(ws: Workspace) -> None:
    three_migrations(ws)
    ws.write_config("".join(f"- {{ clnt_id: {i}, name: F{i}, sites: [1] }}\n" for i in (1, 2, 3)))
    for clnt_id in (1, 2, 3):
        create_by_hand(ws, clnt_id, "v1.0.0_notes.sql", "v1.0.1_tags.sql")
    flyway_rows(ws, 1, [(0, None, "SCHEMA", "<< Flyway Schema Creation >>", True),
                        (1, "1.0.0", "SQL", "V1_0_0__notes.sql", True),
                        (2, "1.0.1", "SQL", "V1_0_1__tags.sql", True)])
    flyway_rows(ws, 2, [(1, "1.0.0", "SQL", "V1_0_0__notes.sql", True),
                        (2, "1.5", "SQL", "V1_5__elsewhere.sql", True)])
    flyway_rows(ws, 3, [(1, "1.0.0", "SQL", "V1_0_0__notes.sql", True),
                        (2, "1.0.1", "SQL", "V1_0_1__tags.sql", False)])
    unknown = ws.cli("baseline", "2", "--from-flyway")
    assert unknown.exit_code == 2
    assert "Flyway's version 1.5 (V1_5__elsewhere.sql) has no migration of that version" \
        in unknown.stderr
    broken = ws.cli("baseline", "3", "--from-flyway")
    assert broken.exit_code == 2 and "failed migration (V1_0_1__tags.sql" in broken.stderr
    result = ws.cli("baseline", "1", "--from-flyway", "--json")
    assert result.exit_code == 0, result.stderr
    (row,) = result.json()["tenants"]
    assert row["baselined"] == ["1.0.0", "1.0.1"]
    assert row["source"] == "flyway_schema_history: V1_0_1__tags.sql"
    assert ws.cli("migrate", "1", "--json").json()["tenants"][0]["applied"] == ["1.0.2"]


# ------------------------------------------------------------------ offboarding


@pytest.fixture
def seeded(ws: Workspace) -> Workspace:
    three_migrations(ws)
    (ws.dir / "seed").mkdir()
    (ws.dir / "seed" / "tenant_seed.sql").write_text(SEED)
    return ws


SEEDED = "seed: seed/tenant_seed.sql\n"
BOTH = "- { clnt_id: 1, name: Leaving, sites: [1] }\n- { clnt_id: 2, name: Staying, sites: [1] }\n"
ONLY_2 = "- { clnt_id: 2, name: Staying, sites: [1] }\n"


APP_SESSION = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1], database=sys.argv[2])
    tr = conn.transaction()
    await tr.start()
    await conn.execute("UPDATE cvs_note SET tag = 'busy' WHERE note_id = 1")
    print("connected", flush=True)
    await conn.execute("SELECT pg_sleep(60)")
asyncio.run(main())
"""


def content(ws: Workspace, clnt_id: int) -> list[tuple[object, ...]]:
    return [tuple(r) for r in ws.fetch(
        ws.db(clnt_id), "SELECT n.note_id, n.body, n.tag, l.n FROM cvs_note n "
        "LEFT JOIN cvs_like l USING (clnt_id, note_id) ORDER BY n.note_id")]


def test_orphan_deprovision_with_archive_then_restore(seeded: Workspace, tmp_path: Path) -> None:
    ws = seeded
    ws.write_config(BOTH, SEEDED)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.fetch(ws.db(1), "INSERT INTO cvs_note (clnt_id, note_id, body, tag) "
             "SELECT 1, g, 'ünïcode ' || g, 'x' FROM generate_series(1, 500) g")
    ws.fetch(ws.db(1), "INSERT INTO cvs_like SELECT 1, g, g * 2 FROM generate_series(1, 500, 3) g")
    before = content(ws, 1)
    ws.write_config(ONLY_2, SEEDED)
    status = ws.cli("status", "--json")
    assert status.exit_code == 0
    states = {r["clnt_id"]: (r["state"], r["server"]) for r in status.json()["tenants"]}
    assert states == {1: ("orphaned", "default"), 2: ("up_to_date", "default")}
    verify = ws.cli("verify", "--json")
    assert verify.exit_code == 1
    assert [(f["clnt_id"], f["kind"]) for f in verify.json()["findings"]] == [(1, "orphaned")]

    archive_dir = tmp_path / "archives"
    listed = ws.cli("deprovision", "2", "--archive", str(archive_dir), "--yes")
    assert listed.exit_code == 2
    assert "still listed in tenants.yaml: remove it from tenants.yaml first" in listed.stderr
    no_tty = ws.cli("deprovision", "1", "--archive", str(archive_dir))
    assert no_tty.exit_code == 2 and "--yes" in no_tty.stderr
    neither = ws.cli("deprovision", "1", "--yes")
    assert neither.exit_code == 2 and "--archive DIR or --no-archive" in neither.stderr
    assert ws.db(1) in ws.databases() and not archive_dir.exists()

    # an application session is open, in a transaction: deprovision ends it
    app = subprocess.Popen([sys.executable, "-c", APP_SESSION, ws.dsn, ws.db(1)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == "connected"
        result = ws.cli("deprovision", "1", "--archive", str(archive_dir), "--yes", "--json")
        _, app_err = app.communicate(timeout=60)
    finally:
        app.kill()
    assert result.exit_code == 0, result.stderr + result.stdout
    assert app.returncode != 0 and "terminat" in app_err.lower()
    (row,) = result.json()["tenants"]
    assert row["status"] == "deprovisioned"
    archive = Path(row["archive"])
    assert archive.parent == archive_dir.resolve()
    assert archive.name.startswith(f"{ws.db(1)}-") and archive.name.endswith("Z.dump")
    manifest = json.loads(Path(str(archive) + ".manifest.json").read_text())
    import hashlib
    assert manifest["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (manifest["clnt_id"], manifest["mode"], manifest["schema_version"]) == (
        1, "database", "1.0.2")
    assert manifest["server_major"] >= 13
    assert ws.db(1) not in ws.databases()
    assert not list(archive_dir.glob("*.partial"))
    registered = ws.fetch(ws.control_db, "SELECT last_status, archive, in_config, "
                          "deprovisioned_on IS NOT NULL AS gone FROM tenantctl_tenants "
                          "WHERE clnt_id = 1")[0]
    assert tuple(registered) == ("deprovisioned", str(archive), False, True)
    assert [r["clnt_id"] for r in ws.cli("status", "--json").json()["tenants"]] == [2]
    assert ws.cli("verify").exit_code == 0

    # restore: only for a listed tenant, then the rows are back and verify is clean
    unlisted = ws.cli("restore", "1", "--from", str(archive))
    assert unlisted.exit_code == 2 and "not in tenants.yaml" in unlisted.stderr
    ws.write_config(BOTH, SEEDED)
    restored = ws.cli("restore", "1", "--from", str(archive), "--json")
    assert restored.exit_code == 0, restored.stderr + restored.stdout
    assert restored.json()["tenants"][0]["status"] == "restored"
    assert content(ws, 1) == before
    assert ws.cli("verify").exit_code == 0
    assert {r["clnt_id"]: r["state"] for r in ws.cli("status", "--json").json()["tenants"]} == {
        1: "up_to_date", 2: "up_to_date"}
    assert ws.cli("migrate", "--all", "--json").json()["summary"]["failed"] == 0
    registered = ws.fetch(ws.control_db, "SELECT in_config, deprovisioned_on FROM "
                          "tenantctl_tenants WHERE clnt_id = 1")[0]
    assert tuple(registered) == (True, None)
    again = ws.cli("restore", "1", "--from", str(archive))
    assert again.exit_code == 2 and "already exists" in again.stderr and "never overwrites" \
        in again.stderr


def test_restore_checks_the_archive_first(seeded: Workspace, tmp_path: Path) -> None:
    ws = seeded
    ws.write_config(BOTH, SEEDED)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.write_config(ONLY_2, SEEDED)
    out = ws.cli("deprovision", "1", "--archive", str(tmp_path), "--yes", "--json")
    assert out.exit_code == 0, out.stderr
    archive = Path(out.json()["tenants"][0]["archive"])
    ws.write_config(BOTH, SEEDED)
    damaged = tmp_path / "copy" / archive.name
    damaged.parent.mkdir()
    shutil.copy(archive, damaged)
    shutil.copy(str(archive) + ".manifest.json", str(damaged) + ".manifest.json")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    bad = ws.cli("restore", "1", "--from", str(damaged))
    assert bad.exit_code == 2 and "does not match its manifest" in bad.stderr
    manifest = json.loads(Path(str(archive) + ".manifest.json").read_text())
    manifest["schema_version"] = "1.9"
    Path(str(archive) + ".manifest.json").write_text(json.dumps(manifest))
    newer = ws.cli("restore", "1", "--from", str(archive))
    assert newer.exit_code == 2 and "schema version 1.9: no migration" in newer.stderr
    other = ws.cli("restore", "2", "--from", str(archive))
    assert other.exit_code == 2 and "archive of clnt_id 1, not of 2" in other.stderr
    assert ws.db(1) not in ws.databases()


def test_deprovision_without_archive(seeded: Workspace) -> None:
    ws = seeded
    ws.write_config(BOTH, SEEDED)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.write_config(ONLY_2, SEEDED)
    unknown = ws.cli("deprovision", "7", "--no-archive", "--yes")
    assert unknown.exit_code == 2 and "clnt_id 7 is not in the registry" in unknown.stderr
    result = ws.cli("deprovision", "1", "--no-archive", "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["tenants"][0]["archive"] is None
    assert ws.databases() >= {ws.db(2)} and ws.db(1) not in ws.databases()
    twice = ws.cli("deprovision", "1", "--no-archive", "--yes")
    assert twice.exit_code == 2 and "deprovisioned already" in twice.stderr


@pytest.fixture
def shared_ws(example_ws: Workspace) -> Iterator[Workspace]:
    ws = example_ws
    yield ws
    ws.fetch(None, f'DROP DATABASE IF EXISTS "{ws.prefix}_shared" WITH (FORCE)')
    for role in (f"{ws.prefix}_app", f"{ws.prefix}_owner"):
        if ws.fetch(None, "SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            ws.fetch(None, f'DROP OWNED BY "{role}"')
            ws.fetch(None, f'DROP ROLE "{role}"')


def shared_config(ws: Workspace, ids: tuple[int, ...]) -> None:
    ws.write_config("".join(f"- {{ clnt_id: {i}, name: S{i}, sites: [1, 2], mode: shared }}\n"
                            for i in ids),
                    extra=f"seed: seed/tenant_seed.sql\nshared: {{ database: {ws.prefix}_shared, "
                    f"app_role: {ws.prefix}_app, owner_role: {ws.prefix}_owner }}\n")


def rows_per_tenant(ws: Workspace) -> dict[int, int]:
    shared = f"{ws.prefix}_shared"
    tables = [r["qname"] for r in ws.fetch(
        shared, "SELECT format('%I.%I', table_schema, table_name) AS qname FROM "
        "information_schema.columns WHERE column_name = 'clnt_id' AND table_schema = 'public' "
        "AND table_name NOT LIKE 'tenantctl%'")]
    counts: dict[int, int] = {}
    for table in tables:
        for r in ws.fetch(shared, f"SELECT clnt_id, count(*) AS n FROM {table} GROUP BY 1"):
            counts[r["clnt_id"]] = counts.get(r["clnt_id"], 0) + r["n"]
    return counts


def test_shared_mode_deprovision_deletes_only_that_tenants_rows(shared_ws: Workspace,
                                                                tmp_path: Path) -> None:
    ws = shared_ws
    shared_config(ws, (1, 2, 3))
    assert ws.cli("provision", "--all").exit_code == 0
    before = rows_per_tenant(ws)
    assert before[1] > 0 and before[2] == before[1]
    shared_config(ws, (1, 3))
    archived = ws.cli("deprovision", "2", "--archive", str(tmp_path), "--yes")
    assert archived.exit_code == 2
    assert "archiving a shared-mode tenant's rows is not supported yet" in archived.stderr
    result = ws.cli("deprovision", "2", "--no-archive", "--yes", "--json")
    assert result.exit_code == 0, result.stderr + result.stdout
    (row,) = result.json()["tenants"]
    # the audit trigger on cvs_usr_mast writes rows of the tenant as it goes: deleted too
    assert row["status"] == "deprovisioned" and sum(row["deleted"].values()) > before[2]
    assert row["deleted"]["public.cvs_usr_mast_adt"] > 0
    after = rows_per_tenant(ws)
    assert 2 not in after and after == {1: before[1], 3: before[3]}
    shared = f"{ws.prefix}_shared"
    assert [r["clnt_id"] for r in ws.fetch(
        shared, "SELECT clnt_id FROM tenantctl_shared_tenants ORDER BY 1")] == [1, 3]
    assert ws.cli("check-isolation").exit_code == 0
    assert ws.cli("verify").exit_code == 0
    # listed again, it is provisioned and seeded afresh
    shared_config(ws, (1, 2, 3))
    again = ws.cli("provision", "2", "--json")
    assert again.exit_code == 0 and again.json()["tenants"][0]["seeded"] is True
    assert rows_per_tenant(ws) == before


def test_delete_order_puts_referencing_tables_first() -> None:
    from tenantctl.offboard_shared import delete_order

    tables = {1: "a_parent", 2: "b_child", 3: "c_grandchild", 4: "d_alone", 5: "x", 6: "y"}
    order = delete_order(tables, [(2, 1), (3, 2), (3, 1), (5, 6), (6, 5), (2, 99)])
    assert order.index("c_grandchild") < order.index("b_child") < order.index("a_parent")
    assert order[-2:] == ["x", "y"]  # a cycle: last, left to deferred constraints
    assert sorted(order) == sorted(tables.values())


def test_deprovision_refuses_an_archive_path_that_is_a_file(seeded: Workspace,
                                                            tmp_path: Path) -> None:
    ws = seeded
    ws.write_config(BOTH, SEEDED)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.write_config(ONLY_2, SEEDED)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    result = ws.cli("deprovision", "1", "--archive", str(a_file), "--yes")
    assert result.exit_code == 2 and "is a file" in result.stderr
    assert ws.db(1) in ws.databases()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
def test_deprovision_refuses_an_archive_folder_it_cannot_write(seeded: Workspace,
                                                               tmp_path: Path) -> None:
    ws = seeded
    ws.write_config(BOTH, SEEDED)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.write_config(ONLY_2, SEEDED)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        result = ws.cli("deprovision", "1", "--archive", str(locked / "sub"), "--yes")
        assert result.exit_code == 2 and "is not writable" in result.stderr
    finally:
        locked.chmod(0o700)
    assert ws.db(1) in ws.databases()
