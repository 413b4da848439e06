"""--wave NAME selects waves' tenants; --wave-pause waits between waves (issue 13, item 2)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Workspace, assert_refused

TENANTS = """\
  - { clnt_id: 1, name: "Canary", sites: [1], wave: canary }
  - { clnt_id: 2, name: "Early B", sites: [1], wave: early }
  - { clnt_id: 3, name: "Early C", sites: [1], wave: early }
  - { clnt_id: 4, name: "Rest", sites: [1] }
"""


@pytest.fixture
def waved(ws: Workspace) -> Workspace:
    ws.write_config(TENANTS, extra="waves: [canary, early]\n")
    ws.add_migration("v1.0.0_init.sql", "create table cvs_t (clnt_id int2 not null);")
    ws.add_migration("v1.0.0_init.down.sql", "drop table cvs_t;")
    ws.add_migration("v1.0.1_more.sql", "alter table cvs_t add column site_id int2;")
    ws.add_migration("v1.0.1_more.down.sql", "alter table cvs_t drop column site_id;")
    return ws


def tenant_dbs(ws: Workspace) -> set[str]:
    return {db for db in ws.databases() if "_client_" in db}


def ids(doc: dict[str, object]) -> list[int]:
    return [t["clnt_id"] for t in doc["tenants"]]  # type: ignore[index,attr-defined]


def test_wave_selects_only_its_tenants_on_every_changing_command(waved: Workspace) -> None:
    ws = waved
    canary = ws.cli("--json", "provision", "--wave", "canary")
    assert canary.exit_code == 0, canary.stderr
    assert ids(canary.json()) == [1]
    assert tenant_dbs(ws) == {ws.db(1)}
    two = ws.cli("--json", "provision", "--wave", "early", "--wave", "canary")
    assert ids(two.json()) == [1, 2, 3]
    assert tenant_dbs(ws) == {ws.db(i) for i in (1, 2, 3)}
    back = ws.cli("--json", "rollback", "--wave", "early", "--to", "1.0.0", "--yes")
    assert back.exit_code == 0, back.stderr
    assert ids(back.json()) == [2, 3]
    versions = {t["clnt_id"]: t["version"] for t in ws.cli("--json", "status").json()["tenants"]}
    assert versions == {1: "1.0.1", 2: "1.0.0", 3: "1.0.0", 4: None}
    forward = ws.cli("--json", "migrate", "--wave", "early")
    assert ids(forward.json()) == [2, 3]
    assert [t["applied"] for t in forward.json()["tenants"]] == [["1.0.1"], ["1.0.1"]]
    assert ws.cli("--json", "repair", "--wave", "canary").json()["tenants"][0]["clnt_id"] == 1


def test_status_selects_by_wave_and_names_each_tenants_wave(waved: Workspace) -> None:
    ws = waved
    everyone = ws.cli("status", "--json")
    assert everyone.exit_code == 0
    assert {t["clnt_id"]: t["wave"] for t in everyone.json()["tenants"]} == {
        1: "canary", 2: "early", 3: "early", 4: None}
    early = ws.cli("status", "--wave", "early", "--json").json()["tenants"]
    assert [(t["clnt_id"], t["wave"]) for t in early] == [(2, "early"), (3, "early")]


@pytest.mark.parametrize("args, says", [
    (["migrate", "--wave", "canry"], "--wave 'canry': no such wave in tenants.yaml"),
    (["provision", "--wave", "canary", "--wave", "late"], "known waves: canary, early"),
    (["status", "--wave", "nope"], "known waves: canary, early"),
    (["rollback", "--wave", "x", "--to", "1.0.0", "--yes"], "no such wave"),
    (["provision", "2", "--wave", "early"], "give tenant ids or --wave, not both"),
    (["provision", "--all", "--wave-pause", "5x"], "--wave-pause: '5x' is not a duration"),
    (["provision", "--all", "--wave-pause", "-1s"], "--wave-pause"),
    (["provision", "--all", "--wave-pause", ""], "--wave-pause"),
    (["provision", "--all", "--wave-pause", "30 days"], "--wave-pause"),
    (["provision", "--all", "--wave-pause", "999999h"], "too long"),
])
def test_bad_wave_input_is_refused(waved: Workspace, args: list[str], says: str) -> None:
    assert_refused(waved, *args, says=says)


def test_a_declared_wave_without_tenants_is_refused(ws: Workspace) -> None:
    ws.write_config(TENANTS.replace("wave: early", "wave: canary"),
                    extra="waves: [canary, early]\n")
    assert_refused(ws, "migrate", "--wave", "early", says="no tenant is in that wave")


def test_wave_pause_waits_between_waves_only(waved: Workspace) -> None:
    ws = waved
    result = ws.cli("provision", "--all", "--wave-pause", "0.2s")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()  # timestamped log lines
    waits = [i for i, line in enumerate(lines) if "waiting 0.2s before wave" in line]
    assert [lines[i].split("waiting ", 1)[1] for i in waits] == [
        "0.2s before wave early; Ctrl-C stops the run here",
        "0.2s before wave (tenants without a wave); Ctrl-C stops the run here"]
    at = {n: next(i for i, line in enumerate(lines)
                  if f"clnt_id {n:>5}  " in line and "database created" in line)
          for n in (1, 2, 3, 4)}
    assert at[1] < waits[0] < min(at[2], at[3]) <= max(at[2], at[3]) < waits[1] < at[4]
    # a dry run does not wait (it changes nothing to watch)
    dry = ws.cli("migrate", "--all", "--wave-pause", "10min", "--dry-run")
    assert dry.exit_code == 0 and "waiting" not in dry.stderr


def test_sigterm_during_the_wave_pause_stops_the_run(waved: Workspace) -> None:
    ws = waved
    proc = subprocess.Popen(
        ws.subprocess_cmd("--json", "provision", "--all", "--wave-pause", "10min"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # blocks until the canary is done and the pause starts
            seen.append(line)
            if "waiting 600s before wave early" in line:
                break
        else:
            pytest.fail("".join(seen))
        time.sleep(0.2)  # inside the wait, not merely before it
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)  # the pause is 10 min: a hang fails here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["interrupted"] is True
    assert {t["clnt_id"]: t["status"] for t in doc["tenants"]} == {
        1: "applied", 2: "skipped", 3: "skipped", 4: "skipped"}
    assert tenant_dbs(ws) == {ws.db(1)}


@settings(deadline=None)
@given(st.text(max_size=12))
def test_wave_pause_is_a_finite_duration_or_bad_input(text: str) -> None:
    from tenantctl.errors import BadInputError
    from tenantctl.waves import parse_wave_pause

    try:
        seconds = parse_wave_pause(text)
    except BadInputError as exc:
        assert exc.message.startswith("--wave-pause: ") and exc.exit_code == 2
    else:
        assert 0 <= seconds < 2**31 / 1000 and seconds == seconds


def test_wave_pause_units() -> None:
    from tenantctl.waves import parse_wave_pause

    assert [parse_wave_pause(t) for t in ("30s", "5m", "5min", "1h", "500ms", "2")] == [
        30, 300, 300, 3600, 0.5, 2]
    assert parse_wave_pause(None) == 0


def test_wave_pause_in_the_json_log(waved: Workspace) -> None:
    result = waved.cli("provision", "--all", "--wave", "canary", "--wave", "early",
                       "--wave-pause", "0.1s", "--log-format", "json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    (pause,) = [r for r in records if "pause_ms" in r]
    assert (pause["wave"], pause["pause_ms"], pause["event"]) == ("early", 100, "warning")
