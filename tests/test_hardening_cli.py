"""Hostile and careless input through the real command line: exit 2, a message that
names what is wrong, nothing created, no traceback (real PostgreSQL)."""

from __future__ import annotations

import os

import pytest

from conftest import Workspace, assert_refused

ONE = '  - { clnt_id: 1, name: "A", sites: [1] }\n'




@pytest.mark.parametrize("tenants,extra,says", [
    ('  - { clnt_id: 1, name: "A\\0B", sites: [1] }\n', "", "tenants[0].name"),
    ('  - { clnt_id: 1, name: "A", sites: [1], database: "abc\\n" }\n', "", "tenants[0].database"),
    ('  - { clnt_id: 1, name: "A", sites: [1], database: template1 }\n', "", "template1"),
    ('  - { clnt_id: 1, name: "A", sites: [1], database: postgres }\n', "", "postgres"),
    (ONE, "settings: { statement_timeout: 99999999h }\n", "settings.statement_timeout"),
    (ONE, "settings: { lock_timeout: .nan }\n", "settings.lock_timeout"),
    ('  - { clnt_id: 1, name: "A", sites: [1], mode: shared }\n',
     "shared: { app_role: postgres }\n", "shared.app_role"),
    (ONE, 'servers: { main: { dsn: "postgresql://u:pw@localhost:99999/db" } }\n', "servers.main.dsn"),
])
def test_bad_tenants_yaml_refused_before_any_connection(
    ws: Workspace, tenants: str, extra: str, says: str
) -> None:
    ws.write_config(tenants, extra=extra)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says=says)


def test_template_database_naming_a_tenant_database_is_refused(ws: Workspace) -> None:
    ws.config.write_text(
        f'migrations: migrations\ndatabase_pattern: "{ws.prefix}_client_{{clnt_id}}"\n'
        f"control_database: {ws.control_db}\ntemplate_database: {ws.db(1)}\ntenants:\n" + ONE)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says="template_database")


def test_bad_dsn_on_the_command_line_is_bad_input(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "--dsn", "postgresql://u:pw@localhost:abc/db", "migrate", "--all",
                   says="port")


def test_yaml_alias_bomb_is_refused(ws: Workspace) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    ws.config.write_text("\n".join(lines) + "\ntenants: []\n")
    assert_refused(ws, "status", says="alias")


@pytest.mark.parametrize("name,content,says", [
    ("v1.0.1_x.SQL", "create table x (clnt_id int2);", "v1.0.1_x.SQL"),
    ("v1.0.1_nul.sql", "create table x (clnt_id int2);\n\x00drop table t;", "v1.0.1_nul.sql:2"),
])
def test_bad_migration_files_refused(ws: Workspace, name: str, content: str, says: str) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t (clnt_id int2);")
    (ws.migrations / name).write_text(content)
    assert_refused(ws, "provision", "--all", says=says)


def test_seed_symlinked_outside_the_project_is_refused_unless_allowed(ws: Workspace, tmp_path_factory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "seed.sql"
    outside.write_text("select 1;")
    (ws.dir / "seed").mkdir()
    os.symlink(outside, ws.dir / "seed" / "tenant_seed.sql")
    ws.write_config(ONE, extra="seed: seed/tenant_seed.sql\n")
    ws.add_migration("v1.0.0_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says="tenant_seed.sql")
    ws.write_config(ONE, extra="seed: seed/tenant_seed.sql\nsettings: { allow_external_symlinks: true }\n")
    assert ws.cli("provision", "--all").exit_code == 0


def test_ignored_files_in_the_folder_are_named(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table t (clnt_id int2);")
    (ws.migrations / "README.md").write_text("notes")
    result = ws.cli("provision", "--all")
    assert result.exit_code == 0
    assert "README.md" in result.stderr


def test_shared_mode_lint_flags_views_at_migrate_time(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1], mode: shared }\n',
                    extra=f"shared: {{ database: {ws.prefix}_shared, app_role: {ws.prefix}_app, "
                          f"owner_role: {ws.prefix}_owner }}\n")
    ws.add_migration("v1.0.0_init.sql", "create table t (clnt_id int2);\n"
                                        "create view v as select * from t;")
    result = ws.cli("provision", "--all", "--strict-lint")
    assert result.exit_code == 2
    assert "view-needs-security-invoker" in result.stderr


def test_shared_tenant_with_its_own_database_is_a_contradiction(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A", sites: [1], mode: shared, database: mine }\n')
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says="tenants[0].database: a shared-mode tenant")


def test_libpq_keyword_dsn_connects(ws: Workspace) -> None:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(ws.dsn)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    user = parts.netloc.rpartition("@")[0].split(":")[0] or "postgres"
    host = query.get("host") or parts.hostname
    port = query.get("port") or (str(parts.port) if parts.port else "5432")
    keyword = f"host='{host}' port={port} user={user} dbname=postgres"
    ws.write_config(ONE)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    result = ws.cli("--dsn", keyword, "provision", "--all")
    assert result.exit_code == 0, result.stderr
    assert ws.versions(1) == ["1"]


def test_sub_millisecond_timeouts_round_up_not_to_none() -> None:
    from tenantctl.drivers.postgres import milliseconds

    assert milliseconds(0.0004) == "1ms"
    assert milliseconds(0) == "0ms"
    assert milliseconds(2.5) == "2500ms"
