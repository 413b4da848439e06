"""The mechanics of a move: stopping writes, copying, verifying, cleaning up.

Every function works on sessions it is given (or, for the client tools, on
DSNs); the order of the steps is :mod:`tenantctl.move`'s.

- **Writes stop** on a dedicated source with ``CONNECTION LIMIT 0`` and the
  termination of every other session on it (the previous limit is journaled
  first, and restored if the move is undone); on a shared source the tenant
  tables are locked ``IN SHARE MODE`` inside the transaction that reads them
  (the other tenants of the shared database can read, and write again when
  the copy commits).
- **Copies**: a whole database with ``pg_dump -Fc | pg_restore`` (the client
  tools from :mod:`tenantctl.pg_tools`, new enough for both servers); the
  rows of one tenant with COPY streamed from one session into the other.
- **Verification**, per table on both sides: the row count and an
  order-independent checksum, the sum of the first 64 bits of ``md5`` of each
  row's text. Both sessions first set the same output settings (UTC,
  ISO dates, ``extra_float_digits = 1`` so floats print exactly), and a row's
  text does not depend on collation, so equal data gives equal sums on any
  two servers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .drivers.base import Driver, Session
from .drivers.postgres import HISTORY_TABLE, lock_held_sql, quote_ident
from .errors import DatabaseError, ServerError
from .isolation import REGISTRY_TABLE, TENANT_SETTING
from .migrations import Migration
from .move_plan import MoveError, dependency_order
from .pg_tools import ClientTool, ToolName, find_tool, libpq_target
from .plan import KIND_SEED, plan_migrate, replay
from .redact import redact

BOOKKEEPING = frozenset({f"public.{HISTORY_TABLE}", f"public.{REGISTRY_TABLE}"})
# the text of a row must not depend on the session: the same settings on both sides
SESSION_SETUP = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; "
                 "SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; "
                 "SET bytea_output = 'hex'")
PAUSE_ENV = "TENANTCTL_MOVE_PAUSE"  # test hook: "<checkpoint>:<file>", see checkpoint()
_QUEUE_CHUNKS = 64


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[str, ...]  # stored columns (generated ones are computed again)
    has_tenant: bool

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def qname(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass(frozen=True)
class _TableRow:
    schema: str
    name: str
    columns: list[str]
    has_tenant: bool


@dataclass(frozen=True)
class _Reference:
    child: str
    parent: str


@dataclass(frozen=True)
class TableSum:
    rows: int
    checksum: str


_TABLES = """
SELECT n.nspname AS schema, c.relname AS name,
       coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attgenerated = ''),
                '{}') AS columns,
       coalesce(bool_or(a.attname = $1), false) AS has_tenant
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
GROUP BY n.nspname, c.relname ORDER BY n.nspname, c.relname"""

_REFERENCES = """
SELECT cn.nspname || '.' || c.relname AS child, pn.nspname || '.' || p.relname AS parent
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0"""


async def clean_version(driver: Driver, migrations: tuple[Migration, ...], session: Session,
                        role: str) -> str:
    """The schema version of a database whose history is clean (refused otherwise:
    a copy would carry drift, gaps or a half-applied migration along)."""
    history = await driver.read_history(session)
    plan = plan_migrate(migrations, history)
    problems = [f"drift in {d.filename}" for d in plan.drift]
    problems += [f"version {v} is not in the migrations folder" for v in plan.unknown]
    problems += [f"gap at {v}" for v in plan.gaps]
    problems += [f"failed/partial {v.text}" for v in replay(history).failed]
    if problems:
        raise MoveError(f"the {role} {session.database} has no clean history "
                        f"({'; '.join(problems)}): a copy would carry it along",
                        hint="tenantctl verify shows what to fix first")
    if plan.from_version is None:
        raise MoveError(f"the {role} {session.database} has no migration applied",
                        hint="tenantctl provision or migrate it first")
    return plan.from_version


async def prepare_session(session: Session, clnt_id: int) -> None:
    """Same row text on every server; in a shared database, the tenant's rows only
    (a migrator that is not a superuser is under the forced RLS policy)."""
    await session.execute(SESSION_SETUP)
    await session.execute("SELECT set_config($1, $2, false)", TENANT_SETTING, str(clnt_id))


async def ordered_tables(session: Session, tenant_column: str, *,
                         exclude: frozenset[str] = frozenset()) -> list[Table]:
    """The database's own tables (not extensions', not partitions: their parent
    holds their rows), parents before children."""
    rows = await session.fetch_as(_TableRow, _TABLES, tenant_column)
    tables = {f"{r.schema}.{r.name}": Table(r.schema, r.name, tuple(r.columns), r.has_tenant)
              for r in rows if f"{r.schema}.{r.name}" not in exclude}
    refs = await session.fetch_as(_Reference, _REFERENCES)
    order = dependency_order(tables, [(r.child, r.parent) for r in refs])
    return [tables[label] for label in order]


def _where(tenant_column: str | None) -> str:
    return f" WHERE {quote_ident(tenant_column)} = $1" if tenant_column else ""


async def table_sum(session: Session, table: Table, tenant_column: str | None,
                    clnt_id: int) -> TableSum:
    """Row count and order-independent content checksum of a table (one tenant's rows
    when ``tenant_column`` is given)."""
    cols = ", ".join(quote_ident(c) for c in table.columns)
    row_text = f"ROW({cols})::text" if cols else "''"
    sql = (f"SELECT count(*) AS rows, coalesce(sum(('x' || left(md5({row_text}), 16))"
           f"::bit(64)::bigint), 0)::text AS checksum FROM {table.qname}{_where(tenant_column)}")
    args = (clnt_id,) if tenant_column else ()
    found = await session.fetch_one_as(TableSum, sql, *args)
    assert found is not None
    return found


async def verify(source: Session, target: Session, tables: Iterable[Table],
                 tenant_column: str | None, clnt_id: int) -> dict[str, int]:
    """Every table's count and checksum, equal on both sides; rows per table."""
    rows: dict[str, int] = {}
    bad: list[str] = []
    for table in tables:
        column = tenant_column if table.has_tenant else None
        have, got = await table_sum(source, table, column, clnt_id), await table_sum(
            target, table, column, clnt_id)
        if have != got:
            bad.append(f"{table.label} ({have.rows} row(s), checksum {have.checksum} at the "
                       f"source; {got.rows} row(s), checksum {got.checksum} at the target)")
        rows[table.label] = have.rows
    if bad:
        raise MoveError("verification failed, the copy differs from the source: "
                        + "; ".join(bad), hint="nothing was switched over; the source is untouched")
    return rows


