"""tenant_column and optional sites in tenants.yaml, and lint's tenancy rules on the
configured column. The identifier check is compared with PostgreSQL's own
quote_ident() and keyword list on the test server (hypothesis)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Workspace, assert_refused
from tenantctl.config import load_project
from tenantctl.errors import ConfigError
from tenantctl.isolation import _deparsed, tenant_expr
from tenantctl.lint import lint_migrations
from tenantctl.migrations import load_migrations
from tenantctl.tenant_column import (
    DEFAULT_TENANT_COLUMN,
    MAX_NAME_BYTES,
    QUOTED_KEYWORDS,
    SYSTEM_COLUMNS,
    check_tenant_column,
)

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# -- tenants.yaml ------------------------------------------------------------------------

def test_defaults_keep_the_xos_convention(tmp_path: Path) -> None:
    assert DEFAULT_TENANT_COLUMN == "clnt_id"
    example = load_project(ROOT / "tenants.yaml", env={})
    assert example.file.tenant_column == "clnt_id"
    assert all(t.sites for t in example.tenants)  # the XOS example keeps its sites
    bare = load_project(write(tmp_path, "tenants: [{ clnt_id: 1, name: A }]\n"), env={})
    assert bare.file.tenant_column == "clnt_id"


def test_sites_are_optional(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, """\
        tenant_column: tenant_id
        tenants:
          - { clnt_id: 1, name: "No sites key" }
          - { clnt_id: 2, name: "Empty list", sites: [] }
          - { clnt_id: 3, name: "With sites", sites: [4, 2] }
    """), env={})
    assert project.file.tenant_column == "tenant_id"
    assert [t.sites for t in project.tenants] == [(), (), (4, 2)]


HOSTILE = [
    ('"tenant id"', "not a plain column name"),  # a space
    ("'\"tenant_id\"'", "not a plain column name"),  # quotes inside the name
    ("\"tenant_id'\"", "not a plain column name"),
    ("TenantId", "not a plain column name"),  # upper case
    ('"tenant_id; DROP TABLE x"', "not a plain column name"),
    ('"tenant_id\\n"', "not a plain column name"),  # a trailing newline
    ('"clnt_ïd"', "not a plain column name"),  # non-ASCII
    ('"1tenant"', "not a plain column name"),
    ('""', "not a plain column name"),
    ("a" * 64, "64 bytes long"),
    ("select", "PostgreSQL keyword"),  # reserved
    ("user", "PostgreSQL keyword"),
    ("left", "PostgreSQL keyword"),  # type/function name keyword
    ("time", "PostgreSQL keyword"),  # column name keyword: quoted by PostgreSQL
    ("ctid", "system column"),
    ("xmin", "system column"),
    ("5", "not a column name"),
    ("null", "not a column name"),
    ("[tenant_id]", "not a column name"),
]


@pytest.mark.parametrize(("value", "says"), HOSTILE)
def test_bad_tenant_column_is_refused_with_file_and_line(tmp_path: Path, value: str, says: str) -> None:
    path = write(tmp_path, f"""\
        migrations: migrations

        tenant_column: {value}
        tenants: [{{ clnt_id: 1, name: A }}]
    """)
    with pytest.raises(ConfigError) as info:
        load_project(path, env={})
    msg = str(info.value)
    assert msg.startswith("tenants.yaml:3: tenant_column: "), msg
    assert says in msg
    assert len(msg) < 400  # a 64-byte name is cut, not echoed in full twice


def test_bad_tenant_column_exits_2_before_touching_anything(ws: Workspace) -> None:
    ws.add_migration("v1.0.0_init.sql", "create table note (tenant_id int2 not null);\n")
    for value in ('"Tenant_ID"', "select", '"tenant\\"id"', "x" * 70):
        ws.write_config("  - { clnt_id: 1, name: A }\n", extra=f"tenant_column: {value}\n")
        for verb in (("provision", "--all"), ("migrate", "--all"), ("lint",), ("check-isolation",)):
            assert_refused(ws, *verb, says="tenant_column")
        result = ws.cli("--json", "provision", "--all")
        assert result.exit_code == 2 and "tenant_column" in result.json()["error"]["message"]


# -- the check against PostgreSQL's own rules ----------------------------------------------

def test_keyword_list_is_the_servers(pg_dsn: str) -> None:
    """The list is 18's: every supported major quotes a subset of it (15 lacks the
    json_* keywords, merge_action and system_user), so a name that any server of a
    mixed fleet would quote is refused on all of them."""
    async def keywords() -> tuple[set[str], int]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch("SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'")
            major = int(await conn.fetchval("SELECT current_setting('server_version_num')")) // 10000
        finally:
            await conn.close()
        return {r["word"] for r in rows}, major

    server_keywords, major = asyncio.run(keywords())
    assert server_keywords <= QUOTED_KEYWORDS
    if major == 18:
        assert server_keywords == QUOTED_KEYWORDS


def _accepted(value: str) -> bool:
    try:
        check_tenant_column(value)
    except ValueError:
        return False
    return True


NAMES = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,70}", fullmatch=True),  # plain names, some too long
    st.sampled_from(sorted(QUOTED_KEYWORDS | SYSTEM_COLUMNS | {"tenant_id", "clnt_id", "name"})),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=70),  # any text PostgreSQL stores
    st.text("aZ_0 \"'.;-é\n", min_size=1, max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(NAMES, min_size=1, max_size=25, unique=True))
def test_accepted_exactly_when_postgresql_never_quotes_it(
        server: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], names: list[str]) -> None:
    """Accepted <=> quote_ident() leaves it as is, it fits 63 bytes and is no system column;
    and every accepted name works unquoted as a column, in a key and in the tenant policy,
    whose text the server prints exactly as enforce() predicts."""
    loop, conn = server

    async def check() -> None:
        quoted = await conn.fetch("SELECT n, quote_ident(n) AS q FROM unnest($1::text[]) AS n", names)
        for row in quoted:
            name = row["n"]
            plain = row["q"] == name and 0 < len(name.encode()) <= MAX_NAME_BYTES
            # an older server leaves a newer major's keywords (json_table) unquoted:
            # tenantctl refuses them on every server of the supported range
            plain = plain and name not in QUOTED_KEYWORDS
            assert _accepted(name) == (plain and name not in SYSTEM_COLUMNS), name
        accepted = [n for n in names if _accepted(n)]
        tr = conn.transaction()
        await tr.start()
        try:
            for i, name in enumerate(accepted):
                table, other = f"tc_probe_{i}", "y" if name == "x" else "x"
                await conn.execute(f"CREATE TEMP TABLE {table} ({name} int2 NOT NULL, {other} int, "
                                   f"PRIMARY KEY ({name}, {other}))")
                await conn.execute(f"INSERT INTO {table} ({name}, {other}) VALUES (1, 1)")
                assert await conn.fetchval(f"SELECT {name} FROM {table} WHERE {name} = 1") == 1
                expr = tenant_expr(name)
                await conn.execute(f"CREATE POLICY p ON {table} USING ({expr}) WITH CHECK ({expr})")
                shown = await conn.fetchval("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy "
                                            "WHERE polrelid = $1::regclass", table)
                assert shown == _deparsed(name)
        finally:
            await tr.rollback()

    loop.run_until_complete(check())


# -- lint on the configured column -----------------------------------------------------------

def _lint(tmp_path: Path, sql: str, column: str | None = None) -> list[tuple[str, str]]:
    folder = tmp_path / "migrations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "v1.0.0_step.sql").write_text(textwrap.dedent(sql))
    kwargs = {} if column is None else {"tenant_column": column}
    findings = lint_migrations(load_migrations(folder), global_tables=frozenset({"plan_ref"}), **kwargs)
    return [(f.rule, f.message) for f in findings]


WITH_TENANT_ID = """\
    create table acct_note (tenant_id int2 not null, note_id int not null, body text,
                            primary key (tenant_id, note_id));
    create unique index acct_note_body_uk on acct_note (tenant_id, body);
    create table acct_site (tenant_id int2 not null, site_id int2 not null, nm text,
                            primary key (tenant_id, site_id));
    create table acct_tag (tenant_id int2 not null, note_id int not null, tag text not null,
                           primary key (tenant_id, note_id, tag),
                           foreign key (tenant_id, note_id) references acct_note (tenant_id, note_id));
    create table acct_copy as select tenant_id, note_id from acct_note;
    create table plan_ref (plan_cd text primary key);
