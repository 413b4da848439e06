"""Migration folder parsing: pure, no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from tenantctl.errors import MigrationFileError
from tenantctl.migrations import Version, load_migrations, new_migration_path, parse_name

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
    with pytest.raises(MigrationFileError, match="version 1.0.0 is also used by v1.0_a.sql|version 1.0 is also used"):
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
    with pytest.raises(MigrationFileError, match=r"v1_a.sql:3: SQL syntax error"):
        load_migrations(d)


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
        load_migrations(d)


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
