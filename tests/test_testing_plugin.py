"""The pytest plugin (tenantctl.testing) used by small test suites of the example project.

Each inner session runs on the suite's server through ``TENANTCTL_TEST_DSN``
(pytester's subprocess runs: a fresh interpreter loads the plugin from its entry
point, as an application's test run does), except the one that
checks the embedded default, which gets a project folder and server of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.parse
from importlib.metadata import entry_points
from pathlib import Path

import asyncpg
import pytest

from conftest import ROOT
from tenantctl import embedded, testing

pytest_plugins = ["pytester"]

INNER = '''\
import asyncio
import json
import os
from pathlib import Path

import asyncpg

from tenantctl import api


def rows(dsn, sql):
    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(go())


def test_tenants_are_migrated_seeded_and_separate(tenantctl_tenants):
    acme = tenantctl_tenants[1]
    assert acme.database == tenantctl_tenants.prefix + "_client_1"
    assert rows(acme.dsn, "SELECT current_database()") == [(acme.database,)]
    assert rows(acme.dsn, "SELECT clnt_id, site_id FROM cvs_site_mast ORDER BY 2") == [(1, 1), (1, 2)]
    other = tenantctl_tenants[max(tenantctl_tenants)]
    rows(acme.dsn, "INSERT INTO cvs_site_mast (clnt_id, site_id, site_cd, site_nm) VALUES (1, 99, 'X', 'x') RETURNING 1")
    assert (1, 99) not in rows(other.dsn, "SELECT clnt_id, site_id FROM cvs_site_mast")
    assert "dsn=" not in repr(acme)
    state = api.status(tenantctl_tenants.project)
    assert {r.state for r in state.rows} == {"up_to_date"}
    Path(os.environ["PLUGIN_OUT"]).write_text(json.dumps({
        "prefix": tenantctl_tenants.prefix,
        "tenants": {i: t.database for i, t in tenantctl_tenants.items()},
        "provisioned": tenantctl_tenants.report.exit_code,
    }))


def test_the_session_shares_one_set(tenantctl_tenants):
    assert json.loads(Path(os.environ["PLUGIN_OUT"]).read_text())["prefix"] == tenantctl_tenants.prefix
'''


def _example(into: Path) -> None:
    shutil.copy(ROOT / "tenants.yaml", into / "tenants.yaml")
    shutil.copytree(ROOT / "migrations", into / "migrations")
    shutil.copytree(ROOT / "seed", into / "seed")
    (into / "test_app.py").write_text(INNER)


def _databases(dsn: str, prefix: str) -> set[str]:
    async def go() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            found = await conn.fetch("SELECT datname FROM pg_database WHERE left(datname, length($1)) = $1",
                                     prefix)
            return {r["datname"] for r in found}
        finally:
            await conn.close()

    return asyncio.run(go())


def test_the_plugin_is_registered_by_entry_point_and_idle_here(request: pytest.FixtureRequest) -> None:
    [point] = [e for e in entry_points(group="pytest11") if e.value == "tenantctl.testing"]
    assert request.config.pluginmanager.get_plugin(point.name) is testing
    # this session has it loaded; nothing is provisioned unless a test asks for the fixture
    assert "tenantctl_tenants" not in request.fixturenames


def test_a_project_suite_gets_throw_away_tenants_dropped_afterwards(
        pytester: pytest.Pytester, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _example(pytester.path)
    out = pytester.path / "out.json"
    monkeypatch.setenv("TENANTCTL_TEST_DSN", pg_dsn)
    monkeypatch.setenv("PLUGIN_OUT", str(out))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    seen = json.loads(out.read_text())
    assert seen["provisioned"] == 0
    assert seen["tenants"] == {str(i): f"{seen['prefix']}_client_{i}" for i in range(1, 6)}
    assert seen["prefix"].startswith(testing.PREFIX)
    assert _databases(pg_dsn, seen["prefix"]) == set(), "the session's databases are dropped"


def test_two_sessions_at_once_get_their_own_databases(
        pytester: pytest.Pytester, pg_dsn: str) -> None:
    _example(pytester.path)
    procs = []
    for n, ids in ((1, "1 3"), (2, "1,2")):
        env = dict(os.environ, TENANTCTL_TEST_DSN=pg_dsn, PLUGIN_OUT=str(pytester.path / f"{n}.json"))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tenantctl-keep",
             "--tenantctl-tenants", ids, "test_app.py"],
            cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    first, second = (json.loads((pytester.path / f"{n}.json").read_text()) for n in (1, 2))
    assert first["prefix"] != second["prefix"]
    try:
        for seen, ids in ((first, {1, 3}), (second, {1, 2})):
            assert {int(i) for i in seen["tenants"]} == ids
            kept = _databases(pg_dsn, seen["prefix"])  # --tenantctl-keep: still there
            assert set(seen["tenants"].values()) <= kept
            assert f"{seen['prefix']}_ctl" in kept
    finally:
        for seen in (first, second):
            asyncio.run(testing.drop_session_databases(pg_dsn, seen["prefix"]))
    assert _databases(pg_dsn, first["prefix"]) | _databases(pg_dsn, second["prefix"]) == set()


def test_a_failing_migration_fails_the_fixture_naming_the_tenant(
        pytester: pytest.Pytester, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _example(pytester.path)
    (pytester.path / "migrations" / "v1.3.0_breaks.sql").write_text(
        "-- tenantctl: per-tenant\n"
        "DO $$ BEGIN IF current_database() LIKE '%_client_4' THEN "
        "RAISE EXCEPTION 'clnt 4 refuses'; END IF; END $$;\n")
    monkeypatch.setenv("TENANTCTL_TEST_DSN", pg_dsn)
    monkeypatch.setenv("PLUGIN_OUT", str(pytester.path / "out.json"))
    before = _databases(pg_dsn, testing.PREFIX)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tenantctl-tenants", "3,4")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*provisioning failed*", "*clnt_id 4 in v1.3.0_breaks.sql*clnt 4 refuses*"])
    assert "Traceback" not in result.stdout.str()
    assert _databases(pg_dsn, testing.PREFIX) <= before, "nothing is left behind"


def test_bad_settings_are_named(pytester: pytest.Pytester, pg_dsn: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    _example(pytester.path)
    monkeypatch.setenv("TENANTCTL_TEST_DSN", pg_dsn)
    before = _databases(pg_dsn, testing.PREFIX)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tenantctl-tenants", "1 77")
    assert result.ret != 0
    assert "clnt_id [77] not in" in result.stdout.str() + result.stderr.str()
    missing = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tenantctl-config", "nope.yaml")
    missing.assert_outcomes(errors=2)
    missing.stdout.fnmatch_lines(["*nope.yaml: no such file*"])
    # the project's file is read by tenantctl's own reader: a duplicate key is named with its line
    (pytester.path / "tenants.yaml").write_text(
        (pytester.path / "tenants.yaml").read_text() + "seed: seed/other.sql\n")
    duplicate = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    duplicate.assert_outcomes(errors=2)
    duplicate.stdout.fnmatch_lines(["*tenants.yaml:*seed*"])
    assert _databases(pg_dsn, testing.PREFIX) <= before, "nothing was provisioned"


EMBEDDED_INNER = """\
import os
from pathlib import Path

