"""Fleet topology on real servers: one dead server does not stop the others,
``--server`` selects tenants, and least-tenants placement spreads new tenants
(and pins them). Three embedded servers: the session's plus ``extra_servers``."""

from __future__ import annotations

import socket
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from conftest import ExtraServers, Workspace, run
from tenantctl.fleet import server_address

MIGRATION = "CREATE TABLE cvs_note (note_id int PRIMARY KEY, clnt_id int2 NOT NULL, body text);\n"


async def _drop_prefixed(dsn: str, prefix: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                  prefix + "%"):
            await conn.execute(f'DROP DATABASE IF EXISTS "{r["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def fleet(ws: Workspace, extra_servers: ExtraServers) -> Iterator[dict[str, str]]:
    """Servers a (the session's, default), b and c; their test databases dropped afterwards."""
    dsns = {"a": ws.dsn, "b": extra_servers.dsn(1), "c": extra_servers.dsn(2)}
    ws.add_migration("v1.0.0_notes.sql", MIGRATION)
    ws.add_migration("v1.0.1_more.sql", "ALTER TABLE cvs_note ADD COLUMN tag text;\n")
    yield dsns
    for name in ("b", "c"):
        run(_drop_prefixed(dsns[name], ws.prefix))


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def servers_block(dsns: dict[str, str], **extra: str) -> str:
    lines = ["servers:\n"]
    for name, dsn in dsns.items():
        more = extra.get(name, "")
        lines.append(f"  {name}: {{ dsn: \"{dsn}\"{more} }}\n")
    return "".join(lines) + "default_server: a\n"


def databases_on(dsn: str, prefix: str) -> set[str]:
    async def q() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                    prefix + "%")
            return {r["datname"] for r in rows}
        finally:
            await conn.close()
    return set(run(q()))


def with_user(dsn: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path,
                                    parts.query, ""))


def test_a_dead_server_fails_only_its_own_tenants(ws: Workspace, fleet: dict[str, str]) -> None:
    dead = f"postgresql://postgres:hunter2secret@127.0.0.1:{closed_port()}/postgres"
    dsns = {"a": fleet["a"], "b": fleet["b"], "dead": dead}
    ws.write_config("""\
        - { clnt_id: 1, name: A1, sites: [1], server: a }
        - { clnt_id: 2, name: D2, sites: [1], server: dead }
        - { clnt_id: 3, name: B3, sites: [1], server: b }
        - { clnt_id: 4, name: D4, sites: [1], server: dead }
        """, servers_block(dsns))
    result = ws.cli("provision", "--all", "--json")
    assert result.exit_code == 1, result.stderr
    doc = result.json()
    by_id = {t["clnt_id"]: t for t in doc["tenants"]}
    assert by_id[1]["status"] == by_id[3]["status"] == "applied"
    for clnt_id in (2, 4):
        error = by_id[clnt_id]["error"]
        assert by_id[clnt_id]["status"] == "failed"
        assert error["message"].startswith("server dead (127.0.0.1:"), error
        assert "unreachable" in error["message"]
        assert error["sqlstate"].startswith("08")
    everything = result.stdout + result.stderr
    assert "hunter2secret" not in everything and "Traceback" not in everything
    assert ws.versions(1) == ["1.0.0", "1.0.1"]
    assert ws.db(3) in databases_on(fleet["b"], ws.prefix)
    # the ledger recorded the run, with each tenant's outcome and no password
    runs = ws.fetch(ws.control_db, "SELECT status, argv::text AS argv FROM tenantctl_runs")
    assert [r["status"] for r in runs] == ["failed"]
    outcomes = {r["clnt_id"]: (r["status"], r["error"]) for r in ws.fetch(
        ws.control_db, "SELECT clnt_id, status, error::text AS error FROM tenantctl_run_tenants")}
    assert outcomes[1][0] == outcomes[3][0] == "applied"
    assert outcomes[2][0] == "failed" and "server dead" in outcomes[2][1]
    assert "hunter2secret" not in repr(runs) + repr(outcomes)
    # status: the dead server's tenants are unreachable, the command fails
    status = ws.cli("status")
    assert status.exit_code == 1, status.stderr
    lines = {int(line.split()[0]): line for line in status.stdout.splitlines()[2:-1]}
    assert "unreachable" in lines[2] and " dead " in lines[2]
    assert "up_to_date" in lines[1] and "up_to_date" in lines[3]
    assert status.stdout.splitlines()[-1].startswith("4 tenant(s) on 3 server(s): ")
    # once the others are up to date, migrate still reaches them and fails only the dead ones
    again = ws.cli("migrate", "--all", "--json")
    assert again.exit_code == 1
    assert {t["clnt_id"]: t["status"] for t in again.json()["tenants"]} == {
        1: "up_to_date", 2: "failed", 3: "up_to_date", 4: "failed"}


