"""tenantctl.api on a real PostgreSQL: the same documents and exit codes as the CLI.

The only fields normalised before comparing an API report with the CLI's
``--json`` are the ones that differ between any two runs: ``run_id`` and
``duration_ms`` (of the run and of each tenant). status and verify documents
are compared as they are.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from conftest import ROOT, Workspace
from tenantctl import api, embedded
from tenantctl.errors import BadInputError, ConfigError, MigrationFileError, TenantctlError

TENANTS = """\
  - { clnt_id: 1, name: "Acme Hospital", sites: [1, 2] }
  - { clnt_id: 2, name: "St. Mary's", sites: [1] }
  - { clnt_id: 3, name: "Northwind", sites: [1, 2, 3] }
"""

# fails where the tenant has fewer than two sites (clnt_id 2), applies elsewhere
NEEDS_TWO_SITES = """\
    DO $$ BEGIN
      IF (SELECT count(*) FROM cvs_site_mast) < 2 THEN
        RAISE EXCEPTION 'tenant has fewer than two sites';
      END IF;
    END $$;
    CREATE TABLE cvs_site_note (clnt_id int2 NOT NULL, site_id int2 NOT NULL, note text NOT NULL,
                                PRIMARY KEY (clnt_id, site_id, note));
"""


def normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """A run document without what differs between any two runs of the same work."""
    out = dict(doc, run_id="<run>", duration_ms=0)
    out["tenants"] = [dict(t, duration_ms=0) for t in doc["tenants"]]
    return out


def versions(ws: Workspace) -> dict[int, str | None]:
    return {r.clnt_id: r.version for r in api.status(ws.config, dsn=ws.dsn).rows}


def project(ws: Workspace) -> Workspace:
    ws.write_config(TENANTS, extra="seed: seed/tenant_seed.sql\n")
    assert ws.cli("provision", "--all").exit_code == 0
    ws.add_migration("v1.3.0_site_notes.sql", NEEDS_TWO_SITES)
    ws.add_migration("v1.3.0_site_notes.down.sql", "DROP TABLE cvs_site_note;\n")
    return ws


def test_reports_equal_the_cli_json_for_the_same_state(example_ws: Workspace) -> None:
    ws = project(example_ws)
    cfg, dsn = ws.config, ws.dsn

    # migrate with one failing tenant: API first, then the same state again for the CLI
    by_api = api.migrate(cfg, dsn=dsn)
    assert by_api.exit_code == 1
    assert [(t.clnt_id, t.status) for t in by_api.tenants] == [
        (1, "applied"), (2, "failed"), (3, "applied")]
    rolled_by_api = api.rollback(cfg, dsn=dsn, tenants=[1, 3], to="1.2.0")
    assert rolled_by_api.exit_code == 0
    assert versions(ws) == {1: "1.2.0", 2: "1.2.0", 3: "1.2.0"}
    by_cli = ws.cli("migrate", "--all", "--json")
    assert by_cli.exit_code == by_api.exit_code == 1
    assert normalised(by_api.to_dict()) == normalised(by_cli.json())
    assert by_api.to_dict()["tenants"][1]["error"]["message"].endswith("fewer than two sites")

    rolled_by_cli = ws.cli("rollback", "1", "3", "--to", "1.2.0", "--json")
    assert rolled_by_cli.exit_code == rolled_by_api.exit_code == 0
    assert normalised(rolled_by_api.to_dict()) == normalised(rolled_by_cli.json())

    provisioned = api.provision(cfg, dsn=dsn, tenants=[1, 3])
    assert ws.cli("rollback", "1", "3", "--to", "1.2.0").exit_code == 0
    provisioned_cli = ws.cli("provision", "1", "3", "--json")
    assert provisioned_cli.exit_code == provisioned.exit_code == 0
    assert normalised(provisioned.to_dict()) == normalised(provisioned_cli.json())

    # dry run: nothing changes, so both see the same state
    dry = api.migrate(cfg, dsn=dsn, dry_run=True, tenants=[2])
    dry_cli = ws.cli("migrate", "2", "--dry-run", "--json")
    assert dry.exit_code == dry_cli.exit_code
    assert normalised(dry.to_dict()) == normalised(dry_cli.json())

    # read-only commands: the documents are equal as they are
    state = api.status(cfg, dsn=dsn)
    state_cli = ws.cli("status", "--json")
    assert state.exit_code == state_cli.exit_code == 0
    assert state.to_dict() == state_cli.json()
    assert {r.clnt_id: r.state for r in state.rows}[2] == "pending"

    applied = ws.migrations / "v1.0.0_create_site_and_usr_tables.sql"
    applied.write_text(applied.read_text() + "\nSELECT 1;\n")
    checked = api.verify(cfg, dsn=dsn)
    checked_cli = ws.cli("verify", "--json")
    assert checked.exit_code == checked_cli.exit_code == 1
    assert checked.to_dict() == checked_cli.json()
    assert {f.kind for f in checked.findings} == {"drift"}


def test_report_and_junit_files_match_the_cli(example_ws: Workspace, tmp_path: Path) -> None:
    ws = project(example_ws)
    api.migrate(ws.config, dsn=ws.dsn, tenants=[2], report=tmp_path / "api.json",
                junit=str(tmp_path / "api.xml"))
    assert ws.cli("migrate", "2", "--report", str(tmp_path / "cli.json"),
                  "--junit", str(tmp_path / "cli.xml")).exit_code == 1
    import json

    assert normalised(json.loads((tmp_path / "api.json").read_text())) == normalised(
        json.loads((tmp_path / "cli.json").read_text()))
    cases = {name: [(c.get("name"), [e.tag for e in c]) for c in ET.parse(tmp_path / name).getroot()]
             for name in ("api.xml", "cli.xml")}
    assert cases["api.xml"] == cases["cli.xml"] == [(f"clnt_id 2 ({ws.db(2)})", ["failure"])]


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(path.read_text())
            for sample in family.samples}


def test_metrics_file_as_the_cli_writes_it(example_ws: Workspace, tmp_path: Path) -> None:
    ws = project(example_ws)
    prom = tmp_path / "tenantctl.prom"
    failed = api.migrate(ws.config, dsn=ws.dsn, metrics_file=prom)
    assert failed.exit_code == 1
    after_failure = _samples(prom)
    assert after_failure[("tenantctl_run_exit_code", (("command", "migrate"),))] == 1
    assert after_failure[("tenantctl_run_tenants", (("command", "migrate"), ("status", "failed")))] == 1
    assert ("tenantctl_run_last_success_timestamp_seconds", (("command", "migrate"),)) not in after_failure
    api.migrate(ws.config, dsn=ws.dsn, metrics_file=prom, dry_run=True)
    assert _samples(prom) == after_failure, "a dry run leaves the file alone"
    done = api.migrate(ws.config, dsn=ws.dsn, tenants=[1, 3], metrics_file=str(prom))
    assert done.exit_code == 0 and done.notices == ()
    ok = _samples(prom)
    assert ok[("tenantctl_run_exit_code", (("command", "migrate"),))] == 0
    assert ok[("tenantctl_run_last_success_timestamp_seconds", (("command", "migrate"),))] > 0
    # the CLI merges into the same file: one file, both writers, same series
    assert ws.cli("provision", "2", "--metrics-file", str(prom)).exit_code == 1
    both = _samples(prom)
    assert both[("tenantctl_run_exit_code", (("command", "provision"),))] == 1
    assert both[("tenantctl_run_last_success_timestamp_seconds", (("command", "migrate"),))] == \
        ok[("tenantctl_run_last_success_timestamp_seconds", (("command", "migrate"),))]
    # bad input is refused before anything, and recorded as the CLI records it (exit 2)
    with pytest.raises(BadInputError):
        api.migrate(ws.config, dsn=ws.dsn, metrics_file=prom, lock_wait="soon")
    assert _samples(prom)[("tenantctl_run_exit_code", (("command", "migrate"),))] == 2
    with pytest.raises(BadInputError, match="metrics_file"):
        api.migrate(ws.config, dsn=ws.dsn, metrics_file=tmp_path / "no" / "x.prom")


def test_the_ledger_records_the_call_as_its_cli_equivalent(ws: Workspace) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_init.sql", "CREATE TABLE t (clnt_id int2 NOT NULL PRIMARY KEY);")
    run = api.provision(ws.config, dsn=ws.dsn, tenants=[3, 1], lock_wait=timedelta(seconds=30),
                        retries=0, no_template=True, server="default")
    assert run.exit_code == 0
    [row] = ws.fetch(ws.control_db, "SELECT argv, command FROM tenantctl_runs WHERE run_id = $1",
                     run.run.run_id)
    assert row["command"] == "provision"
    assert row["argv"] == ["tenantctl.api", "provision", "--config", str(ws.config), "3", "1",
                           "--lock-wait", "30.000000s", "--retries", "0", "--no-template",
                           "--server", "default"]
    # --server NAME: one name or several; the read-only commands take it too
    assert [r.clnt_id for r in api.status(ws.config, dsn=ws.dsn, server=["default"]).rows] == [1, 2, 3]
    with pytest.raises(BadInputError, match="nope"):
        api.verify(ws.config, dsn=ws.dsn, server="nope")


def test_async_twins_inside_a_running_event_loop(example_ws: Workspace,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    ws = project(example_ws)
    capfd.readouterr()

    async def main() -> None:
        # two commands at once on one loop: a read and a dry run
        state, dry = await asyncio.gather(
            api.astatus(ws.config, dsn=ws.dsn),
            api.amigrate(ws.config, dsn=ws.dsn, dry_run=True))
        assert {r.pending for r in state.rows} == {1}
        assert {t.status for t in dry.tenants} == {"applied"}  # would apply v1.3.0 everywhere
        # the blocking form refuses (it would block this loop) and names the twin
        with pytest.raises(RuntimeError, match="amigrate"):
            api.migrate(ws.config, dsn=ws.dsn)
        # a stop event set before the run: nothing starts, every tenant is skipped, exit 130
        stop = asyncio.Event()
        stop.set()
        stopped = await api.amigrate(ws.config, dsn=ws.dsn, stop=stop)
        assert stopped.exit_code == 130
        assert {t.status for t in stopped.tenants} == {"skipped"}
        done = await api.amigrate(ws.config, dsn=ws.dsn, tenants=[1, 3])
        assert done.exit_code == 0
        refused = await api.amigrate(ws.config, dsn=ws.dsn, tenants=[2])
        assert refused.exit_code == 1 and refused.tenants[0].status == "failed"
        checked = await api.averify(ws.config, dsn=ws.dsn, tenants=[1, 3])
        assert checked.exit_code == 0 and checked.findings == ()

    asyncio.run(main())
    assert capfd.readouterr() == ("", ""), "the API prints nothing, failed tenants included"
    assert versions(ws) == {1: "1.3.0", 2: "1.2.0", 3: "1.3.0"}


def _refused(capfd: pytest.CaptureFixture[str], error: type[TenantctlError], says: str,
             call: Any, **kwargs: Any) -> TenantctlError:
    with pytest.raises(error) as caught:
        call(**kwargs)
    assert says in caught.value.message, caught.value.message
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "the API must not print"
    return caught.value


def test_bad_input_raises_without_printing_or_touching_anything(
        ws: Workspace, capfd: pytest.CaptureFixture[str]) -> None:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_init.sql", "CREATE TABLE t (clnt_id int2 NOT NULL PRIMARY KEY);")
    ws.add_migration("v1.1.0_more.sql", "ALTER TABLE t ADD COLUMN x int;")
    capfd.readouterr()
    base = {"config": ws.config, "dsn": ws.dsn}
    missing = _refused(capfd, ConfigError, "no such file", api.migrate, config=ws.dir / "nope.yaml")
    assert missing.exit_code == 2
    _refused(capfd, ConfigError, "clnt_id 9 not in tenants.yaml", api.migrate, **base, tenants=[9])
    _refused(capfd, ConfigError, "empty selection", api.status, **base, tenants=[])
    _refused(capfd, BadInputError, "clnt_id 0 is not in the range", api.migrate, **base, tenants=[0])
    _refused(capfd, BadInputError, "concurrency=0", api.migrate, **base, concurrency=0)
    _refused(capfd, BadInputError, "retries=101", api.provision, **base, retries=101)
    _refused(capfd, BadInputError, "concurrency=1001", api.verify, **base, concurrency=1001)
    _refused(capfd, BadInputError, "lock_wait='soon'", api.migrate, **base, lock_wait="soon")
    _refused(capfd, BadInputError, "cannot be negative", api.migrate, **base,
             lock_timeout=timedelta(seconds=-1))
    _refused(capfd, BadInputError, "not both", api.migrate, **base, only_failed=True, resume="x")
    _refused(capfd, BadInputError, "needs yes=True", api.rollback, **base, to="1.0.0")
    _refused(capfd, BadInputError, "down", api.rollback, **base, to="1.0.0", tenants=[1])
    _refused(capfd, BadInputError, "1.9.9", api.migrate, **base, to="1.9.9")
    _refused(capfd, BadInputError, "junit=", api.migrate, **base, junit=ws.dir / "no" / "x.xml")
    ws.add_migration("1.2.0_no_v.sql", "SELECT 1;")
    _refused(capfd, MigrationFileError, "1.2.0_no_v.sql", api.provision, **base)
    (ws.migrations / "1.2.0_no_v.sql").unlink()
    ws.config.write_text("tenants: [")
    _refused(capfd, ConfigError, "tenants.yaml", api.status, **base)
    for wrong in ({"dryrun": True}, {"concurrency": "8"}, {"tenants": "12"}, {"tenants": [True]},
                  {"dry_run": "no"}, {"lock_wait": [5]}, {"to": 1}):
        with pytest.raises(TypeError):
            api.migrate(ws.config, dsn=ws.dsn, **wrong)
    from tenantctl.config import load_project

    ws.write_config(TENANTS)
    with pytest.raises(TypeError, match="load_project"):
        api.status(load_project(ws.config, dsn=ws.dsn), dsn=ws.dsn)
    assert capfd.readouterr() == ("", "")
    assert ws.databases() == set(), "bad input must not create anything"


def test_the_api_is_click_free_and_the_plugin_loads_light() -> None:
    """api.py never imports click (only cli.py does); loading the pytest plugin, which
    every pytest run in an environment with tenantctl does, imports neither the API
    nor asyncpg until a test asks for the fixture."""
    probe = ("import sys, tenantctl.testing; light = sorted({'tenantctl.api', 'asyncpg', 'pydantic'}"
             " & set(sys.modules)); import tenantctl.api; print(light, 'click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["[]", "False"], out.stdout + out.stderr


def test_the_cli_ranges_are_the_apis() -> None:
    import click

    from tenantctl.cli import migrate, status

    ranges = {p.name: p.type for p in migrate.params if isinstance(p.type, click.IntRange)}
    ranges["status_concurrency"] = next(p.type for p in status.params if p.name == "concurrency")
    assert isinstance(ranges["concurrency"], click.IntRange)
    for name, (low, high) in {"concurrency": api.CONCURRENCY_RANGE, "retries": api.RETRIES_RANGE,
                              "max_failures": api.MAX_FAILURES_RANGE,
                              "status_concurrency": api.CONCURRENCY_RANGE}.items():
        kind = ranges[name]
        assert isinstance(kind, click.IntRange)
        assert (kind.min, kind.max) == (low, high), name


def test_mypy_checks_the_callers(tmp_path: Path) -> None:
    caller = tmp_path / "caller.py"
    caller.write_text(textwrap.dedent("""\
        from tenantctl import api

        report = api.migrate("tenants.yaml", dry_run=True, lock_wait="5s", tenants=[1, 2])
        code: int = report.exit_code
        api.migrate("tenants.yaml", dryrun=True)
        api.status("tenants.yaml", concurrency="8")
        api.rollback("tenants.yaml", tenants=[1])

        async def later() -> None:
            again = await api.aprovision("tenants.yaml", no_template=True)
            doc: dict[str, object] = again.to_dict()
    """))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), str(caller)],
        capture_output=True, text=True, cwd=tmp_path,
        env={"MYPYPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, check=False)
    errors = [line.split(": error: ")[1] for line in out.stdout.splitlines() if ": error: " in line]
    assert errors == [
        'Unexpected keyword argument "dryrun"; did you mean "dry_run"?  [call-arg]',
        'Argument "concurrency" has incompatible type "str"; expected "int | None"  [arg-type]',
        'Missing named argument "to"  [call-arg]',
    ], out.stdout + out.stderr


@pytest.mark.slow
def test_without_a_dsn_it_uses_the_embedded_server_next_to_tenants_yaml(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANTCTL_DSN", raising=False)  # as the CLI, the API would use it
    # outside pytest's basetemp, whose 0700 parent the server's own system user cannot enter
    base = Path(tempfile.mkdtemp(prefix="tenantctl-api-embedded-"))
    shutil.copytree(ROOT / "migrations", base / "migrations")
    (base / "tenants.yaml").write_text(
        "migrations: migrations\ntenants:\n  - { clnt_id: 7, name: Seven, sites: [1] }\n")
    try:
        state = api.status(base / "tenants.yaml")
        assert [(r.clnt_id, r.state) for r in state.rows] == [(7, "not_provisioned")]
        assert embedded.running_pid(base / ".tenantctl") is not None
        done = api.provision(str(base / "tenants.yaml"))
        assert done.exit_code == 0 and done.tenants[0].created
    finally:
        embedded.stop(base / ".tenantctl")
        shutil.rmtree(base, ignore_errors=True)
