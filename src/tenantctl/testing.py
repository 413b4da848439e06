"""pytest plugin: throw-away tenant databases for an application's test suite.

Installed with tenantctl and registered through the ``pytest11`` entry point,
so any test session in an environment that has tenantctl can ask for the
session-scoped fixture ``tenantctl_tenants``. It reads the project's
tenants.yaml, provisions its tenants with the project's migrations and seed
(``tenantctl provision``, the template clone included) under database names
unique to the session, yields them, and drops every database it created when
the session ends. Nothing happens in a session that does not use the fixture.

.. code-block:: python

    def test_orders(tenantctl_tenants):
        acme = tenantctl_tenants[1]          # a TenantDatabase
        conn = psycopg.connect(acme.dsn)     # its own database, migrated and seeded

Where the databases go: the server in the environment variable named by
``tenantctl_dsn_env`` (default ``TENANTCTL_TEST_DSN``) if it is set, else the
embedded PostgreSQL of the project (``.tenantctl/`` next to tenants.yaml, the
one the CLI uses, started if needed and left running as the CLI leaves it:
other sessions may be using it; ``tenantctl server stop`` stops it).
``servers:``, ``default_server`` and per-tenant ``server:``/``database:`` of
tenants.yaml are left out: every tenant goes to that one server. Names are
``tenantctl_test_<8 hex>_client_<clnt_id>`` (``_ctl``, ``_tpl`` and ``_shared``
for the control, template and shared databases), so parallel sessions
(pytest-xdist workers, two CI jobs on one server) never meet. Roles of shared
mode are server-wide and are left in place.

Settings, as ini keys (pytest.ini, ``[tool.pytest.ini_options]``) or options:

- ``tenantctl_config`` / ``--tenantctl-config PATH``: tenants.yaml, relative to
  the rootdir (default ``tenants.yaml``);
- ``tenantctl_tenants`` / ``--tenantctl-tenants IDS``: the clnt_ids to
  provision, separated by spaces or commas (default: every tenant);
- ``tenantctl_dsn_env``: the variable holding a server's DSN;
- ``--tenantctl-keep``: keep the databases after the session, for a post-mortem.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .api import RunReport
    from .config import Project

DSN_ENV = "TENANTCTL_TEST_DSN"
PREFIX = "tenantctl_test_"


@dataclass(frozen=True)
class TenantDatabase:
    """One provisioned tenant: where the application under test finds it."""

    clnt_id: int
    name: str
    sites: tuple[int, ...]
    mode: str  # "database", or "shared" (then ``database`` is the shared one, under RLS)
    wave: str | None
    database: str
    dsn: str = field(repr=False)  # a URL of ``database`` on the test server (may hold a password)


@dataclass(frozen=True)
class TenantDatabases(Mapping[int, TenantDatabase]):
    """The session's tenants by clnt_id, and what they were provisioned from."""

    tenants: Mapping[int, TenantDatabase]
    prefix: str  # every database of the session starts with it
    server_dsn: str = field(repr=False)
    project: Project = field(repr=False)  # for tenantctl.api calls on the same databases
    report: RunReport = field(repr=False)  # what provisioning did

    def __getitem__(self, clnt_id: int) -> TenantDatabase:
        return self.tenants[clnt_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self.tenants)

    def __len__(self) -> int:
        return len(self.tenants)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tenantctl", "tenantctl throw-away tenant databases")
    group.addoption("--tenantctl-config", metavar="PATH", default=None,
                    help="tenants.yaml to provision from [ini tenantctl_config; default tenants.yaml]")
    group.addoption("--tenantctl-tenants", metavar="IDS", default=None,
                    help="clnt_ids to provision, e.g. '1 2' [ini tenantctl_tenants; default all]")
    group.addoption("--tenantctl-keep", action="store_true", default=False,
                    help="keep the session's tenant databases (they are named in the output)")
    parser.addini("tenantctl_config", "tenants.yaml to provision from (relative to rootdir)",
                  default="tenants.yaml")
    parser.addini("tenantctl_tenants", "clnt_ids to provision (default: every tenant)", default="")
    parser.addini("tenantctl_dsn_env", "environment variable with the test server's DSN",
                  default=DSN_ENV)


def _setting(config: pytest.Config, name: str) -> str:
    given = config.getoption(f"--{name.replace('_', '-')}")
    return str(given if given is not None else config.getini(name)).strip()


def _selected(text: str) -> set[int] | None:
    if not text:
        return None
    try:
        return {int(part) for part in re.split(r"[\s,]+", text) if part}
    except ValueError:
        raise pytest.UsageError(f"tenantctl_tenants: {text!r} is not a list of clnt_ids") from None


