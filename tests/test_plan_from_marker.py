"""A marked tenant is planned from its marker, not from a read of its history.

The marker proves what a tenant had applied when it was written; the lock's
round trip proves nothing was recorded since (the history's last row is still
the marker version's up row). Then the history read (two round trips per
tenant) is skipped. Anything recorded since — a failed or partial attempt, a
later migration whose marker could not be written, a down — sends the tenant
back to the full read: a partial no-transaction migration resumes where it
stopped and never replays a statement. Shown on PostgreSQL with the real driver,
counting which of its calls the run made.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import Workspace
from tenantctl.commands import ChangeRequest, migrate, provision
from tenantctl.config import load_project
from tenantctl.drivers.base import Session
from tenantctl.drivers.postgres import PostgresDriver
from tenantctl.migrations import load_migrations
from tenantctl.outcome import RunResult
from tenantctl.plan import HistoryRow, folder_fingerprint, make_marker, vouched_history

TENANTS = "".join(f'  - {{ clnt_id: {i}, name: "T{i}", sites: [1] }}\n' for i in (1, 2))
BASE = "create table cvs_usr_mast (clnt_id int2 not null, usr_id int not null, primary key (clnt_id, usr_id));\n"


class CountingDriver(PostgresDriver):
    """The PostgreSQL driver, counting the calls that decide how a tenant is planned."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def open_history(self, session: Session) -> list[HistoryRow]:
        self.calls["open_history"] += 1
        return await super().open_history(session)

    async def acquire_lock_checking_last(self, session: Session, wait_s: float,
                                         version: str) -> bool:
        checked = await super().acquire_lock_checking_last(session, wait_s, version)
        self.calls[f"checked_last:{checked}"] += 1
        return checked


def _run(ws: Workspace, verb: Any, driver: CountingDriver, **request: Any) -> RunResult:
    project = load_project(ws.config, dsn=ws.dsn)
    result: RunResult = asyncio.run(verb(project, ChangeRequest(all=True, **request), driver=driver))
    return result


def _history(ws: Workspace, clnt_id: int) -> list[tuple[int, str, bool, int | None]]:
    return [(r["installed_rank"], r["version"], r["success"], r["statements_done"]) for r in ws.fetch(
        ws.db(clnt_id), "SELECT installed_rank, version, success, statements_done "
        "FROM tenantctl_schema_history ORDER BY installed_rank")]


# ---------------------------------------------------------------- what a marker vouches for


