"""postmaster.pid and the processes of a PostgreSQL data directory.

A pid file is trusted only if its pid is a live ``postgres`` process whose
working directory is the data directory and which is not a child: pids get
reused, and a killed postmaster nobody reaped is a zombie. Every server
process has the data directory as its working directory (the postmaster
changes into it; children inherit it); children retitle themselves
``postgres: …``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil


@dataclass(frozen=True)
class PidFile:
    """What postmaster.pid says (``text``: the whole file, to notice a change)."""

    text: str
    pid: int
    socket_dir: Path | None
    port: int | None
    status: str

    @property
    def uri(self) -> str:
        if self.socket_dir is not None:
            return f"postgresql://postgres:@/postgres?host={self.socket_dir}"
        return f"postgresql://postgres:@localhost:{self.port}/postgres"


def read_pidfile(pgdata: Path) -> PidFile | None:
    """postmaster.pid: pid, data dir, start time, port, socket dir, host, shmem key, status."""
    try:
        text = (pgdata / "postmaster.pid").read_text()
    except FileNotFoundError:
        return None
    lines = [line.strip() for line in text.splitlines()]
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return PidFile(text, 0, None, None, "")  # written half-way (or garbage): not a live server
    field = (lines + [""] * 8)[:8]
    port = int(field[3]) if field[3].isdigit() else None
    return PidFile(text, pid, Path(field[4]) if field[4] else None, port, field[7])


def _same_dir(path: str | os.PathLike[str], pgdata: Path) -> bool:
    try:
        return os.path.realpath(path) == str(pgdata)
    except (OSError, ValueError):
        return False


def server_process(proc: psutil.Process, pgdata: Path) -> str | None:
    """'postmaster' / 'child' if ``proc`` is a live process of the server of ``pgdata``, else None.

    Every server process has the data directory as its working directory (the
    postmaster changes into it; children inherit it); children retitle
    themselves ``postgres: …``. A zombie is dead.
    """
    import psutil

    try:
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
                return None
            cmdline = proc.cmdline()
            try:
                ours = _same_dir(proc.cwd(), pgdata)
            except psutil.AccessDenied:  # another user's process: go by its command line
                ours = "-D" in cmdline and _same_dir(cmdline[cmdline.index("-D") + 1], pgdata)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, IndexError, OSError):
        return None
    if not ours:
        return None
    return "child" if cmdline and cmdline[0].startswith("postgres:") else "postmaster"


def is_postmaster(pid: int, pgdata: Path) -> bool:
    import psutil

    if pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return server_process(proc, pgdata) == "postmaster"


def leftovers(pgdata: Path) -> list[psutil.Process]:
    """Live processes of a server of ``pgdata`` (postmaster or children)."""
    import psutil

    out = []
    for proc in psutil.process_iter():
        if proc.pid != os.getpid() and server_process(proc, pgdata) is not None:
            out.append(proc)
    return out


def describe(pid: int) -> str:
    """What the process ``pid`` is, for a message."""
    import psutil

    if pid <= 0:
        return "it names no valid pid"
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"pid {pid} is a dead, unreaped process"
        return f"pid {pid} is now {proc.name()!r}, not this data directory's postmaster"
    except psutil.NoSuchProcess:
        return f"pid {pid} is gone"
    except psutil.AccessDenied:
        return f"pid {pid} belongs to another user and is not this data directory's postmaster"
