"""docs/ops: every ready-to-copy file parses as what it claims to be, and every
tenantctl command line in it (and in docs/operations.md) parses with the real CLI.

Options the guide uses that other work adds (``ASSUMED``) are stripped before
parsing while the CLI lacks them, and named in a warning; any other unknown
option, a typo, or an option on the wrong command fails the test.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from conftest import ROOT
from tenantctl.cli import cli

OPS = ROOT / "docs" / "ops"
GUIDE = ROOT / "docs" / "operations.md"
# option -> number of values; from issue 13 (logs, metrics, run history) and issue 12 (--server)
ASSUMED = {"--log-format": 1, "--metrics-file": 1, "--server": 1}
ASSUMED_COMMANDS = {"runs"}
LAST_SUCCESS_EXPR = ('time() - max by (instance, server) '
                     '(tenantctl_run_last_success_timestamp_seconds{command="migrate"}) > 26 * 3600')
METRICS = {"tenantctl_run_tenants", "tenantctl_run_duration_seconds",
           "tenantctl_run_last_success_timestamp_seconds", "tenantctl_tenants_pending_migrations"}


# ---------------------------------------------------------------- command lines


def _options(command: click.Command) -> set[str]:
    found = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            found |= _options(sub)
    return found


def tenantctl_calls(text: str) -> list[list[str]]:
    """The arguments of every ``tenantctl`` (or ``…/bin/tenantctl``) call in shell text,
    up to the first shell operator or redirection."""
    calls = []
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token != "tenantctl" and not token.endswith("/bin/tenantctl"):
                continue
            args = []
            for t in tokens[i + 1:]:
                if set(t) <= set("();<>|&"):
                    break
                args.append(t)
            if args:
                calls.append(args)
    return calls


def parses(args: list[str]) -> set[str]:
    """Parse ``tenantctl args`` with the real CLI (nothing runs); the assumed options
    and commands the CLI does not have yet."""
    known = _options(cli)
    missing = {a.split("=")[0] for a in args if a.split("=")[0] in ASSUMED} - known
    kept: list[str] = []
    skip = 0
    for arg in args:
        if skip:
            skip -= 1
        elif arg.split("=")[0] in missing:
            skip = 0 if "=" in arg else ASSUMED[arg]
        else:
            kept.append(arg)
    ctx = cli.make_context("tenantctl", kept)
    command: click.Command = cli
    while isinstance(command, click.Group):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2: protected_args
            rest = [*ctx.protected_args, *ctx.args]
        if not rest:
            break
        if rest[0] not in command.commands and rest[0] in ASSUMED_COMMANDS:
            return missing | {rest[0]}
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, rest
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return missing


def check_calls(calls: list[list[str]], where: str) -> set[str]:
    assert calls, f"no tenantctl command line found in {where}"
    missing: set[str] = set()
    for args in calls:
        try:
            missing |= parses(args)
        except click.ClickException as exc:
            pytest.fail(f"{where}: tenantctl {shlex.join(args)}: {exc.format_message()}")
    if missing:
        warnings.warn(f"{where} uses {sorted(missing)}, not in the CLI yet", UserWarning, stacklevel=2)
    return missing


def test_the_parser_catches_typos_and_strays() -> None:
    assert parses(["migrate", "--all", "--junit", "x.xml"]) == set()
    with pytest.raises(click.NoSuchOption):
        parses(["migrate", "--all", "--metric-file", "x.prom"])  # a typo is not an assumed option
    with pytest.raises(click.NoSuchOption):
        parses(["status", "--junit", "x.xml"])  # an option of another command
    with pytest.raises(click.UsageError):
        parses(["migrat", "--all"])
    assert tenantctl_calls("cd /x && flock -n l /opt/t/bin/tenantctl migrate --all >>log 2>&1\n"
                           "tenantctl status || rc=$?  # done") == [["migrate", "--all"], ["status"]]


# ---------------------------------------------------------------- cron

_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def test_cron_line() -> None:
    jobs = []
    for line in (OPS / "cron" / "tenantctl").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            continue  # an environment line
        fields = line.split(None, 6)
        assert len(fields) == 7, f"m h dom mon dow user command: {line!r}"
        for field, (low, high) in zip(fields[:5], _CRON_RANGES, strict=True):
            assert _CRON_FIELD.match(field), field
            assert all(low <= int(n) <= high for n in re.findall(r"\d+", field.split("/")[0])), field
        jobs.append(fields)
    [job] = jobs
    assert job[:5] == ["0", "2", "*", "*", "*"] and job[5] == "tenantctl"
    command = job[6]
    assert "%" not in command, "cron turns an unescaped % into a new line"
    assert "flock -n" in command
    assert subprocess.run(["sh", "-n", "-c", command], check=False).returncode == 0
    [call] = tenantctl_calls(command)
    assert "migrate" in call and "--metrics-file" in call
    check_calls([call], "cron/tenantctl")


# ---------------------------------------------------------------- systemd


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: [Section], Key=Value (repeatable), # and ; comments,
    a trailing backslash continues the line."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, line in enumerate(path.read_text().replace("\\\n", " ").splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), \
            f"{path.name}:{number}: {line!r}"
        current.setdefault(key.strip(), []).append(" ".join(value.split()))
    return sections


def test_systemd_service_and_timer() -> None:
    service = unit_file(OPS / "systemd" / "tenantctl-migrate.service")
    timer = unit_file(OPS / "systemd" / "tenantctl-migrate.timer")
    assert set(service) == {"Unit", "Service"} and set(timer) == {"Unit", "Timer", "Install"}
    svc = service["Service"]
    assert svc["Type"] == ["oneshot"] and svc["KillSignal"] == ["SIGTERM"]
    assert svc["EnvironmentFile"] == ["/etc/tenantctl/env"]
    [exec_start] = svc["ExecStart"]
    assert exec_start.startswith("/")
    [call] = tenantctl_calls(exec_start)
    metrics = call[call.index("--metrics-file") + 1]
    assert metrics.startswith(svc["ReadWritePaths"][0] + "/") and metrics.endswith(".prom")
    check_calls([call], "systemd/tenantctl-migrate.service")
    assert timer["Timer"]["Unit"] == ["tenantctl-migrate.service"]
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    for name in ("tenantctl-migrate.service", "tenantctl-migrate.timer"):
        text = (OPS / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/tenantctl/bin/tenantctl", sys.executable))
    verified = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.iterdir()))],
                              capture_output=True, text=True, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    [calendar] = unit_file(tmp_path / "tenantctl-migrate.timer")["Timer"]["OnCalendar"]
    parsed = subprocess.run(["systemd-analyze", "calendar", calendar], capture_output=True, text=True,
                            check=False)
    assert parsed.returncode == 0 and "02:00:00 UTC" in parsed.stdout, parsed.stdout + parsed.stderr


# ---------------------------------------------------------------- kubernetes


def test_kubernetes_cronjobs_one_per_server() -> None:
    docs = [d for d in yaml.safe_load_all((OPS / "kubernetes" / "cronjob.yaml").read_text()) if d]
    servers = []
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) == ("batch/v1", "CronJob")
        spec = doc["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        job = spec["jobTemplate"]["spec"]
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and job["backoffLimit"] == 0
        [container] = pod["containers"]
        for var in container["env"]:
            if var["name"].endswith("_DSN"):
                assert set(var) == {"name", "valueFrom"} and "secretKeyRef" in var["valueFrom"], var
        script = "\n".join(container["args"])
        assert container["command"] == ["/bin/sh", "-c"]
        assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0
        [call] = tenantctl_calls(script)
        server = call[call.index("--server") + 1]
        assert server == doc["metadata"]["labels"]["tenantctl.io/server"]
        assert doc["metadata"]["name"] == f"tenantctl-migrate-{server}"
        assert f"/server/{server}" in script  # its own Pushgateway group
        check_calls([call], f"kubernetes/cronjob.yaml ({server})")
        servers.append(server)
    assert sorted(servers) == ["eu2", "main"]


# ---------------------------------------------------------------- CI


def test_ci_job_uses_junit() -> None:
    workflow: dict[Any, Any] = yaml.safe_load((OPS / "ci" / "github-actions.yml").read_text())
    assert "pull_request" in workflow.get("on", workflow.get(True, {}))  # YAML 1.1 reads `on` as true
    [job] = workflow["jobs"].values()
    runs = "\n".join(step["run"] for step in job["steps"] if "run" in step)
    calls = [c for c in tenantctl_calls(runs) if c != []]
    junit = [c for c in calls if "--junit" in c]
    assert {c[c.index("--junit") + 1] for c in junit} == {"reports/provision-base.xml",
                                                          "reports/migrate.xml"}
    assert "mkdir -p reports" in runs
    assert any(c[0] == "lint" for c in calls) and any(c[0] == "check-reversible" for c in calls)
    check_calls(calls, "ci/github-actions.yml")


# ---------------------------------------------------------------- alerts


def test_prometheus_alert_rules() -> None:
    rules = yaml.safe_load((OPS / "prometheus" / "tenantctl-alerts.yml").read_text())
    [group] = rules["groups"]
    by_name = {r["alert"]: r for r in group["rules"]}
    assert by_name["TenantctlNightlyMigrateNotSucceeding"]["expr"] == LAST_SUCCESS_EXPR
    assert by_name["TenantctlMetricsMissing"]["expr"].startswith(
        "absent_over_time(tenantctl_run_last_success_timestamp_seconds")
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert set(re.findall(r"tenantctl_[a-z_]+", rule["expr"])) <= METRICS, rule["expr"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["for"]
    try:
        from tenantctl import metrics  # added by issue 13's run metrics
    except ImportError:
        return
    assert set(metrics.FAMILIES) >= METRICS


# ---------------------------------------------------------------- the guide


def test_the_guide_links_every_file_and_its_commands_parse() -> None:
    text = GUIDE.read_text()
    for path in OPS.rglob("*"):
        if path.is_file():
            assert path.name in text, f"docs/operations.md does not mention {path.name}"
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    calls = [c for block in blocks for c in tenantctl_calls(block)]
    assert any(c[0] == "runs" for c in calls) and any("--resume" in c for c in calls)
    check_calls(calls, "docs/operations.md")
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