@pytest.fixture
def password_role(ws: Workspace, fleet: dict[str, str]) -> Iterator[str]:
    """A role on server b that must log in with a password (scram), whatever else trusts."""
    role = f"{ws.prefix}_pw"

    async def setup() -> str:
        conn = await asyncpg.connect(fleet["b"])
        try:
            await conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'right-pw'")
            hba = Path(await conn.fetchval("SHOW hba_file"))
            original = hba.read_text()
            hba.write_text(f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n"
                           + original)
            await conn.execute("SELECT pg_reload_conf()")
            return original
        finally:
            await conn.close()

    async def teardown(original: str) -> None:
        await _drop_prefixed(fleet["b"], ws.prefix)  # databases the role owns
        conn = await asyncpg.connect(fleet["b"])
        try:
            Path(await conn.fetchval("SHOW hba_file")).write_text(original)
            await conn.execute("SELECT pg_reload_conf()")
            await conn.execute(f"DROP ROLE IF EXISTS {role}")
        finally:
            await conn.close()

    original = run(setup())
    try:
        yield role
    finally:
        run(teardown(original))


def test_the_servers_are_asked_at_the_same_time(ws: Workspace, fleet: dict[str, str]) -> None:
    """server_facts opens its sessions to every server at once: each server's first
    question waits (a minute at most) until all of them were asked it, which asking
    one server after the other never lets happen. A dead server is down, the others
    answer, and the facts come back whole."""
    import asyncio

    from tenantctl.config import load_project
    from tenantctl.drivers.base import Session
    from tenantctl.drivers.pg_version import ServerVersion
    from tenantctl.drivers.postgres import PostgresDriver
    from tenantctl.engine import group_units
    from tenantctl.fleet import server_facts

    dead = f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres"
    dsns = {**fleet, "dead": dead}
    ws.write_config("".join(f"- {{ clnt_id: {i}, name: T{i}, sites: [1], server: {s} }}\n"
                            for i, s in enumerate(dsns, start=1)), servers_block(dsns))
    project = load_project(ws.config)

    class Gathered(PostgresDriver):
        def __init__(self) -> None:
            self.barrier = asyncio.Barrier(3)  # a, b and c: the dead one never gets here

        async def server_version(self, admin: Session) -> ServerVersion:
            await asyncio.wait_for(self.barrier.wait(), 60)
            return await super().server_version(admin)

    async def go() -> None:
        units = group_units(project.tenants)
        facts = await server_facts(Gathered(), project, dsns, units)
        assert set(facts.versions) == {"a", "b", "c"} and set(facts.down) == {"dead"}
        assert set(facts.caps) == {"a", "b", "c"}
        assert {(s, d) for s, d in facts.existing} <= {(u.server, u.database) for u in units} | {
            (s, project.file.template_database) for s in dsns}

    run(go())


def test_a_wrong_password_fails_only_that_servers_tenants(ws: Workspace, fleet: dict[str, str],
                                                          password_role: str) -> None:
    wrong = with_user(fleet["b"], password_role, "wrong-pw-never-shown")
    ws.write_config("""\
        - { clnt_id: 1, name: A1, sites: [1], server: a }
        - { clnt_id: 2, name: B2, sites: [1], server: b }
        """, servers_block({"a": fleet["a"], "b": wrong}))
    result = ws.cli("provision", "--all", "--json")
    assert result.exit_code == 1
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert by_id[1]["status"] == "applied"
    assert by_id[2]["error"]["sqlstate"] == "28P01"
    assert by_id[2]["error"]["message"].startswith(
        f"server b ({server_address(fleet['b'])}): authentication failed: password "
        "authentication failed"), by_id[2]["error"]
    assert "wrong-pw-never-shown" not in result.stdout + result.stderr
    # the right password: the same tenant provisions
    ws.write_config("""\
        - { clnt_id: 1, name: A1, sites: [1], server: a }
        - { clnt_id: 2, name: B2, sites: [1], server: b }
        """, servers_block({"a": fleet["a"],
                            "b": with_user(fleet["b"], password_role, "right-pw")}))
    again = ws.cli("migrate", "--only-failed", "--json")
    assert [(t["clnt_id"], t["status"]) for t in again.json()["tenants"]] == [(2, "failed")]
    assert ws.cli("provision", "2").exit_code == 0


