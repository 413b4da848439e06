"""Start-up that does not grow with the folder: lazy parsing and the parse cache.

A no-op run parses nothing; a run with work parses every file once, or takes it
from ``.tenantctl/cache``. "Did not parse" is shown by effect, never by timing:
the runs that must not parse are run in a process where ``import pglast`` fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import ROOT, CliResult, Workspace
from tenantctl.config import load_project
from tenantctl.inputs import load_inputs, parse_all
from tenantctl.migrations import read_script
from tenantctl.parse_cache import CACHE_DIR, ParseCache
from test_split_property import scripts as split_scripts

sys.path.insert(0, str(ROOT / "bench"))
from synthetic_history import generate, version_name

TENANTS = "  - { clnt_id: 1, name: Un, sites: [1] }\n  - { clnt_id: 2, name: Deux, sites: [1] }\n"
# tenantctl with the SQL parser gone: any attempt to parse SQL fails the run
WITHOUT_PGLAST = ("import sys; sys.modules['pglast'] = None; "
                  "from tenantctl.cli import main; main(sys.argv[1:])")
# tenantctl that may parse a statement (a pending CREATE INDEX CONCURRENTLY's index
# name), but never split a file into statements or lint the folder
WITHOUT_SPLITTING = """import sys, tenantctl.migrations as m, tenantctl.lint as l
def refuse(*args, **kwargs):
    raise RuntimeError("a file was split or linted")
m.split_statements = l.lint_migrations = refuse
from tenantctl.cli import main
main(sys.argv[1:])
"""


def run_without_pglast(ws: Workspace, *args: str, code: str = WITHOUT_PGLAST) -> CliResult:
    cmd = [sys.executable, "-c", code, "--config", str(ws.config), "--dsn", ws.dsn, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def cache_dir(ws: Workspace) -> Path:
    return ws.dir / ".tenantctl" / CACHE_DIR


def write_history(ws: Workspace, migrations: int) -> list[str]:
    """The synthetic history's first ``migrations`` migrations; their up file names."""
    history = generate(migrations=migrations)
    history.write(ws.migrations)
    return [f.name for f in history.ups]


def counts(ws: Workspace) -> tuple[int, int]:
    """(scripts taken from the cache, scripts parsed) when every file is split in-process."""
    inputs = load_inputs(load_project(ws.config))
    parse_all(inputs)
    return inputs.cache.hits, inputs.cache.parsed


@pytest.fixture
def synthetic_ws(ws: Workspace) -> Workspace:
    write_history(ws, 40)
    ws.write_config(TENANTS)
    return ws


def test_the_parser_is_really_gone_in_the_helper_processes(synthetic_ws: Workspace) -> None:
    result = run_without_pglast(synthetic_ws, "lint", "--json")  # cold cache: lint must parse
    assert result.exit_code != 0 and "pglast" in result.stderr
    result = run_without_pglast(synthetic_ws, "lint", "--json", code=WITHOUT_SPLITTING)
    assert result.exit_code != 0 and "a file was split or linted" in result.stderr


