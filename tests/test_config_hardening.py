"""tenants.yaml hardening: every bad input is a ConfigError naming file, line and
field, raised by load_project before any connection is made.

Pure, no database, except the few CLI tests at the end that check that nothing
was created.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tenantctl.config import check_identifier, load_project
from tenantctl.errors import ConfigError

TENANT = '  - { clnt_id: 1, name: "A", sites: [1] }\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, env: dict[str, str] | None = None, dsn: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_project(path, env=env or {}, dsn=dsn)
    return str(info.value)


# ------------------------------------------------ 2. full-match name validation


def test_check_identifier_refuses_a_trailing_newline() -> None:
    assert check_identifier("abc") == "abc"
    for bad in ("abc\n", "abc\r\n", "\nabc", "ab\nc"):
        with pytest.raises(ValueError):
            check_identifier(bad)


@pytest.mark.parametrize("yaml_text,field", [
    ('tenants:\n  - { clnt_id: 1, name: A, sites: [1], database: "abc\\n" }\n', "tenants.yaml:2: tenants[0].database"),
    ('template_database: "abc\\n"\ntenants: []\n', "tenants.yaml:1: template_database"),
    ('control_database: "abc\\n"\ntenants: []\n', "tenants.yaml:1: control_database"),
    ('shared: { database: "abc\\n" }\ntenants: []\n', "tenants.yaml:1: shared.database"),
    ('shared: { app_role: "abc\\n" }\ntenants: []\n', "tenants.yaml:1: shared.app_role"),
    ('shared: { owner_role: "abc\\n" }\ntenants: []\n', "tenants.yaml:1: shared.owner_role"),
    ('shared: { global_tables: ["abc\\n"] }\ntenants: []\n', "tenants.yaml:1: shared.global_tables[0]"),
    ('shared: { global_tables: ["s.abc\\n"] }\ntenants: []\n', "tenants.yaml:1: shared.global_tables[0]"),
    ('database_pattern: "c_{clnt_id}\\n"\ntenants: []\n', "tenants.yaml:1: database_pattern"),
    ('database_pattern: "c_{clnt_id}_\\n"\ntenants: []\n', "tenants.yaml:1: database_pattern"),
    ('servers:\n  "main\\n": { dsn: embedded }\ntenants: []\n', "tenants.yaml:2: servers"),
    ('waves: ["w\\n"]\ntenants: []\n', "tenants.yaml:1: waves[0]"),
    ('tenants:\n  - { clnt_id: 1, name: A, sites: [1], wave: "canary\\n" }\n', "tenants.yaml:2: tenants[0].wave"),
])
def test_names_with_a_trailing_newline_are_refused(tmp_path: Path, yaml_text: str, field: str) -> None:
    msg = error_of(write(tmp_path, yaml_text))
    assert field in msg, msg
