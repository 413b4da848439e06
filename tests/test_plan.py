"""Planning: pure replay of history against the folder."""

from __future__ import annotations

from pathlib import Path

from tenantctl.migrations import Migration, Script, Version
from tenantctl.plan import HistoryRow, plan_migrate, replay


def mig(version: str, sql: str = "select 1;", transactional: bool = True) -> Migration:
    directives = {} if transactional else {"no-transaction": ""}
    script = Script(Path(f"v{version}_m.sql"), sql, f"sum{version}{sql}", directives, ())
    return Migration(Version.parse(version), "m", script)


def row(rank: int, version: str, kind: str = "up", success: bool = True, checksum: str | None = None,
        done: int | None = None) -> HistoryRow:
    return HistoryRow(rank, version, "m", kind, checksum or f"sum{version}select 1;", success, done)


MS = (mig("1.0.0"), mig("1.0.1"), mig("1.1.0"))


def test_fresh_tenant_gets_everything() -> None:
    p = plan_migrate(MS, [])
    assert [m.version.text for m in p.pending] == ["1.0.0", "1.0.1", "1.1.0"]
    assert (p.from_version, p.to_version) == (None, "1.1.0")


def test_up_to_date() -> None:
    p = plan_migrate(MS, [row(1, "1.0.0"), row(2, "1.0.1"), row(3, "1.1.0")])
    assert not p.pending and p.from_version == p.to_version == "1.1.0"


def test_target_limits_pending() -> None:
    p = plan_migrate(MS, [row(1, "1.0.0")], Version.parse("1.0.1"))
    assert [m.version.text for m in p.pending] == ["1.0.1"] and p.to_version == "1.0.1"


def test_down_rows_unapply() -> None:
    hist = [row(1, "1.0.0"), row(2, "1.0.1"), row(3, "1.0.1", kind="down")]
    assert replay(hist).version_text == "1.0.0"
    assert [m.version.text for m in plan_migrate(MS, hist).pending] == ["1.0.1", "1.1.0"]


def test_drift_and_unknown() -> None:
    hist = [row(1, "1.0.0", checksum="edited"), row(2, "0.9")]
    p = plan_migrate(MS, hist)
    assert [d.version for d in p.drift] == ["1.0.0"]
    assert p.unknown == ("0.9",)


def test_partial_no_transaction_resumes() -> None:
    ms = (mig("1.0.0"), mig("1.0.1", "create index concurrently ...", transactional=False))
    hist = [row(1, "1.0.0"), row(2, "1.0.1", success=False, done=2)]
    p = plan_migrate(ms, hist)
    assert [m.version.text for m in p.pending] == ["1.0.1"]
    assert p.resume == {Version.parse("1.0.1"): 2}
    assert replay(hist).failed.keys() == {Version.parse("1.0.1")}


def test_seed_rows_do_not_count_as_versions() -> None:
    hist = [row(1, "1.0.0"), HistoryRow(2, "7", "seed", "seed", "x", True)]
    state = replay(hist)
    assert state.version_text == "1.0.0" and state.seeded == {7}


def test_rollback_plan_newest_first_and_unknown() -> None:
    from tenantctl.plan import missing_downs, plan_rollback

    hist = [row(1, "1.0.0"), row(2, "1.0.1"), row(3, "1.1.0"), row(4, "1.2.0")]
    p = plan_rollback(MS, hist, Version.parse("1.0.0"))
    assert [m.version.text for m in p.steps] == ["1.1.0", "1.0.1"]
    assert p.unknown == ("1.2.0",) and (p.from_version, p.to_version) == ("1.2.0", "1.0.0")
    assert missing_downs(MS, Version.parse("1.0.0")) == ["v1.0.1_m.down.sql", "v1.1.0_m.down.sql"]


def test_repair_row_accepts_the_new_checksum() -> None:
    hist = [row(1, "1.0.0", checksum="old"), HistoryRow(2, "1.0.0", "m", "repair", "sum1.0.0select 1;", True)]
    assert plan_migrate(MS, hist).drift == ()
