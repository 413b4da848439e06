"""The schema marker rides in the last migration's transaction when it cannot be
refused (a superuser session), and is written on its own otherwise.

Folded, the marker and the last history row are written by one transaction:
the same ``xmin`` on the history row and on the database's settings row. A role
that is not a superuser keeps the separate marker step, and a refusal there
(PostgreSQL 15+ lets only a superuser, or a role granted SET on the parameter,
set a placeholder setting) costs only the marker, never the migration.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import CliResult, Workspace
from tenantctl.migrations import load_migrations
from tenantctl.steps import Step, StepKind, fold_marker

TENANTS = "".join(f'  - {{ clnt_id: {i}, name: "T{i}", sites: [1] }}\n' for i in (1, 2))
BASE = "create table cvs_usr_mast (clnt_id int2 not null, usr_id int not null, primary key (clnt_id, usr_id));\n"


# ---------------------------------------------------------------- the plan (pure)


def _migrations(tmp_path: Path) -> dict[str, object]:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "v1_a.sql").write_text("create table a (clnt_id int2);\n")
    (folder / "v2_b.sql").write_text("-- tenantctl: no-transaction\ncreate index concurrently "
                                     "a_i on a (clnt_id);\n")
    (folder / "v3_c.sql").write_text("create table c (clnt_id int2);\n")
    return {m.version.text: m for m in load_migrations(folder)}


def test_a_final_marker_folds_into_the_transactional_migration_before_it(tmp_path: Path) -> None:
    m = _migrations(tmp_path)
    steps = (Step(StepKind.APPLY, m["1"], version_after="1"),  # type: ignore[arg-type]
             Step(StepKind.APPLY, m["3"], version_after="3"),  # type: ignore[arg-type]
             Step(StepKind.MARK, marker="v1:3:abc:0", version_after="3"))
    folded = fold_marker(steps)
    assert [(s.kind, s.migration and s.migration.version.text, s.marker) for s in folded] == [
        (StepKind.APPLY, "1", None), (StepKind.APPLY, "3", "v1:3:abc:0")]
    assert folded[-1].version_after == "3"


@pytest.mark.parametrize("case", ["no-transaction", "seed-between", "clearing", "marker-only",
                                  "no-marker"])
def test_the_marker_stays_a_step_of_its_own(tmp_path: Path, case: str) -> None:
    m = _migrations(tmp_path)
    apply1 = Step(StepKind.APPLY, m["1"], version_after="1")  # type: ignore[arg-type]
    mark = Step(StepKind.MARK, marker="v1:1:abc:0", version_after="1")
    steps = {
        # a no-transaction migration commits statement by statement: nothing to ride in
        "no-transaction": (Step(StepKind.APPLY, m["2"], version_after="2"), mark),  # type: ignore[arg-type]
        # the marker claims the seed too: it must follow it
        "seed-between": (apply1, Step(StepKind.SEED, version_after="1"), mark),
        # a rollback clears the marker before anything else
        "clearing": (Step(StepKind.MARK, marker=None), apply1),
        "marker-only": (mark,),
        "no-marker": (apply1,),
    }[case]
    assert fold_marker(steps) == steps


# ---------------------------------------------------------------- on PostgreSQL


def _xmins(ws: Workspace, clnt_id: int) -> tuple[str, str | None]:
    """(xmin of the newest history row, xmin of the database's settings row)."""
    row = ws.fetch(ws.db(clnt_id), "SELECT xmin::text AS x FROM tenantctl_schema_history "
                   "ORDER BY installed_rank DESC LIMIT 1")[0]
    settings = ws.fetch(None, "SELECT s.xmin::text AS x FROM pg_db_role_setting s JOIN pg_database d "
                        "ON d.oid = s.setdatabase WHERE d.datname = $1 AND s.setrole = 0",
                        ws.db(clnt_id))
    return row["x"], settings[0]["x"] if settings else None


def test_a_superuser_run_commits_the_marker_with_the_last_migration(ws: Workspace) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.0.1_grp.sql", "create table cvs_grp_mast (clnt_id int2, grp_id int);\n")
    ws.add_migration("v1.0.2_note.sql", "alter table cvs_grp_mast add column note text;\n")
    result = ws.cli("--json", "migrate", "--all")
    assert result.exit_code == 0, result.stderr
    for clnt_id in (1, 2):
        assert ":1.0.2:" in (ws.marker(ws.db(clnt_id)) or "")
        history_xmin, settings_xmin = _xmins(ws, clnt_id)
        assert history_xmin == settings_xmin
    # the marker is current: the next run opens no tenant session
    again = ws.cli("--json", "migrate", "--all")
    assert {(t["status"], t["attempts"]) for t in again.json()["tenants"]} == {("up_to_date", 0)}


def test_a_failing_last_migration_writes_no_marker(ws: Workspace) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_base.sql", BASE)
    assert ws.cli("provision", "--all").exit_code == 0
    before = ws.marker(ws.db(1))
    ws.add_migration("v1.0.1_bad.sql", "create table t (clnt_id int2);\nselect 1/0;\n")
    result = ws.cli("--json", "migrate", "--all", "--retries", "0")
    assert result.exit_code == 1
    assert ws.marker(ws.db(1)) == before  # still 1.0.0's: never a claim of 1.0.1
    assert ws.versions(1) == ["1.0.0"] and "t" not in ws.tables(1)


PASSWORD = "fold-test-pw"


@pytest.fixture
def plain_role(ws: Workspace) -> Iterator[str]:
    """A login role that may create databases but is no superuser."""
    role = f"{ws.prefix}_owner"
    ws.fetch(None, f'CREATE ROLE "{role}" LOGIN CREATEDB NOSUPERUSER PASSWORD \'{PASSWORD}\'')
    try:
        yield role
    finally:
        for db in ws.databases():
            ws.fetch(None, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        ws.fetch(None, f'DROP ROLE IF EXISTS "{role}"')


def _cli_as(ws: Workspace, role: str, *args: str) -> CliResult:
    """tenantctl in-process, logged in as ``role``."""
    parts = urllib.parse.urlsplit(ws.dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    dsn = urllib.parse.urlunsplit((parts.scheme, f"{role}:{PASSWORD}@{host}", parts.path,
                                   parts.query, ""))
    return replace(ws, dsn=dsn).cli(*args)


def test_a_role_that_is_no_superuser_keeps_the_marker_apart(ws: Workspace, plain_role: str) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_base.sql", BASE)
    provisioned = _cli_as(ws, plain_role, "--json", "provision", "--all")
    assert provisioned.exit_code == 0, provisioned.stderr
    ws.add_migration("v1.0.1_grp.sql", "create table cvs_grp_mast (clnt_id int2, grp_id int);\n")
    result = _cli_as(ws, plain_role, "--json", "migrate", "--all")
    assert result.exit_code == 0, result.stderr
    assert {(t["status"], t["to_version"]) for t in result.json()["tenants"]} == {
        ("applied", "1.0.1")}
    for clnt_id in (1, 2):
        assert ws.versions(clnt_id) == ["1.0.0", "1.0.1"]
        marker = ws.marker(ws.db(clnt_id))
        # written by a transaction of its own, or refused (PostgreSQL 15+): never
        # a claim of a version the history does not hold
        if marker is not None:
            assert ":1.0.1:" in marker
            history_xmin, settings_xmin = _xmins(ws, clnt_id)
            assert history_xmin != settings_xmin
    again = _cli_as(ws, plain_role, "--json", "migrate", "--all")
    assert again.exit_code == 0, again.stderr
    assert {t["status"] for t in again.json()["tenants"]} == {"up_to_date"}
