"""Destructive commands ask first (issue 13, item 8): rollback on a TTY shows what it
will revert and asks; --yes answers; without a TTY a wide rollback needs --yes.

The TTY is a real pseudo-terminal on the subprocess's stdin (the question is read
from there); stdout and stderr stay pipes, as under cron with a terminal attached.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time

import pytest

from conftest import Workspace
from tenantctl.confirm import Consent, decide

TENANTS = """\
  - { clnt_id: 1, name: "A", sites: [1], wave: canary }
  - { clnt_id: 2, name: "B", sites: [1] }
  - { clnt_id: 3, name: "C", sites: [1] }
"""
PROMPT = b"[y/N]: "


@pytest.fixture
def three(ws: Workspace) -> Workspace:
    ws.write_config(TENANTS)
    ws.add_migration("v1.0.0_init.sql", "create table cvs_t (clnt_id int2 not null);")
    ws.add_migration("v1.0.0_init.down.sql", "drop table cvs_t;")
    ws.add_migration("v1.0.1_a.sql", "alter table cvs_t add column a int;")
    ws.add_migration("v1.0.1_a.down.sql", "alter table cvs_t drop column a;")
    ws.add_migration("v1.0.2_b.sql", "alter table cvs_t add column b int;")
    ws.add_migration("v1.0.2_b.down.sql", "alter table cvs_t drop column b;")
    assert ws.cli("provision", "--all").exit_code == 0
    # tenant 3 is already lower: it has less to revert
    assert ws.cli("rollback", "3", "--to", "1.0.1").exit_code == 0
    return ws


def versions(ws: Workspace) -> dict[int, str | None]:
    return {t["clnt_id"]: t["version"] for t in ws.cli("--json", "status").json()["tenants"]}


def test_the_rule() -> None:
    assert decide(yes=True, interactive=False, listed=False) is Consent.PROCEED
    assert decide(yes=True, interactive=True, listed=False) is Consent.PROCEED
    assert decide(yes=False, interactive=True, listed=True) is Consent.ASK
    assert decide(yes=False, interactive=False, listed=True) is Consent.PROCEED
    assert decide(yes=False, interactive=False, listed=False) is Consent.REFUSE


@pytest.mark.parametrize("selection", [["--all"], ["--wave", "canary"], ["--only-failed"]])
def test_without_a_tty_a_wide_rollback_needs_yes(three: Workspace, selection: list[str]) -> None:
    ws = three
    before = versions(ws)
    result = ws.cli("rollback", *selection, "--to", "1.0.0")
    assert result.exit_code == 2, result.stderr
    assert "needs confirmation, and there is no terminal to ask on: pass --yes" in result.stderr
    assert "Traceback" not in result.stderr
    assert versions(ws) == before
    as_json = ws.cli("rollback", *selection, "--to", "1.0.0", "--json")
    assert as_json.exit_code == 2 and "--yes" in as_json.json()["error"]["message"]


def test_without_a_tty_listed_tenants_and_yes_proceed(three: Workspace) -> None:
    ws = three
    listed = ws.cli("rollback", "1", "2", "--to", "1.0.1")
    assert listed.exit_code == 0, listed.stderr
    assert versions(ws) == {1: "1.0.1", 2: "1.0.1", 3: "1.0.1"}
    everyone = ws.cli("rollback", "--all", "--to", "1.0.0", "--yes")
    assert everyone.exit_code == 0, everyone.stderr
    assert versions(ws) == {1: "1.0.0", 2: "1.0.0", 3: "1.0.0"}
    # a dry run changes nothing and needs no answer
    assert ws.cli("rollback", "--all", "--to", "0", "--dry-run").exit_code == 0


def _on_a_tty(ws: Workspace, *args: str, answer: bytes | None) -> tuple[int, str, str]:
    """Run tenantctl with a pseudo-terminal as stdin and stderr (where the question is
    shown); type ``answer`` at the prompt. Returns (exit code, stdout, the terminal)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(ws.subprocess_cmd(*args), stdin=slave, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    seen = b""

    def read_some() -> bool:
        nonlocal seen
        ready, _, _ = select.select([master], [], [], 1)
        if not ready:
            return True
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed its side
            return False
        seen += chunk
        return bool(chunk)

    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
        if answer is not None:
            while PROMPT not in seen:
                assert time.monotonic() < deadline and proc.poll() is None, seen.decode()
                read_some()
            os.write(master, answer)
        while (proc.poll() is None or read_some()) and time.monotonic() < deadline:
            read_some()
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), seen.decode().replace("\r\n", "\n")


def test_on_a_tty_rollback_shows_what_it_will_revert_and_asks(three: Workspace) -> None:
    ws = three
    before = versions(ws)
    code, _, err = _on_a_tty(ws, "rollback", "--all", "--to", "1.0.0", answer=b"n\n")
    assert code == 2, err
    assert "rollback to 1.0.0 will revert, newest first:" in err
    lines = err.splitlines()
    assert any(line.split()[:2] == ["1.0.2", "v1.0.2_b.down.sql"] and line.endswith("on 2 tenant(s)")
               for line in lines), err
    assert any(line.split()[:2] == ["1.0.1", "v1.0.1_a.down.sql"] and line.endswith("on 3 tenant(s)")
               for line in lines), err
    assert "3 tenant(s) selected: 3 will change, 0 already there" in err
    assert "rollback: go ahead on 3 tenant(s)? [y/N]" in err
    assert "not confirmed: nothing changed" in err
    assert versions(ws) == before
    code, out, err = _on_a_tty(ws, "--json", "rollback", "--all", "--to", "1.0.0", answer=b"y\n")
    assert code == 0, err
    assert versions(ws) == {1: "1.0.0", 2: "1.0.0", 3: "1.0.0"}
    assert '"command": "rollback"' in out


def test_on_a_tty_yes_and_dry_run_do_not_ask(three: Workspace) -> None:
    ws = three
    code, out, err = _on_a_tty(ws, "--json", "rollback", "--all", "--to", "1.0.1", "--dry-run",
                               answer=None)
    assert code == 0 and "[y/N]" not in err, err
    assert [t.get("reverted", []) for t in json.loads(out)["tenants"]] == [["1.0.2"], ["1.0.2"], []]
    code, _, err = _on_a_tty(ws, "rollback", "--all", "--to", "1.0.1", "--yes", answer=None)
    assert code == 0 and "[y/N]" not in err, err
    assert versions(ws) == {1: "1.0.1", 2: "1.0.1", 3: "1.0.1"}
    # nothing left to revert: it says so and does not ask
    code, _, err = _on_a_tty(ws, "rollback", "--all", "--to", "1.0.1", answer=None)
    assert code == 0 and "[y/N]" not in err and "  nothing" in err, err