def test_a_no_op_run_parses_nothing(synthetic_ws: Workspace) -> None:
    ws = synthetic_ws
    assert ws.cli("--quiet", "provision", "--all").exit_code == 0
    shutil.rmtree(cache_dir(ws))  # cold: nothing cached either
    result = run_without_pglast(ws, "migrate", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["summary"]["up_to_date"] == 2 and doc["lint"] == []
    # nothing was split or linted, so nothing was kept but the validated tenants.yaml
    assert [p.name for p in cache_dir(ws).iterdir()] == ["config-v1.json"]
    # status reads checksums only
    assert run_without_pglast(ws, "status", "--json").exit_code == 0
    # the full lint still lints everything (and needs the parser when nothing is cached)
    result = ws.cli("lint", "--json")
    planted = {(f.name, r) for f in generate(migrations=40).ups for r in f.expected_rules}
    assert {(f["file"], f["rule"]) for f in result.json()["findings"]} == planted


def test_a_run_with_work_uses_the_cache_for_statements_and_lint(ws: Workspace) -> None:
    names = write_history(ws, 60)
    later = list(ws.migrations.glob("v1.1.*"))  # 1.1.0 … 1.1.9: the release added later
    assert version_name(50) == "1.1.0" and len(later) == 20
    parked = ws.dir / "parked"
    parked.mkdir()
    for path in later:
        path.rename(parked / path.name)
    ws.write_config(TENANTS)
    assert ws.cli("--quiet", "provision", "--all").exit_code == 0
    for path in parked.iterdir():
        path.rename(ws.migrations / path.name)
    assert ws.cli("lint").exit_code == 1  # fills the cache: statements and findings
    result = run_without_pglast(ws, "migrate", "--all", "--json", code=WITHOUT_SPLITTING)
    assert result.exit_code == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert doc["summary"]["applied"] == 2
    assert len(ws.versions(1)) == len(names) == len(ws.versions(2))
    # the pending migrations' findings came from the cached lint, and only theirs
    planted = {(f.name, r) for f in generate(migrations=60).ups[50:] for r in f.expected_rules}
    assert {(f["file"], f["rule"]) for f in doc["lint"]} == planted
    assert ws.tables(1) == ws.tables(2)


def test_a_changed_file_invalidates_its_entry_only(synthetic_ws: Workspace) -> None:
    ws = synthetic_ws
    hits, parsed = counts(ws)
    assert (hits, parsed) == (0, 80)
    assert counts(ws) == (80, 0)
    target = sorted(ws.migrations.glob("v1.0.3*.down.sql"))[0]
    target.write_text(target.read_text() + "\n-- edited: ça change\nSELECT 2;\n")
    assert counts(ws) == (79, 1)
    # a CRLF checkout of the same file reads as the same text (and the same checksum)
    crlf = sorted(p for p in ws.migrations.glob("*.sql") if b"\r\n" not in p.read_bytes())[0]
    crlf.write_bytes(crlf.read_bytes().replace(b"\n", b"\r\n"))
    assert counts(ws) == (80, 0)
    # a syntax error in a changed file is found, not masked by the old entry
    target.write_text("SELEC 1;\n")
    assert ws.cli("lint").exit_code == 2
    assert "SQL syntax error" in ws.cli("lint").stderr


def test_a_broken_pending_file_is_refused_before_anything_runs(synthetic_ws: Workspace) -> None:
    ws = synthetic_ws
    assert ws.cli("--quiet", "provision", "--all").exit_code == 0
    runs_before = ws.fetch(ws.control_db, "SELECT count(*) AS n FROM tenantctl_runs")[0]["n"]
    assert ws.cli("lint").exit_code == 1  # everything cached
    ws.add_migration("v9.0.0_good.sql", "CREATE TABLE cvs_ok_mast (clnt_id int2 NOT NULL);\n")
    ws.add_migration("v9.0.1_broken.sql", "-- ünïcode first\nCREATE TABLE cvs_x_mast (clnt_id int2 NOT NULL;\n")
    result = ws.cli("migrate", "--all")
    assert result.exit_code == 2, result.stderr
    assert "v9.0.1_broken.sql:2: SQL syntax error" in result.stderr and "Traceback" not in result.stderr
    assert "9.0.0" not in ws.versions(1) + ws.versions(2)  # not even the good one before it
    runs_after = ws.fetch(ws.control_db, "SELECT count(*) AS n FROM tenantctl_runs")[0]["n"]
    assert runs_after == runs_before  # not even a ledger row


def test_a_broken_already_applied_file_is_still_refused(synthetic_ws: Workspace) -> None:
    """Editing an applied file changes the folder's fingerprint, so the markers no
    longer prove anything, the run parses, and the broken file is refused as before."""
    ws = synthetic_ws
    assert ws.cli("--quiet", "provision", "--all").exit_code == 0
    applied = next(p for p in sorted(ws.migrations.glob("v1.0.1_*.sql")) if ".down." not in p.name)
    applied.write_text(applied.read_text() + "\nSELEC 1;\n")
    result = ws.cli("migrate", "--all")
    assert result.exit_code == 2 and f"{applied.name}:" in result.stderr, result.stderr


def test_a_broken_down_script_waits_for_the_run_that_needs_it(synthetic_ws: Workspace) -> None:
    """Down scripts are outside the fingerprint: a no-op run (every marker current)
    does not read them as SQL; a run with work, a rollback and lint refuse them."""
    ws = synthetic_ws
    assert ws.cli("--quiet", "provision", "--all").exit_code == 0
    down = sorted(ws.migrations.glob("v1.0.3*.down.sql"))[-1]
    down.write_text("DROP TABLE (;\n")
    assert ws.cli("--quiet", "migrate", "--all").exit_code == 0
    for args in (("rollback", "--all", "--yes", "--to", "1.0.0"), ("migrate", "--all", "--no-skip"),
                     ("lint",)):
        result = ws.cli(*args)
        assert result.exit_code == 2 and f"{down.name}:1: SQL syntax error" in result.stderr, args
    assert len(ws.versions(1)) == 40


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other tool", "wrong positions"])
def test_a_damaged_cache_is_ignored_and_rebuilt(synthetic_ws: Workspace, damage: str) -> None:
    ws = synthetic_ws
    first = ws.cli("lint", "--json").json()["findings"]
    scripts, lint = cache_dir(ws) / "scripts-v1.json", cache_dir(ws) / "lint-v1.json"
    for path in (scripts, lint):
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
        if damage == "truncated":
            path.write_text(text[: len(text) // 2], encoding="utf-8")
        elif damage == "garbage":
            path.write_bytes(b"\x00\xff not json")
        elif damage == "empty":
            path.write_text("", encoding="utf-8")
        elif damage == "other tool":
            path.write_text(json.dumps({**doc, "tool": "someone else"}), encoding="utf-8")
        elif path == scripts:  # every statement moved by one character
            for rows in doc["scripts"].values():
                for row in rows:
                    row[0] += 1
                    row[1] += 1
            path.write_text(json.dumps(doc), encoding="utf-8")
        else:
            path.unlink()
    assert ws.cli("lint", "--json").json()["findings"] == first
    assert counts(ws) == (80, 0)  # rebuilt whole
    json.loads(scripts.read_text(encoding="utf-8"))


def test_a_deleted_cache_dir_is_fine(synthetic_ws: Workspace) -> None:
    ws = synthetic_ws
    assert ws.cli("--quiet", "provision", "--all").exit_code == 0
    shutil.rmtree(cache_dir(ws))
    ws.add_migration("v9.0.0_more.sql", "CREATE TABLE cvs_more_mast (clnt_id int2 NOT NULL);\n")
    result = ws.cli("--quiet", "migrate", "--all", "--json")
    assert result.exit_code == 0 and result.json()["summary"]["applied"] == 2
    assert (cache_dir(ws) / "scripts-v1.json").is_file()


def test_an_unwritable_project_dir_still_works(synthetic_ws: Workspace) -> None:
    ws = synthetic_ws
    # .tenantctl is a file: the cache directory cannot be created (as with a read-only
    # directory, which root, running these tests in CI containers, could still write to)
    (ws.dir / ".tenantctl").write_text("not a directory")
    os.chmod(ws.dir, 0o555)
    try:
        result = ws.cli("--quiet", "provision", "--all", "--json")
        assert result.exit_code == 0, result.stderr
        assert result.json()["summary"]["applied"] == 2
        assert ws.cli("lint").exit_code == 1
    finally:
        os.chmod(ws.dir, 0o755)
    assert (ws.dir / ".tenantctl").is_file()


def test_concurrent_runs_never_leave_a_torn_cache(synthetic_ws: Workspace) -> None:
    ws = synthetic_ws
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for _ in range(3):
        shutil.rmtree(cache_dir(ws), ignore_errors=True)
        procs = [subprocess.Popen(ws.subprocess_cmd("lint"), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE) for _ in range(3)]
        assert [p.wait(timeout=300) for p in procs] == [1, 1, 1]
        for path in cache_dir(ws).iterdir():
            assert not path.name.endswith(".tmp"), "a temporary file was left behind"
            json.loads(path.read_text(encoding="utf-8"))
    assert counts(ws) == (80, 0)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=split_scripts())
def test_statements_from_the_cache_are_the_parsers_exactly(tmp_path: Path, generated: object) -> None:
    """Whatever non-ASCII text, comments, quoting and line endings precede them, the
    statements rebuilt from the cache are the parser's: same SQL, lines, kinds."""
    sql = generated.sql  # type: ignore[attr-defined]
    path = tmp_path / "v1_generated.sql"
    path.write_bytes(sql.encode("utf-8"))
    directory = tmp_path / f"cache-{secrets.token_hex(4)}"
    fresh = read_script(path)
    ParseCache(directory).prime([fresh])
    again = read_script(path)
    cache = ParseCache(directory)
    cache.prime([again])
    assert cache.hits == 1 and cache.parsed == 0
    assert [(s.sql, s.line, s.kind, s.non_transactional) for s in again.statements] == \
        [(s.sql, s.line, s.kind, s.non_transactional) for s in fresh.statements]


def test_the_nightly_commands_do_not_load_the_other_commands_modules() -> None:
    """provision and migrate import what they run: offboarding, check-reversible,
    status, run history, isolation checks and shared-mode enforcement load on use."""
    code = ("import sys, tenantctl.cli, tenantctl.commands, tenantctl.runs\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('tenantctl.'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    others = {f"tenantctl.{m}" for m in (
        "baseline", "offboard", "offboard_shared", "archive", "reversible", "reversible_range",
        "status", "run_history", "isolation", "isolation_check", "isolation_probe", "scaffold",
        "move", "move_copy", "pg_dumps", "pg_tools")}
    assert "tenantctl.runs" in loaded
    assert loaded & others == set()
