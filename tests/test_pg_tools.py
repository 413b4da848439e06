"""pg_tools: which client binary runs, and that no password reaches its command line."""

from __future__ import annotations

import urllib.parse

import pytest

from tenantctl.pg_tools import ToolMissing, ToolName, available_tools, find_tool, libpq_target


@pytest.mark.parametrize("dsn", [
    "postgresql://alice:s%40cr%3At@db.example:5433/postgres?sslmode=require",
    "host=db.example port=5433 user=alice password='s@cr:t' sslmode=require",
    "postgresql://alice@db.example:5433/postgres?password=s%40cr%3At&sslmode=require",
])
def test_the_password_travels_in_the_environment_never_in_the_url(dsn: str) -> None:
    url, env = libpq_target(dsn, "cvs_client_7")
    assert "s@cr:t" not in url and "cr%3At" not in url
    assert env["PGPASSWORD"] == "s@cr:t"
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert query["dbname"] == "cvs_client_7"
    assert query["sslmode"] == "require"
    # libpq reads host/port from the authority or, for key=value input, the query
    assert (parts.hostname, parts.port) == ("db.example", 5433) or (
        query["host"], query["port"]) == ("db.example", "5433")


def test_no_password_means_none_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-the-caller")
    _, env = libpq_target("postgresql://bob@localhost/postgres", "x")
    assert "PGPASSWORD" not in env


def test_the_oldest_tool_new_enough_is_chosen() -> None:
    tools = available_tools(ToolName.PG_DUMP)
    assert tools, "the embedded server ships pg_dump"
    newest = tools[-1].major
    assert find_tool(ToolName.PG_DUMP, newest).major == newest
    assert find_tool(ToolName.PG_DUMP, tools[0].major) == tools[0]
    with pytest.raises(ToolMissing, match=f"pg_dump {newest + 1} or newer"):
        find_tool(ToolName.PG_DUMP, newest + 1)
