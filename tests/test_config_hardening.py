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


# ------------------------------------------------ 4. bad input that used to fail at run time

MAX_MS = 2147483647  # PostgreSQL's upper bound for statement_timeout / lock_timeout


@pytest.mark.parametrize("field", ["lock_timeout", "statement_timeout", "lock_wait"])
@pytest.mark.parametrize("value", ["99999999h", "2147483648ms", "2147484s", "35792min",
                                   "1e400", "10000000000000000000000000000000000000000000000000"
                                   "000000000000000000000000000000000000000000000000000000000"
                                   "000000000000000000000000000000000000000000000000000000000"
                                   "000000000000000000000000000000000000000000000000000000000"
                                   "000000000000000000000000000000000000000000000000000000000"
                                   "0000000000000000000000000000000000000000000000000000000000000000"])
def test_durations_beyond_postgres_range_are_refused(tmp_path: Path, field: str, value: str) -> None:
    msg = error_of(write(tmp_path, f"""
        settings:
          {field}: {value}
        tenants: []
    """))
    assert f"tenants.yaml:3: settings.{field}" in msg, msg
    assert "Traceback" not in msg


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", '"nan"', '"inf"', '"NaN"', '"infinity"', "-5"])
def test_nan_and_inf_durations_are_refused(tmp_path: Path, value: str) -> None:
    msg = error_of(write(tmp_path, f"""
        settings: {{ lock_timeout: {value} }}
        tenants: []
    """))
    assert "tenants.yaml:2: settings.lock_timeout" in msg, msg


def test_largest_postgres_duration_is_accepted(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, f"""
        settings: {{ statement_timeout: {MAX_MS}ms, lock_timeout: 2147483s, lock_wait: 0 }}
        tenants: []
    """), env={})
    assert int(p.settings.statement_timeout * 1000) == MAX_MS
    assert p.settings.lock_timeout == 2147483.0


@pytest.mark.parametrize("raw", ["99999999h", "2147483648ms", float("nan"), float("inf"), "nan", "inf",
                                 10 ** 400, "1" + "0" * 400, -1, True, "5 s s", "5s\nx"])
def test_parse_duration_refuses_with_value_error(raw: object) -> None:
    from tenantctl.config import parse_duration

    with pytest.raises(ValueError):
        parse_duration(raw)


@pytest.mark.parametrize("raw,seconds", [("2147483647ms", 2147483.647), ("0", 0.0), ("5s\n", 5.0), (0.5, 0.5)])
def test_parse_duration_edges(raw: object, seconds: float) -> None:
    from tenantctl.config import parse_duration

    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("name", ['"A\\0B"', '"A\\x07"', '"line\\nbreak"', '"A\\x7f"', '"A\\u0085"', '"A\\e"'])
def test_control_characters_in_a_tenant_name_are_refused(tmp_path: Path, name: str) -> None:
    msg = error_of(write(tmp_path, f"""
        tenants:
          - {{ clnt_id: 1, name: "ok", sites: [1] }}
          - {{ clnt_id: 2, name: {name}, sites: [1] }}
    """))
    assert "tenants.yaml:4: tenants[1].name" in msg, msg
    assert "control character" in msg
    assert "\x00" not in msg


def test_tab_and_unicode_in_a_tenant_name_are_fine(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "Zürich\\tKlinik – 東京", sites: [1] }
    """), env={})
    assert p.tenants[0].name == "Zürich\tKlinik – 東京"


@pytest.mark.parametrize("field", ["app_role", "owner_role"])
@pytest.mark.parametrize("role", ["postgres", "pg_monitor", "pg_read_all_data", "pg_", "public", "none",
                                  "current_user", "session_user", "current_role"])
def test_reserved_role_names_are_refused(tmp_path: Path, field: str, role: str) -> None:
    msg = error_of(write(tmp_path, f"""
        shared:
          {field}: {role}
        tenants: []
    """))
    assert f"tenants.yaml:3: shared.{field}" in msg, msg


def test_app_role_must_differ_from_owner_role(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        shared:
          app_role: cvs_app
          owner_role: cvs_app
        tenants: []
    """))
    assert "tenants.yaml:4: shared.owner_role" in msg and "app_role" in msg, msg