"""


def test_tenancy_rules_follow_tenant_column(tmp_path: Path) -> None:
    assert _lint(tmp_path / "a", WITH_TENANT_ID, "tenant_id") == []
    found = _lint(tmp_path / "b", """\
        create table acct_note (note_id int primary key, body text);
        create table old_style (clnt_id int2 not null, x int, primary key (clnt_id, x));
        create table acct_copy as select note_id, body from acct_note;
        create table acct_tag (tenant_id int2 not null, tag text, unique (tag, tenant_id));
    """, "tenant_id")
    assert found == [
        ("tenant-table-needs-clnt-id", "table acct_note has no tenant_id column"),
        ("tenant-table-needs-clnt-id", "table old_style has no tenant_id column"),
        ("tenant-table-needs-clnt-id", "table acct_copy has no tenant_id column"),
        ("key-leads-with-clnt-id", "UNIQUE (tag, tenant_id) of acct_tag does not start with tenant_id"),
    ]


def test_default_project_still_wants_clnt_id(tmp_path: Path) -> None:
    found = _lint(tmp_path / "a", WITH_TENANT_ID)
    assert {rule for rule, _ in found} == {"tenant-table-needs-clnt-id"}
    assert [m for _, m in found] == [f"table {t} has no clnt_id column"
                                     for t in ("acct_note", "acct_site", "acct_tag", "acct_copy")]
    assert _lint(tmp_path / "b", WITH_TENANT_ID.replace("tenant_id", "clnt_id")) == []


def test_site_master_exception_uses_the_tenant_column(tmp_path: Path) -> None:
    sql = """\
        create table acct_site (tenant_id int2 not null, site_id int2 not null, mgr int,
                                primary key (tenant_id, site_id));
        create unique index acct_site_mgr_uk on acct_site (tenant_id, mgr);
        create table acct_usr (tenant_id int2 not null, site_id int2 not null, usr int,
                               primary key (tenant_id, usr, site_id));
    """
    assert _lint(tmp_path, sql, "tenant_id") == [
        ("key-site-id-second", "PRIMARY KEY (tenant_id, usr, site_id) of acct_usr does not have site_id second"),
    ]


def test_lint_command_reads_tenant_column(ws: Workspace) -> None:
    ws.write_config("  - { clnt_id: 1, name: A }\n",
                    extra="tenant_column: tenant_id\nshared: { global_tables: [plan_ref] }\n")
    ws.add_migration("v1.0.0_init.sql", WITH_TENANT_ID)
    ok = ws.cli("--json", "lint")
    assert ok.exit_code == 0, ok.stdout
    assert ok.json()["findings"] == []
    ws.add_migration("v1.0.1_more.sql", "create table acct_misc (misc_id int primary key);\n")
    bad = ws.cli("--json", "lint")
    assert bad.exit_code == 1
    assert [(f["rule"], f["file"], f["message"]) for f in bad.json()["findings"]] == [
        ("tenant-table-needs-clnt-id", "v1.0.1_more.sql", "table acct_misc has no tenant_id column")]
    ws.write_config("  - { clnt_id: 1, name: A }\n", extra="shared: { global_tables: [plan_ref] }\n")
    default = ws.cli("--json", "lint")
    assert default.exit_code == 1
    assert {f["message"] for f in default.json()["findings"]} >= {
        "table acct_note has no clnt_id column", "table acct_misc has no clnt_id column"}
