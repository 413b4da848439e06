"""The `lint:` block of tenants.yaml, through `tenantctl lint`: pure, no database.

The workspace is conftest's Workspace without a server (`--dsn embedded`, never
started: lint reads files only).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import Workspace
from tenantctl.commands import ChangeRequest, prepare
from tenantctl.config import load_project
from tenantctl.errors import ConfigError, MigrationFileError
from tenantctl.inputs import lint, load_inputs
from tenantctl.steps import Verb

TENANTS = "  - { clnt_id: 1, name: One, sites: [1] }\n"

OLD = "CREATE TABLE usr_mast (clnt_id int2 NOT NULL, usr_id int4 NOT NULL, usr_nm text);\n"
# v1.0.1: an old sin (error), and an empty file (warning)
OLD_SIN = "ALTER TABLE usr_mast DROP COLUMN usr_nm;\n"
# v1.0.10 (above v1.0.9 and v1.0.2): a new error and a new warning
NEW_SIN = ("CREATE TABLE itm (clnt_id int2 NOT NULL, site_id int2 NOT NULL, itm_id int4 NOT NULL,\n"
           "  CONSTRAINT itm_pk PRIMARY KEY (clnt_id, itm_id, site_id));\n"
           "TRUNCATE usr_mast;\n")


@pytest.fixture
def lws(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path, "embedded", "tlint")
    ws.migrations.mkdir()
    ws.add_migration("v1.0.0_base.sql", OLD)
    ws.add_migration("v1.0.1_old_sin.sql", OLD_SIN)
    ws.add_migration("v1.0.2_placeholder.sql", "-- later\n")
    ws.add_migration("v1.0.10_new_sin.sql", NEW_SIN)
    return ws


def run_lint(ws: Workspace, lint_block: str, *args: str) -> tuple[int, list[tuple[str, str, str]], dict]:
    ws.write_config(TENANTS, lint_block)
    result = ws.cli("lint", "--json", *args)
    assert result.exit_code in (0, 1), result.stderr
    doc = result.json()
    found = [(f["file"], f["rule"], f["severity"]) for f in doc["findings"]]
    return result.exit_code, found, doc


ALL = [
    ("v1.0.1_old_sin.sql", "ban-drop-column", "error"),
    ("v1.0.2_placeholder.sql", "empty-migration", "warning"),
    ("v1.0.10_new_sin.sql", "key-site-id-second", "warning"),
    ("v1.0.10_new_sin.sql", "ban-truncate", "error"),
]


def test_without_a_lint_block_everything_is_reported(lws: Workspace) -> None:
    code, found, doc = run_lint(lws, "")
    assert (code, found) == (1, ALL)
    assert doc["baseline"] is None and doc["hidden_by_baseline"] == 0


def test_disable_switches_rules_off(lws: Workspace) -> None:
    code, found, _ = run_lint(lws, "lint:\n  disable: [ban-truncate, ban-drop-column]\n")
    assert (code, found) == (0, [ALL[1], ALL[2]])  # warnings only: exit 0


def test_severity_overrides(lws: Workspace) -> None:
    block = "lint:\n  severity: { ban-truncate: warning, ban-drop-column: warning, empty-migration: error }\n"
    code, found, doc = run_lint(lws, block)
    assert found == [
        ("v1.0.1_old_sin.sql", "ban-drop-column", "warning"),
        ("v1.0.2_placeholder.sql", "empty-migration", "error"),
        ("v1.0.10_new_sin.sql", "key-site-id-second", "warning"),
        ("v1.0.10_new_sin.sql", "ban-truncate", "warning"),
    ]
    assert (code, doc["errors"]) == (1, 1)


def test_exclude_skips_matching_files_but_still_reads_them(lws: Workspace) -> None:
    code, found, _ = run_lint(lws, "lint:\n  exclude: ['v1.0.1_*', '*placeholder*']\n")
    assert (code, found) == (1, ALL[2:])
    # the excluded base still defines usr_mast: TRUNCATE is of an existing table
    _, found, _ = run_lint(lws, "lint:\n  exclude: ['v1.0.0_*', 'v1.0.1_*', 'v1.0.2_*']\n")
    assert found == ALL[2:]


def test_exclude_covers_the_down_script_of_an_excluded_migration(lws: Workspace) -> None:
    lws.add_migration("v1.0.1_old_sin.down.sql", "CREATE ROLE r;\n")
    _, found, _ = run_lint(lws, "")
    assert ("v1.0.1_old_sin.down.sql", "ban-role-ddl", "error") in found
    _, found, _ = run_lint(lws, "lint:\n  exclude: ['v1.0.1_old_sin.sql']\n")
    assert found == ALL[1:]


def test_baseline_hides_old_findings_and_all_files_shows_them(lws: Workspace) -> None:
    code, found, doc = run_lint(lws, "lint:\n  baseline: 1.0.9\n")
    assert (code, found) == (1, ALL[2:])
    assert doc["baseline"] == "1.0.9" and doc["hidden_by_baseline"] == 2
    code, found, doc = run_lint(lws, "lint:\n  baseline: 1.0.9\n", "--all-files")
    assert (code, found, doc["hidden_by_baseline"]) == (1, ALL, 0)


def test_baseline_at_the_newest_version_hides_everything(lws: Workspace) -> None:
    code, found, doc = run_lint(lws, "lint:\n  baseline: v1.0.10\n")
    assert (code, found, doc["hidden_by_baseline"]) == (0, [], 4)


def test_baseline_text_output_says_what_it_hid(lws: Workspace) -> None:
    lws.write_config(TENANTS, "lint:\n  baseline: '1.0.2'\n")
    result = lws.cli("lint")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == (
        "2 finding(s), 1 error(s) (2 more in migrations at or below the baseline 1.0.2; "
        "--all-files shows them)")
    assert "v1.0.1_old_sin.sql" not in result.stdout
    assert "v1.0.1_old_sin.sql" in lws.cli("lint", "--all-files").stdout


def test_baseline_applies_to_named_files(lws: Workspace) -> None:
    _, found, _ = run_lint(lws, "lint:\n  baseline: 1.0.9\n", str(lws.migrations / "v1.0.1_old_sin.sql"))
    assert found == []
    _, found, _ = run_lint(lws, "lint:\n  baseline: 1.0.9\n", "--all-files",
                           str(lws.migrations / "v1.0.1_old_sin.sql"))
    assert found == [ALL[0]]


def test_strict_lint_gating_respects_the_block(lws: Workspace) -> None:
    """migrate/provision lint through inputs.lint: the block applies to --strict-lint too."""
    request = ChangeRequest(ids=(1,), strict_lint=True)
    lws.write_config(TENANTS, "")
    with pytest.raises(MigrationFileError, match="2 lint error"):
        prepare(load_project(lws.config, env={}), Verb.MIGRATE, request)
    lws.write_config(TENANTS, "lint:\n  baseline: 1.0.9\n  disable: [ban-truncate]\n")
    prepared = prepare(load_project(lws.config, env={}), Verb.MIGRATE, request)
    assert [f.rule for f in prepared.lint] == ["key-site-id-second"]


def test_inputs_lint_all_files(lws: Workspace) -> None:
    lws.write_config(TENANTS, "lint:\n  baseline: 1.0.9\n")
    inputs = load_inputs(load_project(lws.config, env={}))
    assert len(lint(inputs)) == 2 and len(lint(inputs, all_files=True)) == 4


# -- bad input: exit 2, file:line: field -------------------------------------------------

@pytest.mark.parametrize("block, says", [
    ("lint:\n  disable:\n    - ban-truncate\n    - ban-trunkate\n",
     "tenants.yaml:8: lint.disable[1]: 'ban-trunkate' is not a lint rule; did you mean 'ban-truncate'?"),
    ("lint:\n  disable: [no-such-rule-at-all]\n",
     "tenants.yaml:6: lint.disable[0]: 'no-such-rule-at-all' is not a lint rule (docs/lint-rules.md"),
    ("lint:\n  severity:\n    ban-drop-colum: warning\n",
     "tenants.yaml:7: lint.severity.ban-drop-colum: 'ban-drop-colum' is not a lint rule; "
     "did you mean 'ban-drop-column'?"),
    ("lint:\n  severity: { ban-truncate: fatal }\n",
     "tenants.yaml:6: lint.severity.ban-truncate: Input should be 'error' or 'warning' (got 'fatal')"),
    ("lint:\n  baseline: 1.0.x\n",
     "tenants.yaml:6: lint.baseline: '1.0.x' is not a version such as 1.0.1"),
    ("lint:\n\n  baseline: 1.10\n",
     "tenants.yaml:7: lint.baseline: 1.1 was read by YAML as a number"),
    ("lint:\n  baseline: [1]\n", "tenants.yaml:6: lint.baseline: [1] is not a version such as 1.0.1"),
    ("lint:\n  exclude: ['']\n", "tenants.yaml:6: lint.exclude[0]: String should have at least 1 character"),
    ("lint:\n  disabled: [ban-truncate]\n", "tenants.yaml:6: lint.disabled: unknown key"),
])
def test_bad_lint_block_is_exit_2_with_file_line_field(lws: Workspace, block: str, says: str) -> None:
    lws.write_config(TENANTS, block)
    result = lws.cli("lint")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    with pytest.raises(ConfigError, match="lint"):
        load_project(lws.config, env={})


def test_baseline_accepts_integers_and_prefixed_versions(tmp_path: Path) -> None:
    for written, text in (("20240101", "20240101"), ("V2", "2"), ("'1.0.10'", "1.0.10")):
        path = tmp_path / "tenants.yaml"
        path.write_text(textwrap.dedent(f"""\
            lint:
              baseline: {written}
            tenants: []
            """))
        assert load_project(path, env={}).file.lint.baseline == text
