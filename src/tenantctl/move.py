"""``tenantctl move``: bring tenants' data to the placement tenants.yaml declares.

Per tenant, one at a time, holding the tenant's migration lock at the source
(and the target's): check that the source's history is clean, journal the
move (``tenantctl_moves``), create the target, stop writes at the source,
copy (:mod:`tenantctl.move_plan` picks dump/restore or COPY), verify every
table on both sides, switch the registry over (with the journal, in one
transaction), then remove the source — or, with ``keep_source``, keep it
renamed and tagged ``moved:<id>``. Before the cutover any failure removes
the partial target and reopens the source; a re-run after a crash finishes a
move whose cutover committed and undoes any other.

Schema versions: the source must be at a version of the folder with a clean
history (no drift, gap, failed or unknown version). A new dedicated target is
migrated to exactly that version; an existing shared database must already
be at it, or the move is refused with a hint (`tenantctl migrate` both first).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from . import isolation, ledger, move_registry, purpose
from .config import Project, TenantSpec
from .drivers.base import Driver, Session
from .drivers.postgres import DRIVER
from .engine import Engine, RunOptions
from .errors import BadInputError, DatabaseError, TenantctlError
from .executor import EnforceHook, Unit
from .fleet import server_dsns
from .inputs import Inputs, load_inputs
from .migrations import Version
from .modes import Mode
from .move_copy import (
    BOOKKEEPING,
    Table,
    advance_sequences,
    allow_connections,
    checkpoint,
    clean_version,
    connection_limit,
    copy_seed_record,
    delete_tenant_rows,
    dump_restore,
    foreign_rows,
    forget_seed,
    lock_for_copy,
    ordered_tables,
    prepare_session,
    rename_database,
    same_shape,
    server_major,
    stop_connections,
    stream_table,
    tenant_rows,
    verify,
    without_triggers,
)
from .move_plan import Method, MoveError, kept_name, method_for, tenant_column
from .move_registry import JournalEntry, Phase
from .move_report import MoveReport, MoveResult, MoveStatus, ledger_row, planned
from .outcome import RunResult, TenantFailure
from .placement_check import Placement, compare, servers_declared
from .steps import Verb


async def move(project: Project, ids: tuple[int, ...], *, dry_run: bool = False,
               keep_source: bool = False, driver: Driver = DRIVER,
               argv: tuple[str, ...] = (), stop: asyncio.Event | None = None) -> MoveReport:
    """Move each listed tenant to its declared placement (see the module's docstring)."""
    if not ids:
        raise BadInputError("name the tenants to move", hint="tenantctl move 7 12")
    tenants = project.select(ids, False)
    inputs = load_inputs(project)
    started, run_id = time.monotonic(), str(uuid.uuid4())
    dsns = server_dsns(project, set(project.servers))
    control_dsn = dsns[project.default_server]
    if dry_run:
        registry = await move_registry.read_registered(driver, control_dsn,
                                                       project.file.control_database)
        entries = await move_registry.read_journal(driver, control_dsn,
                                                   project.file.control_database)
        results = [planned(project, spec, registry, entries) for spec in tenants]
        return MoveReport(run_id, True, _ms(started), tuple(results))
    async with await driver.connect(control_dsn) as admin:
        control = await ledger.open_control(driver, admin, control_dsn,
                                            project.file.control_database)
    async with control:
        await move_registry.ensure_journal(control)
        recorder = ledger.Ledger(control)
        await recorder.start_run(run_id, "move", [t.clnt_id for t in tenants], argv)
        mover = _Mover(driver, project, inputs, dsns, control, run_id, keep_source)
        results = []
        for spec in tenants:
            if stop is not None and stop.is_set():
                result = MoveResult(spec.clnt_id, MoveStatus.SKIPPED)
            else:
                result = await mover.one(spec)
            results.append(result)
            await recorder.record(run_id, ledger_row(spec, result), provisioned=False)
        report = MoveReport(run_id, False, _ms(started), tuple(results))
        await recorder.finish_run(RunResult(
            run_id, "move", tuple(ledger_row(s, r) for s, r in zip(tenants, results, strict=True)),
            duration_ms=report.duration_ms))
    return report


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

@dataclass
class _State:
    begun: bool = False
    cut: bool = False


@dataclass
class _Mover:
    driver: Driver
    project: Project
    inputs: Inputs
    dsns: dict[str, str]
    control: Session
    run_id: str
    keep_source: bool

    @property
    def column(self) -> str:
        return tenant_column(self.project)

    async def connect(self, server: str, database: str | None = None) -> Session:
        dsn = self.dsns.get(server)
        if dsn is None:
            raise MoveError(f"server {server} (from the registry) is not in tenants.yaml",
                            hint="add it back under servers: for the move")
        try:
            return await self.driver.connect(dsn, database,
                                             lock_timeout=self.project.settings.lock_timeout)
        except DatabaseError as exc:
            if exc.sqlstate == "3D000":
                raise MoveError(f"database {database} does not exist on server {server}",
                                hint="if the registry's placement is stale (the data is gone), "
                                     "revert tenants.yaml, provision the tenant there, then "
                                     "move it") from exc
            raise

    async def lock(self, session: Session) -> None:
        await self.driver.acquire_migration_lock(session, self.project.settings.lock_wait)

    # ------------------------------------------------------------ one tenant

    async def one(self, spec: TenantSpec) -> MoveResult:
        started = time.monotonic()
        if not await move_registry.hold_tenant(self.control, spec.clnt_id, self.project.settings.lock_wait):
            running = TenantFailure(f"another tenantctl move of clnt_id {spec.clnt_id} is running")
            return MoveResult(spec.clnt_id, MoveStatus.FAILED, duration_ms=_ms(started), error=running)
        try:
            return await self.locked_one(spec, started)
        finally:
            await move_registry.release_tenant(self.control, spec.clnt_id)

    async def locked_one(self, spec: TenantSpec, started: float) -> MoveResult:
        recovered = None
        source = target = None
        try:
            entry = (await move_registry.journal(self.control)).get(spec.clnt_id)
            if entry is not None and entry.phase is Phase.CUTOVER:
                kept = await self.finish_after_cutover(spec, entry)
                return MoveResult(spec.clnt_id, MoveStatus.MOVED, entry.source, entry.target,
                                  duration_ms=_ms(started), kept_source=kept,
                                  recovered="finished an interrupted move")
            if entry is not None:
                await self.undo(entry)
                recovered = "undid an interrupted move before starting again"
            known = (await move_registry.registered(self.control)).get(spec.clnt_id)
            if known is None or not known.placed:
                raise MoveError(f"clnt_id {spec.clnt_id} is not provisioned anywhere: nothing "
                                "to move", hint="tenantctl provision it at its declared placement")
            declared = servers_declared(self.project)[spec.clnt_id]
            mismatch = compare(spec, known, server_declared=declared)
            if mismatch is None:
                return MoveResult(spec.clnt_id, MoveStatus.UP_TO_DATE, known.placement,
                                  known.placement, duration_ms=_ms(started), recovered=recovered)
            source, target = mismatch.registered, mismatch.declared
            method = method_for(source, target)
            entry = JournalEntry(spec.clnt_id, self.run_id, Phase.COPYING, source, target,
                                 self.keep_source, None, False)
            tables, version = await self.run(spec, entry, method)
            kept = await self.finish_after_cutover(spec, entry)
            return MoveResult(spec.clnt_id, MoveStatus.MOVED, source, target, method, version,
                              tables, _ms(started), kept, recovered)
        except TenantctlError as exc:
            failure = TenantFailure(exc.message, getattr(exc, "sqlstate", None), hint=exc.hint)
            return MoveResult(spec.clnt_id, MoveStatus.FAILED, source, target,
                              duration_ms=_ms(started), recovered=recovered, error=failure)

    async def run(self, spec: TenantSpec, entry: JournalEntry,
                  method: Method) -> tuple[dict[str, int], str]:
        state = _State()
        try:
            if method is Method.DUMP:
                return await self.dump_move(spec, entry, state)
            if entry.source.mode == Mode.SHARED:
                return await self.shared_to_dedicated(spec, entry, state)
            return await self.dedicated_to_shared(spec, entry, state)
        except BaseException as exc:
            if state.begun and not state.cut:
                current = (await move_registry.journal(self.control)).get(spec.clnt_id, entry)
                try:
                    await self.undo(current)
                except Exception as undo_failed:
                    if isinstance(exc, TenantctlError):
                        exc.message += (f" (removing the partial target failed too: "
                                        f"{undo_failed}; the next `tenantctl move "
                                        f"{spec.clnt_id}` finishes the undo)")
            raise

    async def begin(self, entry: JournalEntry, state: _State) -> None:
        await move_registry.begin(self.control, entry)
        state.begun = True

    async def refuse_downgrade(self, source_server: str, target_server: str,
                               source_major: int) -> None:
        """A whole-database dump of a newer major is not guaranteed to load into an
        older one (PostgreSQL supports dumps forward only): refused before anything."""
        async with await self.connect(target_server) as admin:
            target_major = await server_major(admin)
        if target_major < source_major:
            raise MoveError(
                f"server {target_server} runs PostgreSQL {target_major}, older than "
                f"{source_server}'s {source_major}: a move to an older major is not supported",
                hint="move to a server of the same or a newer major, or upgrade the target")

    async def cut_over(self, entry: JournalEntry, state: _State) -> None:
        await move_registry.cut_over(self.control, entry.clnt_id, entry.target)
        state.cut = True
        await checkpoint("cutover")

    # ------------------------------------------------------------ the three moves

    async def dump_move(self, spec: TenantSpec, entry: JournalEntry,
                        state: _State) -> tuple[dict[str, int], str]:
        src, tgt, cid = entry.source, entry.target, spec.clnt_id
        async with await self.connect(src.server, src.database) as source:
            await self.lock(source)
            version = await clean_version(self.driver, self.inputs.migrations, source, "source")
            await self.refuse_existing(tgt)
            await self.refuse_downgrade(src.server, tgt.server, await server_major(source))
            await self.begin(entry, state)
            await self.create_target(tgt, cid)
            await self.stop_writes(src, cid, source)
            await dump_restore(self.dsns[src.server], src.database, await server_major(source),
                               self.dsns[tgt.server], tgt.database, lambda: self.analyze(tgt))
            await checkpoint("copied")
            async with await self.connect(tgt.server, tgt.database) as target:
                await self.lock(target)
                for session in (source, target):
                    await prepare_session(session, cid)
                tables = await ordered_tables(source, self.column)
                await same_shape(tables, await ordered_tables(target, self.column))
                rows = await verify(source, target, tables, None, cid)
            await self.cut_over(entry, state)
        return rows, version

    async def shared_to_dedicated(self, spec: TenantSpec, entry: JournalEntry,
                                  state: _State) -> tuple[dict[str, int], str]:
        src, tgt, cid = entry.source, entry.target, spec.clnt_id
        async with await self.connect(src.server, src.database) as source:
            await self.lock(source)
            version = await clean_version(self.driver, self.inputs.migrations, source, "source")
            await prepare_session(source, cid)
            tables = [t for t in await ordered_tables(source, self.column, exclude=BOOKKEEPING)
                      if t.has_tenant]
            await self.refuse_existing(tgt)
            await self.begin(entry, state)
            await self.create_target(tgt, cid)
            await self.migrate(Unit(tgt.server, tgt.database, Mode.DATABASE, (spec,)), version,
                               purpose.moving(cid), None)
            async with await self.connect(tgt.server, tgt.database) as target:
                await self.lock(target)
                await prepare_session(target, cid)
                await same_shape(tables, await ordered_tables(target, self.column,
                                                              exclude=BOOKKEEPING))
                full = await foreign_rows(target, tables, self.column, -1)
                if full:
                    raise MoveError(f"the new database {tgt.database} holds rows after its "
                                    f"migrations ({', '.join(full)}): they would mix with the "
                                    "tenant's", hint="move the rows of those tables by hand")
                async with source.transaction():
                    await lock_for_copy(source, tables)
                    rows = await self.copy_rows(source, target, tables, cid)
                    await self.cut_over(entry, state)
                    if not entry.keep_source:
                        await delete_tenant_rows(source, tables, self.column, cid)
        return rows, version

    async def dedicated_to_shared(self, spec: TenantSpec, entry: JournalEntry,
                                  state: _State) -> tuple[dict[str, int], str]:
        src, tgt, cid = entry.source, entry.target, spec.clnt_id
        shared = self.project.file.shared
        async with await self.connect(src.server, src.database) as source:
            await self.lock(source)
            version = await clean_version(self.driver, self.inputs.migrations, source, "source")
            await prepare_session(source, cid)
            everything = await ordered_tables(source, self.column, exclude=BOOKKEEPING)
            stray = [t.label for t in everything if not t.has_tenant
                     and not {t.name, t.label} & set(shared.global_tables)]
            if stray:
                raise MoveError(f"table(s) without {self.column} that are not in "
                                f"shared.global_tables: {', '.join(stray)}: their rows have no "
                                "place in the shared database",
                                hint="add a tenant column, or list them as global tables")
            tables = [t for t in everything if t.has_tenant]
            others = await foreign_rows(source, tables, self.column, cid)
            if others:
                raise MoveError(f"{src.database} holds rows of other tenants (or without "
                                f"{self.column}): {', '.join(others)}: they would be lost")
            exists = await self.shared_ready(tgt, version, tables, cid)
            await self.begin(entry, state)
            if not exists:
                async with await self.connect(tgt.server) as admin:
                    if await self.driver.create_database(admin, tgt.database):
                        await self.driver.write_purpose(admin, purpose.SHARED, tgt.database)
                from .runs import shared_mode_hook

                hook = await shared_mode_hook(self.driver, self.project, self.dsns, Verb.MIGRATE)
                await self.migrate(Unit(tgt.server, tgt.database, Mode.SHARED, (spec,)), version,
                                   purpose.SHARED, hook)
            await self.stop_writes(src, cid, source)
            async with await self.connect(tgt.server, tgt.database) as target:
                await self.lock(target)
                await prepare_session(target, cid)
                await same_shape(tables, await ordered_tables(target, self.column,
                                                              exclude=BOOKKEEPING))
                async with source.transaction():
                    await lock_for_copy(source, tables)
                    rows = await self.copy_rows(source, target, tables, cid)
                await self.cut_over(entry, state)
        return rows, version

    # ------------------------------------------------------------ steps

    async def copy_rows(self, source: Session, target: Session, tables: list[Table],
                        cid: int) -> dict[str, int]:
        """Every table's rows of the tenant, the seed record and the verification, in
        one transaction of the target (a failure leaves nothing there)."""
        copied: dict[str, int] = {}
        async with target.transaction():
            await without_triggers(target)
            for table in tables:
                copied[table.label] = await stream_table(source, target, table, self.column, cid)
                await advance_sequences(target, table)
                await checkpoint("copying")
            await copy_seed_record(source, target, cid, self.run_id)
            await verify(source, target, tables, self.column, cid)
        return copied

    async def analyze(self, where: Placement) -> None:
        async with await self.connect(where.server, where.database) as session:
            await session.execute("ANALYZE")

    async def refuse_existing(self, target: Placement) -> None:
        async with await self.connect(target.server) as admin:
            if await self.driver.existing_databases(admin, [target.database]):
                raise MoveError(f"{target.describe()} exists already: a move never copies over "
                                "a database", hint="drop or rename it first, or choose another "
                                "database name in tenants.yaml")

    async def shared_ready(self, target: Placement, version: str, tables: list[Table],
                           cid: int) -> bool:
        """Whether the shared database exists; if it does, it is at ``version`` and holds
        no rows of the tenant (refused otherwise)."""
        async with await self.connect(target.server) as admin:
            if not await self.driver.existing_databases(admin, [target.database]):
                return False
        async with await self.connect(target.server, target.database) as shared:
            at = await clean_version(self.driver, self.inputs.migrations, shared, "target")
            if Version.parse(at) != Version.parse(version):
                raise MoveError(f"the shared database is at version {at}, the tenant at {version}: "
                                "a move needs both at the same version",
                                hint="tenantctl migrate --all (both to the latest version), then "
                                     "move again")
            await prepare_session(shared, cid)
            left = await tenant_rows(shared, tables, self.column, cid)
            if left:
                raise MoveError(f"the shared database already holds rows of clnt_id {cid} "
                                f"({', '.join(left)}), e.g. kept by an earlier move "
                                "--keep-source", hint="delete them first")
        return True

    async def create_target(self, target: Placement, cid: int) -> None:
        await move_registry.note(self.control, cid, target_created=True)
        async with await self.connect(target.server) as admin:
            if not await self.driver.create_database(admin, target.database):
                raise MoveError(f"{target.describe()} appeared during the move: not touched")
            await self.driver.write_purpose(admin, purpose.moving(cid), target.database)

    async def stop_writes(self, source: Placement, cid: int, locked: Session) -> None:
        pid = await locked.fetch_value("SELECT pg_backend_pid()")
        async with await self.connect(source.server) as admin:
            limit = await connection_limit(admin, source.database)
            await move_registry.note(self.control, cid, source_connlimit=limit)
            await stop_connections(admin, source.database, pid)

    async def migrate(self, unit: Unit, version: str, tag: str, hook: EnforceHook | None) -> None:
        settings = self.project.settings
        engine = Engine(
            self.inputs.migrations, self.dsns,
            RunOptions(verb=Verb.MIGRATE, target=Version.parse(version), skip_marked=False,
                       lock_timeout=settings.lock_timeout, lock_wait=settings.lock_wait,
                       retries=settings.retries),
            driver=self.driver, purposes={(unit.server, unit.database): tag}, enforce=hook,
            run_id=self.run_id)
        try:
            outcome = await engine.run_single(unit)
        finally:
            await engine.close()
        if outcome.failure is not None:
            raise MoveError(f"bringing {unit.database} to version {version} failed: "
                            f"{outcome.failure.message}", hint=outcome.failure.hint)

    # ------------------------------------------------------------ after the cutover, or undo

    async def finish_after_cutover(self, spec: TenantSpec, entry: JournalEntry) -> str | None:
        try:
            return await self.finish(spec, entry)
        except TenantctlError as exc:
            raise MoveError(f"the data is at {entry.target.describe()} and the registry points "
                            f"there, but finishing the move failed: {exc.message}",
                            hint=f"the next `tenantctl move {spec.clnt_id}` finishes it "
                                 "(tags the target, removes or keeps the source)") from exc

    async def finish(self, spec: TenantSpec, entry: JournalEntry) -> str | None:
        """The registry points at the target: tag or register it there, then remove
        (or keep) the source. Idempotent: a re-run after a crash calls it again."""
        src, tgt, cid = entry.source, entry.target, spec.clnt_id
        if tgt.mode == Mode.DATABASE:
            async with await self.connect(tgt.server) as admin:
                if (await self.driver.read_purposes(admin)).get(tgt.database) == purpose.moving(cid):
                    await self.driver.write_purpose(admin, purpose.tenant(cid), tgt.database)
        else:
            async with await self.connect(tgt.server, tgt.database) as shared:
                await isolation.ensure_registry(shared)
                await isolation.register(shared, cid, spec.name, spec.sites)
        kept = await (self.retire_database(src, cid, entry.keep_source) if src.mode == Mode.DATABASE
                      else self.retire_shared_rows(src, cid, entry.keep_source))
        await move_registry.finish(self.control, cid)
        return kept

    async def retire_database(self, src: Placement, cid: int, keep: bool) -> str | None:
        async with await self.connect(src.server) as admin:
            if not await self.driver.existing_databases(admin, [src.database]):
                return None  # removed before a crash
            tag = (await self.driver.read_purposes(admin)).get(src.database)
            if tag not in (purpose.tenant(cid), purpose.moved(cid), None):
                raise MoveError(f"the old database {src.database} is tagged for "
                                f"{purpose.describe(tag)}: not removed")
            if not keep:
                await self.driver.drop_database(admin, src.database)
                return None
            # tagged first: the tag follows the database through the rename
            await self.driver.write_purpose(admin, purpose.moved(cid), src.database)
            name = kept_name(src.database, datetime.now(UTC))
            await rename_database(admin, src.database, name)
            return f"database {name} on server {src.server}"

    async def retire_shared_rows(self, src: Placement, cid: int, keep: bool) -> str | None:
        async with await self.connect(src.server, src.database) as shared:
            await self.lock(shared)
            await prepare_session(shared, cid)
            if not keep:
                tables = await ordered_tables(shared, self.column, exclude=BOOKKEEPING)
                async with shared.transaction():
                    await delete_tenant_rows(shared, tables, self.column, cid)
                    await forget_seed(shared, cid)
            await isolation.ensure_registry(shared)
            await shared.execute(
                f"DELETE FROM public.{isolation.REGISTRY_TABLE} WHERE clnt_id = $1", cid)
        if keep:
            return f"rows of clnt_id {cid} in {src.database} on server {src.server}"
        return None

    async def undo(self, entry: JournalEntry) -> None:
        """Before the cutover: remove what the move made at the target, reopen the source."""
        src, tgt, cid = entry.source, entry.target, entry.clnt_id
        if tgt.mode == Mode.DATABASE:
            async with await self.connect(tgt.server) as admin:
                if (await self.driver.read_purposes(admin)).get(tgt.database) == purpose.moving(cid):
                    await self.driver.drop_database(admin, tgt.database)
        else:
            try:
                shared = await self.connect(tgt.server, tgt.database)
            except MoveError:
                shared = None  # never created
            if shared is not None:
                async with shared:
                    await self.lock(shared)
                    await prepare_session(shared, cid)
                    tables = await ordered_tables(shared, self.column, exclude=BOOKKEEPING)
                    async with shared.transaction():
                        await delete_tenant_rows(shared, tables, self.column, cid)
                        await forget_seed(shared, cid)
        if src.mode == Mode.DATABASE and entry.source_connlimit is not None:
            async with await self.connect(src.server) as admin:
                if await self.driver.existing_databases(admin, [src.database]):
                    await allow_connections(admin, src.database, entry.source_connlimit)
        await move_registry.finish(self.control, cid)
