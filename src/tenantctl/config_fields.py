"""Value checks of tenants.yaml fields: durations and PostgreSQL names.

Each check takes whatever YAML produced and returns it (or its parsed value)
or raises ValueError with a message fit for the user; config_schema.py attaches
them to its pydantic models. Pure (``re`` and ``math`` only), so migrations.py
may use :func:`parse_duration` without loading pydantic.
"""

from __future__ import annotations

import math
import re

# Every name pattern below is used with fullmatch(): with match() and ``$``, a
# trailing newline slips through ("abc\n" matches ^[a-z]+$) and a database
# named "abc\n" gets created.
# What PostgreSQL accepts unquoted and never truncates (63 bytes).
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,62}(?:\.[a-z_][a-z0-9_]{0,62})?")
_WAVE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?\s*")
_UNIT_S = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}

INT2_MAX = 32767
# PostgreSQL's timeouts (statement_timeout, lock_timeout) are int4 milliseconds;
# a longer value is refused by the server (22023) after databases were created.
MAX_DURATION_MS = 2147483647

# Role names PostgreSQL reserves or that would hand the shared database to the
# wrong principal: ``postgres`` (the bootstrap superuser), ``pg_*`` (predefined
# roles), and the pseudo-roles GRANT/ALTER understand specially.
RESERVED_ROLES = frozenset({"postgres", "public", "none", "current_user", "session_user", "current_role"})


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a message (never a 10,000-digit number)."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "a huge number"
    return text if len(text) <= limit else text[: limit - 4] + "…" + text[-3:]


def parse_duration(value: object) -> float:
    """Seconds from ``5``, ``5s``, ``500ms``, ``2min``, ``1h``.

    Raises ValueError for anything else: negative, NaN or infinite values, and
    durations longer than PostgreSQL accepts for a timeout (2147483647 ms,
    about 24.8 days).
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 500ms or 2min")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise ValueError(f"{short_repr(value)} is not a duration such as 5s, 500ms or 2min")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if math.isnan(seconds):
        raise ValueError("a duration must be a number, not NaN")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    # the PostgreSQL driver sends int(seconds * 1000) ms
    if math.isinf(seconds) or seconds * 1000 >= MAX_DURATION_MS + 1:
        raise ValueError(
            f"{short_repr(value)} is too long: PostgreSQL's limit is {MAX_DURATION_MS}ms (about 24.8 days)"
        )
    return seconds


def check_identifier(value: object) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a safe PostgreSQL name: use lower-case letters, digits "
            "and _, starting with a letter or _, at most 63 characters"
        )
    return value


def check_wave(value: object) -> str:
    if not isinstance(value, str) or not _WAVE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a wave name: use 1 to 40 letters, digits, _, . or -"
        )
    return value


def check_table_name(value: object) -> str:
    if not isinstance(value, str) or not _TABLE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a table name: a plain lower-case identifier, "
            "optionally schema-qualified (schema.table)"
        )
    return value


def check_role(value: object) -> str:
    name = check_identifier(value)
    if name in RESERVED_ROLES or name.startswith("pg_"):
        raise ValueError(
            f"{name!r} is reserved by PostgreSQL (postgres, pg_*, public, none, current_user, "
            "session_user, current_role): choose a role of its own"
        )
    return name

