"""Structured concurrency: every unit that starts ends with a result, whatever
fails around it (the in-memory driver; pure scheduling, no server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tenantctl.config import TenantSpec
from tenantctl.drivers.base import Session
from tenantctl.drivers.fake import FakeDriver
from tenantctl.engine import Engine, RunOptions, group_units
from tenantctl.migrations import Migration, load_migrations
from tenantctl.outcome import TenantResult
from tenantctl.steps import Verb


def folder(tmp_path: Path) -> tuple[Migration, ...]:
    d = tmp_path / "migrations"
    d.mkdir()
    (d / "v1_a.sql").write_text("create table a (clnt_id int2);")
    return load_migrations(d)


def tenants(n: int) -> tuple[TenantSpec, ...]:
    return tuple(TenantSpec(i, f"T{i}", (1,), "database", None, "s", f"db_{i}") for i in range(1, n + 1))


def test_a_failing_result_callback_stops_scheduling_but_loses_no_result(tmp_path: Path) -> None:
    seen: list[int] = []

    async def record(result: TenantResult) -> None:
        seen.append(result.clnt_id)
        if len(seen) == 2:
            raise ConnectionError("ledger connection lost")

    async def go() -> tuple[list[TenantResult], Engine]:
        engine = Engine(folder(tmp_path), {"s": "fake://"}, RunOptions(verb=Verb.PROVISION, concurrency=1),
                        driver=FakeDriver(), on_result=record)
        try:
            return await engine.run(group_units(tenants(6)), ()), engine
        finally:
            await engine.close()

    results, engine = asyncio.run(go())
    assert sorted(r.clnt_id for r in results) == [1, 2, 3, 4, 5, 6]
    assert isinstance(engine.recording_error, ConnectionError)
    statuses = [r.status for r in sorted(results, key=lambda r: r.clnt_id)]
    assert statuses[:2] == ["applied", "applied"]
    assert "skipped" in statuses  # scheduling stopped after the failure
    skipped = [r for r in results if r.status == "skipped"]
    assert all("recording results failed" in (r.reason or "") for r in skipped)


class _Exploding(FakeDriver):
    async def open_history(self, session: Session) -> list:  # type: ignore[override]
        if session.database == "db_2":
            raise RuntimeError("a bug in a driver")
        return await super().open_history(session)


def test_an_unexpected_error_fails_its_unit_only(tmp_path: Path) -> None:
    async def go() -> list[TenantResult]:
        engine = Engine(folder(tmp_path), {"s": "fake://"}, RunOptions(verb=Verb.PROVISION),
                        driver=_Exploding())
        try:
            return await engine.run(group_units(tenants(3)), ())
        finally:
            await engine.close()

    results = {r.clnt_id: r for r in asyncio.run(go())}
    assert [results[i].status for i in (1, 2, 3)] == ["applied", "failed", "applied"]
    assert results[2].error is not None and "internal error: RuntimeError" in results[2].error.message


class _MarkerBug(FakeDriver):
    def marks_in_transaction(self, session: Session) -> bool:
        return False  # the marker is a step of its own, after the migrations committed

    async def write_marker(self, session: Session, marker: str | None,  # type: ignore[override]
                           database: str | None = None) -> bool:
        raise ValueError("a bug after the migrations committed")


def test_an_unexpected_error_keeps_what_the_unit_committed(tmp_path: Path) -> None:
    async def go() -> list[TenantResult]:
        engine = Engine(folder(tmp_path), {"s": "fake://"}, RunOptions(verb=Verb.PROVISION),
                        driver=_MarkerBug(), template_migrations=0)
        try:
            return await engine.run(group_units(tenants(1)), ())
        finally:
            await engine.close()

    (result,) = asyncio.run(go())
    assert result.status == "failed" and result.applied == ("1",) and result.to_version == "1"
    assert result.error is not None and "internal error: ValueError" in result.error.message


def test_a_run_whose_results_could_not_be_recorded_has_failed() -> None:
    from tenantctl.outcome import RunResult

    run = RunResult("r", "migrate", (), recording_error="recording results failed: boom")
    assert run.failed and run.to_json()["recording_error"].startswith("recording results failed")


def test_a_shared_database_is_adopted_by_its_own_registered_tenants() -> None:
    from tenantctl.purpose import adoption_refusal

    assert adoption_refusal("app_shared", "shared", has_history=True, has_objects=True,
                            claimed_by=(1, 2), own=(1, 2, 3)) is None
    refused = adoption_refusal("app_shared", "shared", has_history=True, has_objects=True,
                               claimed_by=(1, 9), own=(1, 2))
    assert refused is not None and "clnt_id 9" in refused