def test_a_marker_vouches_for_the_files_up_to_its_version(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name, sql in (("v1_a.sql", "create table a (x int);"), ("v2_b.sql", "create table b (x int);"),
                      ("v3_c.sql", "create table c (x int);")):
        (folder / name).write_text(sql)
    ms = load_migrations(folder)
    at_2 = make_marker(ms[:2], seeded=False)
    vouched = vouched_history(at_2, ms, (7,))
    assert vouched is not None and vouched.version == "2" and not vouched.seeded
    assert [(r.version, r.kind, r.checksum, r.success) for r in vouched.rows] == [
        ("1", "up", ms[0].checksum, True), ("2", "up", ms[1].checksum, True)]
    seeded = vouched_history(make_marker(ms[:2], seeded=True), ms, (7,))
    assert seeded is not None and seeded.rows[-1].kind == "seed" and seeded.rows[-1].version == "7"
    # proves nothing: another folder below the version, a version not in the folder, not a marker
    (folder / "v1_a.sql").write_text("create table a (x bigint);")
    assert vouched_history(at_2, load_migrations(folder), (7,)) is None
    assert vouched_history(f"v1:9:{folder_fingerprint(ms)}:0", ms, (7,)) is None
    for marker in (None, "", "v2:2:abc:0", "v1:2:abc", "garbage"):
        assert vouched_history(marker, ms, (7,)) is None


# ---------------------------------------------------------------- on PostgreSQL


def test_a_marked_tenant_is_planned_without_reading_its_history(ws: Workspace) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1_base.sql", BASE)
    assert _run(ws, provision, CountingDriver()).to_json()["summary"]["applied"] == 2
    ws.add_migration("v2_more.sql", "alter table cvs_usr_mast add column usr_nm text;")
    ws.add_migration("v3_idx.sql", "-- tenantctl: no-transaction\n"
                                   "create index concurrently usr_nm_i on cvs_usr_mast (usr_nm);")
    driver = CountingDriver()
    run = _run(ws, migrate, driver)
    assert run.to_json()["summary"]["applied"] == 2 and not run.failed
    assert driver.calls == {"checked_last:True": 2}  # no history read at all
    for clnt_id in (1, 2):
        assert _history(ws, clnt_id) == [(1, "1", True, None), (2, "2", True, None), (3, "3", True, 1)]
        assert ws.marker(ws.db(clnt_id)) == "tenantctl.schema=" + str(make_marker(load_migrations(ws.migrations), seeded=False))
    again = CountingDriver()
    assert _run(ws, migrate, again).to_json()["summary"]["up_to_date"] == 2 and not again.calls  # no session


def test_no_skip_reads_every_history(ws: Workspace) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1_base.sql", BASE)
    _run(ws, provision, CountingDriver())
    ws.add_migration("v2_more.sql", "alter table cvs_usr_mast add column usr_nm text;")
    driver = CountingDriver()
    assert _run(ws, migrate, driver, no_skip=True).to_json()["summary"]["applied"] == 2
    assert driver.calls == {"open_history": 2}


@pytest.mark.parametrize("since", ["partial", "unmarked"])
def test_anything_recorded_since_the_marker_sends_the_tenant_to_its_history(
        ws: Workspace, since: str) -> None:
    """A partial no-transaction attempt after the marker: the next run resumes at the
    statement that failed (replaying the first insert would break its primary key).
    A later migration committed without its marker (the marker write failed): the
    next run must not apply it again."""
    ws.write_config(TENANTS)
    ws.add_migration("v1_base.sql", BASE + "create table parent (id int primary key);\n"
                     "create table child (id int primary key references parent);\n")
    _run(ws, provision, CountingDriver())
    marker = ws.marker(ws.db(1))
    if since == "partial":
        ws.add_migration("v2_fill.sql", "-- tenantctl: no-transaction\n"
                         "insert into cvs_usr_mast values (1, 1);\n"
                         "insert into child values (1);\n")  # no parent 1 yet: fails
        first = _run(ws, migrate, CountingDriver(), retries=0)
        assert first.to_json()["summary"]["failed"] == 2
        assert _history(ws, 1)[-1] == (2, "2", False, 1)
        for clnt_id in (1, 2):
            ws.fetch(ws.db(clnt_id), "insert into parent values (1)")
    else:
        ws.add_migration("v2_fill.sql", "insert into cvs_usr_mast values (1, 1);\n")
        for clnt_id in (1, 2):  # as if applied by a run whose marker write was refused
            ws.fetch(ws.db(clnt_id), "insert into cvs_usr_mast values (1, 1)")
            ws.fetch(ws.db(clnt_id), "insert into tenantctl_schema_history (installed_rank, version, "
                     "description, kind, script, checksum, execution_ms, success) select 2, '2', 'fill', "
                     "'up', 'v2_fill.sql', $1, 0, true", load_migrations(ws.migrations)[-1].checksum)
    assert ws.marker(ws.db(1)) == marker  # still the marker of version 1
    driver = CountingDriver()
    run = _run(ws, migrate, driver)
    assert not run.failed, run.to_json()
    assert driver.calls == {"checked_last:False": 2, "open_history": 2}
    expected_last = (2, "2", True, 2) if since == "partial" else (2, "2", True, None)
    for clnt_id in (1, 2):
        assert _history(ws, clnt_id)[-1] == expected_last
        assert ws.fetch(ws.db(clnt_id), "select count(*) from cvs_usr_mast")[0][0] == 1