def _servers(dsn: str) -> str:
    return f"""
        servers:
          main:
            dsn: "{dsn}"
        tenants: []
    """


@pytest.mark.parametrize("dsn,says", [
    ("postgresql://u:Hunter2Pw@localhost:99999/db", "99999"),
    ("postgresql://u:Hunter2Pw@localhost:0/db", "port"),
    ("postgresql://u:Hunter2Pw@localhost:abc/db", "abc"),
    ("postgresql://u:Hunter2Pw@localhost:/db?port=99999", "99999"),
    ("postgresql://u:Hunter2Pw@h1:5432,h2:99999/db", "99999"),
    ("postgresql://u:Hunter2Pw@[::1]:70000/db", "70000"),
    ("postgresql://u:Hunter2Pw@h1,h2/db?port=5432,abc", "abc"),
    ("postgresql://u:Hunter2Pw@h1/db?port=-1", "port"),
    ("mysql://u:Hunter2Pw@localhost/db", "postgresql://"),
    ("http://u:Hunter2Pw@localhost/db", "postgresql://"),
    ("localhost", "postgresql://"),
    ("host=localhost port=99999 password=Hunter2Pw", "99999"),
    ("host=localhost port=abc password=Hunter2Pw", "abc"),
    ("host=localhost password='Hunter2Pw", "quote"),
    ("host=localhost =x password=Hunter2Pw", "key=value"),
    ("postgresql://u:Hunter2Pw@local host/db", "postgresql://"),
    ("postgresql://u:Hun/ter2Pw@localhost:5432/db", "percent-encode"),
    ("postgresql://u:Hun?ter2Pw@localhost:5432/db", "percent-encode"),
    ("postgresql://u:Hun#ter2Pw@localhost:5432/db", "percent-encode"),
])
def test_bad_server_dsn_is_refused_without_the_password(tmp_path: Path, dsn: str, says: str) -> None:
    msg = error_of(write(tmp_path, _servers(dsn)))
    assert "tenants.yaml:4: servers.main.dsn" in msg, msg
    assert says in msg, msg
    assert "Hunter2Pw" not in msg


@pytest.mark.parametrize("dsn", [
    "embedded",
    "postgresql://u:pw@localhost:5432/db",
    "postgres://localhost/db",
    "postgresql://",
    "postgresql:///db?host=/var/run/postgresql",
    "postgresql://u@h1:5432,h2:5433,h3/db?target_session_attrs=read-write",
    "postgresql://[::1]:5432/db",
    "postgresql://[2001:db8::1]/db",
    "postgresql://u:p%40ss@%2Fvar%2Frun%2Fpostgresql/db",
    "postgresql://h/db?port=5432",
    "postgresql://h1,h2/db?port=5432,5433",
    "postgresql://h:65535/db",
    "host=localhost port=5432 user=u password=pw dbname=db",
    "host=h1,h2 port=5432,5433 dbname=db",
    "host = localhost  password = 'a b\\' c'  dbname=x",
])
def test_good_server_dsns_are_accepted(tmp_path: Path, dsn: str) -> None:
    p = load_project(write(tmp_path, _servers(dsn.replace("\\", "\\\\").replace('"', '\\"'))), env={})
    assert p.servers["main"].dsn


def test_dsn_from_the_environment_is_validated_and_redacted(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, _servers("${MAIN_DSN}")), env={"MAIN_DSN": "postgresql://u:Hunter2Pw@h:99999/d"})
    assert "tenants.yaml:4: servers.main.dsn" in msg and "99999" in msg
    assert "Hunter2Pw" not in msg


@pytest.mark.parametrize("how", ["flag", "env"])
def test_dsn_override_is_validated_and_redacted(tmp_path: Path, how: str) -> None:
    path = write(tmp_path, "tenants: []\n")
    bad = "postgresql://u:Hunter2Pw@localhost:99999/db"
    with pytest.raises(ConfigError) as info:
        if how == "flag":
            load_project(path, dsn=bad, env={})
        else:
            load_project(path, env={"TENANTCTL_DSN": bad})
    msg = str(info.value)
    assert ("--dsn" if how == "flag" else "TENANTCTL_DSN") in msg, msg
    assert "99999" in msg and "Hunter2Pw" not in msg
    assert load_project(path, dsn="postgresql://u:pw@localhost:5432/db", env={}).servers


