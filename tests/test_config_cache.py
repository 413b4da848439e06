"""The config cache: an unchanged tenants.yaml is loaded without PyYAML or pydantic.

What load_project gives from the cache must be exactly what validating the file
gives (a property over generated files), an entry that does not fit is never
trusted (it is ignored and rewritten), a password is never cached, and the
problems found across fields still name their line. "Without pydantic" is
shown by effect: a process where importing pydantic or yaml fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from tenantctl import config_cache
from tenantctl.config import load_project
from tenantctl.config_schema import ConfigFile
from tenantctl.config_validate import validate
from tenantctl.errors import ConfigError
from tenantctl.lint_rules import RULES
from tenantctl.parse_cache import CACHE_DIR

# a process in which pydantic and PyYAML cannot be imported
WITHOUT_VALIDATION = ("import sys; sys.modules['pydantic'] = sys.modules['yaml'] = None; "
                      "from pathlib import Path; from tenantctl.config import load_project; "
                      "p = load_project(Path(sys.argv[1]), env={'MAIN_DSN': 'postgresql://h/db'}); "
                      "print(repr(p.file))")

FILE = """\
servers:
  main: { dsn: "${MAIN_DSN}", max_connections: 50 }
default_server: main
settings: { lock_timeout: 2s, statement_timeout: 500ms, concurrency: 4, template_strategy: wal_log }
lint: { disable: [require-concurrent-index], severity: { ban-rename: warning }, baseline: "1.0.3" }
shared: { global_tables: [ref.currency] }
waves: [canary, early]
tenants:
  - { clnt_id: 1, name: "Zürich Ärzte 北京", sites: [1, 2], wave: canary }
  - { clnt_id: 2, name: Deux }
  - { clnt_id: 3, name: Trois, mode: shared }
