"""The fast paths stay correct: schema markers (no-op runs) and template provisioning."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from conftest import Workspace
from tenantctl.commands import ChangeRequest, migrate, provision
from tenantctl.config import load_project
from tenantctl.drivers.postgres import PostgresDriver

TENANTS = "".join(f'  - {{ clnt_id: {i}, name: "T{i}", sites: [1] }}\n' for i in range(1, 5))
BASE = "create table cvs_usr_mast (clnt_id int2 not null, site_id int2 not null, usr_id int not null, primary key (clnt_id, site_id, usr_id));\n"


def setup(ws: Workspace) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_base.sql", BASE)
    ws.add_migration("v1.0.1_grp.sql", "create table cvs_grp_mast (clnt_id int2 not null, grp_id int not null, primary key (clnt_id, grp_id));\n")


def marker(ws: Workspace, database: str) -> str | None:
    return ws.marker(database)


def test_noop_run_skips_marked_tenants_without_connecting(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "--all").exit_code == 0
    assert all(marker(ws, ws.db(i)) for i in range(1, 5))
    # prove no session is opened: connections to tenant 3 are now refused
    ws.fetch(None, f'ALTER DATABASE "{ws.db(3)}" ALLOW_CONNECTIONS false')
    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 0, result.stderr
    assert {(t["status"], t["attempts"], t["to_version"]) for t in result.json()["tenants"]} == {
        ("up_to_date", 0, "1.0.1")}
    # --no-skip really opens the session (and so trips over the refused database)
    full = ws.cli("--json", "migrate", "--all", "--no-skip", "--retries", "0")
    assert full.exit_code == 1
    by_id = {t["clnt_id"]: t for t in full.json()["tenants"]}
    assert by_id[3]["status"] == "failed" and by_id[1]["status"] == "up_to_date"
    ws.fetch(None, f'ALTER DATABASE "{ws.db(3)}" ALLOW_CONNECTIONS true')


def test_every_outcome_of_a_fast_run_reaches_the_ledger(ws: Workspace) -> None:
    # 40 marker-skipped tenants finish at once: their ledger rows are group-committed
    ws.write_config("".join(f'  - {{ clnt_id: {i}, name: "T{i}", sites: [1] }}\n' for i in range(1, 41)))
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 0, result.stderr
    run_id = result.json()["run_id"]
    rows = ws.fetch(ws.control_db, "SELECT clnt_id, status, to_version FROM tenantctl_run_tenants "
                    "WHERE run_id = $1 ORDER BY clnt_id", run_id)
    assert [(r["clnt_id"], r["status"], r["to_version"]) for r in rows] == [
        (i, "up_to_date", "1.0.0") for i in range(1, 41)]
    registry = ws.fetch(ws.control_db, "SELECT count(*) AS n FROM tenantctl_tenants "
                        "WHERE last_run_id = $1 AND last_status = 'up_to_date' AND version = '1.0.0'",
                        run_id)
    assert registry[0]["n"] == 40


def test_marker_never_hides_pending_work(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "--all").exit_code == 0
    before = marker(ws, ws.db(1))
    # a new release: markers no longer match the folder, every tenant gets a session
    ws.add_migration("v1.0.2_x.sql", "create table cvs_x (clnt_id int2 not null);\n")
    result = ws.cli("--json", "migrate", "--all")
    assert {t["status"] for t in result.json()["tenants"]} == {"applied"}
    after = marker(ws, ws.db(1))
    assert after != before and after.split(":")[1] == "1.0.2"
    # an edited applied file changes the fingerprint: full check, drift found
    ws.add_migration("v1.0.0_base.sql", BASE + "-- edited\n")
    drift = ws.cli("--json", "migrate", "--all")
    assert drift.exit_code == 1 and {t["status"] for t in drift.json()["tenants"]} == {"failed"}
    # a run that stops short of the latest (--to) leaves no marker claiming latest
    ws.add_migration("v1.0.0_base.sql", BASE)
    ws.fetch(None, f'DROP DATABASE "{ws.db(4)}" WITH (FORCE)')
    assert ws.cli("provision", "4", "--no-template").exit_code == 0
    ws.add_migration("v1.0.3_y.sql", "create table cvs_y (clnt_id int2 not null);\n")
    assert ws.cli("migrate", "4", "--to", "1.0.2").exit_code == 0
    assert marker(ws, ws.db(4)).split(":")[1] == "1.0.2"
    assert ws.cli("migrate", "4").exit_code == 0
    assert ws.versions(4)[-1] == "1.0.3"


def test_template_provisioning_clones_then_refreshes_when_folder_changes(ws: Workspace) -> None:
    setup(ws)
    result = ws.cli("--json", "provision", "1", "2")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert any("template" in n and "rebuilt at 1.0.1" in n for n in doc["notes"])
    for t in doc["tenants"]:
        # cloned: the history came with the template, nothing was applied in the tenant
        assert (t["status"], t["created"], t["applied"], t["to_version"]) == ("applied", True, [], "1.0.1")
        assert ws.versions(t["clnt_id"]) == ["1.0.0", "1.0.1"]
        assert {"cvs_usr_mast", "cvs_grp_mast"} <= ws.tables(t["clnt_id"])
    template = f"{ws.prefix}_template"
    assert marker(ws, template) is not None
    # no connection left open on the template (clones would fail with 55006)
    assert not ws.fetch(None, "SELECT 1 FROM pg_stat_activity WHERE datname = $1", template)
    # next provision with an unchanged folder reuses it (no rebuild note)
    again = ws.cli("--json", "provision", "3")
    assert not any("rebuilt" in n for n in again.json()["notes"])
    # the folder changes: the template is rebuilt, the new tenant gets the new version
    ws.add_migration("v1.0.2_x.sql", "create table cvs_x (clnt_id int2 not null);\n")
    third = ws.cli("--json", "provision", "4")
    assert any("rebuilt at 1.0.2" in n for n in third.json()["notes"])
    assert ws.versions(4) == ["1.0.0", "1.0.1", "1.0.2"]
    # --no-template: applied one by one
    ws.fetch(None, f'DROP DATABASE "{ws.db(4)}" WITH (FORCE)')
    plain = ws.cli("--json", "provision", "4", "--no-template")
    assert plain.json()["tenants"][0]["applied"] == ["1.0.0", "1.0.1", "1.0.2"]


def test_template_in_use_falls_back_to_plain_and_says_so(ws: Workspace) -> None:
    setup(ws)
    assert ws.cli("provision", "1").exit_code == 0  # builds the template
    template = f"{ws.prefix}_template"

    async def hold_and_provision() -> tuple[dict, float]:
        squatter = await asyncpg.connect(ws.dsn, database=template)
        try:
            t0 = time.monotonic()
            result = await asyncio.to_thread(ws.cli, "--json", "provision", "2", "3", "--concurrency", "1")
            return result.json(), time.monotonic() - t0
        finally:
            await squatter.close()

    doc, _ = asyncio.run(hold_and_provision())
    by_id = {t["clnt_id"]: t for t in doc["tenants"]}
    assert by_id[2]["status"] == by_id[3]["status"] == "applied"
    assert any("55006" in w and "template" in w for w in by_id[2].get("warnings", []))
    assert by_id[2]["applied"] == ["1.0.0", "1.0.1"]  # migrated the plain way
    assert ws.versions(3) == ["1.0.0", "1.0.1"]


def test_the_report_lint_runs_while_the_tenants_run(ws: Workspace) -> None:
    """The folder is linted on a thread while the tenants run: the last tenant's
    result waits (up to a minute) for the lint to have started, which a lint run
    after the tenants would never do; the report still holds the findings of what
    was pending."""
    import threading

    from tenantctl.config import load_project
    from tenantctl.drivers.postgres import DRIVER
    from tenantctl.engine import RunOptions
    from tenantctl.inputs import lint, load_inputs
    from tenantctl.lint_rules import Finding
    from tenantctl.outcome import TenantResult
    from tenantctl.runs import run_changes
    from tenantctl.steps import Verb

    ws.write_config(TENANTS)
    ws.add_migration("v1_base.sql", BASE)
    assert ws.cli("--quiet", "provision", "--all").exit_code == 0
    ws.add_migration("v2_drop.sql", "alter table cvs_usr_mast drop column usr_id;")  # ban-drop-column
    inputs = load_inputs(load_project(ws.config, dsn=ws.dsn))
    linting = threading.Event()
    waited: list[bool] = []

    def folder_lint() -> tuple[Finding, ...]:
        linting.set()
        return tuple(lint(inputs))

    async def on_result(result: TenantResult) -> None:
        if len(waited) == 3:  # the last of the four
            waited.append(await asyncio.to_thread(linting.wait, 60))
        else:
            waited.append(True)

    run = asyncio.run(run_changes(DRIVER, inputs, inputs.project.tenants, RunOptions(verb=Verb.MIGRATE),
                                  lint=folder_lint, on_result=on_result))
    assert waited == [True] * 4
    assert not run.failed and {f["rule"] for f in run.lint} == {"ban-drop-column"}


class SessionKeepingDriver(PostgresDriver):
    """The PostgreSQL driver, keeping every session it opens (to look at them after)."""

    def __init__(self) -> None:
        self.sessions: list[Any] = []

    async def connect(self, dsn: str, database: str | None = None, **kwargs: Any) -> Any:
        session = await super().connect(dsn, database, **kwargs)
        self.sessions.append(session)
        return session


def _three_runs(ws: Workspace) -> list[list[Any]]:
    """A first provision, a migrate of a new migration and a no-op migrate, with one
    SessionKeepingDriver: the sessions each run opened."""
    setup(ws)
    driver, opened, applied = SessionKeepingDriver(), [], []
    for verb in (provision, migrate, migrate):
        project = load_project(ws.config, dsn=ws.dsn)
        before = len(driver.sessions)
        result = asyncio.run(verb(project, ChangeRequest(all=True), driver=driver))
        applied.append(result.to_json()["summary"]["applied"])
        opened.append(driver.sessions[before:])
        if verb is provision:  # what the first migrate applies; the second finds nothing
            ws.add_migration("v1.0.2_note.sql", "alter table cvs_usr_mast add column note text;\n")
    assert applied == [4, 4, 0]
    return opened


def _introspected(session: Any, oids: list[int]) -> list[int]:
    """The types this session's connection had to ask the server about: asyncpg
    decodes its built-in types (text[] and oid[] among arrays) without asking."""
    settings = session._conn._protocol.get_settings()
    return [oid for oid in oids
            if (codec := settings.get_data_codec(oid)) is not None and "core=0" in repr(codec)]


def test_a_run_never_makes_the_driver_introspect_a_type(ws: Workspace) -> None:
    """Each type asyncpg does not know costs an introspection query, and three round
    trips, on each new connection. The control database, admin and tenant sessions
    of a first provision, a migrate and a no-op migrate (the registry, the ledger)
    use none. Caught before: smallint[] in the registry sync and the run row."""
    sessions = [s for run in _three_runs(ws) for s in run]
    oids = [r["oid"] for r in ws.fetch(None, "SELECT oid::int FROM pg_type")]
    assert {s.database for s in sessions} >= {ws.control_db, ws.db(1)}
    assert {s.database: _introspected(s, oids) for s in sessions if _introspected(s, oids)} == {}


def test_a_migrate_run_opens_one_admin_session(ws: Workspace) -> None:
    """The server's version is read on an admin session before the control database
    is opened; the server's facts (markers, databases, connection cap) are then read
    on the control database's session, not on a second admin session."""
    for run in _three_runs(ws)[1:]:
        assert [s.database for s in run].count("server") == 1