def test_probe_dsn_is_interpolated_and_validated(tmp_path: Path) -> None:
    path = write(tmp_path, """
        shared:
          probe_dsn: "${CVS_APP_DSN}"
        tenants: []
    """)
    p = load_project(path, env={"CVS_APP_DSN": "postgresql://cvs_app:pw@h/db"})
    assert p.file.shared.probe_dsn == "postgresql://cvs_app:pw@h/db"
    msg = error_of(path, env={"CVS_APP_DSN": "postgresql://cvs_app:Hunter2Pw@h:0/db"})
    assert "tenants.yaml:3: shared.probe_dsn" in msg and "Hunter2Pw" not in msg
    msg = error_of(path, env={})
    assert "tenants.yaml:3: shared.probe_dsn" in msg and "CVS_APP_DSN is not set" in msg


def test_validation_errors_never_print_a_dsn_password(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        servers:
          main: { dsn: "postgresql://u:Hunter2Pw@h/db", max_connections: 0 }
        shared: { probe_dsn: ["postgresql://u:Hunter2Pw@h/db"] }
        tenants: []
    """))
    assert "servers.main.max_connections" in msg and "shared.probe_dsn" in msg
    assert "Hunter2Pw" not in msg


def test_allow_external_symlinks_setting(tmp_path: Path) -> None:
    from tenantctl.config import Settings

    assert Settings().allow_external_symlinks is False
    assert "allow_external_symlinks" in (Settings.__doc__ or "")
    p = load_project(write(tmp_path, "settings: { allow_external_symlinks: true }\ntenants: []\n"), env={})
    assert p.settings.allow_external_symlinks is True
    msg = error_of(write(tmp_path, "settings: { allow_external_symlinks: sometimes }\ntenants: []\n"))
    assert "tenants.yaml:1: settings.allow_external_symlinks" in msg


# ------------------------------------------------ 1. database names that collide

TWO_SERVERS = """
servers:
  main: { dsn: "postgresql://u@a/x" }
  other: { dsn: "postgresql://u@b/x" }
"""


@pytest.mark.parametrize("name,says", [
    ("tenantctl_template", "template"),
    ("template1", "PostgreSQL"),
    ("template0", "PostgreSQL"),
    ("postgres", "PostgreSQL"),
    ("tenantctl", "control"),
])
def test_tenant_database_cannot_be_a_reserved_database(tmp_path: Path, name: str, says: str) -> None:
    msg = error_of(write(tmp_path, f"""
        tenants:
          - {{ clnt_id: 1, name: "A", sites: [1] }}
          - {{ clnt_id: 2, name: "B", sites: [1], database: {name} }}
    """))
    assert "tenants.yaml:4: tenants[1].database" in msg, msg
    assert says in msg and name in msg


def test_pattern_database_colliding_with_template_names_the_template(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        template_database: cvs_client_2
        tenants:
          - { clnt_id: 1, name: "A", sites: [1] }
          - { clnt_id: 2, name: "B", sites: [1] }
    """))
    assert "tenants.yaml:2: template_database" in msg, msg
    assert "clnt_id 2" in msg


def test_pattern_database_colliding_with_control_names_the_control_database(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        control_database: cvs_client_1
        tenants:
          - { clnt_id: 1, name: "A", sites: [1] }
    """))
    assert "tenants.yaml:2: control_database" in msg, msg
    assert "clnt_id 1" in msg


def test_dedicated_tenant_cannot_use_the_shared_database(tmp_path: Path) -> None:
    # even when no tenant is in shared mode: the name is bound to that purpose
    msg = error_of(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1], database: cvs_shared }
    """))
    assert "tenants.yaml:3: tenants[0].database" in msg and "shared" in msg, msg
    msg = error_of(write(tmp_path, """
        shared: { database: cvs_client_1 }
        tenants:
          - { clnt_id: 1, name: "A", sites: [1] }
          - { clnt_id: 2, name: "B", sites: [1], mode: shared }
    """))
    assert "tenants.yaml:2: shared.database" in msg and "clnt_id 1" in msg, msg


