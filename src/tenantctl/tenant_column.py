"""The tenant column: the column of every tenant table that holds the tenant's id.

tenants.yaml's top-level ``tenant_column`` names it (default ``clnt_id``, the XOS
convention). Lint's tenancy rules look for it in new tables and keys, the
shared-mode policy compares it with ``app.current_tenant``, and check-isolation
audits and probes the tables that have it.

The name is written unquoted in the application's migrations and in the SQL
tenantctl generates, and compared with the names the parser and the catalog
report, so only a name that PostgreSQL itself never quotes is accepted: what
``quote_ident()`` returns unchanged (lower-case ASCII letters, digits and ``_``,
not starting with a digit, not a keyword other than an unreserved one), at most
63 bytes (longer names are truncated by the server), and not a system column.
Pure (no pydantic, no pglast): config_schema.py attaches the check.
"""

from __future__ import annotations

import re

from .config_fields import short_repr

DEFAULT_TENANT_COLUMN = "clnt_id"

_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1

# PostgreSQL 18's keywords other than the unreserved ones:
# SELECT word FROM pg_get_keywords() WHERE catcode <> 'U' (reserved, type/function
# name and column name keywords). quote_ident() quotes each of them, so a policy
# on such a column would read back as "time" = ...; tests compare this set with
# the test server's pg_get_keywords().
_KEYWORDS_TEXT = """
all analyse analyze and any array as asc asymmetric authorization between bigint binary
bit boolean both case cast char character check coalesce collate collation column
concurrently constraint create cross current_catalog current_date current_role
current_schema current_time current_timestamp current_user dec decimal default deferrable
desc distinct do else end except exists extract false fetch float for foreign freeze from
full grant greatest group grouping having ilike in initially inner inout int integer
intersect interval into is isnull join json json_array json_arrayagg json_exists
json_object json_objectagg json_query json_scalar json_serialize json_table json_value
lateral leading least left like limit localtime localtimestamp merge_action national
natural nchar none normalize not notnull null nullif numeric offset on only or order out
outer overlaps overlay placing position precision primary real references returning right
row select session_user setof similar smallint some substring symmetric system_user table
tablesample then time timestamp to trailing treat trim true union unique user using values
varchar variadic verbose when where window with xmlattributes xmlconcat xmlelement
xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable
"""
QUOTED_KEYWORDS = frozenset(_KEYWORDS_TEXT.split())

# Every table has these; CREATE TABLE refuses a column of the same name (42701).
SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})


def check_tenant_column(value: object) -> str:
    """``value`` if it is a usable tenant column name; ValueError saying why not."""
    if not isinstance(value, str):
        raise ValueError(f"{short_repr(value)} is not a column name: write it as text, e.g. tenant_id")
    shown = short_repr(value)
    if not _PLAIN.fullmatch(value):
        raise ValueError(
            f"{shown} is not a plain column name: use lower-case ASCII letters, digits and _, "
            "starting with a letter or _ (no quotes, spaces or upper case: the name is written "
            "unquoted in migrations and policies)"
        )
    if len(value) > MAX_NAME_BYTES:
        raise ValueError(f"{shown} is {len(value)} bytes long: PostgreSQL truncates names "
                         f"to {MAX_NAME_BYTES} bytes")
    if value in QUOTED_KEYWORDS:
        raise ValueError(f"{value!r} is a PostgreSQL keyword (only unreserved keywords are plain "
                         "names; PostgreSQL quotes this one): choose another name, e.g. tenant_id")
    if value in SYSTEM_COLUMNS:
        raise ValueError(f"{value!r} is a system column of every PostgreSQL table")
    return value