async def same_shape(source: list[Table], target: list[Table]) -> None:
    """The target has every source table with the same stored columns."""
    there = {t.label: t for t in target}
    for table in source:
        other = there.get(table.label)
        if other is None or set(other.columns) != set(table.columns):
            raise MoveError(f"table {table.label} differs between the source and the target "
                            "schema although both are at the same version",
                            hint="compare the two schemas; verify both tenants")


async def stream_table(source: Session, target: Session, table: Table,
                       tenant_column: str | None, clnt_id: int) -> int:
    """COPY one table's rows (one tenant's, given ``tenant_column``) from source to
    target, streamed chunk by chunk through a bounded queue."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)

    async def sink(chunk: bytes) -> None:
        await queue.put(bytes(chunk))

    async def chunks() -> AsyncIterator[bytes]:
        while (chunk := await queue.get()) is not None:
            yield chunk

    async def produce() -> int:
        count = await source.copy_rows_out(table.schema, table.name, table.columns, sink,
                                           where_column=tenant_column, equals=clnt_id)
        await queue.put(None)
        return count

    async with asyncio.TaskGroup() as group:
        out = group.create_task(produce())
        into = group.create_task(target.copy_rows_in(table.schema, table.name, table.columns,
                                                     chunks()))
    if out.result() != into.result():
        raise MoveError(f"{table.label}: {out.result()} row(s) read but {into.result()} written")
    return into.result()


@dataclass(frozen=True)
class _Sequence:
    column: str
    sequence: str


async def advance_sequences(target: Session, table: Table) -> None:
    """Identity and serial sequences of a copied table at least at its largest value,
    so the next insert does not collide with a copied row."""
    owned = await target.fetch_as(
        _Sequence, "SELECT a.attname::text AS column, pg_get_serial_sequence($1, a.attname) "
        "AS sequence FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped AND pg_get_serial_sequence($1, a.attname) IS NOT NULL",
        table.qname)
    for seq in owned:
        await target.execute(
            f"SELECT setval($1::regclass, x.m) FROM (SELECT max({quote_ident(seq.column)}) AS m "
            f"FROM {table.qname}) x WHERE x.m IS NOT NULL "
            "AND x.m > coalesce(pg_sequence_last_value($1::regclass), 0)", seq.sequence)


async def tenant_rows(session: Session, tables: Iterable[Table], tenant_column: str,
                      clnt_id: int) -> list[str]:
    """The tables holding rows of the tenant (``table (n)``)."""
    found = []
    for table in tables:
        if table.has_tenant:
            n = await session.fetch_value(
                f"SELECT count(*) FROM {table.qname}{_where(tenant_column)}", clnt_id)
            if n:
                found.append(f"{table.label} ({n})")
    return found


async def foreign_rows(session: Session, tables: Iterable[Table], tenant_column: str,
                       clnt_id: int) -> list[str]:
    """Tables of a dedicated database holding rows of another tenant (or none)."""
    col = quote_ident(tenant_column)
    found = []
    for table in tables:
        if table.has_tenant:
            n = await session.fetch_value(
                f"SELECT count(*) FROM {table.qname} WHERE {col} IS DISTINCT FROM $1", clnt_id)
            if n:
                found.append(f"{table.label} ({n})")
    return found


async def without_triggers(session: Session) -> None:
    """Inside a transaction: rows copied or deleted are exactly the source's. No user
    trigger fires (an audit trigger would add rows of its own) and foreign keys are not
    checked row by row again (the rows come from one consistent snapshot)."""
    try:
        await session.execute("SET LOCAL session_replication_role = replica")
    except DatabaseError as exc:
        if exc.sqlstate != "42501":
            raise
        raise MoveError(f"{session.database}: copying a tenant's rows without firing their "
                        "triggers needs session_replication_role, which this user may not set",
                        hint="run move as a superuser, or GRANT SET ON PARAMETER "
                             "session_replication_role TO <user> (PostgreSQL 15+)") from exc


async def delete_tenant_rows(session: Session, tables: list[Table], tenant_column: str,
                             clnt_id: int) -> None:
    """Delete the tenant's rows, children before parents (inside the caller's transaction)."""
    await without_triggers(session)
    for table in reversed(tables):
        if table.has_tenant:
            await session.execute(f"DELETE FROM {table.qname}{_where(tenant_column)}", clnt_id)


async def lock_for_copy(session: Session, tables: list[Table]) -> None:
    """Inside the caller's transaction: a consistent snapshot, and no writes to these
    tables until it ends (SHARE mode: readers go on)."""
    await session.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    if tables:
        await session.execute(f"LOCK TABLE {', '.join(t.qname for t in tables)} IN SHARE MODE")


@dataclass(frozen=True)
class _SeedRow:
    description: str
    script: str
    checksum: str


async def copy_seed_record(source: Session, target: Session, clnt_id: int,
                           run_id: str) -> bool:
    """The tenant's seed history row, carried to the target's history (the target's
    lock held), so no later run seeds the tenant a second time."""
    row = await source.fetch_one_as(
        _SeedRow, f"SELECT description, script, checksum FROM public.{HISTORY_TABLE} "
        "WHERE kind = $1 AND version = $2 AND success ORDER BY installed_rank DESC LIMIT 1",
        KIND_SEED, str(clnt_id))
    if row is None:
        return False
    await target.execute(
        f"DELETE FROM public.{HISTORY_TABLE} WHERE kind = $1 AND version = $2 AND {lock_held_sql()}",
        KIND_SEED, str(clnt_id))
    status = await target.execute(
        f"INSERT INTO public.{HISTORY_TABLE} (installed_rank, version, description, kind, script, "
        "checksum, execution_ms, success, run_id) OVERRIDING SYSTEM VALUE "
        f"SELECT (SELECT coalesce(max(installed_rank), 0) + 1 FROM public.{HISTORY_TABLE}), "
        f"$1, $2, $3, $4, $5, 0, true, $6::uuid WHERE {lock_held_sql()}",
        str(clnt_id), row.description, KIND_SEED, row.script, row.checksum, run_id)
    if not status.endswith(" 1"):
        raise MoveError(f"{target.database}: the migration lock was lost during the move")
    return True


async def forget_seed(session: Session, clnt_id: int) -> None:
    """Remove the tenant's seed record from a shared database it leaves (lock held)."""
    if await session.fetch_value(f"SELECT to_regclass('public.{HISTORY_TABLE}') IS NOT NULL"):
        await session.execute(
            f"DELETE FROM public.{HISTORY_TABLE} WHERE kind = $1 AND version = $2 "
            f"AND {lock_held_sql()}", KIND_SEED, str(clnt_id))


