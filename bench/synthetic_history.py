#!/usr/bin/env python3
"""A large, messy, deterministic migration history: what a real 700-file folder looks like.

    python bench/synthetic_history.py OUT_DIR [--migrations 350] [--seed 14]

writes ``OUT_DIR/v1.<a>.<b>_<what>.sql`` and its ``.down.sql`` for every
migration. The bench's start-up step and the tests (tests/test_startup_cache.py,
tests/test_synthetic_history.py) use it; ``generate`` returns what was written,
with the lint rules each file is expected to trip.

What the history holds, in XOS style (``cvs_<x>_mast`` tables keyed by
``(clnt_id, site_id, …)``, ``rcrd_stat``, ``mod_dttm``, ``<table>_adt`` audit
tables filled by a trigger):

- tables created with their keys and indexes in the same transaction;
- columns added (nullable, or NOT NULL with a default), renamed, retyped
  (``int4`` → ``int8``, ``timestamp`` → ``timestamptz``, ``varchar`` → ``text``),
  dropped; scratch tables created and dropped;
- ``CREATE INDEX CONCURRENTLY`` in files headed ``-- tenantctl: no-transaction``;
- views with ``security_invoker``, plpgsql functions in dollar quotes
  (``$fn$``, with ``$`` and quotes in their strings), audit triggers;
- rows inserted with accents, CJK and emoji; non-ASCII identifiers (unquoted
  ``libellé``/``備考``, quoted ``"状態🚦"``); comments in several scripts;
- CRLF line endings in about one file in seven, and a few byte order marks.

Every down script undoes its migration, so the history applies to a fresh
database and rolls back to any midpoint (the tests do both on PostgreSQL).
Only the standard library is used.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MIGRATIONS = 350
DEFAULT_SEED = 14

_STEMS = ["usr", "site", "ordr", "itm", "invn", "prsn", "dept", "lctn", "vndr", "prdct", "cntct",
          "shft", "rsrc", "schd", "asst", "bill", "clm", "pymt", "rfnd", "alrt", "task", "note",
          "doc", "img", "lab", "rx", "enc", "apt", "bed", "ward"]
_WORDS = ["café", "naïve", "Zürich", "São Paulo", "Kraków", "Ærøskøbing", "東京", "北京市",
          "서울", "Москва", "Αθήνα", "مرحبا", "שלום", "नमस्ते", "🎉", "🚑", "👩‍⚕️", "✓",
          "O'Brien", "l'hôpital", "$1", "$$", "-- not a comment", "/* nor this */", "a;b"]
_COMMENTS = ["Données du client — à vérifier", "顧客データの移行", "환자 기록 🚑", "Ünïcödé ✓ tëst",
             "état des lits 🛏️", "備考: 旧システムから", "Straße / Größe", "naïve façade 😀"]
_EXTRA_NAMES = ["libellé", "備考", "quantité", "größe", "状態", "описание", "nota_ñ", "código"]


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Column:
    name: str  # as written in SQL (may be quoted)
    type: str
    default: str | None = None
    not_null: bool = False

    def ddl(self) -> str:
        out = f"{self.name} {self.type}"
        if self.not_null:
            out += " NOT NULL"
        if self.default is not None:
            out += f" DEFAULT {self.default}"
        return out


@dataclass
class Table:
    name: str
    key: str  # the third key column, e.g. usr_id
    extras: list[Column] = field(default_factory=list)  # columns later migrations may change
    dependents: int = 0  # views, indexes, triggers, rows: never dropped whole
    scratch: bool = False


@dataclass(frozen=True)
class GeneratedFile:
    name: str
    sql: str
    expected_rules: frozenset[str] = frozenset()  # lint rules this file should trip


@dataclass
class History:
    files: list[GeneratedFile]

    @property
    def ups(self) -> list[GeneratedFile]:
        return [f for f in self.files if not f.name.endswith(".down.sql")]

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in self.files:
            path = folder / f.name
            path.write_bytes(f.sql.encode("utf-8"))
            paths.append(path)
        return paths


class _Writer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tables: list[Table] = []
        self.counter = 0  # object names stay unique
        self.views: list[tuple[str, Table]] = []
        self.functions: list[str] = []

    def uid(self) -> int:
        self.counter += 1
        return self.counter

    def comment(self) -> str:
        return f"-- {self.rng.choice(_COMMENTS)}\n"

    # each op returns (slug, up sql, down sql, expected rules, no-transaction)
    def create_table(self) -> tuple[str, str, str, set[str], bool]:
        stem = f"{self.rng.choice(_STEMS)}{self.uid()}"
        table = Table(f"cvs_{stem}_mast", f"{stem}_id")
        n_extra = self.rng.randint(1, 4)
        for i in range(n_extra):
            typ = self.rng.choice(["text", "int4", "timestamp", "varchar(80)", "numeric(12,2)"])
            name = self.rng.choice(_EXTRA_NAMES) + f"_{i}" if i == 0 and self.rng.random() < 0.3 \
                else f"{stem}_x{i}"
            table.extras.append(Column(name, typ))
        cols = [
            "clnt_id    int2        NOT NULL",
            "site_id    int2        NOT NULL",
            f"{table.key} int4 GENERATED BY DEFAULT AS IDENTITY",
            f"{stem}_nm text NOT NULL DEFAULT {_lit(self.rng.choice(_WORDS))}",
            *(c.ddl() for c in table.extras),
            "rcrd_stat  int2        NOT NULL DEFAULT 1",
            "mod_dttm   timestamptz NOT NULL DEFAULT now()",
            f"CONSTRAINT {table.name}_pk PRIMARY KEY (clnt_id, site_id, {table.key})",
            f"CONSTRAINT {table.name}_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))",
        ]
        body = ",\n    ".join(cols)
        up = (f"{self.comment()}CREATE TABLE {table.name} (\n    {body}\n);\n"
              f"COMMENT ON TABLE {table.name} IS {_lit(self.rng.choice(_COMMENTS))};\n"
              f"CREATE INDEX {table.name}_mod_ix ON {table.name} (clnt_id, site_id, mod_dttm);\n")
        if self.rng.random() < 0.5:
            rows = ", ".join(f"(1, {s}, {_lit(self.rng.choice(_WORDS))})" for s in (1, 2))
            up += f"INSERT INTO {table.name} (clnt_id, site_id, {stem}_nm) VALUES {rows};\n"
            table.dependents += 1
        table.dependents += 1  # its own index
        self.tables.append(table)
        return f"create_{stem}_mast", up, f"DROP TABLE {table.name};\n", set(), False

    def create_scratch(self) -> tuple[str, str, str, set[str], bool]:
        n = self.uid()
        table = Table(f"cvs_tmp{n}_bak", f"tmp{n}_id", scratch=True)
        up = (f"{self.comment()}CREATE TABLE {table.name} (clnt_id int2 NOT NULL, site_id int2 NOT NULL,\n"
              f"    {table.key} int4 NOT NULL, note text,\n"
              f"    CONSTRAINT {table.name}_pk PRIMARY KEY (clnt_id, site_id, {table.key}));\n")
        self.tables.append(table)
        return f"create_tmp{n}_bak", up, f"DROP TABLE {table.name};\n", set(), False

    def drop_scratch(self, table: Table) -> tuple[str, str, str, set[str], bool]:
        self.tables.remove(table)
        up = f"-- the scratch table is no longer needed 🗑️\nDROP TABLE {table.name};\n"
        down = (f"CREATE TABLE {table.name} (clnt_id int2 NOT NULL, site_id int2 NOT NULL,\n"
                f"    {table.key} int4 NOT NULL, note text,\n"
                f"    CONSTRAINT {table.name}_pk PRIMARY KEY (clnt_id, site_id, {table.key}));\n")
        return f"drop_{table.name}", up, down, {"ban-drop-table"}, False

    def add_column(self, table: Table) -> tuple[str, str, str, set[str], bool]:
        n = self.uid()
        if self.rng.random() < 0.3:
            col = Column(f"\"状態🚦{n}\"" if self.rng.random() < 0.3 else f"flg{n}", "int2",
                         default="0", not_null=True)
        else:
            col = Column(f"c{n}_{self.rng.choice(['dsc', 'cd', 'amt', 'dt'])}",
                         self.rng.choice(["text", "int4", "timestamp", "varchar(40)"]))
        table.extras.append(col)
        up = f"{self.comment()}ALTER TABLE {table.name} ADD COLUMN {col.ddl()};\n"
        if col.type == "text" and self.rng.random() < 0.5:
            up += f"COMMENT ON COLUMN {table.name}.{col.name} IS {_lit(self.rng.choice(_WORDS))};\n"
        down = f"ALTER TABLE {table.name} DROP COLUMN {col.name};\n"
        return f"add_{table.name}_col{n}", up, down, set(), False

    def rename_column(self, table: Table, col: Column) -> tuple[str, str, str, set[str], bool]:
        old = col.name
        quoted = old.startswith('"')
        base = re.sub(r"^r\d+_", "", old.strip('"'))
        col.name = f'"r{self.uid()}_{base}"' if quoted else f"r{self.uid()}_{base}"
        up = f"ALTER TABLE {table.name} RENAME COLUMN {old} TO {col.name};\n"
        down = f"ALTER TABLE {table.name} RENAME COLUMN {col.name} TO {old};\n"
        return f"rename_{table.name}_col", up, down, {"ban-rename"}, False

    def retype_column(self, table: Table, col: Column) -> tuple[str, str, str, set[str], bool] | None:
        change = {"int4": ("int8", "ban-alter-column-type"),
                  "timestamp": ("timestamptz", "alter-column-type-timestamptz"),
                  "varchar(40)": ("text", None), "varchar(80)": ("text", None)}.get(col.type)
        if change is None:
            return None
        new, rule = change
        old = col.type
        col.type = new
        up = f"{self.comment()}ALTER TABLE {table.name} ALTER COLUMN {col.name} TYPE {new};\n"
        down = f"ALTER TABLE {table.name} ALTER COLUMN {col.name} TYPE {old};\n"
        return f"retype_{table.name}_col", up, down, {rule} if rule else set(), False

    def drop_column(self, table: Table, col: Column) -> tuple[str, str, str, set[str], bool]:
        table.extras.remove(col)
        up = f"ALTER TABLE {table.name} DROP COLUMN {col.name};\n"
        # NOT NULL columns come back with their default (the rows get it)
        down = f"ALTER TABLE {table.name} ADD COLUMN {col.ddl()};\n"
        return f"drop_{table.name}_col", up, down, {"ban-drop-column"}, False

    def concurrent_index(self, table: Table) -> tuple[str, str, str, set[str], bool]:
        n = self.uid()
        name = f"{table.name}_stat{n}_ix"
        up = ("-- tenantctl: no-transaction\n"
              f"-- {self.rng.choice(_COMMENTS)}: index built without blocking writes\n"
              f"CREATE INDEX CONCURRENTLY {name} ON {table.name} (clnt_id, site_id, rcrd_stat)\n"
              f"    WHERE rcrd_stat = 1;\n")
        table.dependents += 1
        return f"index_{table.name}_{n}", up, f"DROP INDEX {name};\n", set(), True

    def create_view(self, table: Table) -> tuple[str, str, str, set[str], bool]:
        n = self.uid()
        name = f"cvs_v{n}_actv_v"
        alias = self.rng.choice(['"最終更新"', '"dernière_modif"', "upd_dttm", '"🕒"'])
        up = (f"{self.comment()}CREATE VIEW {name} WITH (security_invoker = true) AS\n"
              f"SELECT clnt_id, site_id, {table.key}, mod_dttm AS {alias},\n"
              f"       {_lit(self.rng.choice(_WORDS))}::text AS lbl\n"
              f"  FROM {table.name} WHERE rcrd_stat = 1;\n")
        table.dependents += 1
        self.views.append((name, table))
        return f"create_view_{n}", up, f"DROP VIEW {name};\n", set(), False

    def create_function(self, table: Table) -> tuple[str, str, str, set[str], bool]:
        n = self.uid()
        name = f"cvs_cnt{n}_fn"
        up = (f"CREATE FUNCTION {name}(p_clnt_id int2) RETURNS int8\n"
              f"LANGUAGE plpgsql STABLE AS $fn$\n"
              f"DECLARE\n    v_n int8;  -- {self.rng.choice(_COMMENTS)}\nBEGIN\n"
              f"    -- a $ sign, a 'quote' and a ; inside the body: {self.rng.choice(_WORDS)}\n"
              f"    SELECT count(*) INTO v_n FROM {table.name} WHERE clnt_id = p_clnt_id;\n"
              f"    RAISE DEBUG 'counted % rows for %; cost $%', v_n, {_lit(self.rng.choice(_WORDS))}, 0;\n"
              f"    RETURN v_n;\nEND;\n$fn$;\n")
        self.functions.append(name)
        return f"create_fn_{n}", up, f"DROP FUNCTION {name}(int2);\n", set(), False

    def audit(self, table: Table) -> tuple[str, str, str, set[str], bool]:
        adt = f"{table.name}_adt"
        up = (f"-- audit trail of {table.name} — « journal » 監査\n"
              f"CREATE TABLE {adt} (\n"
              f"    clnt_id int2 NOT NULL, site_id int2 NOT NULL,\n"
              f"    adt_id int8 GENERATED ALWAYS AS IDENTITY,\n"
              f"    adt_op char(1) NOT NULL, old_row jsonb, new_row jsonb,\n"
              f"    rcrd_stat int2 NOT NULL DEFAULT 1, mod_dttm timestamptz NOT NULL DEFAULT now(),\n"
              f"    CONSTRAINT {adt}_pk PRIMARY KEY (clnt_id, site_id, adt_id));\n"
              f"CREATE FUNCTION {adt}_fn() RETURNS trigger LANGUAGE plpgsql AS $$\n"
              f"BEGIN\n"
              f"    INSERT INTO {adt} (clnt_id, site_id, adt_op, old_row, new_row)\n"
              f"    VALUES (coalesce(NEW.clnt_id, OLD.clnt_id), coalesce(NEW.site_id, OLD.site_id),\n"
              f"            left(TG_OP, 1),\n"
              f"            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,\n"
              f"            CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);\n"
              f"    RETURN NULL;  -- AFTER trigger: ignored ✓\n"
              f"END;\n$$;\n"
              f"CREATE TRIGGER {adt}_trg AFTER INSERT OR UPDATE OR DELETE ON {table.name}\n"
              f"    FOR EACH ROW EXECUTE FUNCTION {adt}_fn();\n")
        down = (f"DROP TRIGGER {adt}_trg ON {table.name};\nDROP FUNCTION {adt}_fn();\n"
                f"DROP TABLE {adt};\n")
        table.dependents += 1
        return f"audit_{table.name}", up, down, set(), False

    def data_fix(self, table: Table) -> tuple[str, str, str, set[str], bool]:
        word = self.rng.choice(_WORDS)
        up = (f"{self.comment()}UPDATE {table.name} SET mod_dttm = now()\n"
              f" WHERE rcrd_stat = 1 AND {table.key} IS NOT NULL AND {_lit(word)} <> '';\n")
        down = "-- nothing to undo: the data fix is idempotent\nSELECT 1;\n"
        return f"fix_{table.name}", up, down, set(), False

    def next_op(self, index: int) -> tuple[str, str, str, set[str], bool]:
        rng = self.rng
        if index < 5 or len(self.tables) < 3:
            return self.create_table()
        scratch = [t for t in self.tables if t.scratch]
        real = [t for t in self.tables if not t.scratch]
        pick = rng.random()
        table = rng.choice(real)
        if pick < 0.16:
            return self.create_table()
        if pick < 0.20:
            return self.create_scratch()
        if pick < 0.24 and scratch:
            return self.drop_scratch(rng.choice(scratch))
        if pick < 0.40:
            return self.add_column(table)
        changeable = [c for c in table.extras if not c.not_null or c.default is not None]
        if pick < 0.47 and changeable:
            return self.rename_column(table, rng.choice(changeable))
        if pick < 0.56 and changeable:
            retyped = self.retype_column(table, rng.choice(changeable))
            if retyped is not None:
                return retyped
        if pick < 0.61 and changeable:
            return self.drop_column(table, rng.choice(changeable))
        if pick < 0.70:
            return self.concurrent_index(table)
        if pick < 0.78:
            return self.create_view(table)
        if pick < 0.86:
            return self.create_function(table)
        if pick < 0.90 and f"{table.name}_adt_fn" not in self.functions:
            self.functions.append(f"{table.name}_adt_fn")
            return self.audit(table)
        return self.data_fix(table)


def version_name(index: int) -> str:
    """The version of the index-th migration: 1.0.0 … 1.0.49, 1.1.0 …"""
    return f"1.{index // 50}.{index % 50}"


def generate(migrations: int = DEFAULT_MIGRATIONS, seed: int = DEFAULT_SEED) -> History:
    """``migrations`` up scripts and as many down scripts, the same for the same seed."""
    writer = _Writer(seed)
    files: list[GeneratedFile] = []
    for index in range(migrations):
        slug, up, down, rules, no_tx = writer.next_op(index)
        stem = f"v{version_name(index)}_{slug}"
        crlf = writer.rng.random() < 0.15
        bom = writer.rng.random() < 0.02 and not no_tx
        header = "" if no_tx else f"-- {stem}: {writer.rng.choice(_COMMENTS)}\n"
        up_text = ("\ufeff" if bom else "") + header + up
        down_text = f"-- undo {stem}\n{down}"
        if crlf:
            up_text, down_text = up_text.replace("\n", "\r\n"), down_text.replace("\n", "\r\n")
        files.append(GeneratedFile(f"{stem}.sql", up_text, frozenset(rules)))
        files.append(GeneratedFile(f"{stem}.down.sql", down_text))
    return History(files)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--migrations", type=int, default=DEFAULT_MIGRATIONS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    paths = generate(args.migrations, args.seed).write(args.out)
    print(f"{len(paths)} files in {args.out}")


if __name__ == "__main__":
    main()
