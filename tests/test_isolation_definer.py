"""SECURITY DEFINER functions in a shared database, on a real PostgreSQL.

A definer function runs with its owner's rights. If that owner bypasses
Row-Level Security (a superuser, a BYPASSRLS role, or the owner of a tenant
table whose RLS is not forced) and the app role may execute it (PUBLIC has
EXECUTE by default), the function hands every tenant's rows to any tenant.
check-isolation must call that an error, and its live probe must catch a
definer function that leaks rows however it does it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from conftest import Workspace, run
from tenantctl import isolation_check
from tenantctl.drivers import postgres
from tenantctl.drivers.postgres import quote_ident
from test_isolation import Shared, _as_tenant, _build, _drop

ALL_USERS = ("CREATE FUNCTION all_users() RETURNS SETOF cvs_usr_mast LANGUAGE sql SECURITY DEFINER "
             "AS 'SELECT * FROM cvs_usr_mast'")


def _checks(findings: list[isolation_check.IsolationFinding]) -> set[tuple[str, str]]:
    return {(f.check, f.severity) for f in findings}


def _about(findings: list[isolation_check.IsolationFinding], check: str) -> list[str]:
    return [f.message for f in findings if f.check == check]


@pytest.fixture
def shared(ws: Workspace) -> Iterator[Shared]:
    """test_isolation's XOS tables with rows of tenants 1 and 2, enforced; dropped afterwards."""
    sh = Shared(ws, f"{ws.prefix}_shared", f"{ws.prefix}_app", f"{ws.prefix}_owner")
    try:
        run(_build(sh))
        yield sh
    finally:
        run(_drop(ws, sh.db, [sh.app, sh.owner]))


@pytest.fixture
def fn_role(shared: Shared) -> Iterator[str]:
    """A NOLOGIN, NOBYPASSRLS role that owns no table but may read cvs_usr_mast."""
    name = f"{shared.ws.prefix}_fn"
    run(shared.sql(f"CREATE ROLE {name} NOLOGIN NOSUPERUSER NOBYPASSRLS",
                   f"GRANT USAGE ON SCHEMA ordr TO {name}",
                   f"GRANT SELECT ON cvs_usr_mast, ordr.cvs_ordr_hdr TO {name}"))
    try:
        yield name
    finally:
        run(shared.sql(f"DROP OWNED BY {name}", f"DROP ROLE {name}"))


def _app_reads(sh: Shared, tenant: int | None, sql: str) -> list[int]:
    """clnt_id of every row ``sql`` returns to the app role, with ``tenant`` set (or none)."""
    async def go() -> list[int]:
        s = await sh.as_app()
        try:
            async with s.transaction():
                if tenant is not None:
                    await s.execute("SELECT set_config('app.current_tenant', $1, true)", str(tenant))
                ids = await s.fetch_value(f"SELECT array_agg(clnt_id) FROM ({sql}) AS rows")
                return sorted(ids or [])
        finally:
            await s.close()

    return run(go())


# ------------------------------------------------------------------ end to end (CLI)