# ------------------------------------------------------------ dedicated databases


async def connection_limit(admin: Session, database: str) -> int | None:
    value = await admin.fetch_value("SELECT datconnlimit FROM pg_database WHERE datname = $1",
                                    database)
    return None if value is None else int(value)


async def stop_connections(admin: Session, database: str, keep_pid: int | None) -> None:
    """No new connections (superusers excepted, as PostgreSQL does) and every other
    session on the database ended, tenantctl's lock session ``keep_pid`` aside."""
    await admin.execute(f"ALTER DATABASE {quote_ident(database)} CONNECTION LIMIT 0")
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
        "AND pid <> pg_backend_pid() AND pid IS DISTINCT FROM $2", database, keep_pid)


async def allow_connections(admin: Session, database: str, limit: int) -> None:
    await admin.execute(f"ALTER DATABASE {quote_ident(database)} CONNECTION LIMIT {int(limit)}")


async def rename_database(admin: Session, database: str, new_name: str) -> None:
    """Rename a database nobody may connect to (the rename needs it idle)."""
    for attempt in range(50):
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
            "AND pid <> pg_backend_pid()", database)
        try:
            await admin.execute(
                f"ALTER DATABASE {quote_ident(database)} RENAME TO {quote_ident(new_name)}")
            return
        except DatabaseError as exc:
            if exc.sqlstate != "55006" or attempt == 49:
                raise
            await asyncio.sleep(0.1)


