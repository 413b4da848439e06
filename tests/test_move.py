"""tenantctl move on real PostgreSQL, two servers: dedicated a -> b (dump/restore),
shared -> dedicated -> shared (COPY), kill -9 mid-move then a re-run, a config
change without a move refused, --dry-run, --keep-source, a failure before cutover."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import ExtraServers, Workspace, run

USERS = 800  # + the seed's admin: ~4,000 rows over five FK-linked tables per tenant


class Fleet:
    def __init__(self, ws: Workspace, dsn_b: str) -> None:
        self.ws, self.dsn_b = ws, dsn_b
        self.shared = f"{ws.prefix}_shared"

    def configure(self, tenants: str) -> None:
        ws = self.ws
        ws.write_config(tenants, extra=(
            f"seed: seed/tenant_seed.sql\n"
            f"servers:\n  a: {{ dsn: \"{ws.dsn}\" }}\n  b: {{ dsn: \"{self.dsn_b}\" }}\n"
            f"default_server: a\nsettings: {{ lock_wait: 2s }}\n"
            f"shared: {{ database: {self.shared}, app_role: {ws.prefix}_app, "
            f"owner_role: {ws.prefix}_owner }}\n"))

    def dsn(self, server: str) -> str:
        return self.ws.dsn if server == "a" else self.dsn_b

    def fetch(self, server: str, database: str | None, sql: str, *args: Any) -> list[Any]:
        async def go() -> list[Any]:
            conn = await asyncpg.connect(self.dsn(server), database=database)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()
        return run(go())

    def major(self, server: str) -> int:
        rows = self.fetch(server, None, "SELECT current_setting('server_version_num')::int AS v")
        return int(rows[0]["v"]) // 10000

    def databases(self, server: str) -> set[str]:
        return {r["datname"] for r in self.fetch(
            server, None, "SELECT datname FROM pg_database WHERE datname LIKE $1",
            self.ws.prefix + "%")}

    def fill(self, server: str, database: str, clnt_id: int, users: int = USERS) -> None:
        """Rows in every FK-linked table of the example schema (the audit trigger
        writes cvs_usr_mast_adt): non-ASCII, tabs, floats in JSON, inet."""
        self.fetch(server, database, """
            INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_lgn, usr_nm, email_addr, usr_prefs)
            SELECT $1, 1, 'u' || g, 'Ünïcode 名前 ' || g, 'u' || g || '@example.ch',
                   jsonb_build_object('n', g, 'f', g / 7.0::float8)
            FROM generate_series(1, $2::int) g""", clnt_id, users)
        self.fetch(server, database, """
            INSERT INTO cvs_ordr_hdr (clnt_id, site_id, ordr_no, usr_id, ordr_note)
            SELECT clnt_id, site_id, 'O' || usr_id, usr_id, E'tab\\there \\\\ back'
            FROM cvs_usr_mast WHERE clnt_id = $1""", clnt_id)
        self.fetch(server, database, """
            INSERT INTO cvs_ordr_dtl (clnt_id, site_id, ordr_id, line_no, item_cd, ordr_qty, unit_prc)
            SELECT clnt_id, site_id, ordr_id, 1, 'ITEM', 1.5, 9.99
            FROM cvs_ordr_hdr WHERE clnt_id = $1""", clnt_id)
        self.fetch(server, database, """
            INSERT INTO cvs_usr_lgn_hist (clnt_id, site_id, usr_id, lgn_ok, clnt_addr)
            SELECT clnt_id, site_id, usr_id, usr_id % 3 = 0, '10.0.0.1'
            FROM cvs_usr_mast WHERE clnt_id = $1""", clnt_id)

    def snapshot(self, server: str, database: str, clnt_id: int) -> dict[str, tuple[int, str]]:
        """Per tenant table: row count and md5 of the sorted rows, computed here, not by
        tenantctl."""
        tables = [r["relname"] for r in self.fetch(
            server, database, "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON "
            "a.attrelid = c.oid AND a.attname = 'clnt_id' WHERE c.relkind = 'r' "
            "AND c.relnamespace = 'public'::regnamespace AND c.relname NOT LIKE 'tenantctl%' "
            "ORDER BY 1")]
        out = {}
        for table in tables:
            (row,) = self.fetch(server, database, f"""
                SELECT count(*) AS n, md5(string_agg(t::text, '|' ORDER BY t::text COLLATE "C")) AS h
                FROM (SELECT * FROM {table} WHERE clnt_id = $1) t""", clnt_id)
            out[table] = (row["n"], row["h"])
        return out

    def history(self, server: str, database: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.fetch(
            server, database, "SELECT installed_rank, version, kind, script, checksum, success "
            "FROM tenantctl_schema_history ORDER BY installed_rank")]

    def registry(self, clnt_id: int) -> tuple[str, str, str]:
        (row,) = self.fetch("a", self.ws.control_db, "SELECT mode, server, database FROM "
                            "tenantctl_tenants WHERE clnt_id = $1", clnt_id)
        return row["mode"], row["server"], row["database"]

    def journal(self) -> list[Any]:
        return self.fetch("a", self.ws.control_db, "SELECT * FROM tenantctl_moves")

    def tag(self, server: str, database: str) -> str | None:
        rows = self.fetch(server, None, "SELECT substr(c, 19) AS v FROM pg_db_role_setting s "
                          "JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c "
                          "WHERE d.datname = $1 AND c LIKE 'tenantctl.purpose=%'", database)
        return rows[0]["v"] if rows else None

    def connlimit(self, server: str, database: str) -> int:
        (row,) = self.fetch(server, None, "SELECT datconnlimit FROM pg_database "
                            "WHERE datname = $1", database)
        return int(row["datconnlimit"])


def _drop_all(dsn: str, prefix: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                      prefix + "%"):
                await conn.execute(f'DROP DATABASE IF EXISTS "{r["datname"]}" WITH (FORCE)')
            for role in ("app", "owner", "extra"):
                name = f"{prefix}_{role}"
                if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
                    await conn.execute(f'DROP OWNED BY "{name}"')
                    await conn.execute(f'DROP ROLE "{name}"')
        finally:
            await conn.close()
    run(go())


@pytest.fixture
def fleet(example_ws: Workspace, extra_servers: ExtraServers) -> Iterator[Fleet]:
    f = Fleet(example_ws, extra_servers.dsn(1))
    yield f
    _drop_all(f.dsn_b, example_ws.prefix)
    _drop_all(example_ws.dsn, example_ws.prefix)


def _ok(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return dict(result.json())


def _tenant(doc: dict[str, Any], clnt_id: int) -> dict[str, Any]:
    return next(t for t in doc["tenants"] if t["clnt_id"] == clnt_id)


def test_a_config_change_is_refused_until_move_brings_the_data_across(fleet: Fleet) -> None:
    ws = fleet.ws
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: a }\n'
                    '  - { clnt_id: 2, name: "Two", sites: [1] }\n')
    _ok(ws.cli("--json", "provision", "--all"))
    fleet.fill("a", ws.db(1), 1)
    before = fleet.snapshot("a", ws.db(1), 1)
    assert sum(n for n, _ in before.values()) > 3000
    history = fleet.history("a", ws.db(1))

    # tenants.yaml now says b, and a release is out: tenant 1 fails, tenant 2 goes on
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: b }\n'
                    '  - { clnt_id: 2, name: "Two", sites: [1] }\n')
    ws.add_migration("v1.3.0_add_usr_nick.sql", "ALTER TABLE cvs_usr_mast ADD COLUMN nick text;")
    ws.add_migration("v1.3.0_add_usr_nick.down.sql", "ALTER TABLE cvs_usr_mast DROP COLUMN nick;")
    for args in (("provision", "--all"), ("migrate", "--all"), ("rollback", "1", "--to", "1.1.0"),
                 ("repair", "--all")):
        result = ws.cli("--json", *args)
        assert result.exit_code == 1, result.stderr
        one = _tenant(result.json(), 1)
        assert one["status"] == "failed"
        message = one["error"]["message"]
        assert f"database {ws.db(1)} on server b" in message
        assert f"database {ws.db(1)} on server a" in message
        assert "tenantctl move 1" in one["error"]["hint"]
        if "--all" in args:
            assert _tenant(result.json(), 2)["status"] in ("applied", "up_to_date")
        assert fleet.databases("b") == set(), "nothing is created at the new placement"
        assert fleet.registry(1) == ("database", "a", ws.db(1))
        # a refusal keeps what the registry knows (it is what says the data is placed)
        assert fleet.fetch("a", ws.control_db, "SELECT version FROM tenantctl_tenants "
                           "WHERE clnt_id = 1")[0]["version"] == "1.2.0"
    assert "1.3.0" not in [h[1] for h in fleet.history("a", ws.db(1))]
    status = ws.cli("--json", "status")
    row = _tenant(status.json(), 1)
    assert row["state"] == "move_pending" and row["server"] == "a"
    assert row["move_to"] == {"mode": "database", "server": "b", "database": ws.db(1)}
    text = ws.cli("status").stdout
    assert f"move_pending (to database {ws.db(1)} on server b: tenantctl move 1)" in text
    verify = ws.cli("--json", "verify", "1")
    assert verify.exit_code == 1
    assert [f["kind"] for f in verify.json()["findings"]] == ["move-pending"]

    # --dry-run says what would happen and changes nothing
    dry = _ok(ws.cli("--json", "move", "1", "--dry-run"))
    assert _tenant(dry, 1)["status"] == "planned" and _tenant(dry, 1)["method"] == "dump"
    assert fleet.databases("b") == set() and fleet.registry(1)[1] == "a"
    assert fleet.connlimit("a", ws.db(1)) == -1

    moved = _ok(ws.cli("--json", "move", "1"))
    one = _tenant(moved, 1)
    assert one["status"] == "moved" and one["method"] == "dump" and one["version"] == "1.2.0"
    assert one["from"]["server"] == "a" and one["to"]["server"] == "b"
    assert one["tables"]["public.cvs_usr_mast"] == USERS + 1
    assert one["rows_copied"] >= sum(n for n, _ in before.values())
    assert moved["summary"]["moved"] == 1
    assert fleet.snapshot("b", ws.db(1), 1) == before
    assert fleet.history("b", ws.db(1)) == history
    assert ws.db(1) not in fleet.databases("a"), "the source is dropped"
    assert fleet.registry(1) == ("database", "b", ws.db(1))
    assert fleet.journal() == []
    assert fleet.tag("b", ws.db(1)) == "tenant:1"

    # the next run migrates it where it now is; its sequences came along
    migrated = _ok(ws.cli("--json", "migrate", "--all"))
    assert _tenant(migrated, 1)["applied"] == ["1.3.0"]
    fleet.fetch("b", ws.db(1), "INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_lgn, usr_nm) "
                "VALUES (1, 1, 'new', 'New')")
    assert _tenant(_ok(ws.cli("--json", "status")), 1)["state"] == "up_to_date"
    again = _ok(ws.cli("--json", "move", "1"))
    assert _tenant(again, 1)["status"] == "up_to_date"


def _start_paused(ws: Workspace, point: str, pause: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, TENANTCTL_MOVE_PAUSE=f"{point}:{pause}",
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen(ws.subprocess_cmd("move", *args), env=env, cwd=ws.dir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not pause.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"move ended before {point}: {out.decode()} {err.decode()}")
        assert time.monotonic() < deadline, f"move never reached {point}"
        time.sleep(0.05)
    return proc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize(("point", "phase", "recovered"), [
    ("copied", "copying", "undid an interrupted move before starting again"),
    ("cutover", "cutover", "finished an interrupted move"),
])
def test_a_move_killed_mid_way_is_undone_or_finished_by_the_next_run(
        fleet: Fleet, tmp_path: Path, point: str, phase: str, recovered: str) -> None:
    ws = fleet.ws
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: a }\n')
    _ok(ws.cli("--json", "provision", "1"))
    fleet.fill("a", ws.db(1), 1, users=300)
    before = fleet.snapshot("a", ws.db(1), 1)
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: b }\n')

    proc = _start_paused(ws, point, tmp_path / "pause", "1")
    _kill(proc)
    (entry,) = fleet.journal()
    assert entry["phase"] == phase and entry["target_server"] == "b"
    assert fleet.connlimit("a", ws.db(1)) == 0, "writes stopped at the source"
    if phase == "copying":
        assert fleet.registry(1)[1] == "a"
        assert fleet.tag("b", ws.db(1)) == "moving:1"
        # meanwhile the tenant is still refused by the changing commands
        assert ws.cli("migrate", "1").exit_code == 1
    else:
        assert fleet.registry(1)[1] == "b"

    rerun = _ok(ws.cli("--json", "move", "1"))
    one = _tenant(rerun, 1)
    assert one["status"] == "moved" and one["recovered"] == recovered
    assert fleet.snapshot("b", ws.db(1), 1) == before
    assert ws.db(1) not in fleet.databases("a")
    assert fleet.registry(1) == ("database", "b", ws.db(1))
    assert fleet.journal() == []
    assert fleet.tag("b", ws.db(1)) == "tenant:1"
    assert _tenant(_ok(ws.cli("--json", "status")), 1)["state"] == "up_to_date"


def _shared_config(fleet: Fleet, one: str) -> None:
    fleet.configure(f'  - {{ clnt_id: 1, name: "One", sites: [1], {one} }}\n'
                    '  - { clnt_id: 2, name: "Neighbour", sites: [1], mode: shared }\n'
                    '  - { clnt_id: 3, name: "Three", sites: [1], mode: shared }\n')


def test_shared_to_dedicated_and_back_keeps_the_neighbours_and_isolation(fleet: Fleet) -> None:
    ws, shared = fleet.ws, fleet.shared
    _shared_config(fleet, "mode: shared")
    _ok(ws.cli("--json", "provision", "--all"))
    for clnt_id in (1, 2):
        fleet.fill("a", shared, clnt_id, users=400)
    mine, neighbour = fleet.snapshot("a", shared, 1), fleet.snapshot("a", shared, 2)

    # shared (server a) -> a dedicated database on server b, by COPY
    _shared_config(fleet, "server: b")
    refused = ws.cli("--json", "migrate", "--all")
    assert refused.exit_code == 1 and _tenant(refused.json(), 1)["status"] == "failed"
    assert fleet.databases("b") == set()
    moved = _ok(ws.cli("--json", "move", "1"))
    one = _tenant(moved, 1)
    assert one["status"] == "moved" and one["method"] == "copy"
    assert one["tables"]["public.cvs_usr_mast"] == 401
    assert list(one["tables"]).index("public.cvs_site_mast") < list(one["tables"]).index(
        "public.cvs_usr_mast") < list(one["tables"]).index("public.cvs_ordr_hdr")
    assert fleet.snapshot("b", ws.db(1), 1) == mine
    assert all(n == 0 for n, _ in fleet.snapshot("a", shared, 1).values())
    assert fleet.snapshot("a", shared, 2) == neighbour
    assert [r["clnt_id"] for r in fleet.fetch("a", shared, "SELECT clnt_id FROM "
                                              "tenantctl_shared_tenants ORDER BY 1")] == [2, 3]
    kinds = [(h[1], h[2]) for h in fleet.history("b", ws.db(1))]
    assert ("1", "seed") in kinds and ("1.2.0", "up") in kinds
    assert _ok(ws.cli("--json", "check-isolation"))["isolated"] is True
    assert _tenant(_ok(ws.cli("--json", "provision", "--all")), 1)["status"] == "up_to_date"
    assert fleet.snapshot("b", ws.db(1), 1) == mine, "the seed did not run a second time"
    fleet.fetch("b", ws.db(1), "INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_lgn, usr_nm) "
                "VALUES (1, 1, 'while-dedicated', 'D')")
    mine = fleet.snapshot("b", ws.db(1), 1)

    # and back into the shared database
    _shared_config(fleet, "mode: shared")
    back = _ok(ws.cli("--json", "move", "1"))
    assert _tenant(back, 1)["status"] == "moved"
    assert fleet.snapshot("a", shared, 1) == mine
    assert fleet.snapshot("a", shared, 2) == neighbour
    assert ws.db(1) not in fleet.databases("b")
    assert fleet.registry(1) == ("shared", "a", shared)
    assert _ok(ws.cli("--json", "check-isolation"))["isolated"] is True
    after = _ok(ws.cli("--json", "provision", "--all"))
    assert {t["status"] for t in after["tenants"]} == {"up_to_date"}
    assert fleet.snapshot("a", shared, 1) == mine, "no second seed in the shared database"
    # a new user for tenant 1 in the shared database gets an identity past the copied ones
    fleet.fetch("a", shared, "INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_lgn, usr_nm) "
                "VALUES (1, 1, 'back-in-shared', 'S')")


def test_a_shared_to_dedicated_copy_killed_mid_way_is_undone(fleet: Fleet, tmp_path: Path) -> None:
    ws, shared = fleet.ws, fleet.shared
    _shared_config(fleet, "mode: shared")
    _ok(ws.cli("--json", "provision", "--all"))
    fleet.fill("a", shared, 1, users=300)
    mine, neighbour = fleet.snapshot("a", shared, 1), fleet.snapshot("a", shared, 2)
    _shared_config(fleet, "server: b")

    proc = _start_paused(ws, "copying", tmp_path / "pause", "1")
    # while the copy holds its share locks, the neighbours' rows stay readable
    assert fleet.snapshot("a", shared, 2) == neighbour
    # a second move of the same tenant waits for the first, gives up, and undoes nothing
    second = ws.cli("--json", "move", "1")
    assert second.exit_code == 1
    assert "another tenantctl move of clnt_id 1 is running" in _tenant(second.json(), 1)["error"][
        "message"]
    assert fleet.tag("b", ws.db(1)) == "moving:1" and fleet.journal()[0]["phase"] == "copying"
    _kill(proc)
    assert fleet.journal()[0]["phase"] == "copying"
    assert fleet.tag("b", ws.db(1)) == "moving:1"

    rerun = _ok(ws.cli("--json", "move", "1"))
    assert _tenant(rerun, 1)["recovered"] == "undid an interrupted move before starting again"
    assert fleet.snapshot("b", ws.db(1), 1) == mine
    assert all(n == 0 for n, _ in fleet.snapshot("a", shared, 1).values())
    assert fleet.snapshot("a", shared, 2) == neighbour
    assert fleet.journal() == []


def test_keep_source_renames_and_retires_the_old_database(fleet: Fleet) -> None:
    ws = fleet.ws
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: a }\n')
    _ok(ws.cli("--json", "provision", "1"))
    fleet.fill("a", ws.db(1), 1, users=50)
    before = fleet.snapshot("a", ws.db(1), 1)
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: b }\n')

    one = _tenant(_ok(ws.cli("--json", "move", "1", "--keep-source")), 1)
    (kept,) = fleet.databases("a") - {f"{ws.prefix}_ctl", f"{ws.prefix}_template"}
    assert kept.startswith(f"{ws.db(1)}_moved_") and kept in one["kept_source"]
    assert fleet.tag("a", kept) == "moved:1"
    assert fleet.connlimit("a", kept) == 0
    assert fleet.snapshot("a", kept, 1) == before == fleet.snapshot("b", ws.db(1), 1)
    # later runs never take the kept copy for the tenant
    _ok(ws.cli("--json", "migrate", "--all"))
    assert [r["database"] for r in _ok(ws.cli("--json", "status"))["tenants"]] == [ws.db(1)]

    # moving back to a creates the database under its own name again
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: a }\n')
    if fleet.major("a") < fleet.major("b"):  # the matrix's 15 leg: a is 15, b is 18
        back = ws.cli("--json", "move", "1")
        assert back.exit_code == 1
        assert "older major is not supported" in _tenant(back.json(), 1)["error"]["message"]
        assert fleet.snapshot("b", ws.db(1), 1) == before  # the source is untouched
        return
    _ok(ws.cli("--json", "move", "1"))
    assert fleet.snapshot("a", ws.db(1), 1) == before
    assert kept in fleet.databases("a")
    # a tenant pointed at the kept database is refused by its tag
    fleet.configure(f'  - {{ clnt_id: 1, name: "One", sites: [1], server: a, database: {kept} }}\n')
    refused = ws.cli("--json", "move", "1")
    assert refused.exit_code == 1
    assert "exists already" in _tenant(refused.json(), 1)["error"]["message"]


def test_a_failure_before_cutover_leaves_the_source_untouched(fleet: Fleet) -> None:
    """The source holds a table owned by a role server b does not have: pg_restore fails
    on b; the partial target is removed, the source reopened, the registry unchanged."""
    ws = fleet.ws
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: a }\n')
    _ok(ws.cli("--json", "provision", "1"))
    fleet.fill("a", ws.db(1), 1, users=20)
    fleet.fetch("a", None, f'CREATE ROLE "{ws.prefix}_extra"')
    fleet.fetch("a", ws.db(1), f'ALTER TABLE cvs_ordr_dtl OWNER TO "{ws.prefix}_extra"')
    before = fleet.snapshot("a", ws.db(1), 1)
    fleet.configure('  - { clnt_id: 1, name: "One", sites: [1], server: b }\n')

    result = ws.cli("--json", "move", "1")
    assert result.exit_code == 1, result.stderr
    error = _tenant(result.json(), 1)["error"]["message"]
    assert "pg_restore" in error and f"{ws.prefix}_extra" in error
    assert fleet.databases("b") == set()
    assert fleet.snapshot("a", ws.db(1), 1) == before
    assert fleet.connlimit("a", ws.db(1)) == -1, "the source takes connections again"
    assert fleet.registry(1)[1] == "a"
    assert fleet.journal() == []
    assert "postgres:" not in result.stdout.replace("postgresql:", ""), "no password in output"