@pytest.mark.parametrize("field,yaml_key", [
    ("template_database", "template_database: {name}"),
    ("control_database", "control_database: {name}"),
    ("shared.database", "shared: {{ database: {name} }}"),
])
@pytest.mark.parametrize("name", ["postgres", "template0", "template1"])
def test_purpose_databases_cannot_be_postgres_own(tmp_path: Path, field: str, yaml_key: str, name: str) -> None:
    msg = error_of(write(tmp_path, yaml_key.format(name=name) + "\ntenants: []\n"))
    assert f"tenants.yaml:1: {field}" in msg, msg
    assert "PostgreSQL" in msg


@pytest.mark.parametrize("config,field,other", [
    ("template_database: tenantctl\n", "template_database", "control_database"),
    ("control_database: tenantctl_template\n", "control_database", "template_database"),
    ("shared: { database: tenantctl }\n", "shared.database", "control_database"),
    ("shared: { database: tenantctl_template }\n", "shared.database", "template_database"),
    ("control_database: x\ntemplate_database: x\n", "template_database", "control_database"),
])
def test_purpose_databases_must_differ(tmp_path: Path, config: str, field: str, other: str) -> None:
    msg = error_of(write(tmp_path, config + "tenants: []\n"))
    assert f": {field}:" in msg and other in msg, msg
    assert msg.startswith("tenants.yaml:")


def test_control_database_collision_on_another_server_is_fine(tmp_path: Path) -> None:
    # the control database lives on the default server (main); `tenantctl` on
    # `other` is just a database there
    p = load_project(write(tmp_path, TWO_SERVERS + """
tenants:
  - { clnt_id: 1, name: "A", sites: [1], server: other, database: tenantctl }
"""), env={})
    assert p.tenants[0].database == "tenantctl"
    msg = error_of(write(tmp_path, TWO_SERVERS + """
tenants:
  - { clnt_id: 1, name: "A", sites: [1], server: main, database: tenantctl }
"""))
    assert "tenants[0].database" in msg and "control" in msg


def test_template_is_reserved_on_every_server(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, TWO_SERVERS + """
tenants:
  - { clnt_id: 1, name: "A", sites: [1], server: other, database: tenantctl_template }
"""))
    assert "tenants[0].database" in msg and "template" in msg, msg


def test_shared_database_reserved_on_its_server(tmp_path: Path) -> None:
    text = TWO_SERVERS + """
shared: { server: other }
tenants:
  - { clnt_id: 1, name: "A", sites: [1], server: SERVER, database: cvs_shared }
"""
    msg = error_of(write(tmp_path, text.replace("SERVER", "other")))
    assert "tenants[0].database" in msg and "shared" in msg, msg
    p = load_project(write(tmp_path, text.replace("SERVER", "main")), env={})
    assert p.tenants[0].database == "cvs_shared"


def test_two_tenants_cannot_share_a_database_name(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1] }
          - { clnt_id: 2, name: "B", sites: [1], database: cvs_client_1 }
    """))
    assert "tenants.yaml:4: tenants[1].database" in msg and "clnt_id 1" in msg, msg


def test_shared_tenants_share_the_shared_database(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """
        tenants:
          - { clnt_id: 1, name: "A", sites: [1], mode: shared }
          - { clnt_id: 2, name: "B", sites: [1], mode: shared }
          - { clnt_id: 3, name: "C", sites: [1] }
    """), env={})
    assert [t.database for t in p.tenants] == ["cvs_shared", "cvs_shared", "cvs_client_3"]


def test_database_roles_lists_every_purpose_per_server(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, TWO_SERVERS + """
shared: { server: other, database: pool_a }
tenants:
  - { clnt_id: 7, name: "A", sites: [1] }
  - { clnt_id: 8, name: "B", sites: [1], server: other }
  - { clnt_id: 9, name: "C", sites: [1], mode: shared }
