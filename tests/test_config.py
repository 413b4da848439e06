"""tenants.yaml validation: pure, no database."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tenantctl.config import load_project, parse_duration
from tenantctl.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_project(path, env=env or {})
    return str(info.value)


def test_shipped_example_is_valid() -> None:
    project = load_project(ROOT / "tenants.yaml", env={})
    assert project.tenants
    assert all(t.database == f"cvs_client_{t.clnt_id}" for t in project.tenants if t.mode == "database")
    assert project.is_embedded(project.default_server)


def test_minimal_defaults(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """
        tenants:
          - { clnt_id: 7, name: "Seven", sites: [1] }
    """), env={})
    (t,) = p.tenants
    assert (t.clnt_id, t.mode, t.database, t.server) == (7, "database", "cvs_client_7", "default")
    assert p.settings.concurrency == 8 and p.settings.lock_timeout == 5.0
    assert p.migrations_dir == (tmp_path / "migrations").resolve()


def test_duplicate_clnt_id_names_both_entries_and_line(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        tenants:
          - { clnt_id: 7, name: "A", sites: [1] }
          - { clnt_id: 7, name: "B", sites: [1] }
    """))
    assert "tenants.yaml:4: tenants[1].clnt_id" in msg
    assert "already used by tenants[0]" in msg


@pytest.mark.parametrize("bad", ["0", "32768", "-1", '"7"', "7.5"])
def test_clnt_id_must_be_int2(tmp_path: Path, bad: str) -> None:
    msg = error_of(write(tmp_path, f"""
        tenants:
          - {{ clnt_id: {bad}, name: "A", sites: [1] }}
    """))
    assert "tenants.yaml:3: tenants[0].clnt_id" in msg


def test_unknown_key_is_an_error_with_line(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        migrations: migrations
        tenants:
          - clnt_id: 1
            name: A
            sites: [1]
            colour: blue
    """))
    assert "tenants.yaml:7: tenants[0].colour: unknown key" in msg


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        migration: migrations
        tenants: []
    """))
    assert "tenants.yaml:2: migration: unknown key" in msg


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1]
          - { clnt_id: 2 }
    """))
    assert msg.startswith("tenants.yaml:")
    assert "not valid YAML" in msg


def test_duplicate_yaml_key_is_refused(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        tenants: []
        tenants: []
    """))
    assert "key 'tenants' appears twice" in msg


def test_sites_are_int2_and_unique(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1, 1] }
          - { clnt_id: 2, name: "B", sites: [40000] }
          - { clnt_id: 3, name: "C", sites: [0] }
    """))
    assert "tenants[0].sites" in msg and "repeated" in msg
    assert "tenants[1].sites[0]" in msg
    assert "tenants[2].sites[0]" in msg


def test_env_interpolation_in_dsn(tmp_path: Path) -> None:
    path = write(tmp_path, """
        servers:
          main: { dsn: "postgresql://u@${PGHOST_X}:${PGPORT_X:-5432}/postgres" }
        tenants:
          - { clnt_id: 1, name: "A", sites: [1] }
    """)
    p = load_project(path, env={"PGHOST_X": "db1"})
    assert p.servers["main"].dsn == "postgresql://u@db1:5432/postgres"
    assert p.tenants[0].server == "main"
    msg = error_of(path, env={})
    assert "servers.main.dsn" in msg and "PGHOST_X is not set" in msg


def test_dsn_flag_overrides_default_server(tmp_path: Path) -> None:
    path = write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1] }
    """)
    p = load_project(path, dsn="postgresql://x/y", env={})
    assert not p.is_embedded(p.default_server)
    assert p.servers[p.default_server].dsn == "postgresql://x/y"


def test_undeclared_wave_and_unknown_server(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1], wave: beta }
          - { clnt_id: 2, name: "B", sites: [1], server: nowhere }
    """))
    assert "tenants[0].wave" in msg and "not declared" in msg
    assert "tenants[1].server" in msg and "no server named 'nowhere'" in msg


def test_hostile_name_is_just_data(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "x'; DROP DATABASE postgres; --\\"", sites: [1] }
    """), env={})
    assert p.tenants[0].name == "x'; DROP DATABASE postgres; --\""
    assert p.tenants[0].database == "cvs_client_1"


def test_unsafe_database_names_rejected(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        database_pattern: "Client-{clnt_id}"
        tenants: []
    """))
    assert "database_pattern" in msg
    msg = error_of(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1], database: "a\\"; drop" }
    """))
    assert "tenants[0].database" in msg


def test_shared_mode_is_accepted(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """
        shared: { database: pool_a }
        tenants:
          - { clnt_id: 1, name: "A", sites: [1], mode: shared }
          - { clnt_id: 2, name: "B", sites: [1] }
    """), env={})
    assert [(t.mode, t.database) for t in p.tenants] == [("shared", "pool_a"), ("database", "cvs_client_2")]


@pytest.mark.parametrize("raw,seconds", [("5s", 5), ("500ms", 0.5), ("2min", 120), (3, 3), ("1h", 3600)])
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


def test_select(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1] }
          - { clnt_id: 2, name: "B", sites: [1] }
    """), env={})
    assert [t.clnt_id for t in p.select((2,), False)] == [2]
    with pytest.raises(ConfigError, match="clnt_id 9 not in"):
        p.select((9,), False)
    with pytest.raises(ConfigError, match="no tenants selected"):
        p.select((), False)
