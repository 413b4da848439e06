"""PostgreSQL connection strings as tenants.yaml, --dsn and TENANTCTL_DSN give them.

:func:`check_dsn` accepts ``embedded`` (tenantctl's own server), a
``postgresql://`` (or ``postgres://``) URL and a libpq ``key=value`` string, and
refuses anything else before a connection is tried, naming the problem with the
password redacted. A bad port, a raw ``/`` in a password or a control
character is an exit-2 configuration error, not a failed connect.
"""

from __future__ import annotations

import re
import unicodedata

from .config_fields import short_repr
from .redact import redact_dsn

EMBEDDED = "embedded"

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT = re.compile(r"[0-9]{1,5}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_dsn(dsn: str) -> str:
    """``dsn`` unchanged if it is ``embedded``, a postgresql:// (or postgres://) URL or
    a libpq key=value string with valid ports; else ValueError (password redacted)."""
    if dsn == EMBEDDED:
        return dsn
    scheme = _SCHEME.match(dsn)
    problem: str | None
    if any(unicodedata.category(c) == "Cc" and c not in " \t\r\n" for c in dsn):
        problem = "a control character"
    elif scheme:
        problem = _url_problem(dsn, scheme.group(1))
    elif "=" in dsn:
        problem = _keyword_problem(dsn)
    else:
        problem = "not a PostgreSQL connection string"
    if problem:
        raise ValueError(
            f"{problem} in {redact_dsn(dsn)!r} (expected {EMBEDDED!r}, "
            "postgresql://user@host:port/database or key=value pairs such as "
            "'host=db port=5432 dbname=app')"
        )
    return dsn


def _port_problem(port: str) -> str | None:
    if port == "":
        return None  # libpq: the default port
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        return f"port {short_repr(port)} is not a number from 1 to 65535"
    return None


def _url_problem(dsn: str, scheme: str) -> str | None:
    from urllib.parse import parse_qsl

    if scheme.lower() not in ("postgresql", "postgres"):
        return f"scheme {scheme!r} is not postgresql:// or postgres://"
    if any(c.isspace() for c in dsn):
        return "whitespace in a URL (percent-encode it, e.g. %20)"
    rest = dsn[len(scheme) + 3:]
    # read as urllib (and so asyncpg) reads it: the authority ends at the first
    # '/', '?' or '#', the user information at its last '@'
    end = re.search(r"[/?#]", rest)
    authority = rest[: end.start()] if end else rest
    query = rest.partition("#")[0].partition("?")[2]
    hostspec = authority.rpartition("@")[2]
    problem = _hosts_problem(hostspec)
    if problem and "@" not in authority and "@" in rest:
        # "u:pa/ss@h": a raw '/' or '?' in the password ended the authority early,
        # so what looks like a host is part of the password: never echo it
        return ("the password (or user) holds a raw '/', '?' or '#': percent-encode it "
                "(%2F, %3F, %23; %40 for '@')")
    if problem:
        return problem
    if "#" in rest:
        return "a '#' (a URL fragment, which PostgreSQL ignores): percent-encode it as %23"
    if query:
        try:
            params = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return "the query string is not key=value&key=value"
        for key, value in params:
            if key == "port":
                for port in value.split(","):
                    problem = _port_problem(port)
                    if problem:
                        return problem
    return None


def _hosts_problem(hostspec: str) -> str | None:
    for host in hostspec.split(","):
        if host.startswith("["):
            end = host.find("]")
            if end < 0:
                return f"unclosed '[' in host {short_repr(host)}"
            after = host[end + 1:]
            if after and not after.startswith(":"):
                return f"unexpected {short_repr(after)} after the IPv6 address"
            port = after[1:] if after else ""
        else:
            port = host.partition(":")[2]
            if ":" in port:
                return f"host {short_repr(host)} has more than one ':' (put IPv6 addresses in [ ])"
        problem = _port_problem(port)
        if problem:
            return problem
    return None


def _keyword_problem(dsn: str) -> str | None:
    """libpq's conninfo syntax: key = value pairs, values optionally 'quoted'."""
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            return None
        start = i
        while i < n and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        key = dsn[start:i]
        if not _KEY.fullmatch(key):
            return f"{short_repr(key) if key else 'an empty key'} is not a key of a key=value pair"
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            return f"key {key!r} is not followed by '=' (key=value pairs)"
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i >= n:
                    return f"the quote of the value of {key!r} is not closed"
                if dsn[i] == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                elif dsn[i] == "'":
                    i += 1
                    break
                else:
                    value.append(dsn[i])
                    i += 1
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(dsn[i])
                i += 1
        if key == "port":
            for port in "".join(value).split(","):
                problem = _port_problem(port)
                if problem:
                    return problem

