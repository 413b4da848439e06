"""redact: passwords in PostgreSQL URLs and libpq key=value strings never leak."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tenantctl.redact import redact, redact_argv


@pytest.mark.parametrize("text,expected", [
    ("postgresql://bob:s3cr3t@db.example.com:5432/app",
     "postgresql://bob:***@db.example.com:5432/app"),
    ("postgres://bob:s3cr3t@db/app", "postgres://bob:***@db/app"),
    ("POSTGRESQL://bob:s3cr3t@db/app", "POSTGRESQL://bob:***@db/app"),
    ("postgresql://bob:s3%40cr%2F3t@db/app", "postgresql://bob:***@db/app"),
    ("postgresql://bob:s3cr3t@h1:5432,h2:5433/app?sslmode=require",
     "postgresql://bob:***@h1:5432,h2:5433/app?sslmode=require"),
    ("postgresql://bob:@db/app", "postgresql://bob:***@db/app"),
    ("postgresql://bob@db/app", "postgresql://bob@db/app"),
    ("postgresql://db:5432/app", "postgresql://db:5432/app"),
    ("postgresql:///app?host=/tmp", "postgresql:///app?host=/tmp"),
    ("postgresql://db/app?user=bob&password=s3cr3t&sslmode=require",
     "postgresql://db/app?user=bob&password=***&sslmode=require"),
    ("postgresql://db/app?password=s3cr3t", "postgresql://db/app?password=***"),
    ("host=db port=5432 password=s3cr3t dbname=app", "host=db port=5432 password=*** dbname=app"),
    ("host=db password = s3cr3t dbname=app", "host=db password = *** dbname=app"),
    ("host=db password='se cr\\'et' dbname=app", "host=db password=*** dbname=app"),
    ("host=db sslpassword=k3y dbname=app", "host=db sslpassword=*** dbname=app"),
    ("PGPASSWORD=s3cr3t psql", "PGPASSWORD=*** psql"),
    ("no secrets here: password authentication failed for user bob",
     "no secrets here: password authentication failed for user bob"),
    ("connect to postgresql://bob:s3cr3t@db/app failed; retry postgres://amy:pw2@db2/x",
     "connect to postgresql://bob:***@db/app failed; retry postgres://amy:***@db2/x"),
    ("dsn='postgresql://bob:s3cr3t@db/app'", "dsn='postgresql://bob:***@db/app'"),
    ('{"dsn": "postgresql://bob:s3cr3t@db/app"}', '{"dsn": "postgresql://bob:***@db/app"}'),
    ("mail bob@example.com about postgresql://db/app", "mail bob@example.com about postgresql://db/app"),
    ("", ""),
])
def test_redact_examples(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_is_idempotent() -> None:
    text = "postgresql://bob:s3cr3t@db/app?password=x host=db password='a b'"
    assert redact(redact(text)) == redact(text)


def test_redact_argv() -> None:
    argv = ["--dsn", "postgresql://bob:s3cr3t@db/app", "--dsn=postgres://amy:pw2@db2/x",
            "migrate", "--all", "--probe-dsn", "host=db password=zz9 user=app",
            "--note", "see postgresql://c:p4ss@h/d", "7"]
    out = redact_argv(argv)
    assert out == ["--dsn", "postgresql://bob:***@db/app", "--dsn=postgres://amy:***@db2/x",
                   "migrate", "--all", "--probe-dsn", "host=db password=*** user=app",
                   "--note", "see postgresql://c:***@h/d", "7"]
    assert argv[1].endswith("s3cr3t@db/app"), "the input list is not changed"


def test_redact_argv_dsn_value_with_raw_special_characters() -> None:
    # A password typed without percent-encoding ('@', '/', '#') is not a valid URL,
    # but the value of --dsn is known to be a DSN: everything up to the last '@'
    # before the database is credentials.
    out = redact_argv(["--dsn", "postgresql://bob:p@ss/w#rd@db:5432/app"])
    assert out == ["--dsn", "postgresql://bob:***@db:5432/app"]
    out = redact_argv(["--dsn=mysqlish://bob:hunter2@db/app"])
    assert "hunter2" not in out[0] and "db/app" in out[0]


# --------------------------------------------------------------- properties

# Passwords: any printable text; where it could collide with the surrounding
# text (host, database, user, key names) a leak could not be told from a
# coincidence, so the "never contains" property is checked for passwords of
# at least 6 characters drawn from an alphabet the rest of the text avoids.
PASSWORD_ALPHABET = "QWXZJK!#$%^*()[]{}<>|~`;,?&+=\"' \\@/:é€"
passwords = st.text(alphabet=PASSWORD_ALPHABET, min_size=6, max_size=30).filter(
    lambda p: p.strip(" ") == p  # libpq unquoted values cannot hold spaces; quoted ones are tested below
)
hosts = st.from_regex(r"[a-v][a-v0-9]{2,10}(\.[a-v]{2,5})?", fullmatch=True)
databases = st.from_regex(r"[a-v_][a-v0-9_]{2,20}", fullmatch=True)
users = st.from_regex(r"[a-v][a-v0-9_]{0,10}", fullmatch=True)
ports = st.integers(1, 65535)
filler = st.text(alphabet=string.ascii_lowercase + " .-\n", max_size=30)  # disjoint from passwords


def _assert_hidden(out: str, password: str, *keep: str) -> None:
    assert password not in out
    encoded = quote(password, safe="")
    assert encoded not in out
    for k in keep:
        assert k in out


@settings(max_examples=100, deadline=None)
@given(passwords, hosts, databases, users, ports, filler, filler)
def test_url_userinfo_password_never_survives(password, host, db, user, port, before, after) -> None:
    dsn = f"postgresql://{user}:{quote(password, safe='')}@{host}:{port}/{db}"
    out = redact(f"{before} {dsn} {after}")
    _assert_hidden(out, password, host, db, user, f"{before} ", f" {after}")


@settings(max_examples=100, deadline=None)
@given(passwords, st.lists(hosts, min_size=2, max_size=3), databases, users, ports)
def test_multi_host_url_password_never_survives(password, host_list, db, user, port) -> None:
    hostspec = ",".join(f"{h}:{port}" for h in host_list)
    out = redact(f"postgres://{user}:{quote(password, safe='')}@{hostspec}/{db}?sslmode=require")
    _assert_hidden(out, password, hostspec, db, "sslmode=require")


@settings(max_examples=100, deadline=None)
@given(passwords, hosts, databases, users)
def test_url_query_password_never_survives(password, host, db, user) -> None:
    out = redact(f"postgresql://{host}/{db}?user={user}&password={quote(password, safe='')}&sslmode=prefer")
    _assert_hidden(out, password, host, db, "sslmode=prefer", f"user={user}")


def _libpq_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=PASSWORD_ALPHABET, min_size=6, max_size=30), hosts, databases, users, ports, filler)
def test_keyword_value_password_never_survives(password, host, db, user, port, before) -> None:
    conninfo = f"host={host} port={port} user={user} password={_libpq_quote(password)} dbname={db}"
    out = redact(f"{before} {conninfo}")
    assert password not in out
    assert _libpq_quote(password) not in out
    for k in (f"host={host}", f"dbname={db}", f"user={user}", f"port={port}"):
        assert k in out


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=string.ascii_uppercase + "!#$%^*()[]{}<>|~;,?+.-", min_size=6, max_size=30),
       hosts, databases)
def test_unquoted_keyword_value_password_never_survives(password, host, db) -> None:
    out = redact(f"host={host} password={password} dbname={db}")
    assert password not in out and f"host={host}" in out and f"dbname={db}" in out


@settings(max_examples=100, deadline=None)
@given(passwords, hosts, databases, users, st.booleans())
def test_redact_argv_dsn_option(password, host, db, user, joined) -> None:
    dsn = f"postgresql://{user}:{quote(password, safe='')}@{host}/{db}"
    argv = ["--config", "x.yaml", *([f"--dsn={dsn}"] if joined else ["--dsn", dsn]), "status"]
    out = redact_argv(argv)
    text = " ".join(out)
    _assert_hidden(text, password, host, db, "status", "x.yaml")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_redact_never_fails_and_keeps_text_without_secrets(text) -> None:
    out = redact(text)
    assert isinstance(out, str)
    lowered = text.lower()
    if "://" not in text and "password" not in lowered:
        assert out == text


printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=0, max_size=40)


@settings(max_examples=100, deadline=None)
@given(printable, hosts, databases, users, ports)
def test_any_printable_url_password_is_replaced_exactly(password, host, db, user, port) -> None:
    out = redact(f"postgresql://{user}:{quote(password, safe='')}@{host}:{port}/{db}")
    assert out == f"postgresql://{user}:***@{host}:{port}/{db}"


@settings(max_examples=100, deadline=None)
@given(printable, hosts, databases)
def test_any_printable_keyword_password_is_replaced_exactly(password, host, db) -> None:
    out = redact(f"host={host} password={_libpq_quote(password)} dbname={db}")
    assert out == f"host={host} password=*** dbname={db}"
