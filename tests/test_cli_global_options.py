"""Global options before or after the subcommand, with the same meaning (issue 13, item 3)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import click
import pytest

from conftest import CliResult, Workspace
from tenantctl.cli import GLOBAL_OPTIONS, GlobalOptions, cli, main

DEAD_DSN = "postgresql://tenantctl:s3cret-pw@127.0.0.1:1/postgres?connect_timeout=2"
ONE = '  - { clnt_id: 1, name: "A", sites: [1] }\n'


def call(*argv: str) -> CliResult:
    """tenantctl with exactly these arguments (no --config/--dsn put in front)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from a folder without tenants.yaml and without the config/DSN variables:
    an option that is not honoured fails loudly instead of finding a default."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TENANTCTL_CONFIG", raising=False)
    monkeypatch.delenv("TENANTCTL_DSN", raising=False)
    return cwd


@pytest.fixture
def one(ws: Workspace) -> Workspace:
    ws.write_config(ONE)
    ws.add_migration("v1.0.0_init.sql", "create table cvs_t (clnt_id int2 not null);")
    return ws


def _leaf_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _leaf_commands(command, f"{prefix}{name} ")
        else:
            out.append((f"{prefix}{name}", command))
    return out


def test_every_command_takes_every_global_option_after_its_name() -> None:
    leaves = _leaf_commands(cli)
    assert {"provision", "migrate", "rollback", "repair", "status", "verify", "lint", "new", "init",
            "server status", "check-reversible"} <= {name for name, _ in leaves}
    fields = {f for f in GlobalOptions.__dataclass_fields__ if f != "argv"}
    assert {o.field for o in GLOBAL_OPTIONS} == fields  # one registry entry per field
    for name, command in leaves:
        opts = {opt for param in command.params for opt in param.opts}
        for option in GLOBAL_OPTIONS:
            assert set(option.decls) <= opts, (name, option.decls)


def test_config_and_dsn_after_the_subcommand(one: Workspace, elsewhere: Path) -> None:
    ws = one
    assert call("status").exit_code == 2  # no tenants.yaml here: nothing found by default
    result = call("provision", "--all", "--config", str(ws.config), "--dsn", ws.dsn)
    assert result.exit_code == 0, result.stderr
    assert ws.versions(1) == ["1.0.0"]
    after = call("status", "--json", "--config", str(ws.config), "--dsn", ws.dsn)
    before = call("--json", "--config", str(ws.config), "--dsn", ws.dsn, "status")
    assert after.exit_code == before.exit_code == 0
    assert after.json()["tenants"][0]["version"] == before.json()["tenants"][0]["version"] == "1.0.0"


