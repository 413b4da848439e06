"""Bad input: a clear message naming what is wrong, exit 2, nothing changed, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import Workspace, assert_refused

GOOD_TENANT = '  - { clnt_id: 1, name: "A", sites: [1] }\n'




@pytest.mark.parametrize("tenants,says", [
    ('  - { clnt_id: 1, name: "A", sites: [1] }\n  - { clnt_id: 1, name: "B", sites: [1] }\n',
     "tenants.yaml:7: tenants[1].clnt_id: clnt_id 1 is already used"),
    ('  - { clnt_id: 40000, name: "A", sites: [1] }\n', "tenants.yaml:6: tenants[0].clnt_id"),
    ('  - { clnt_id: 1, name: "A", sites: [1], tier: gold }\n', "tenants[0].tier: unknown key"),
    ('  - { clnt_id: 1, name: "A", sites: [1]\n', "not valid YAML"),
])
def test_bad_tenants_yaml(ws: Workspace, tenants: str, says: str) -> None:
    ws.write_config(tenants)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says=says)


def test_duplicate_migration_version(ws: Workspace) -> None:
    ws.write_config(GOOD_TENANT)
    ws.add_migration("v1.0.1_a.sql", "create table a (clnt_id int2);")
    ws.add_migration("v1.0.1_b.sql", "create table b (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says="version 1.0.1 is also used by")


def test_migration_syntax_error_refused_before_anything(ws: Workspace) -> None:
    ws.write_config(GOOD_TENANT)
    ws.add_migration("v1.0.0_a.sql", "create table a (clnt_id int2);")
    ws.add_migration("v1.0.1_b.sql", "create tabel b (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says="v1.0.1_b.sql:1: SQL syntax error")


def test_cic_in_transactional_migration_refused(ws: Workspace) -> None:
    ws.write_config(GOOD_TENANT)
    ws.add_migration("v1.0.0_a.sql", "create table a (clnt_id int2);\ncreate index concurrently i on a (clnt_id);")
    assert_refused(ws, "provision", "--all", says="cannot run inside a transaction")


def test_bad_arguments(ws: Workspace) -> None:
    ws.write_config(GOOD_TENANT)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "migrate", "0", says="0")
    assert_refused(ws, "migrate", "7", says="clnt_id 7 not in tenants.yaml")
    assert_refused(ws, "migrate", says="no tenants selected")
    assert_refused(ws, "migrate", "1", "--all", says="not both")
    assert_refused(ws, "migrate", "--all", "--lock-timeout", "soon", says="--lock-timeout")
    assert_refused(ws, "migrate", "--all", "--frobnicate", says="No such option")


def test_missing_config_file(ws: Workspace) -> None:
    assert_refused(ws, "status", says="tenants.yaml: no such file")


def test_missing_env_var_in_dsn_as_a_real_process(ws: Workspace) -> None:
    ws.config.write_text(
        'servers:\n  main: { dsn: "${TENANTCTL_NOT_SET_ANYWHERE}" }\ntenants:\n' + GOOD_TENANT)
    proc = subprocess.run(
        [sys.executable, "-m", "tenantctl", "--config", str(ws.config), "--json", "migrate", "--all"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "servers.main.dsn: environment variable TENANTCTL_NOT_SET_ANYWHERE is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
    # --json: stdout still carries exactly one JSON document
    import json

    assert json.loads(proc.stdout)["error"]["exit_code"] == 2