def test_a_server_refusing_the_login_fails_only_its_tenants(ws: Workspace,
                                                            fleet: dict[str, str]) -> None:
    refused = with_user(fleet["b"], "no_such_role_x", "pw-not-shown")
    ws.write_config("""\
        - { clnt_id: 1, name: A1, sites: [1], server: a }
        - { clnt_id: 2, name: B2, sites: [1], server: b }
        - { clnt_id: 3, name: C3, sites: [1], server: c }
        """, servers_block({"a": fleet["a"], "b": refused, "c": fleet["c"]}))
    result = ws.cli("migrate", "--all", "--json")
    assert result.exit_code == 1
    by_id = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert by_id[2]["status"] == "failed"
    message = by_id[2]["error"]["message"]
    assert message.startswith(f"server b ({server_address(fleet['b'])}): "), message
    assert "authentication failed" in message and by_id[2]["error"]["sqlstate"] == "28000"
    assert by_id[1]["status"] == by_id[3]["status"] == "failed"  # not provisioned: 3D000
    assert by_id[1]["error"]["sqlstate"] == by_id[3]["error"]["sqlstate"] == "3D000"
    provision = ws.cli("provision", "--all", "--json")
    assert {t["clnt_id"]: t["status"] for t in provision.json()["tenants"]} == {
        1: "applied", 2: "failed", 3: "applied"}
    assert "pw-not-shown" not in result.stdout + result.stderr + provision.stdout
    verify = ws.cli("verify", "--json")
    assert verify.exit_code == 1
    assert [(f["clnt_id"], f["kind"]) for f in verify.json()["findings"]] == [(2, "unreachable")]


def test_the_control_database_server_down_is_named(ws: Workspace, fleet: dict[str, str]) -> None:
    dead = f"postgresql://postgres:hunter2secret@127.0.0.1:{closed_port()}/postgres"
    ws.write_config("- { clnt_id: 1, name: B1, sites: [1], server: b }\n",
                    servers_block({"a": dead, "b": fleet["b"]}))
    result = ws.cli("--dsn", dead, "migrate", "--all")
    assert result.exit_code == 1
    assert "server a (127.0.0.1:" in result.stderr and "control database" in result.stderr
    assert "hunter2secret" not in result.stderr and "Traceback" not in result.stderr
    status = ws.cli("--dsn", dead, "status", "--json")  # reads what it can
    assert status.exit_code == 0 and status.json()["tenants"][0]["state"] == "not_provisioned"


