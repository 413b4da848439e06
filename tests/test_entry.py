"""The ``tenantctl`` program ends with ``os._exit`` once main has returned (no
interpreter teardown): what it printed still reaches the reader whole, its exit
code is main's, and a reader that goes away early gets no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Workspace

sys.path.insert(0, str(ROOT / "bench"))
from synthetic_history import generate

CONSOLE_SCRIPT = Path(sys.executable).parent / "tenantctl"
PROGRAMS = {
    "python -m tenantctl": [sys.executable, "-m", "tenantctl"],
    "console script": [str(CONSOLE_SCRIPT)],
}


# stdout block-buffered, as under cron or a pipe (this environment may set
# PYTHONUNBUFFERED, which would hide a missing flush)
BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.fixture(params=sorted(PROGRAMS))
def program(request: pytest.FixtureRequest) -> list[str]:
    # the README's set-up installs the console script next to the interpreter
    assert request.param != "console script" or CONSOLE_SCRIPT.exists(), (
        f"{CONSOLE_SCRIPT} missing: install tenantctl first (pip install -e .)")
    return PROGRAMS[request.param]


@pytest.fixture
def noisy_folder(ws: Workspace) -> Workspace:
    """A 200-migration synthetic history: lint output well past a pipe's buffer."""
    generate(migrations=200).write(ws.migrations)
    ws.write_config("  - { clnt_id: 1, name: Un, sites: [1] }\n")
    return ws


def test_everything_printed_reaches_the_reader_with_mains_exit_code(
        noisy_folder: Workspace, program: list[str]) -> None:
    in_process = noisy_folder.cli("lint", "--all-files", "--json")
    proc = subprocess.run([*program, "--config", str(noisy_folder.config), "lint", "--all-files",
                           "--json"], capture_output=True, timeout=300, env=BUFFERED)
    assert proc.returncode == in_process.exit_code == 1  # the history has lint errors
    assert len(proc.stdout) > 16 * 1024  # more than stdout's buffer: the last part is flushed
    assert json.loads(proc.stdout) == json.loads(in_process.stdout)
    assert b"Traceback" not in proc.stderr


def test_a_reader_that_leaves_early_gets_no_traceback(noisy_folder: Workspace,
                                                      program: list[str]) -> None:
    proc = subprocess.Popen([*program, "--config", str(noisy_folder.config), "lint",
                             "--all-files", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=BUFFERED)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `tenantctl lint --json | head -c 0`
    err = proc.stderr.read()
    assert proc.wait(timeout=300) != 0
    assert b"Traceback" not in err and b"Exception ignored" not in err


@pytest.mark.parametrize(("args", "code", "where", "text"), [
    (["--help"], 0, "stdout", b"Usage: tenantctl"),
    (["--config", "/nonexistent/tenants.yaml", "status"], 2, "stderr", b"tenants.yaml"),
    (["no-such-command"], 2, "stderr", b"no-such-command"),
])
def test_exit_codes_and_messages_pass_through(program: list[str], tmp_path: Path, args: list[str],
                                              code: int, where: str, text: bytes) -> None:
    proc = subprocess.run([*program, *args], capture_output=True, timeout=120, cwd=tmp_path,
                          env=BUFFERED)
    assert proc.returncode == code
    assert text in getattr(proc, where)
    assert b"Traceback" not in proc.stderr


@pytest.mark.parametrize(("body", "code", "stdout", "stderr"), [
    ("print('unflushed', end='')", 0, b"unflushed", b""),  # still in stdout's buffer at the end
    ("print('half', end=''); sys.exit(3)", 3, b"half", b""),
    ("sys.exit('a message')", 1, b"", b"a message\n"),  # as the interpreter does it
    ("sys.exit(None)", 0, b"", b""),
])
def test_the_fast_exit_flushes_and_keeps_the_exit_code(body: str, code: int, stdout: bytes,
                                                       stderr: bytes) -> None:
    script = ("import sys, tenantctl.cli as cli\n"
              f"def main():\n    {body}\n"
              "cli.main = main\ncli.entry()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                          env=BUFFERED)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, stdout, stderr)