def test_dsn_after_the_subcommand_is_used_and_beats_the_environment(
        one: Workspace, elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = one
    monkeypatch.setenv("TENANTCTL_DSN", DEAD_DSN)
    dead = call("--config", str(ws.config), "status", "--json")
    assert dead.exit_code != 0 or dead.json()["tenants"][0]["state"] == "unreachable"
    alive = call("--config", str(ws.config), "status", "--json", "--dsn", ws.dsn)
    assert alive.exit_code == 0, alive.stderr
    assert alive.json()["tenants"][0]["state"] == "not_provisioned"
    monkeypatch.setenv("TENANTCTL_DSN", ws.dsn)
    # and the other way round: a dead --dsn after the subcommand is the one used
    refused = call("--config", str(ws.config), "provision", "1", "--dsn", DEAD_DSN)
    assert refused.exit_code != 0
    assert "s3cret-pw" not in refused.stdout + refused.stderr
    assert ws.databases() == set()


def test_json_after_the_subcommand_for_reports_and_for_errors(one: Workspace) -> None:
    ws = one
    for args in (["provision", "--all"], ["migrate", "--all"], ["status"], ["verify"], ["lint"],
                 ["rollback", "1", "--to", "1.0.0"], ["repair", "--all"]):
        result = ws.cli(*args, "--json")
        assert result.exit_code == 0, (args, result.stderr)
        json.loads(result.stdout)  # one JSON document, nothing else on stdout
    bad = ws.cli("migrate", "--all", "--to", "9.9", "--json")
    assert bad.exit_code == 2
    assert "9.9" in bad.json()["error"]["message"]


def test_quiet_after_the_subcommand(one: Workspace) -> None:
    ws = one
    loud = ws.cli("provision", "--all")
    assert f"clnt_id     1  {ws.db(1)}" in loud.stderr
    for flag in ("--quiet", "-q"):
        quiet = ws.cli("migrate", "--all", "--no-skip", flag)
        assert quiet.exit_code == 0
        assert "clnt_id" not in quiet.stderr, quiet.stderr


def test_debug_after_the_subcommand_shows_the_traceback(one: Workspace) -> None:
    ws = one
    plain = ws.cli("migrate", "--all", "--to", "9.9")
    debug = ws.cli("migrate", "--all", "--to", "9.9", "--debug")
    assert plain.exit_code == debug.exit_code == 2
    assert "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "9.9" in debug.stderr


def test_a_value_given_before_and_after_must_agree(one: Workspace, elsewhere: Path) -> None:
    ws = one
    other = ws.dir / "other.yaml"
    other.write_text(ws.config.read_text())
    clash = call("--config", str(ws.config), "status", "--config", str(other), "--dsn", ws.dsn)
    assert clash.exit_code == 2
    assert "--config is given before and after `status` with different values" in clash.stderr
    dsn_clash = call("--config", str(ws.config), "--dsn", DEAD_DSN, "status", "--dsn", ws.dsn)
    assert dsn_clash.exit_code == 2 and "--dsn" in dsn_clash.stderr
    assert "s3cret-pw" not in dsn_clash.stderr  # the values are never echoed
    same = call("--config", str(ws.config), "status", "--config", str(ws.config), "--dsn", ws.dsn)
    assert same.exit_code == 0, same.stderr
    # flags on both sides are simply on
    both = call("--json", "--config", str(ws.config), "status", "--json", "--dsn", ws.dsn)
    assert both.exit_code == 0 and "tenants" in both.json()
    assert ws.databases() == set()


def test_a_command_that_still_declares_its_own_json_flag_keeps_working() -> None:
    """Commands written before --json became global (``_json_flag``, ``as_json``)
    see the flag from either side, and are not given a second --json."""
    from click.testing import CliRunner

    from tenantctl.cli import RootGroup, _json_flag

    @click.group(cls=RootGroup)
    @click.pass_context
    def group(ctx: click.Context, /, **given: object) -> None:
        ctx.obj = GlobalOptions(**given)  # type: ignore[arg-type]

    group.params[0:0] = [option.param() for option in GLOBAL_OPTIONS]

    @group.command()
    @_json_flag
    @click.pass_obj
    def old(opts: GlobalOptions, as_json: bool) -> None:
        click.echo(f"{opts.json} {as_json} {opts.quiet}")

    assert [p.opts for p in old.params].count(["--json"]) == 1
    runner = CliRunner()
    assert runner.invoke(group, ["old", "--json", "-q"]).output == "True True True\n"
    assert runner.invoke(group, ["--json", "old"]).output == "True False False\n"
    assert runner.invoke(group, ["old"]).output == "False False False\n"


def test_log_format_after_the_subcommand(one: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = one
    result = ws.cli("provision", "--all", "--log-format", "json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records and all("ts" in r and "event" in r for r in records)
    assert any(r.get("clnt_id") == 1 for r in records)
    # after the subcommand it beats the environment, as --dsn does
    monkeypatch.setenv("TENANTCTL_LOG_FORMAT", "json")
    text = ws.cli("migrate", "--all", "--no-skip", "--log-format", "text")
    assert text.exit_code == 0 and text.stderr and not text.stderr.lstrip().startswith("{")
    bad = ws.cli("status", "--log-format", "xml")
    assert bad.exit_code == 2 and "--log-format" in bad.stderr


def test_global_options_after_a_subgroup_and_its_command(one: Workspace, elsewhere: Path) -> None:
    ws = one
    assert call("provision", "1", "--config", str(ws.config), "--dsn", ws.dsn).exit_code == 0
    listing = call("runs", "--json", "--config", str(ws.config), "--dsn", ws.dsn)
    assert listing.exit_code == 0, listing.stderr
    (run,) = listing.json()["runs"]
    shown = call("runs", "--config", str(ws.config), "show", run["run_id"], "--json",
                 "--dsn", ws.dsn)
    assert shown.exit_code == 0, shown.stderr
    assert shown.json()["run_id"] == run["run_id"]
    clash = call("runs", "--config", str(ws.config), "show", run["run_id"], "--config",
                 str(ws.dir / "other.yaml"))
    assert clash.exit_code == 2 and "--config is given before and after `show`" in clash.stderr