"""
ENV = {"MAIN_DSN": "postgresql://h/db"}


def write(tmp_path: Path, text: str = FILE) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def entry_path(path: Path) -> Path:
    return path.parent / ".tenantctl" / CACHE_DIR / "config-v1.json"


def run_without_validation(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", WITHOUT_VALIDATION, str(path)],
                          capture_output=True, text=True, env=env, timeout=120)


# ---------------------------------------------------------------- the property

ident = st.from_regex(r"[a-z_][a-z0-9_]{0,30}", fullmatch=True)
role = ident.filter(lambda r: r not in {"postgres", "public", "none", "current_user", "session_user",
                                        "current_role"} and not r.startswith("pg_"))
wave = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)
name = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=40)
duration = st.one_of(
    st.integers(0, 86_400),
    st.floats(0, 86_400, allow_nan=False),
    st.builds(lambda n, unit: f"{n}{unit}", st.integers(0, 500), st.sampled_from(["ms", "s", "min", "h", ""])),
)


@st.composite
def config_files(draw: st.DrawFn) -> dict[str, object]:
    waves = draw(st.lists(wave, min_size=1, max_size=3, unique=True))
    ids = draw(st.lists(st.integers(1, 32767), max_size=6, unique=True))
    tenants = [{
        "clnt_id": i, "name": draw(name),
        "sites": draw(st.lists(st.integers(1, 32767), max_size=3, unique=True)),
        **draw(st.fixed_dictionaries({}, optional={
            "mode": st.sampled_from(["database", "shared"]), "wave": st.sampled_from(waves),
            "server": ident, "database": ident})),
    } for i in ids]
    optional = {
        "migrations": st.sampled_from(["migrations", "db/migrations", "mïgrations"]),
        "seed": st.sampled_from(["seed/tenant_seed.sql", "seed.sql"]),
        "database_pattern": st.sampled_from(["cvs_client_{clnt_id}", "t{clnt_id}", "x{clnt_id}_y"]),
        "tenant_column": st.sampled_from(["clnt_id", "tenant_id", "org_id"]),
        "control_database": ident, "template_database": ident,
        "default_mode": st.sampled_from(["database", "shared"]),
        "default_server": ident,
        "servers": st.dictionaries(ident, st.fixed_dictionaries(
            {"dsn": st.sampled_from(["${MAIN_DSN}", "embedded", "postgresql://h:5432/db"])},
            optional={"max_connections": st.integers(1, 10000), "max_tenants": st.integers(0, 1000)}),
            max_size=3),
        "shared": st.fixed_dictionaries({}, optional={
            "server": ident, "database": ident, "app_role": role, "owner_role": role,
            "global_tables": st.lists(st.sampled_from(["ref", "ref.currency", "cvs_site_mast"]), max_size=2),
            "probe_dsn": st.just("${APP_DSN}")}),
        "settings": st.fixed_dictionaries({}, optional={
            "concurrency": st.integers(1, 1000), "lock_timeout": duration,
            "statement_timeout": duration, "lock_wait": duration, "retries": st.integers(0, 100),
            "strict_lint": st.booleans(), "template": st.booleans(),
            "template_strategy": st.sampled_from(["auto", "wal_log", "file_copy"]),
            "allow_external_symlinks": st.booleans(),
            "placement": st.sampled_from(["default", "least-tenants"])}),
        "lint": st.fixed_dictionaries({}, optional={
            "disable": st.lists(st.sampled_from(sorted(RULES)), max_size=3),
            "severity": st.dictionaries(st.sampled_from(sorted(RULES)), st.sampled_from(["error", "warning"]),
                                        max_size=3),
            "exclude": st.lists(st.sampled_from(["v1.0.*", "*_legacy.sql"]), max_size=2),
            "baseline": st.sampled_from(["1.0.3", "V2", "20240101", 7])}),
    }
    return {"waves": waves, "tenants": tenants, **draw(st.fixed_dictionaries({}, optional=optional))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=config_files())
def test_a_cached_file_decodes_to_exactly_what_validation_gives(data: dict[str, object]) -> None:
    validated = validate(Path("tenants.yaml"), {}, data)
    stored = json.loads(json.dumps(config_cache.encode(validated)))  # as it is written to disk
    assert config_cache.decode(ConfigFile, stored) == validated


def test_every_check_is_run_again_on_a_decoded_entry() -> None:
    good = config_cache.encode(validate(Path("tenants.yaml"), {}, {"tenants": [{"clnt_id": 1, "name": "A"}]}))
    assert isinstance(good, dict)
    bad_values = [
        ("control_database", "x; DROP DATABASE y"),  # check_identifier
        ("database_pattern", "no_placeholder"),  # the pattern's check
        ("settings", {**good["settings"], "concurrency": 0}),  # ge=1
        ("settings", {**good["settings"], "lock_timeout": -1.0}),  # parse_duration
        ("settings", {**good["settings"], "concurrency": "8"}),  # the type itself
        ("settings", {**good["settings"], "template_strategy": "rsync"}),  # the enum
        ("settings", {**good["settings"], "placement": "random"}),  # the Literal
        ("tenants", [{**good["tenants"][0], "clnt_id": 40000}]),  # le=32767
        ("tenants", [{**good["tenants"][0], "name": "a\nb"}]),  # no control characters
        ("tenants", [{**good["tenants"][0], "sites": [1, 1]}]),  # unique sites
        ("lint", {**good["lint"], "disable": ["no-such-rule"]}),
        ("shared", {**good["shared"], "owner_role": "postgres"}),
        ("tenants", [{**good["tenants"][0], "extra": 1}]),  # a field the class does not have
    ]
    for key, value in bad_values:
        with pytest.raises((config_cache.StaleEntry, ValueError)):
            config_cache.decode(ConfigFile, {**good, key: value})


# ---------------------------------------------------------------- load_project


def test_an_unchanged_file_is_loaded_without_pydantic_or_pyyaml(tmp_path: Path) -> None:
    path = write(tmp_path)
    first = load_project(path, env=ENV)
    assert entry_path(path).is_file()
    assert entry_path(path).stat().st_mode & 0o777 == 0o600
    proc = run_without_validation(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(first.file)
    assert load_project(path, env=ENV) == first


def test_an_edited_file_is_validated_again(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert load_project(path, env=ENV).settings.concurrency == 4
    path.write_text(FILE.replace("concurrency: 4", "concurrency: 3"), encoding="utf-8")
    assert load_project(path, env=ENV).settings.concurrency == 3
    path.write_text(FILE.replace("concurrency: 4", "concurrency: 0"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tenants.yaml:4: settings.concurrency"):
        load_project(path, env=ENV)
    # the entry of the last good text is kept, and no process without pydantic takes it
    proc = run_without_validation(path)
    assert proc.returncode != 0 and "pydantic" in proc.stderr


@pytest.mark.parametrize("tamper", [
    lambda doc: doc["config"].update(control_database="x; DROP DATABASE y"),
    lambda doc: doc["config"]["settings"].update(concurrency="lots"),
    lambda doc: doc.update(key="0" * 64),
    lambda doc: doc.update(tool="another-version"),
    lambda doc: doc.pop("config"),
], ids=["unsafe-name", "wrong-type", "other-key", "other-tool", "no-config"])
def test_an_entry_that_does_not_fit_is_ignored_and_rewritten(tmp_path: Path, tamper: object) -> None:
    path = write(tmp_path)
    expected = load_project(path, env=ENV)
    doc = json.loads(entry_path(path).read_text(encoding="utf-8"))
    assert callable(tamper)
    tamper(doc)
    entry_path(path).write_text(json.dumps(doc), encoding="utf-8")
    assert load_project(path, env=ENV) == expected
    assert run_without_validation(path).returncode == 0  # the entry was rewritten


def test_a_corrupt_entry_is_ignored_and_rewritten(tmp_path: Path) -> None:
    path = write(tmp_path)
    expected = load_project(path, env=ENV)
    entry_path(path).write_bytes(b'{"tool": "x", "key": \xff trunc')
    assert load_project(path, env=ENV) == expected
    assert run_without_validation(path).returncode == 0


def test_a_password_written_in_the_file_is_never_cached(tmp_path: Path) -> None:
    path = write(tmp_path, FILE.replace('"${MAIN_DSN}"', '"postgresql://app:s3cr3t-pw@h/db"'))
    load_project(path, env=ENV)
    assert not entry_path(path).exists()
    for f in (tmp_path / ".tenantctl").rglob("*"):
        assert not f.is_file() or b"s3cr3t-pw" not in f.read_bytes(), f


def test_problems_across_fields_name_their_line_when_the_file_is_cached(tmp_path: Path) -> None:
    path = write(tmp_path, FILE + "  - { clnt_id: 4, name: Quatre, database: tenantctl }\n")
    messages = []
    for _ in range(2):  # validated, then from the cache
        with pytest.raises(ConfigError) as info:
            load_project(path, env={})  # MAIN_DSN is not set either
        messages.append(str(info.value))
    assert entry_path(path).is_file()
    assert messages[0] == messages[1]
    assert "tenants.yaml:2: servers.main.dsn: environment variable MAIN_DSN is not set" in messages[0]
    assert "tenants.yaml:12: tenants[3].database: tenantctl is the control database" in messages[0]
