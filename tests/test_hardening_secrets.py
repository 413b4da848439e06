"""Credentials never reach the control database, reports, logs or error messages."""

from __future__ import annotations

from conftest import Workspace

SECRET = "S3cretPassw0rdXyz"
ONE = '  - { clnt_id: 1, name: "A", sites: [1] }\n'


def with_password(dsn: str) -> str:
    """The test DSN with a password added (the test server trusts local connections)."""
    scheme, rest = dsn.split("://", 1)
    userinfo, _, tail = rest.rpartition("@")
    user = userinfo.split(":", 1)[0] if userinfo else "postgres"
    return f"{scheme}://{user}:{SECRET}@{tail}"


def test_password_in_dsn_is_not_stored_in_the_ledger(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    dsn = with_password(ws.dsn)
    result = ws.cli("--dsn", dsn, "provision", "--all", "--json")
    assert result.exit_code == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    runs = ws.fetch(ws.control_db, "SELECT argv::text AS a FROM tenantctl_runs")
    assert runs and all(SECRET not in r["a"] for r in runs)
    assert any("***" in r["a"] for r in runs)
    assert all(SECRET not in str(list(r)) for r in ws.fetch(
        ws.control_db, "SELECT * FROM tenantctl_run_tenants"))


def test_password_is_not_printed_when_the_server_is_unreachable(ws: Workspace) -> None:
    ws.write_config(ONE)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    for dsn in (f"postgresql://app:{SECRET}@127.0.0.1:1/postgres?connect_timeout=2",
                f"host=127.0.0.1 port=1 user=app password={SECRET} dbname=postgres"):
        for args in (("provision", "--all"), ("--json", "status"), ("server", "start")):
            result = ws.cli("--dsn", dsn, *args)
            assert SECRET not in result.stdout + result.stderr, (args, result.stderr)
            assert "Traceback" not in result.stderr


def test_password_in_a_configured_server_dsn_is_not_printed(ws: Workspace) -> None:
    ws.config.write_text(
        f'servers:\n  main: {{ dsn: "postgresql://app:{SECRET}@127.0.0.1:1/postgres?connect_timeout=2" }}\n'
        f"control_database: {ws.control_db}\n"
        f'database_pattern: "{ws.prefix}_client_{{clnt_id}}"\ntenants:\n' + ONE)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    import contextlib
    import io

    from tenantctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["--config", str(ws.config), "--json", "migrate", "--all"])
        except SystemExit as exc:
            assert exc.code != 0
    assert SECRET not in out.getvalue() + err.getvalue()
