"""The synthetic 700-file history (bench/synthetic_history.py) is a real history:
it applies to PostgreSQL, rolls back with its down scripts, and lint finds in it
exactly the rules the generator meant to trip, no more, no less."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import ROOT, Workspace

sys.path.insert(0, str(ROOT / "bench"))
from synthetic_history import generate, version_name

TENANT = "  - { clnt_id: 1, name: Acme, sites: [1] }\n"


def test_the_generator_is_deterministic_and_messy() -> None:
    a, b, other = generate(), generate(), generate(seed=99)
    assert [(f.name, f.sql) for f in a.files] == [(f.name, f.sql) for f in b.files]
    assert [f.sql for f in a.files] != [f.sql for f in other.files]
    assert len(a.files) == 700 and len(a.ups) == 350
    text = "".join(f.sql for f in a.files)
    for needle in ("\r\n", "\ufeff", "$fn$", "CONCURRENTLY", "-- tenantctl: no-transaction",
                   "CREATE VIEW", "RENAME COLUMN", "TYPE timestamptz", "TYPE int8", "DROP COLUMN",
                   "DROP TABLE", "_adt", "rcrd_stat", "mod_dttm", "東京", "🎉", "é", '"状態🚦'):
        assert needle in text, needle


@pytest.mark.parametrize("seed", [14, 3, 99])
def test_lint_finds_exactly_what_the_generator_planted(tmp_path: Path, seed: int) -> None:
    history = generate(seed=seed)
    ws = Workspace(tmp_path, "embedded", "tsyn")  # lint reads files only: no server
    history.write(ws.migrations)
    ws.write_config(TENANT)
    result = ws.cli("lint", "--json")
    assert result.exit_code == 1, result.stderr  # errors: the planted renames and drops
    assert "Traceback" not in result.stderr
    found = {(f["file"], f["rule"]) for f in result.json()["findings"]}
    planted = {(f.name, rule) for f in history.ups for rule in f.expected_rules}
    assert found == planted
    expected = {"ban-drop-column", "ban-rename", "ban-drop-table", "alter-column-type-timestamptz",
                "ban-alter-column-type"}
    assert {r for _, r in planted} <= expected
    assert seed != 14 or {r for _, r in planted} == expected


@pytest.mark.parametrize("seed, migrations", [(14, 350), (3, 150)])
def test_the_whole_history_applies_and_rolls_back_to_its_midpoint(
        ws: Workspace, seed: int, migrations: int) -> None:
    history = generate(migrations, seed=seed)
    history.write(ws.migrations)
    ws.write_config(TENANT)
    result = ws.cli("--quiet", "provision", "--all", "--no-template", "--json")
    assert result.exit_code == 0, (str(result.json().get("tenants")), result.stderr[-3000:])
    assert len(ws.versions(1)) == migrations
    tables = ws.tables(1)
    assert len([t for t in tables if t.endswith("_mast")]) > 20 and any(t.endswith("_adt") for t in tables)

    half = migrations // 2
    middle = version_name(half - 1)
    result = ws.cli("--quiet", "rollback", "1", "--to", middle, "--json")
    assert result.exit_code == 0, (str(result.json().get("tenants")), result.stderr[-3000:])
    assert result.json()["tenants"][0]["reverted"][-1] == version_name(half)
    state = {r["version"]: r["kind"] for r in ws.history(1)}
    assert state[version_name(half)] == "down" and state[middle] == "up"
    # and forward again: the down scripts left a schema the ups apply to
    result = ws.cli("--quiet", "migrate", "--all", "--json")
    assert result.exit_code == 0, (str(result.json().get("tenants")), result.stderr[-3000:])
    assert result.json()["summary"]["migrations_applied"] == migrations - half
