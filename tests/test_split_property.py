"""Statement splitting, property-based: non-ASCII text, comments, quoting, line endings.

Generated scripts mix accents, CJK and emoji with ``--`` and (nested) ``/* */``
comments, ``$$``/``$tag$`` dollar quotes, ``E''`` strings with escapes, standard
strings with ``''``, quoted and non-ASCII identifiers and LF/CRLF line endings.
Properties:

(a) each split statement is exactly the generated statement text, and re-parses
    (pglast) to one statement that deparses like the whole file's statement;
(b) its line is the line where the statement starts;
(c) run one by one outside a transaction on a real PostgreSQL, the split
    statements leave the same rows as the whole file run in one transaction.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pglast
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast.stream import RawStream

from tenantctl.errors import MigrationFileError
from tenantctl.migrations import load_migrations, read_script, split_statements

PATH = Path("v1_generated.sql")
SPACE = " \t\n\r\f\v"

# -- building blocks --------------------------------------------------------------------------

NL = st.sampled_from(["\n", "\r\n"])
# Text fragments for literals and comments: multi-byte UTF-8 (2, 3 and 4 bytes), SQL
# punctuation that must not split or end anything inside a literal or comment.
FRAGMENTS = ["a", "Z", "0", " ", "é", "ü", "ñ", "ß", "中", "文", "日本", "😀", "🎉", "👩‍💻", ";", "-", "--",
             "'", "\"", "$", "$$", "\\", "/", "*", "\t", "\n", "\r\n", "\u00a0", "\u2028", "E'", "U&"]


def text_of(fragments: list[str], *, exclude: str = "") -> st.SearchStrategy[str]:
    allowed = [f for f in fragments if not any(c in f for c in exclude)]
    return st.lists(st.sampled_from(allowed), max_size=8).map("".join)


def standard_string() -> st.SearchStrategy[str]:
    return text_of(FRAGMENTS).map(lambda t: "'" + t.replace("'", "''") + "'")


E_ESCAPES = ["\\n", "\\t", "\\\\", "\\'", "''", "\\u00e9", "\\U0001F600", "\\x41", "\\101", "\\b"]


def e_string() -> st.SearchStrategy[str]:
    plain = text_of(FRAGMENTS, exclude="\\'")
    return st.lists(st.one_of(plain, st.sampled_from(E_ESCAPES)), max_size=5).map(
        lambda parts: "E'" + "".join(parts) + "'")


def dollar_string(tags: list[str]) -> st.SearchStrategy[str]:
    def build(pair: tuple[str, str]) -> str:
        tag, body = pair
        delim = f"${tag}$"
        if (body + delim).find(delim) != len(body):  # the body must not close the quote early
            body = body.replace("$", "")
        return delim + body + delim

    return st.tuples(st.sampled_from(tags), text_of(FRAGMENTS)).map(build)


def literal(tags: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(standard_string(), e_string(), dollar_string(tags))


def line_comment() -> st.SearchStrategy[str]:
    return st.tuples(text_of(FRAGMENTS, exclude="\r\n"), NL).map(lambda p: "--" + p[0] + p[1])


def block_comment() -> st.SearchStrategy[str]:
    plain = text_of(FRAGMENTS, exclude="/*")
    return st.recursive(
        plain.map(lambda t: "/*" + t + "*/"),
        lambda inner: st.lists(st.one_of(plain, inner), max_size=3).map(lambda ps: "/*" + " ".join(ps) + " */"),
        max_leaves=4,
    )


def filler(*, required: bool = False) -> st.SearchStrategy[str]:
    """White space and comments between tokens (at least one space when required)."""
    piece = st.one_of(st.sampled_from([" ", "\t", "  "]), NL, line_comment(), block_comment())
    return st.lists(piece, min_size=1 if required else 0, max_size=3).map(
        lambda ps: ("".join(ps) or " ") if required else "".join(ps))


QUOTED_IDENTIFIERS = ['"naïve"', '"a ""b"" c"', '"日本語"', '"😀 x"', '"sel;ect"', '"--x"', '"/*y*/"']
UNQUOTED_IDENTIFIERS = ["café", "naïve_1", "日本", "x_ü", "ab\u00a0", "plain"]


def identifier() -> st.SearchStrategy[str]:
    return st.sampled_from(QUOTED_IDENTIFIERS + UNQUOTED_IDENTIFIERS)


def expression(tags: list[str]) -> st.SearchStrategy[str]:
    """One to three literals joined by ``||``, with comments around the operator."""
    part = literal(tags)
    joined = st.tuples(FILLER, FILLER, part).map(lambda p: p[0] + "||" + p[1] + p[2])
    return st.tuples(part, st.lists(joined, max_size=2)).map(lambda p: p[0] + "".join(p[1]))


# Built once: strategies are validated when first drawn, which is slow to repeat.
FILLER = filler()
GAP = filler(required=True)
EXPRESSION = expression(["", "t", "é", "tag_1"])
IDENTIFIER = identifier()
DO_TAG = st.sampled_from(["do", "body_é", "x"])  # the inner literals never use these tags


@st.composite
def statement(draw: st.DrawFn) -> str:
    """One statement, from its first token to its last (no ``;``); all of them succeed."""
    kind = draw(st.sampled_from(["insert", "insert_select", "select", "do"]))

    def gap() -> str:
        return draw(GAP)

    expr = draw(EXPRESSION)
    if kind == "insert":
        return f"INSERT{gap()}INTO t (v){gap()}VALUES ({expr})"
    if kind == "insert_select":
        return f"INSERT INTO t (v){gap()}SELECT {expr}{gap()}AS{gap()}{draw(IDENTIFIER)}"
    if kind == "select":
        return f"SELECT{gap()}{expr} AS {draw(IDENTIFIER)}"
    tag = draw(DO_TAG)
    body = f"{draw(FILLER)}BEGIN{gap()}INSERT INTO t (v) VALUES ({expr});{gap()}END{draw(FILLER)}"
    return f"DO{gap()}${tag}${body}${tag}$"


STATEMENTS = st.lists(statement(), min_size=1, max_size=5)
TRAILER = st.sampled_from(["", " ", "\t", "  /* tail é */", " -- tail 😀\n", "\r\n"])


@dataclass(frozen=True)
class Script:
    sql: str
    statements: tuple[str, ...]  # what split_statements must return, in order
    lines: tuple[int, ...]


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    sql = draw(FILLER)
    expected, lines = [], []
    for stmt in draw(STATEMENTS):
        trailer = draw(TRAILER)
        lines.append(sql.count("\n") + 1)
        expected.append((stmt + trailer).rstrip(SPACE))
        sql += stmt + trailer + ";" + draw(FILLER)
    return Script(sql, tuple(expected), tuple(lines))


def deparse(node: object) -> str:
    return RawStream()(node)


# -- (a) and (b): pure ------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, database=None)
@given(scripts())
def test_split_statements_are_exact_and_reparse_alike(script: Script) -> None:
    split = split_statements(PATH, script.sql)
    assert tuple(s.sql for s in split) == script.statements
    assert tuple(s.line for s in split) == script.lines
    whole = pglast.parse_sql(script.sql)
    assert len(whole) == len(split)
    for stmt, raw in zip(split, whole, strict=True):
        (alone,) = pglast.parse_sql(stmt.sql)
        assert deparse(alone.stmt) == deparse(raw.stmt)
        assert stmt.kind == type(raw.stmt).__name__


@settings(max_examples=80, deadline=None, database=None)
@given(scripts(), FILLER, st.sampled_from(["selec 1", "select (1", "insert t values (1)"]))
def test_syntax_error_line_after_generated_text(script: Script, gap: str, broken: str) -> None:
    sql = script.sql + gap + "\n" + broken + ";\n"
    line = (script.sql + gap + "\n").count("\n") + 1
    with pytest.raises(MigrationFileError, match=rf"^{PATH.name}:(\d+): SQL syntax error") as info:
        split_statements(PATH, sql)
    assert info.value.message.startswith(f"{PATH.name}:{line}:"), (info.value.message, line)


# -- the issue's reproduction -------------------------------------------------------------------

def test_issue_reproduction_through_the_loader(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    path = folder / "v1.0.0_drop_old_backup.sql"
    path.write_text("-- tenantctl: no-transaction\n-- é accent\nDROP TABLE t_old_bak;", encoding="utf-8")
    (migration,) = load_migrations(folder)
    assert not migration.transactional
    assert [(s.sql, s.line) for s in migration.up.statements] == [("DROP TABLE t_old_bak", 3)]
    assert read_script(path).statements == migration.up.statements


# -- (c): against a real PostgreSQL -------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch_db(pg_dsn: str) -> Iterator[tuple[str, str]]:
    """(server DSN, name of a scratch UTF-8 database), dropped afterwards."""
    name = "tsplit_" + secrets.token_hex(4)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"))
    try:
        yield pg_dsn, name
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def _same_effect(db: tuple[str, str], script: Script) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    split = split_statements(PATH, script.sql)
    suffix = secrets.token_hex(4)
    conn = await asyncpg.connect(db[0], database=db[1])
    try:
        rows = []
        for mode in ("whole", "split"):
            schema = f"{mode}_{suffix}"
            await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema};"
                               "CREATE TABLE t (id serial PRIMARY KEY, v text NOT NULL)")
            if mode == "whole":
                async with conn.transaction():
                    await conn.execute(script.sql)
            else:
                for stmt in split:  # one by one, outside a transaction (a no-transaction migration)
                    await conn.execute(stmt.sql)
            rows.append([(r["id"], r["v"]) for r in await conn.fetch("SELECT id, v FROM t ORDER BY id")])
            await conn.execute(f"RESET search_path; DROP SCHEMA {schema} CASCADE")
        return rows[0], rows[1]
    finally:
        await conn.close()


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(script=scripts())
def test_split_statements_have_the_effect_of_the_whole_file(scratch_db: tuple[str, str], script: Script) -> None:
    whole, split = asyncio.run(_same_effect(scratch_db, script))
    assert split == whole
    inserts = sum(1 for s in script.statements if s.startswith(("INSERT", "DO")))
    assert len(whole) == inserts