@pytest.fixture
def provisioned(example_ws: Workspace) -> Iterator[Workspace]:
    """tenantctl provision --all in shared mode: three shared tenants, seeded."""
    ws = example_ws
    ws.write_config(
        '  - { clnt_id: 1, name: "Small One", sites: [1], mode: shared }\n'
        '  - { clnt_id: 2, name: "Small Two", sites: [1, 2], mode: shared }\n'
        '  - { clnt_id: 3, name: "Small Three", sites: [1], mode: shared }\n',
        extra=f"seed: seed/tenant_seed.sql\n"
              f"shared: {{ database: {ws.prefix}_shared, app_role: {ws.prefix}_app, "
              f"owner_role: {ws.prefix}_owner }}\n",
    )
    try:
        result = ws.cli("provision", "--all")
        assert result.exit_code == 0, result.stderr
        yield ws
    finally:
        ws.fetch(None, f'DROP DATABASE IF EXISTS "{ws.prefix}_shared" WITH (FORCE)')
        ws.fetch(None, f'DROP DATABASE IF EXISTS "{ws.prefix}_template" WITH (FORCE)')
        for role in (f"{ws.prefix}_app", f"{ws.prefix}_owner"):
            if ws.fetch(None, "SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                ws.fetch(None, f'DROP OWNED BY "{role}"')
                ws.fetch(None, f'DROP ROLE "{role}"')


def test_superuser_definer_function_leaks_and_check_isolation_says_so(provisioned: Workspace) -> None:
    ws = provisioned
    db, app = f"{ws.prefix}_shared", f"{ws.prefix}_app"
    assert ws.cli("check-isolation").exit_code == 0
    ws.fetch(db, ALL_USERS)  # created by the migrator, a superuser: PUBLIC may execute it
    me = ws.fetch(db, "SELECT current_user AS u")[0]["u"]

    async def leak() -> list[int]:
        s = await postgres.connect(isolation_check.role_dsn(ws.dsn, app), db)
        try:
            async with s.transaction():
                await s.execute("SELECT set_config('app.current_tenant', '1', true)")
                assert await s.fetch_value("SELECT count(*) FROM cvs_usr_mast WHERE clnt_id <> 1") == 0
                ids = await s.fetch_value("SELECT array_agg(DISTINCT clnt_id) FROM all_users()")
                return sorted(ids or [])
        finally:
            await s.close()

    assert run(leak()) == [1, 2, 3], "the reproduction: tenant 1 reads every tenant's users"

    result = ws.cli("--json", "check-isolation")
    assert result.exit_code == 1, result.stdout
    doc = result.json()
    assert doc["isolated"] is False
    errors = {f["check"]: f["message"] for f in doc["findings"] if f["severity"] == "error"}
    assert set(errors) == {"security-definer-bypasses-rls", "probe-definer-cross-tenant-read"}
    msg = errors["security-definer-bypasses-rls"]
    assert "all_users()" in msg and me in msg and "superuser" in msg and app in msg
    assert "all_users()" in errors["probe-definer-cross-tenant-read"]
    text = ws.cli("check-isolation")
    assert text.exit_code == 1 and "NOT isolated" in text.stdout
    assert "[security-definer-bypasses-rls]" in text.stdout

    # The fix a person would make: the app role may no longer execute it.
    ws.fetch(db, "REVOKE EXECUTE ON FUNCTION all_users() FROM PUBLIC")
    fixed = ws.cli("--json", "check-isolation")
    assert fixed.exit_code == 0 and fixed.json()["isolated"] is True
    assert {f["check"] for f in fixed.json()["findings"]} == {"security-definer"}


# ------------------------------------------------------------------ catalog


def test_definer_owned_by_a_bypassrls_role_is_an_error(shared: Shared, fn_role: str) -> None:
    run(shared.sql(f"ALTER ROLE {fn_role} BYPASSRLS", ALL_USERS,
                   f"ALTER FUNCTION all_users() OWNER TO {fn_role}",
                   "ALTER FUNCTION all_users() SET search_path = public, pg_temp"))
    assert _app_reads(shared, 1, "SELECT * FROM all_users()") == [1, 1, 2, 2]
    findings = shared.check()
    assert _checks(findings) == {("security-definer-bypasses-rls", "error"),
                                 ("probe-definer-cross-tenant-read", "error")}
    [msg] = _about(findings, "security-definer-bypasses-rls")
    assert "all_users()" in msg and fn_role in msg and "BYPASSRLS" in msg


def test_definer_owned_by_the_owner_of_an_unforced_table_is_an_error(shared: Shared) -> None:
    run(shared.sql("ALTER TABLE cvs_usr_mast NO FORCE ROW LEVEL SECURITY", ALL_USERS,
                   f"ALTER FUNCTION all_users() OWNER TO {shared.owner}",
                   "ALTER FUNCTION all_users() SET search_path = public, pg_temp"))
    assert _app_reads(shared, 1, "SELECT * FROM all_users()") == [1, 1, 2, 2]
    findings = shared.check()
    assert _checks(findings) == {("rls-not-forced", "error"), ("security-definer-bypasses-rls", "error"),
                                 ("probe-definer-cross-tenant-read", "error")}
    [msg] = _about(findings, "security-definer-bypasses-rls")
    assert shared.owner in msg and "public.cvs_usr_mast" in msg and "not forced" in msg
    # Forcing RLS again takes the owner's bypass away: the function is back to a warning.
    run(shared.sql("ALTER TABLE cvs_usr_mast FORCE ROW LEVEL SECURITY"))
    assert _app_reads(shared, 1, "SELECT * FROM all_users()") == [1, 1]
    assert [(f.check, f.severity) for f in shared.check()] == [("security-definer", "warning")]


def test_definer_under_forced_rls_is_only_a_warning(shared: Shared, fn_role: str) -> None:
    """Owned by a NOBYPASSRLS role that owns no tenant table (or by the owner role, whose
    tables are forced): RLS applies inside the function, so it cannot leak."""
    run(shared.sql(ALL_USERS, f"ALTER FUNCTION all_users() OWNER TO {fn_role}",
                   "ALTER FUNCTION all_users() SET search_path = public, pg_temp",
                   "CREATE FUNCTION ordr.all_orders() RETURNS SETOF ordr.cvs_ordr_hdr LANGUAGE sql "
                   "SECURITY DEFINER SET search_path = ordr, pg_temp AS 'SELECT * FROM cvs_ordr_hdr'",
                   f"ALTER FUNCTION ordr.all_orders() OWNER TO {shared.owner}"))
    assert _app_reads(shared, 1, "SELECT * FROM all_users()") == [1, 1]
    assert _app_reads(shared, None, "SELECT * FROM all_users()") == []
    assert _app_reads(shared, 2, "SELECT * FROM ordr.all_orders()") == [2]
    findings = shared.check()
    assert [(f.check, f.severity) for f in findings] == [("security-definer", "warning")] * 2
    assert any("all_users()" in f.message and fn_role in f.message for f in findings)
    assert any("ordr.all_orders()" in f.message and shared.owner in f.message for f in findings)


def test_definer_the_app_role_cannot_execute_is_a_warning(shared: Shared) -> None:
    run(shared.sql(ALL_USERS, "ALTER FUNCTION all_users() SET search_path = public, pg_temp",
                   "REVOKE EXECUTE ON FUNCTION all_users() FROM PUBLIC",
                   # EXECUTE, but no USAGE on the schema: not callable either
                   "CREATE SCHEMA priv",
                   "CREATE FUNCTION priv.all_sites() RETURNS SETOF public.cvs_site_mast LANGUAGE sql "
                   "SECURITY DEFINER AS 'SELECT * FROM public.cvs_site_mast'"))
    findings = shared.check()
    assert [(f.check, f.severity) for f in findings] == [("security-definer", "warning")] * 2
    assert all("cannot execute" in f.message for f in findings)


def test_scalar_definer_function_is_an_error_too(shared: Shared) -> None:
    """A count is a leak as well (the catalog check does not depend on the return type)."""
    run(shared.sql("CREATE FUNCTION ordr.peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
                   "SET search_path = ordr, pg_temp AS 'SELECT count(*) FROM cvs_ordr_hdr'"))
    findings = shared.check()
    assert _checks(findings) == {("security-definer-bypasses-rls", "error"),
                                 ("probe-definer-skipped", "warning")}
    assert "ordr.peek()" in _about(findings, "security-definer-bypasses-rls")[0]


def test_definer_without_a_pinned_search_path_is_a_warning(shared: Shared, fn_role: str) -> None:
    run(shared.sql(
        ALL_USERS, f"ALTER FUNCTION all_users() OWNER TO {fn_role}",
        "CREATE FUNCTION users_no_temp() RETURNS SETOF cvs_usr_mast LANGUAGE sql SECURITY DEFINER "
        "SET search_path = public AS 'SELECT * FROM cvs_usr_mast'",
        f"ALTER FUNCTION users_no_temp() OWNER TO {fn_role}",
        "CREATE FUNCTION users_pinned() RETURNS SETOF cvs_usr_mast LANGUAGE sql SECURITY DEFINER "
        "SET search_path = public, pg_temp AS 'SELECT * FROM cvs_usr_mast'",
        f"ALTER FUNCTION users_pinned() OWNER TO {fn_role}",
    ))
    findings = shared.check()
    assert _checks(findings) == {("security-definer", "warning"), ("security-definer-search-path", "warning")}
    paths = _about(findings, "security-definer-search-path")
    assert len(paths) == 2
    assert any("all_users()" in m and "search_path" in m for m in paths)
    assert any("users_no_temp()" in m and "pg_temp" in m for m in paths)
    assert not any("users_pinned()" in m for m in paths)
    # A schema the app role may create in, on the function's path, is named.
    run(shared.sql("CREATE SCHEMA scratch", f"GRANT USAGE, CREATE ON SCHEMA scratch TO {shared.app}",
                   "ALTER FUNCTION users_pinned() SET search_path = scratch, public, pg_temp"))
    paths = _about(shared.check(), "security-definer-search-path")
    assert any("users_pinned()" in m and "scratch" in m and shared.app in m for m in paths)


# ------------------------------------------------------------------ live probe


def test_probe_catches_a_definer_that_switches_tenant(shared: Shared, fn_role: str) -> None:
    """The owner cannot bypass RLS, so the catalog only warns; but the function sets
    tenant 2 itself. The probe calls it and sees tenant 2's rows."""
    run(shared.sql("CREATE FUNCTION tenant2_users() RETURNS TABLE (clnt_id int2, usr_nm text) "
                   "LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp "
                   "SET app.current_tenant = '2' AS 'SELECT clnt_id, usr_nm FROM cvs_usr_mast'",
                   f"ALTER FUNCTION tenant2_users() OWNER TO {fn_role}"))
    findings = shared.check()
    assert _checks(findings) == {("security-definer", "warning"), ("probe-definer-cross-tenant-read", "error")}
    msgs = _about(findings, "probe-definer-cross-tenant-read")
    assert len(msgs) == 2 and all("tenant2_users()" in m for m in msgs)
    assert any("no tenant set" in m for m in msgs) and any("tenant 1" in m for m in msgs)


def test_probe_calls_functions_with_defaults_and_skips_required_arguments(shared: Shared) -> None:
    run(shared.sql(
        "CREATE FUNCTION users_of_site(p_site int2 DEFAULT 1) RETURNS SETOF cvs_usr_mast LANGUAGE sql "
        "SECURITY DEFINER SET search_path = public, pg_temp AS 'SELECT * FROM cvs_usr_mast WHERE site_id = p_site'",
        # calling this one would fail loudly: the probe must never guess arguments
        "CREATE FUNCTION users_of(p_clnt int2) RETURNS SETOF cvs_usr_mast LANGUAGE plpgsql "
        "SECURITY DEFINER SET search_path = public, pg_temp AS "
        "$$BEGIN RAISE EXCEPTION 'called with %', p_clnt; END$$",
    ))
    findings = shared.check()
    assert _checks(findings) == {("security-definer-bypasses-rls", "error"),
                                 ("probe-definer-cross-tenant-read", "error"),
                                 ("probe-definer-skipped", "warning")}
    assert len(_about(findings, "security-definer-bypasses-rls")) == 2
    assert all("users_of_site(smallint)" in m for m in _about(findings, "probe-definer-cross-tenant-read"))
    [skipped] = _about(findings, "probe-definer-skipped")
    assert "users_of(smallint)" in skipped and "argument" in skipped


def test_probe_calls_are_bounded_read_only_and_rolled_back(shared: Shared, fn_role: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation_check, "DEFINER_CALL_TIMEOUT", 0.5)
    run(shared.sql(
        "CREATE FUNCTION slow_users() RETURNS SETOF cvs_usr_mast LANGUAGE sql SECURITY DEFINER "
        "SET search_path = public, pg_temp AS 'SELECT u.* FROM cvs_usr_mast u, pg_sleep(30)'",
        f"ALTER FUNCTION slow_users() OWNER TO {fn_role}",
        "CREATE FUNCTION add_user() RETURNS SETOF cvs_usr_mast LANGUAGE sql SECURITY DEFINER "
        "SET search_path = public, pg_temp AS "
        "'INSERT INTO cvs_usr_mast (clnt_id, site_id, usr_nm) VALUES (1, 1, ''probe'') RETURNING *'",
        f"ALTER FUNCTION add_user() OWNER TO {fn_role}",
        f"GRANT INSERT ON cvs_usr_mast TO {fn_role}",
    ))
    started = time.monotonic()
    findings = shared.check()
    assert time.monotonic() - started < 20
    assert _checks(findings) == {("security-definer", "warning"), ("probe-definer-inconclusive", "warning")}
    msgs = _about(findings, "probe-definer-inconclusive")
    assert any("slow_users()" in m and "57014" in m for m in msgs)  # statement_timeout
    assert any("add_user()" in m and "25006" in m for m in msgs)  # read-only transaction
    assert shared.ws.fetch(shared.db, "SELECT count(*) FROM cvs_usr_mast")[0][0] == 4


def test_probe_leaves_nothing_behind_and_quotes_names(shared: Shared) -> None:
    schema, fn = 'Odd "Schema"', 'all "users"'
    run(shared.sql(
        f"CREATE SCHEMA {quote_ident(schema)}",
        f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {shared.app}",
        f"CREATE FUNCTION {quote_ident(schema)}.{quote_ident(fn)}() RETURNS SETOF public.cvs_usr_mast "
        "LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
        "AS 'SELECT * FROM public.cvs_usr_mast'"))
    findings = shared.check()
    assert _checks(findings) == {("security-definer-bypasses-rls", "error"),
                                 ("probe-definer-cross-tenant-read", "error")}
    assert shared.ws.fetch(shared.db, "SELECT count(*) FROM cvs_usr_mast")[0][0] == 4
    assert run(_as_tenant(shared, 1, "SELECT 1")) == ["SELECT 1"]