"""), env={})
    roles = p.database_roles()
    assert roles == {
        "main": {
            "postgres": "system", "template0": "system", "template1": "system",
            "tenantctl": "control", "tenantctl_template": "template", "cvs_client_7": "tenant 7",
        },
        "other": {
            "postgres": "system", "template0": "system", "template1": "system",
            "tenantctl_template": "template", "pool_a": "shared", "cvs_client_8": "tenant 8",
        },
    }
    # a copy: callers cannot change the project's view
    roles["main"]["x"] = "y"
    assert "x" not in p.database_roles()["main"]


def test_database_roles_of_the_default_embedded_server(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, "tenants:\n" + TENANT), env={})
    assert p.database_roles() == {"default": {
        "postgres": "system", "template0": "system", "template1": "system",
        "tenantctl": "control", "tenantctl_template": "template", "cvs_shared": "shared",
        "cvs_client_1": "tenant 1",
    }}


# ------------------------------------------------ through the CLI: exit 2, nothing created

import subprocess  # noqa: E402
import sys  # noqa: E402

from conftest import Workspace, assert_refused  # noqa: E402


def run_cli(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A real process: a crash (SIGSEGV) or a hang shows up as such, not as a dead pytest."""
    return subprocess.run(
        [sys.executable, "-m", "tenantctl", "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout,
    )




@pytest.mark.parametrize("extra,says", [
    ("settings: { statement_timeout: 99999999h }\n", "tenants.yaml:5: settings.statement_timeout"),
    ("settings: { lock_timeout: .nan }\n", "tenants.yaml:5: settings.lock_timeout"),
    ("shared: { app_role: postgres }\n", "tenants.yaml:5: shared.app_role"),
])
def test_bad_settings_refused_before_any_database_is_created(ws: Workspace, extra: str, says: str) -> None:
    ws.write_config(TENANT, extra)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says=says)


def test_control_character_in_name_refused_before_any_database_is_created(ws: Workspace) -> None:
    ws.write_config('  - { clnt_id: 1, name: "A\\0B", sites: [1] }\n')
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", says="tenants.yaml:6: tenants[0].name: contains a control character")


def test_lock_timeout_flag_beyond_postgres_range_is_refused(ws: Workspace) -> None:
    ws.write_config(TENANT)
    ws.add_migration("v1_init.sql", "create table t (clnt_id int2);")
    assert_refused(ws, "provision", "--all", "--lock-timeout", "99999999h", says="--lock-timeout")
    assert_refused(ws, "provision", "--all", "--statement-timeout", "nan", says="--statement-timeout")


@pytest.mark.parametrize("dsn", ["postgresql://u:Hunter2Pw@localhost:99999/db",
                                 "postgresql://u:Hunter2Pw@localhost:abc/db"])
def test_bad_dsn_flag_is_exit_2_without_the_password(tmp_path: Path, dsn: str) -> None:
    config = write(tmp_path, "tenants:\n" + TENANT)
    proc = run_cli(config, "--dsn", dsn, "status")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "--dsn" in proc.stderr and "port" in proc.stderr
    assert "Hunter2Pw" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------ 3. YAML denial of service

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
tenants: []
"""


def _limited() -> None:  # pragma: no cover - runs in the child
    """Before the fix the bomb reached 12 GB: cap the child so a regression fails, not swaps."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def run_load(config: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tenantctl", "--config", str(config), "status"],
        capture_output=True, text=True, timeout=timeout, preexec_fn=_limited,
    )


def test_billion_laughs_is_refused_quickly(tmp_path: Path) -> None:
    config = tmp_path / "tenants.yaml"
    config.write_text(BILLION_LAUGHS)
    proc = run_load(config)  # a generous timeout: the fix answers in well under a second
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "tenants.yaml:" in proc.stderr and "alias" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_deep_nesting_is_refused_without_crashing(tmp_path: Path) -> None:
    config = tmp_path / "tenants.yaml"
    config.write_text("settings: " + "[" * 100_000 + "]" * 100_000 + "\ntenants: []\n")
    proc = run_load(config)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # not -11 (SIGSEGV)
    assert "tenants.yaml:1:" in proc.stderr and "nest" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    text = "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "x: 1\n"
    msg = error_of(write(tmp_path, text))
    assert msg.startswith("tenants.yaml:") and "nest" in msg and "50" in msg, msg