async def server_major(session: Session) -> int:
    return int(await session.fetch_value("SELECT current_setting('server_version_num')::int")) // 10000


async def dump_restore(source_dsn: str, source_db: str, source_major: int, target_dsn: str,
                       target_db: str, analyze: Callable[[], Awaitable[None]]) -> None:
    """``pg_dump -Fc source | pg_restore --exit-on-error target``, streamed through a pipe,
    in two passes: tables and rows, then ``analyze()``, then indexes, constraints and
    triggers. Without statistics PostgreSQL validates a restored foreign key with
    per-row lookups planned for an empty table: quadratic (a 40 MB tenant of the
    example schema spent 53 s on one foreign key, 0.6 s after ANALYZE). The source
    takes no writes (its connections are stopped and its migration lock held), so the
    second pass sees the same schema. Owners and privileges are kept: their roles must
    exist on the target."""
    dump_tool = find_tool(ToolName.PG_DUMP, source_major)
    restore_tool = find_tool(ToolName.PG_RESTORE, dump_tool.major)
    source = libpq_target(source_dsn, source_db)
    target = libpq_target(target_dsn, target_db)
    for sections in (("pre-data", "data"), ("post-data",)):
        await _pipe(dump_tool, restore_tool, source, target, sections,
                    f"copying {source_db} to {target_db}")
        if sections[0] == "pre-data":
            await analyze()


async def _pipe(dump_tool: ClientTool, restore_tool: ClientTool, source: tuple[str, dict[str, str]],
                target: tuple[str, dict[str, str]], sections: tuple[str, ...], what: str) -> None:
    (src_url, src_env), (tgt_url, tgt_env) = source, target
    chosen = [f"--section={s}" for s in sections]
    read_end, write_end = os.pipe()
    try:
        dump = await asyncio.create_subprocess_exec(
            str(dump_tool.path), "--format=custom", *chosen, f"--dbname={src_url}",
            env=src_env, stdin=asyncio.subprocess.DEVNULL, stdout=write_end,
            stderr=asyncio.subprocess.PIPE)
    finally:
        os.close(write_end)
    try:
        restore = await asyncio.create_subprocess_exec(
            str(restore_tool.path), "--exit-on-error", "--single-transaction",
            f"--dbname={tgt_url}", env=tgt_env, stdin=read_end,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    except BaseException:
        dump.kill()
        await dump.wait()
        raise
    finally:
        os.close(read_end)
    (_, dump_err), (_, restore_err) = await asyncio.gather(dump.communicate(),
                                                           restore.communicate())
    problems = []
    if restore.returncode != 0:
        problems.append(f"pg_restore {restore_tool.major} exited {restore.returncode}: "
                        + restore_err.decode("utf-8", "replace")[-2000:].strip())
    if dump.returncode != 0:
        problems.append(f"pg_dump {dump_tool.major} exited {dump.returncode}: "
                        + dump_err.decode("utf-8", "replace")[-2000:].strip())
    if problems:
        raise ServerError(redact(f"{what}: " + "; ".join(problems)))


async def checkpoint(name: str) -> None:
    """Test hook: with ``TENANTCTL_MOVE_PAUSE=<name>:<file>`` the move creates
    ``<file>`` on reaching checkpoint ``name`` and waits while the file exists (a
    test kills the process there, or deletes the file to let it go on)."""
    setting = os.environ.get(PAUSE_ENV, "")
    point, _, path = setting.partition(":")
    if point != name or not path:
        return
    marker = Path(path)
    marker.write_text(str(os.getpid()))
    while marker.exists():
        await asyncio.sleep(0.05)
