"""Scaffolding (issue 13, item 10): `new` writes the .down.sql companion; `init`
starts a project that provisions and migrates as it is."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from conftest import CliResult, Workspace
from tenantctl.cli import main
from tenantctl.migrations import load_migrations


def call(*argv: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def test_new_writes_the_migration_and_its_down_script(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1] }\n')
    ws.add_migration("v1.0.0_init.sql", "create table cvs_t (clnt_id int2 not null);")
    result = ws.cli("new", "add usr tables")
    assert result.exit_code == 0, result.stderr
    up, down = ws.migrations / "v1.0.1_add_usr_tables.sql", ws.migrations / "v1.0.1_add_usr_tables.down.sql"
    assert result.stdout.splitlines() == [str(up), str(down)]
    assert down.read_text().startswith("-- Undo v1.0.1_add_usr_tables.sql: add usr tables\n")
    assert all(line.startswith("--") for line in down.read_text().splitlines() if line)
    (migration,) = [m for m in load_migrations(ws.migrations) if m.version.text == "1.0.1"]
    assert migration.down is not None and migration.down.path == down
    # the pair is a valid (empty) migration: lint has no error, a run records it
    assert ws.cli("lint").exit_code == 0
    assert ws.cli("provision", "1").exit_code == 0
    assert ws.cli("rollback", "1", "--to", "1.0.0").exit_code == 0


def test_new_keeps_a_multi_line_description_inside_the_comment(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1] }\n')
    result = ws.cli("new", "fix\nDROP TABLE cvs_usr_mast; --")
    assert result.exit_code == 0, result.stderr
    for path in map(Path, result.stdout.split()):
        code = [line for line in path.read_text().splitlines() if line and not line.startswith("--")]
        assert code == [], path.read_text()


def test_new_never_overwrites_a_down_script(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1] }\n')
    ws.add_migration("v1.0.0_init.sql", "create table cvs_t (clnt_id int2 not null);")
    orphan = ws.add_migration("v1.0.1_x.down.sql", "drop table precious;")
    result = ws.cli("new", "x")
    assert result.exit_code == 2
    # the folder's own check names it first; either way it is left as it is
    assert "v1.0.1_x.down.sql: down script without an up migration" in result.stderr
    assert orphan.read_text() == "drop table precious;"
    assert not (ws.migrations / "v1.0.1_x.sql").exists()


def _own_names(config: Path, prefix: str) -> None:
    """Point the starter tenants.yaml at databases with the test's prefix (the only
    edit: the server comes from --dsn)."""
    text = config.read_text()
    for old, new in (('"cvs_client_{clnt_id}"', f'"{prefix}_client_{{clnt_id}}"'),
                     ("control_database: tenantctl ", f"control_database: {prefix}_ctl "),
                     ("template_database: tenantctl_template", f"template_database: {prefix}_template")):
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)


def test_init_then_provision_and_migrate_work(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "fresh" / "project"
    result = call("init", str(folder))
    assert result.exit_code == 0, result.stderr
    written = {Path(line).relative_to(folder).as_posix() for line in result.stdout.splitlines()}
    assert written == {"tenants.yaml", "migrations/v1.0.0_create_site_mast.sql",
                       "migrations/v1.0.0_create_site_mast.down.sql", "seed/tenant_seed.sql"}
    config = folder / "tenants.yaml"
    _own_names(config, ws.prefix)
    base = ("--config", str(config), "--dsn", ws.dsn)
    assert call(*base, "lint").exit_code == 0
    provisioned = call(*base, "--json", "provision", "--all")
    assert provisioned.exit_code == 0, provisioned.stderr
    assert [(t["clnt_id"], t["status"], t["seeded"]) for t in provisioned.json()["tenants"]] == [
        (1, "applied", True), (2, "applied", True)]
    sites = ws.fetch(ws.db(1), "SELECT clnt_id, site_id, site_nm FROM cvs_site_mast ORDER BY site_id")
    assert [tuple(r) for r in sites] == [(1, 1, "First client - site 1"), (1, 2, "First client - site 2")]
    # the next migration, written by `new`, goes out with migrate --all
    assert call(*base, "new", "add site code index").exit_code == 0
    (folder / "migrations" / "v1.0.1_add_site_code_index.sql").write_text(
        "CREATE INDEX cvs_site_mast_nm_ix ON cvs_site_mast (clnt_id, site_id, site_nm);\n")
    (folder / "migrations" / "v1.0.1_add_site_code_index.down.sql").write_text(
        "DROP INDEX cvs_site_mast_nm_ix;\n")
    migrated = call(*base, "--json", "migrate", "--all")
    assert migrated.exit_code == 0, migrated.stderr
    assert [t["applied"] for t in migrated.json()["tenants"]] == [["1.0.1"], ["1.0.1"]]
    status = call(*base, "--json", "status")
    assert {t["state"] for t in status.json()["tenants"]} == {"up_to_date"}
    assert [t["wave"] for t in status.json()["tenants"]] == ["canary", None]
    # the starter's down scripts really undo their migrations
    reversible = call(*base, "check-reversible")
    assert reversible.exit_code == 0, reversible.stdout + reversible.stderr


def test_init_in_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = call("init")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "tenants.yaml").is_file()
    assert (tmp_path / "seed" / "tenant_seed.sql").is_file()


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    mine = tmp_path / "migrations" / "v1.0.0_create_site_mast.down.sql"
    mine.write_text("-- mine\n")
    result = call("init", str(tmp_path))
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.stderr and str(mine) in result.stderr
    assert "Traceback" not in result.stderr
    assert mine.read_text() == "-- mine\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["migrations", mine.name]
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert call("init", str(a_file)).exit_code == 2
