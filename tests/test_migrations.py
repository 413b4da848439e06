"""Migration folder parsing: pure, no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantctl.errors import MigrationFileError
from tenantctl.migrations import (
    KNOWN_DIRECTIVES,
    Version,
    load_migrations,
    new_migration_path,
    parse_name,
    read_script,
    skip_space_and_comments,
    split_statements,
)

ROOT = Path(__file__).resolve().parent.parent


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    for name, sql in files.items():
        (d / name).write_text(sql)
    return d


def test_names_seed_and_flyway() -> None:
    assert parse_name("v1.0.1_add_usr_tables.sql") == (Version.parse("1.0.1"), "add usr tables", False)
    assert parse_name("V1__init.sql")[:2] == (Version.parse("1"), "init")
    assert parse_name("V2_1__add_x.sql")[0].text == "2.1"
    assert parse_name("v1.0.1_add_usr_tables.down.sql")[2] is True
    for bad in ["1.0_x.sql", "v1.0.sql", "vx_y.sql", "v1.0.1-add.sql", "add_usr.sql"]:
        with pytest.raises(ValueError):
            parse_name(bad)


def test_versions_compare_numerically() -> None:
    assert Version.parse("1.10") > Version.parse("1.9")
    assert Version.parse("1.0.10") > Version.parse("1.0.9")
    assert Version.parse("2") > Version.parse("1.99.99")
    assert Version.parse("1.0") == Version.parse("1.0.0")


def test_folder_is_sorted_numerically_with_checksums(tmp_path: Path) -> None:
    d = folder(tmp_path, {
        "v1.10_b.sql": "select 2;",
        "v1.9_a.sql": "select 1;",
        "v1.9_a.down.sql": "select 0;",
        "README.md": "not a migration",
    })
    ms = load_migrations(d)
    assert [m.version.text for m in ms] == ["1.9", "1.10"]
    assert ms[0].down is not None and ms[1].down is None
    assert len(ms[0].checksum) == 64 and ms[0].checksum != ms[1].checksum


def test_crlf_checkout_is_not_drift(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = load_migrations(folder(tmp_path / "a", {"v1_x.sql": "select 1;\nselect 2;\n"}))
    b = load_migrations(folder(tmp_path / "b", {"v1_x.sql": "select 1;\r\nselect 2;\r\n"}))
    assert a[0].checksum == b[0].checksum


def test_duplicate_versions_rejected(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1.0_a.sql": "select 1;", "v1.0.0_b.sql": "select 1;"})
    with pytest.raises(MigrationFileError, match=r"version 1.0.0 is also used by v1.0_a.sql|version 1.0 is also used"):
        load_migrations(d)


def test_unparseable_name_and_orphan_down_listed_together(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "select 1;", "add_stuff.sql": "", "v2_b.down.sql": "select 1;"})
    with pytest.raises(MigrationFileError) as info:
        load_migrations(d)
    text = str(info.value)
    assert "add_stuff.sql" in text and "v2_b.down.sql: down script without an up" in text
    assert info.value.exit_code == 2


def test_syntax_error_is_reported_with_line(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "create table a (x int);\n\ncreate tabel b (y int);\n"})
    (m,) = load_migrations(d)  # reading does not parse: a run parses what it may apply
    with pytest.raises(MigrationFileError, match=r"v1_a.sql:3: SQL syntax error"):
        m.up.statements  # noqa: B018
    with pytest.raises(MigrationFileError, match=r"v1_a.sql:3: SQL syntax error"):
        load_migrations(d, parse=True)


def test_directives(tmp_path: Path) -> None:
    d = folder(tmp_path, {
        "v1_a.sql": "-- build the index\n-- tenantctl: no-transaction\n-- tenantctl: statement-timeout=10min\n"
                    "create index concurrently i on t (x);\ncreate index concurrently j on t (y);\n",
        "v2_b.sql": "-- tenantctl: allow ban-drop-column, ban-truncate\nalter table t drop column z;\n",
    })
    a, b = load_migrations(d)
    assert not a.transactional and a.up.timeout("statement-timeout") == 600
    assert [s.line for s in a.up.statements] == [4, 5]
    assert all(s.non_transactional for s in a.up.statements)
    assert b.transactional and b.up.allowed_rules == {"ban-drop-column", "ban-truncate"}


def test_unknown_directive_rejected(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "-- tenantctl: no-transacton\nselect 1;\n"})
    with pytest.raises(MigrationFileError, match="unknown directive 'no-transacton'"):
        load_migrations(d)


@pytest.mark.parametrize("sql", [
    "create index concurrently i on t (x);",
    "vacuum t;",
    "begin; select 1; commit;",
    "drop index concurrently i;",
    "reindex (concurrently) index i;",
])
def test_non_transactional_statement_in_transactional_file_rejected(tmp_path: Path, sql: str) -> None:
    d = folder(tmp_path, {"v1_a.sql": "create table t (x int);\n" + sql})
    with pytest.raises(MigrationFileError, match="cannot run inside a transaction"):
        load_migrations(d, parse=True)


def test_dollar_quoted_function_is_one_statement(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "create function f() returns int language plpgsql as $$\n"
                          "begin\n  perform 1; return 1;\nend $$;\nselect f();\n"})
    (m,) = load_migrations(d)
    assert [s.kind for s in m.up.statements] == ["CreateFunctionStmt", "SelectStmt"]


def test_new_migration_path(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1.0.1_a.sql": "select 1;"})
    ms = load_migrations(d)
    assert new_migration_path(d, "Add usr tables!", ms).name == "v1.0.2_add_usr_tables.sql"
    assert new_migration_path(d, "x", ()).name == "v1.0.0_x.sql"
    with pytest.raises(MigrationFileError, match="already exists"):
        new_migration_path(d, "x", ms, "1.0.1")
    with pytest.raises(MigrationFileError, match="older than"):
        new_migration_path(d, "x", ms, "1.0.0")


def test_shipped_migrations_load() -> None:
    ms = load_migrations(ROOT / "migrations")
    assert len(ms) >= 3
    assert all(m.transactional for m in ms)


# -- hardening: non-ASCII text, NUL bytes, empty files, names, symlinks, directives ----------

def test_issue_repro_accent_before_drop_table_keeps_the_whole_name(tmp_path: Path) -> None:
    sql = "-- tenantctl: no-transaction\n-- é accent\nDROP TABLE t_old_bak;"
    (m,) = load_migrations(folder(tmp_path, {"v1_drop_backup.sql": sql}))
    assert [(s.sql, s.line) for s in m.up.statements] == [("DROP TABLE t_old_bak", 3)]


def test_split_after_multibyte_text_slices_by_characters() -> None:
    sql = ("-- 中文 comment 😀\nINSERT INTO t (v) VALUES ('é''ü', $$😀;$$);\n"
           "/* ñ /* nested ü */ */ SELECT 'x' AS \"naïve\";\r\nDROP TABLE t_old_bak;\n")
    stmts = split_statements(Path("v1_a.sql"), sql)
    assert [s.sql for s in stmts] == [
        "INSERT INTO t (v) VALUES ('é''ü', $$😀;$$)",
        "SELECT 'x' AS \"naïve\"",
        "DROP TABLE t_old_bak",
    ]
    assert [s.line for s in stmts] == [2, 3, 4]


def test_statement_keeps_trailing_non_breaking_space_of_an_identifier() -> None:
    # PostgreSQL reads U+00A0 as part of an unquoted identifier, not as white space
    (stmt,) = split_statements(Path("v1_a.sql"), "SELECT 1 AS x\u00a0;")
    assert stmt.sql == "SELECT 1 AS x\u00a0"


@pytest.mark.parametrize("sql, line", [
    ("-- é\nselect 1;\nselec 2;\n", 3),
    ("select 1;\nselec 2;\n", 2),  # error token first on its line
    ("selec 1;\n", 1),  # error at the very first character
    ("-- 😀😀😀\n/* ééé\n */ select 'ü';\nselect (1;\n", 4),
    ("select 1;\n\nselect 'é' ||\n", 3),  # syntax error at end of input
])
def test_syntax_error_line_is_right_after_non_ascii_text(tmp_path: Path, sql: str, line: int) -> None:
    with pytest.raises(MigrationFileError, match=rf"^v1_a.sql:{line}: SQL syntax error"):
        split_statements(Path("v1_a.sql"), sql)


@pytest.mark.parametrize("name", ["v1_a.sql", "v1_a.down.sql"])
def test_nul_byte_in_a_migration_is_refused_with_its_line(tmp_path: Path, name: str) -> None:
    files = {"v1_a.sql": "select 1;", name: "select 1;\nselect 'a\x00b';\n"}
    with pytest.raises(MigrationFileError, match=rf"{name}:2: .*NUL") as info:
        load_migrations(folder(tmp_path, files))
    assert info.value.exit_code == 2


def test_nul_byte_in_a_seed_is_refused(tmp_path: Path) -> None:
    seed = tmp_path / "seed.sql"
    seed.write_bytes(b"-- seed\n\x00insert into t values (1);\n")
    with pytest.raises(MigrationFileError, match=r"seed.sql:2: .*NUL"):
        read_script(seed)


def test_byte_order_mark_is_not_part_of_the_sql(tmp_path: Path) -> None:
    d = folder(tmp_path, {})
    (d / "v1_a.sql").write_bytes("\ufeff-- tenantctl: no-transaction\nvacuum t;\n".encode())
    (m,) = load_migrations(d)
    assert not m.transactional and [s.sql for s in m.up.statements] == ["vacuum t"]


@pytest.mark.parametrize("sql", ["", "\n\n  \n", "-- nothing yet\n", "/* later */\n-- é\n", ";\n;",
                                 "-- tenantctl: no-transaction\n"])
def test_empty_or_comment_only_migration_is_a_no_op(tmp_path: Path, sql: str) -> None:
    (m,) = load_migrations(folder(tmp_path, {"v1_placeholder.sql": sql}))
    assert m.up.statements == () and len(m.checksum) == 64


def test_upper_case_sql_suffix_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1.0.0_x.SQL": "select 1;", "v1.0.1_y.Sql": "select 1;", "v1.0.2_z.sql": "select 1;"})
    with pytest.raises(MigrationFileError) as info:
        load_migrations(d)
    assert "v1.0.0_x.SQL" in str(info.value) and "v1.0.1_y.Sql" in str(info.value)
    assert "v1.0.2_z.sql" not in str(info.value) and info.value.exit_code == 2


def test_other_files_and_folders_are_reported_as_notices(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "select 1;", "README.md": "x", "notes.txt": "y", ".hidden.sql": "z"})
    (d / "archive").mkdir()
    notices: list[str] = []
    (m,) = load_migrations(d, notices=notices)
    assert m.filename == "v1_a.sql"
    assert notices == [
        "migrations/README.md: ignored (not a migration file name)",
        "migrations/archive: ignored (a folder; sub-folders are not read)",
        "migrations/notes.txt: ignored (not a migration file name)",
    ]
    assert load_migrations(d)  # without a list: still fine


def test_folder_named_like_a_migration_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "select 1;"})
    (d / "v2_b.sql").mkdir()
    with pytest.raises(MigrationFileError, match=r"v2_b.sql: not a regular file"):
        load_migrations(d)


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "select 1;"})
    (d / "v2_b.sql").symlink_to(d / "v1_a.sql")
    assert [m.filename for m in load_migrations(d)] == ["v1_a.sql", "v2_b.sql"]


@pytest.mark.parametrize("name", ["v2_b.sql", "v1_a.down.sql"])
def test_symlink_outside_the_folder_is_refused_unless_allowed(tmp_path: Path, name: str) -> None:
    d = folder(tmp_path, {"v1_a.sql": "select 1;", "v2_b.sql": "select 2;"})
    outside = tmp_path / "elsewhere.sql"
    outside.write_text("select 3;")
    (d / name).unlink(missing_ok=True)
    (d / name).symlink_to(outside)
    with pytest.raises(MigrationFileError) as info:
        load_migrations(d)
    text = str(info.value)
    assert f"{name}: symlink to {outside}" in text and "settings.allow_external_symlinks: true" in text
    assert info.value.exit_code == 2
    loaded = load_migrations(d, allow_external_symlinks=True)
    scripts = [s for m in loaded for s in (m.up, m.down) if s is not None]
    assert any(s.path.name == name and s.sql == "select 3;" for s in scripts)


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "select 1;"})
    (d / "v2_b.sql").symlink_to(tmp_path / "missing.sql")
    with pytest.raises(MigrationFileError, match=r"v2_b.sql"):
        load_migrations(d, allow_external_symlinks=True)


def test_seed_resolving_outside_the_project_is_refused_unless_allowed(tmp_path: Path) -> None:
    project, outside = tmp_path / "project", tmp_path / "outside"
    (project / "seed").mkdir(parents=True)
    outside.mkdir()
    (outside / "seed.sql").write_text("select 1;")
    (project / "seed" / "tenant_seed.sql").symlink_to(outside / "seed.sql")
    seed = project / "seed" / "tenant_seed.sql"
    with pytest.raises(MigrationFileError) as info:
        read_script(seed, root=project)
    assert str(outside / "seed.sql") in str(info.value) and "tenant_seed.sql" in str(info.value)
    assert "settings.allow_external_symlinks: true" in str(info.value)
    assert read_script(seed, root=project, allow_external_symlinks=True).sql == "select 1;"
    assert read_script(seed).sql == "select 1;"  # no root: no check
    (project / "seed" / "own.sql").write_text("select 2;")
    assert read_script(project / "seed" / "own.sql", root=project).sql == "select 2;"


@pytest.mark.parametrize("sql", ["analyze t;", "analyze;", "analyze verbose t (x);"])
def test_analyze_may_run_in_a_transaction(tmp_path: Path, sql: str) -> None:
    (m,) = load_migrations(folder(tmp_path, {"v1_a.sql": "create table t (x int);\n" + sql}))
    assert m.transactional and not any(s.non_transactional for s in m.up.statements)


@pytest.mark.parametrize("sql", ["vacuum analyze t;", "vacuum (analyze) t;", "vacuum full;"])
def test_vacuum_still_refused_in_a_transaction(tmp_path: Path, sql: str) -> None:
    with pytest.raises(MigrationFileError, match="cannot run inside a transaction"):
        load_migrations(folder(tmp_path, {"v1_a.sql": sql}), parse=True)


def test_per_tenant_directive(tmp_path: Path) -> None:
    d = folder(tmp_path, {"v1_a.sql": "-- tenantctl: per-tenant\ninsert into t values (1);",
                          "v2_b.sql": "select 1;"})
    a, b = load_migrations(d)
    assert "per-tenant" in KNOWN_DIRECTIVES
    assert a.up.per_tenant_directive and not b.up.per_tenant_directive
    assert a.transactional


def test_per_tenant_directive_takes_no_value(tmp_path: Path) -> None:
    with pytest.raises(MigrationFileError, match=r"v1_a.sql:1: .*per-tenant"):
        load_migrations(folder(tmp_path, {"v1_a.sql": "-- tenantctl: per-tenant=false\nselect 1;"}))


@pytest.mark.parametrize("text, rest", [
    ("  select 1", "select 1"),
    ("-- a\nselect 1", "select 1"),
    ("-- a\rselect 1", "select 1"),  # PostgreSQL ends a -- comment at \r too
    ("/* a /* nested */ still comment */\r\n\tselect 1", "select 1"),
    ("/* é */ -- ü\n/**/select 1", "select 1"),
    ("\u00a0select", "\u00a0select"),  # not white space to PostgreSQL
    ("-- only a comment", ""),
])
def test_skip_space_and_comments(text: str, rest: str) -> None:
    assert text[skip_space_and_comments(text, 0):] == rest