def session_copy(data: dict[str, Any], base: Path, prefix: str,
                 selected: set[int] | None) -> dict[str, Any]:
    """tenants.yaml's content for the session: one server, prefixed names, the
    selected tenants. Relative paths stay relative to ``base`` (the file's folder)."""
    out = {k: v for k, v in data.items() if k not in ("servers", "default_server")}
    out["database_pattern"] = f"{prefix}_client_{{clnt_id}}"
    out["control_database"] = f"{prefix}_ctl"
    out["template_database"] = f"{prefix}_tpl"
    shared = out.get("shared")
    shared = shared if isinstance(shared, dict) else {}
    out["shared"] = {k: v for k, v in shared.items() if k not in ("server", "probe_dsn")}
    out["shared"]["database"] = f"{prefix}_shared"
    tenants = out.get("tenants") or []
    if selected is not None:
        known = {t.get("clnt_id") for t in tenants if isinstance(t, dict)}
        if selected - known:
            raise pytest.UsageError(f"tenantctl_tenants: clnt_id {sorted(selected - known)} "
                                    f"not in {base / 'tenants.yaml'}")
        tenants = [t for t in tenants if isinstance(t, dict) and t.get("clnt_id") in selected]
    out["tenants"] = [{k: v for k, v in t.items() if k not in ("server", "database")}
                      if isinstance(t, dict) else t for t in tenants]
    return out


def database_dsn(server_dsn: str, database: str) -> str:
    """``server_dsn`` (a URL or key=value string) as a URL of ``database``."""
    import urllib.parse

    from .drivers.pg_session import url_dsn

    parts = urllib.parse.urlsplit(url_dsn(server_dsn))
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("dbname", "database")]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + urllib.parse.quote(database),
                                    urllib.parse.urlencode(query), ""))


async def drop_session_databases(server_dsn: str, prefix: str, *, at_once: int = 8) -> list[str]:
    """Drop every database whose name starts with ``prefix`` (connections forced out).

    ``at_once`` sessions drop in parallel: each DROP DATABASE waits for a checkpoint,
    and concurrent ones share it (7 databases: 6.6 s one by one, 0.16 s at once, on
    the embedded server of a loaded 2-core machine).
    """
    import asyncio
    from dataclasses import dataclass as _dataclass

    from .drivers.postgres import DRIVER

    @_dataclass
    class _Name:
        datname: str

    async with await DRIVER.connect(server_dsn) as admin:
        rows = await admin.fetch_as(
            _Name, "SELECT datname FROM pg_database WHERE left(datname, length($1)) = $1", prefix)
    gate = asyncio.Semaphore(at_once)

    async def drop(name: str) -> None:
        async with gate, await DRIVER.connect(server_dsn) as session:
            await DRIVER.drop_database(session, name)

    async with asyncio.TaskGroup() as group:
        for row in rows:
            group.create_task(drop(row.datname))
    return sorted(r.datname for r in rows)


def _failure(report: RunReport) -> str:
    lines = [f"tenantctl_tenants: provisioning failed (run {report.run.run_id}):"]
    for t in report.tenants:
        if t.status == "failed" and t.error is not None:
            where = f" in {t.error.where}" if t.error.where else ""
            lines.append(f"  clnt_id {t.clnt_id}{where}: [{t.error.sqlstate or '-'}] {t.error.message}")
    lines += [f"  note: {note}" for note in report.run.notes]
    return "\n".join(lines)


@pytest.fixture(scope="session")
def tenantctl_tenants(request: pytest.FixtureRequest) -> Iterator[TenantDatabases]:
    """The project's tenants, provisioned on a test server for this session, dropped after it."""
    import yaml

    from . import api, embedded
    from .config import load_project
    from .errors import TenantctlError
    from .yaml_lines import parse_yaml

    config = request.config
    path = (config.rootpath / _setting(config, "tenantctl_config")).resolve()
    if not path.is_file():
        pytest.fail(f"tenantctl_tenants: {path}: no such file (set tenantctl_config)", pytrace=False)
    selected = _selected(_setting(config, "tenantctl_tenants"))
    dsn = os.environ.get(str(config.getini("tenantctl_dsn_env")) or DSN_ENV)
    if not dsn:
        try:
            dsn = embedded.ensure_running(path.parent / ".tenantctl")
        except TenantctlError as exc:
            pytest.fail(f"tenantctl_tenants: {exc.message}", pytrace=False)
    prefix = PREFIX + secrets.token_hex(4)
    refused: str | None = None
    try:
        # tenantctl's own reader: duplicate keys and the size limits, with the file's lines
        _, data = parse_yaml(path, path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise pytest.UsageError(f"{path}: the top level must be a mapping")
        text = yaml.safe_dump(session_copy(data, path.parent, prefix, selected), sort_keys=False)
        project = load_project(path, dsn=dsn, text=text)
        report = api.provision(project)
    except (TenantctlError, OSError) as exc:
        refused = exc.message if isinstance(exc, TenantctlError) else str(exc)
    if refused is not None:
        _teardown(dsn, prefix, keep=False)
        pytest.fail(f"tenantctl_tenants: {refused}", pytrace=False)
    keep = bool(config.getoption("--tenantctl-keep"))
    try:
        if report.exit_code != 0:
            pytest.fail(_failure(report), pytrace=False)
        tenants = {t.clnt_id: TenantDatabase(t.clnt_id, t.name, t.sites, t.mode, t.wave, t.database,
                                             database_dsn(dsn, t.database))
                   for t in project.tenants}
        yield TenantDatabases(tenants, prefix, dsn, project, report)
    finally:
        _teardown(dsn, prefix, keep=keep)
        if keep:
            print(f"\ntenantctl_tenants: kept the databases {prefix}_* (--tenantctl-keep)")


def _teardown(dsn: str, prefix: str, *, keep: bool) -> None:
    import asyncio

    if not keep:
        asyncio.run(drop_session_databases(dsn, prefix))