def test_fifty_levels_are_still_fine_for_yaml(tmp_path: Path) -> None:
    # 50 levels are parsed (and then refused by the schema, not by the limit)
    msg = error_of(write(tmp_path, "tenants: " + "[" * 49 + "]" * 49 + "\n"))
    assert "nest" not in msg and "tenants[0]" in msg, msg


def test_too_many_aliases_are_refused(tmp_path: Path) -> None:
    body = "tenants:\n  - { clnt_id: 1, name: T1, sites: [&s 1] }\n" + "".join(
        f"  - {{ clnt_id: {i}, name: T{i}, sites: [*s] }}\n" for i in range(2, 120)
    )
    msg = error_of(write(tmp_path, body))
    assert "alias" in msg and "100" in msg and msg.startswith("tenants.yaml:"), msg


def test_a_few_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    p = load_project(write(tmp_path, """
        tenants:
          - &first { clnt_id: 1, name: A, sites: &sites [1, 2], wave: canary }
          - { <<: *first, clnt_id: 2, name: B }
          - { clnt_id: 3, name: C, sites: *sites }
    """), env={})
    assert [(t.clnt_id, t.sites, t.wave) for t in p.tenants] == [
        (1, (1, 2), "canary"), (2, (1, 2), "canary"), (3, (1, 2), None)]


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "tenants: &t [*t]\n"))
    assert msg.startswith("tenants.yaml:1:") and "alias" in msg, msg
    msg = error_of(write(tmp_path, "settings: &s { x: *s }\ntenants: []\n"))
    assert msg.startswith("tenants.yaml:1:") and "alias" in msg, msg


def test_alias_expansion_is_bounded_even_with_few_aliases(tmp_path: Path) -> None:
    # 6 levels of 10 aliases: 60 aliases, but a million nodes once expanded
    levels = ["l0: &l0 [" + ",".join(["1"] * 10) + "]"]
    for n in range(1, 7):
        levels.append(f"l{n}: &l{n} [" + ",".join([f"*l{n - 1}"] * 10) + "]")
    msg = error_of(write(tmp_path, "\n".join(levels) + "\ntenants: []\n"))
    assert "alias" in msg and msg.startswith("tenants.yaml:"), msg


def test_undefined_alias_is_a_yaml_error(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "tenants: *nowhere\n"))
    assert msg.startswith("tenants.yaml:1:") and ("alias" in msg or "not valid YAML" in msg), msg


def test_complex_mapping_key_is_refused(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, "settings: { [1]: 2 }\ntenants: []\n"))
    assert msg.startswith("tenants.yaml:1:") and "key" in msg, msg


@pytest.mark.parametrize("text,says", [
    ("tenants:\n  - { clnt_id: %s, name: A, sites: [1] }\n" % ("9" * 5000), "tenants.yaml:2: a number"),
    ("settings: { lock_timeout: %s }\ntenants: []\n" % ("9" * 5000), "tenants.yaml:1: a number"),
    ("tenants:\n  - { clnt_id: 1, name: A, sites: [1], wave: %s }\n" % ("1" * 5000), "tenants.yaml:2: a number"),
    ("tenants: []\nwaves: [a] \x00\n", "tenants.yaml:2: not valid YAML: character U+0000"),
])
def test_oversized_numbers_and_bad_characters_are_refused(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    msg = error_of(path)
    assert msg.startswith(says), msg[:300]
    assert len(msg) < 500


def test_control_character_in_dsn_is_refused(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path, _servers("postgresql://u:Hunter2Pw@h/d\\0b")))
    assert "tenants.yaml:4: servers.main.dsn: a control character" in msg and "Hunter2Pw" not in msg


def test_migration_header_duration_beyond_postgres_range_is_refused(tmp_path: Path) -> None:
    from tenantctl.errors import MigrationFileError
    from tenantctl.migrations import parse_directives

    sql = "-- tenantctl: statement-timeout=99999999h\nselect 1;\n"
    with pytest.raises(MigrationFileError, match=r"v1_a.sql:1: statement-timeout"):
        parse_directives(tmp_path / "v1_a.sql", sql)
    sql = "-- tenantctl: lock-timeout=nan\nselect 1;\n"
    with pytest.raises(MigrationFileError, match=r"v1_a.sql:1: lock-timeout"):
        parse_directives(tmp_path / "v1_a.sql", sql)
