"""Engine contract: the same scenarios against the in-memory fake and real PostgreSQL.

If the fake drifts from PostgreSQL's behaviour, one side of a parametrised test
fails; the fake is then trustworthy for the benchmark's simulation mode.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conftest import Workspace
from tenantctl.config import TenantSpec
from tenantctl.drivers.base import Driver
from tenantctl.drivers.fake import FakeDriver
from tenantctl.drivers.postgres import DRIVER
from tenantctl.engine import Engine, RunOptions, group_units
from tenantctl.migrations import load_migrations
from tenantctl.steps import Verb

BASE = "create table cvs_usr_mast (clnt_id int2 not null, site_id int2 not null, usr_id int not null, primary key (clnt_id, site_id, usr_id));\n"


@pytest.fixture(params=["fake", "postgres"])
def driver(request: pytest.FixtureRequest, ws: Workspace) -> tuple[Driver, dict[str, str]]:
    if request.param == "fake":
        return FakeDriver(), {"default": "fake://"}
    return DRIVER, {"default": ws.dsn}


def specs(ws: Workspace, n: int, canary: int | None = None) -> tuple[TenantSpec, ...]:
    return tuple(
        TenantSpec(i, f"T{i}", (1,), "database", "canary" if i == canary else None, "default", ws.db(i))
        for i in range(1, n + 1)
    )


def run(ws: Workspace, driver: tuple[Driver, dict[str, str]], tenants: tuple[TenantSpec, ...],
        folder: Path, **options: object) -> list:
    db, dsns = driver
    migrations = load_migrations(folder)

    async def go() -> list:
        engine = Engine(migrations, dsns, RunOptions(retry_wait_max=0.05, **options), driver=db)  # type: ignore[arg-type]
        try:
            return await engine.run(group_units(tenants), ("canary",))
        finally:
            await engine.close()

    return asyncio.run(go())


def test_provision_then_rerun(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    ws.add_migration("v1.0.0_base.sql", BASE)
    ws.add_migration("v1.0.1_more.sql", "alter table cvs_usr_mast add column usr_nm text;\n")
    tenants = specs(ws, 3)
    first = run(ws, driver, tenants, ws.migrations, verb=Verb.PROVISION)
    assert [(r.status, r.created, r.applied, r.to_version) for r in first] == [
        ("applied", True, ("1.0.0", "1.0.1"), "1.0.1")] * 3
    second = run(ws, driver, tenants, ws.migrations, verb=Verb.PROVISION)
    assert [(r.status, r.created, r.applied) for r in second] == [("up_to_date", False, ())] * 3


def test_failure_stops_the_tenant_at_the_failing_migration(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    ws.add_migration("v1.0.0_base.sql", BASE)
    tenants = specs(ws, 2)
    run(ws, driver, tenants, ws.migrations, verb=Verb.PROVISION)
    ws.add_migration("v1.0.1_broken.sql", "select 1/0;\n")
    ws.add_migration("v1.0.2_after.sql", "alter table cvs_usr_mast add column usr_nm text;\n")
    results = run(ws, driver, tenants, ws.migrations)
    for r in results:
        assert (r.status, r.to_version, r.applied) == ("failed", "1.0.0", ())
        assert (r.error.sqlstate, r.error.migration) == ("22012", "v1.0.1_broken.sql")
    again = run(ws, driver, tenants, ws.migrations)
    assert [r.status for r in again] == ["failed", "failed"]


def test_unprovisioned_tenant_fails_with_3d000(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    ws.add_migration("v1.0.0_base.sql", BASE)
    (r,) = run(ws, driver, specs(ws, 1), ws.migrations)
    assert r.status == "failed" and r.error.sqlstate == "3D000"


def test_failed_canary_skips_the_rest_and_budget_holds(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    ws.add_migration("v1.0.0_base.sql", BASE)
    tenants = specs(ws, 4, canary=2)
    run(ws, driver, tenants, ws.migrations, verb=Verb.PROVISION)
    ws.add_migration("v1.0.1_broken.sql", "select 1/0;\n")
    results = {r.clnt_id: r for r in run(ws, driver, tenants, ws.migrations)}
    assert results[2].status == "failed"
    assert {results[i].status for i in (1, 3, 4)} == {"skipped"}
    budget = run(ws, driver, specs(ws, 4), ws.migrations, concurrency=1, max_failures=1)
    assert [r.status for r in budget] == ["failed", "skipped", "skipped", "skipped"]


def test_two_engines_at_once_apply_each_migration_once(ws: Workspace, driver) -> None:  # type: ignore[no-untyped-def]
    ws.add_migration("v1.0.0_base.sql", BASE)
    tenants = specs(ws, 4)
    run(ws, driver, tenants, ws.migrations, verb=Verb.PROVISION)
    for v in ("1.0.1", "1.0.2", "1.0.3"):
        ws.add_migration(f"v{v}_m.sql", f"create table cvs_{v.replace('.', '_')} (clnt_id int2 not null);\n")
    db, dsns = driver
    migrations = load_migrations(ws.migrations)

    async def both() -> list:
        engines = [Engine(migrations, dsns, RunOptions(concurrency=2), driver=db) for _ in range(2)]
        out = await asyncio.gather(*(e.run(group_units(tenants), ()) for e in engines))
        for e in engines:
            await e.close()
        return [r for rs in out for r in rs]

    results = asyncio.run(both())
    applied = sorted(v for r in results for v in r.applied)
    assert applied == sorted(["1.0.1", "1.0.2", "1.0.3"] * 4), "each migration exactly once per tenant"
    assert {r.status for r in results} <= {"applied", "up_to_date"}