from tenantctl import embedded


def test_served_by_the_projects_embedded_server(tenantctl_tenants):
    assert list(tenantctl_tenants) == [2]
    assert embedded.running_pid(Path(__file__).parent / ".tenantctl") is not None
    Path(os.environ["PLUGIN_OUT"]).write_text(tenantctl_tenants[2].dsn)
"""


@pytest.mark.slow
def test_without_a_dsn_the_projects_embedded_server_is_used() -> None:
    # outside pytest's basetemp, whose 0700 parent the server's own system user cannot enter
    base = Path(tempfile.mkdtemp(prefix="tenantctl-plugin-embedded-"))
    try:
        _example(base)
        (base / "test_app.py").write_text(EMBEDDED_INNER)
        (base / "pytest.ini").write_text(textwrap.dedent("""\
            [pytest]
            tenantctl_dsn_env = TENANTCTL_PLUGIN_TEST_UNSET
            tenantctl_tenants = 2
        """))
        env = {k: v for k, v in os.environ.items() if k != "TENANTCTL_PLUGIN_TEST_UNSET"}
        env["PLUGIN_OUT"] = str(base / "out.txt")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                              cwd=base, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert str(base / ".tenantctl") in urllib.parse.unquote((base / "out.txt").read_text())
        # left running, as the CLI leaves it (another session may be using it), databases dropped
        assert embedded.running_pid(base / ".tenantctl") is not None
        dsn = embedded.ensure_running(base / ".tenantctl")
        assert _databases(dsn, testing.PREFIX) == set()
    finally:
        embedded.stop(base / ".tenantctl")
        shutil.rmtree(base, ignore_errors=True)
