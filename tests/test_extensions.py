"""Extensions a server lacks are reported before any tenant is touched (real PostgreSQL)."""

from __future__ import annotations

from conftest import Workspace, assert_refused
from tenantctl.extensions import missing_extensions, required_extensions
from tenantctl.migrations import load_migrations

ONE = '  - { clnt_id: 1, name: "A", sites: [1] }\n'


def test_required_extensions_are_read_from_the_folder(ws: Workspace) -> None:
    ws.add_migration("v1_a.sql", "create extension if not exists plpgsql;\ncreate table t (clnt_id int2);")
    ws.add_migration("v2_b.sql", "create extension no_such_ext_xyz;\ncreate extension plpgsql;")
    required = required_extensions(load_migrations(ws.migrations))
    assert required == {"plpgsql": "v1_a.sql", "no_such_ext_xyz": "v2_b.sql"}
    assert missing_extensions(required, {"plpgsql"}) == ["no_such_ext_xyz (created in v2_b.sql)"]


def test_a_missing_extension_is_named_before_the_run(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1_a.sql", "create extension if not exists plpgsql;\ncreate table t (clnt_id int2);")
    ws.add_migration("v2_b.sql", "create extension no_such_ext_xyz;")
    result = ws.cli("provision", "--all", "--json")
    doc = result.json()
    assert any("no_such_ext_xyz (created in v2_b.sql)" in n for n in doc["notes"])
    assert doc["tenants"][0]["error"]["sqlstate"] == "0A000"
    text = ws.cli("migrate", "--all")
    assert "note: server default cannot create extension(s)" in text.stdout


def test_strict_refuses_before_any_database_is_created(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1_b.sql", "create extension no_such_ext_xyz;")
    assert_refused(ws, "provision", "--all", "--strict", says="no_such_ext_xyz (created in v1_b.sql)")


def test_available_extensions_give_no_note(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1_a.sql", "create extension if not exists plpgsql;\ncreate table t (clnt_id int2);")
    doc = ws.cli("provision", "--all", "--json").json()
    assert not any("extension" in n for n in doc["notes"])