def test_server_selects_the_tenants_of_those_servers(ws: Workspace, fleet: dict[str, str]) -> None:
    ws.write_config("""\
        - { clnt_id: 1, name: A1, sites: [1], server: a }
        - { clnt_id: 2, name: B2, sites: [1], server: b }
        - { clnt_id: 3, name: C3, sites: [1], server: c }
        - { clnt_id: 4, name: B4, sites: [1], server: b }
        """, servers_block(fleet))
    result = ws.cli("provision", "--server", "b", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(t["clnt_id"] for t in result.json()["tenants"]) == [2, 4]
    assert databases_on(fleet["b"], ws.prefix) - {f"{ws.prefix}_template"} == {ws.db(2), ws.db(4)}
    assert ws.db(1) not in ws.databases() and not databases_on(fleet["c"], ws.prefix)
    both = ws.cli("provision", "--server", "a", "--server", "c", "--json")
    assert sorted(t["clnt_id"] for t in both.json()["tenants"]) == [1, 3]
    # ids and --server: the listed tenants that live on those servers
    picked = ws.cli("migrate", "1", "2", "3", "--server", "b", "--json")
    assert [t["clnt_id"] for t in picked.json()["tenants"]] == [2]
    status = ws.cli("status", "--server", "c", "--json")
    assert [r["clnt_id"] for r in status.json()["tenants"]] == [3]
    verify = ws.cli("verify", "--server", "a", "--json")
    assert [r["clnt_id"] for r in verify.json()["tenants"]] == [1]
    rollback = ws.cli("rollback", "--server", "b", "--to", "1.0.0", "--json")
    assert rollback.exit_code == 2 and "down" in rollback.stderr  # no .down.sql: refused


def test_an_unknown_server_name_is_refused(ws: Workspace, fleet: dict[str, str]) -> None:
    ws.write_config("- { clnt_id: 1, name: A1, sites: [1], server: a }\n", servers_block(fleet))
    for command in (("provision",), ("migrate",), ("status",), ("verify",),
                    ("rollback", "--to", "1.0.0")):
        result = ws.cli(*command, "--server", "bb")
        assert result.exit_code == 2, (command, result.stderr)
        assert "--server bb: no such server" in result.stderr and "a, b, c" in result.stderr
    assert ws.databases() == set()


def _placements(ws: Workspace) -> dict[int, str]:
    rows = ws.fetch(ws.control_db, "SELECT clnt_id, server FROM tenantctl_tenants")
    return {r["clnt_id"]: r["server"] for r in rows}


def test_least_tenants_spreads_new_tenants_and_pins_them(ws: Workspace,
                                                          fleet: dict[str, str]) -> None:
    tenants = "".join(f"- {{ clnt_id: {i}, name: T{i}, sites: [1] }}\n" for i in range(1, 10))
    ws.write_config(tenants, servers_block(fleet) + "settings: { placement: least-tenants }\n")
    result = ws.cli("provision", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    placed = _placements(ws)
    assert Counter(placed.values()) == {"a": 3, "b": 3, "c": 3}
    for name, dsn in fleet.items():
        assert databases_on(dsn, ws.prefix) - {f"{ws.prefix}_template", ws.control_db} == {
            ws.db(i) for i, server in placed.items() if server == name}
    # status shows where each one lives
    status = ws.cli("status", "--json").json()["tenants"]
    assert {r["clnt_id"]: r["server"] for r in status} == placed
    # pinned: another policy does not move anyone
    ws.write_config(tenants, servers_block(fleet) + "settings: { placement: default }\n")
    again = ws.cli("migrate", "--all", "--json")
    assert again.exit_code == 0 and _placements(ws) == placed
    assert {t["status"] for t in again.json()["tenants"]} == {"up_to_date"}


def test_least_tenants_respects_max_tenants(ws: Workspace, fleet: dict[str, str]) -> None:
    tenants = "".join(f"- {{ clnt_id: {i}, name: T{i}, sites: [1] }}\n" for i in range(1, 7))
    ws.write_config(tenants, servers_block(fleet, a=", max_tenants: 1", b=", max_tenants: 2",
                                           c=", max_tenants: 2")
                    + "settings: { placement: least-tenants }\n")
    result = ws.cli("provision", "--all", "--json")
    assert result.exit_code == 1
    by_status = {t["clnt_id"]: t for t in result.json()["tenants"]}
    assert Counter(_placements(ws).values()) == {"a": 1, "b": 2, "c": 2}
    (full,) = [t for t in by_status.values() if t["status"] == "failed"]
    assert full["clnt_id"] == 6
    assert "every server is at its max_tenants (a 1/1, b 2/2, c 2/2)" in full["error"]["message"]
    status = ws.cli("status", "--json").json()["tenants"]
    assert [r["server"] for r in status if r["clnt_id"] == 6] == ["-"]


@pytest.mark.parametrize(("dsn", "address"), [
    ("postgresql://u:secret@db1.example:5433/postgres", "db1.example:5433"),
    ("postgresql://u:secret@db1:5433,db2:5434/postgres", "db1:5433,db2:5434"),
    ("host=db.example port=6543 user=u password=secret", "db.example:6543"),
    ("host=/run/postgresql user=u", "/run/postgresql:5432"),
])
def test_a_server_is_named_by_its_address_never_its_password(dsn: str, address: str) -> None:
    assert server_address(dsn) == address
