"""tenants.yaml: the only reader of the registry file and of the environment.

The file is parsed twice by PyYAML, once into plain data and once into a node
tree, so every validation error can name the file, the field path and the
line. pydantic models with ``extra="forbid"`` do the validation; what leaves
this module is a frozen :class:`Project`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from .errors import ConfigError

DEFAULT_CONFIG = "tenants.yaml"
CONFIG_ENV = "TENANTCTL_CONFIG"
DSN_ENV = "TENANTCTL_DSN"
EMBEDDED = "embedded"

# Every name pattern below is used with fullmatch(): with match() and ``$``, a
# trailing newline slips through ("abc\n" matches ^[a-z]+$) and a database
# named "abc\n" gets created.
# What PostgreSQL accepts unquoted and never truncates (63 bytes).
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,62}(?:\.[a-z_][a-z0-9_]{0,62})?")
_WAVE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?\s*")
_UNIT_S = {"ms": 0.001, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}

INT2_MAX = 32767


def parse_duration(value: Any) -> float:
    """Seconds from ``5``, ``5s``, ``500ms``, ``2min``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 500ms or 2min")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 5s, 500ms or 2min")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def check_identifier(value: str) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a safe PostgreSQL name: use lower-case letters, digits "
            "and _, starting with a letter or _, at most 63 characters"
        )
    return value


def check_wave(value: str) -> str:
    if not isinstance(value, str) or not _WAVE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a wave name: use 1 to 40 letters, digits, _, . or -"
        )
    return value


def check_table_name(value: str) -> str:
    if not isinstance(value, str) or not _TABLE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a table name: a plain lower-case identifier, "
            "optionally schema-qualified (schema.table)"
        )
    return value


Identifier = Annotated[str, BeforeValidator(check_identifier)]
WaveName = Annotated[str, BeforeValidator(check_wave)]
TableName = Annotated[str, BeforeValidator(check_table_name)]
Int2Id = Annotated[int, Field(strict=True, ge=1, le=INT2_MAX)]


def interpolate_env(text: str, env: dict[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; a missing variable is an error."""

    def expand(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ValueError(f"environment variable {name} is not set")

    return _ENV_REF.sub(expand, text)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Server(_Model):
    dsn: str = Field(min_length=1)
    max_connections: int | None = Field(default=None, ge=1, le=10000)


class Shared(_Model):
    server: str | None = None
    database: Identifier = "cvs_shared"
    app_role: Identifier = "cvs_app"
    owner_role: Identifier = "cvs_owner"
    # tables without clnt_id that every tenant may read (reference data)
    global_tables: tuple[TableName, ...] = ()
    # how check-isolation logs in as app_role (default: the server DSN with the user swapped)
    probe_dsn: str | None = None


class Settings(_Model):
    """Run settings; every one can also be given on the command line."""

    concurrency: int = Field(default=8, ge=1, le=1000)
    lock_timeout: Duration = 5.0
    statement_timeout: Duration = 0.0
    lock_wait: Duration = 120.0
    retries: int = Field(default=3, ge=0, le=100)
    strict_lint: bool = False  # lint errors refuse a migrate/provision (exit 2)
    template: bool = True  # provision new databases by cloning a migrated template


class Tenant(_Model):
    clnt_id: Int2Id
    name: str = Field(min_length=1, max_length=200)
    sites: tuple[Int2Id, ...] = Field(min_length=1)
    mode: Literal["database", "shared"] | None = None
    wave: WaveName | None = None
    server: str | None = None
    database: Identifier | None = None

    @field_validator("sites")
    @classmethod
    def _unique_sites(cls, sites: tuple[int, ...]) -> tuple[int, ...]:
        dupes = sorted({s for s in sites if sites.count(s) > 1})
        if dupes:
            raise ValueError(f"site ids must be unique, repeated: {dupes}")
        return sites


class ConfigFile(_Model):
    migrations: str = "migrations"
    seed: str | None = None
    database_pattern: str = "cvs_client_{clnt_id}"
    control_database: Identifier = "tenantctl"
    template_database: Identifier = "tenantctl_template"
    default_mode: Literal["database", "shared"] = "database"
    default_server: str | None = None
    servers: dict[Identifier, Server] = Field(default_factory=dict)
    shared: Shared = Field(default_factory=Shared)
    waves: tuple[WaveName, ...] = ("canary",)
    settings: Settings = Field(default_factory=Settings)
    tenants: tuple[Tenant, ...] = ()

    @field_validator("database_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not isinstance(value, str) or value.count("{clnt_id}") != 1:
            raise ValueError("must contain {clnt_id} exactly once")
        # the longest and the shortest result must both be plain identifiers
        for clnt_id in (INT2_MAX, 1):
            check_identifier(value.replace("{clnt_id}", str(clnt_id)))
        return value


@dataclass(frozen=True)
class TenantSpec:
    """One tenant, resolved: where its data lives."""

    clnt_id: int
    name: str
    sites: tuple[int, ...]
    mode: str
    wave: str | None
    server: str
    database: str


@dataclass(frozen=True)
class Project:
    """A validated tenants.yaml and everything it points at."""

    path: Path
    file: ConfigFile
    servers: dict[str, Server]
    default_server: str
    tenants: tuple[TenantSpec, ...]

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def migrations_dir(self) -> Path:
        return (self.base_dir / self.file.migrations).resolve()

    @property
    def seed_path(self) -> Path | None:
        return (self.base_dir / self.file.seed).resolve() if self.file.seed else None

    @property
    def settings(self) -> Settings:
        return self.file.settings

    @property
    def state_dir(self) -> Path:
        """Where tenantctl keeps local state (the embedded server) for this file."""
        return self.base_dir / ".tenantctl"

    def is_embedded(self, server: str) -> bool:
        return self.servers[server].dsn == EMBEDDED

    def select(self, ids: tuple[int, ...], all_: bool) -> tuple[TenantSpec, ...]:
        """The tenants named on the command line, in registry order."""
        if all_ and ids:
            raise ConfigError("give tenant ids or --all, not both")
        if all_:
            return self.tenants
        if not ids:
            raise ConfigError(
                "no tenants selected", hint="name clnt_ids (e.g. `7 12`) or pass --all"
            )
        known = {t.clnt_id for t in self.tenants}
        unknown = sorted(set(ids) - known)
        if unknown:
            raise ConfigError(
                f"clnt_id {', '.join(map(str, unknown))} not in {self.path.name}",
                hint="add the tenant to tenants.yaml first",
            )
        wanted = set(ids)
        return tuple(t for t in self.tenants if t.clnt_id in wanted)


# ---------------------------------------------------------------- loading


def find_config(explicit: str | None, env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    raw = explicit or env.get(CONFIG_ENV) or DEFAULT_CONFIG
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{raw}: no such file",
            hint="run tenantctl from the folder holding tenants.yaml, or pass --config PATH",
        )
    return path.resolve()


def load_project(
    path: Path, *, dsn: str | None = None, env: dict[str, str] | None = None
) -> Project:
    """Read and validate tenants.yaml. Raises ConfigError naming file, field, line.

    Duplicate keys, which PyYAML would silently resolve to the last one, are errors.
    """
    env = dict(os.environ if env is None else env)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    lines, data = _parse_yaml(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: the top level must be a mapping of keys")
    try:
        model = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(path, lines, exc)) from None

    problems: list[tuple[tuple[Any, ...], str]] = []
    servers = _resolve_servers(model, dsn, env, problems)
    default = model.default_server or (next(iter(model.servers)) if model.servers else "default")
    if model.default_server and model.default_server not in servers:
        problems.append((("default_server",), f"no server named {model.default_server!r}"))
    if model.shared.server and model.shared.server not in servers:
        problems.append((("shared", "server"), f"no server named {model.shared.server!r}"))
    for wave in model.waves:
        if model.waves.count(wave) > 1:
            problems.append((("waves",), f"wave {wave!r} is listed twice"))
            break

    tenants: list[TenantSpec] = []
    seen: dict[int, int] = {}
    databases: dict[str, int] = {}
    for i, t in enumerate(model.tenants):
        where = ("tenants", i)
        if t.clnt_id in seen:
            problems.append(
                (where + ("clnt_id",), f"clnt_id {t.clnt_id} is already used by tenants[{seen[t.clnt_id]}]")
            )
            continue
        seen[t.clnt_id] = i
        server = t.server or default
        if t.server and t.server not in servers:
            problems.append((where + ("server",), f"no server named {t.server!r}"))
            continue
        if t.wave and t.wave not in model.waves:
            problems.append(
                (where + ("wave",), f"wave {t.wave!r} is not declared in `waves:` {list(model.waves)}")
            )
        mode = t.mode or model.default_mode
        if mode == "shared":
            database = model.shared.database
            server = model.shared.server or default
        else:
            database = t.database or model.database_pattern.format(clnt_id=t.clnt_id)
            other = databases.get(database)
            if other is not None:
                problems.append((where + ("database",), f"database {database} is also used by clnt_id {other}"))
            databases[database] = t.clnt_id
        if database == model.control_database:
            problems.append((where + ("database",), f"{database} is the control database"))
        tenants.append(
            TenantSpec(t.clnt_id, t.name, t.sites, mode, t.wave, server, database)
        )
    if problems:
        raise ConfigError(
            "\n".join(f"{_where(path, lines, loc)}: {msg}" for loc, msg in problems)
        )
    return Project(path, model, servers, default, tuple(tenants))


def _resolve_servers(
    model: ConfigFile,
    dsn: str | None,
    env: dict[str, str],
    problems: list[tuple[tuple[Any, ...], str]],
) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    for name, server in model.servers.items():
        try:
            servers[name] = server.model_copy(update={"dsn": interpolate_env(server.dsn, env)})
        except ValueError as exc:
            problems.append((("servers", name, "dsn"), str(exc)))
    override = dsn or env.get(DSN_ENV)
    default = model.default_server or (next(iter(model.servers)) if model.servers else "default")
    if override:
        base = servers.get(default) or Server(dsn=override)
        servers[default] = base.model_copy(update={"dsn": override})
    elif not model.servers:
        servers[default] = Server(dsn=EMBEDDED)
    return servers


# libyaml when PyYAML was built with it: a registry of 1,000 tenants parses in
# about 0.03 s instead of 0.35 s with the pure-Python loader (same nodes, marks).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(path: Path, text: str) -> tuple[dict[tuple[Any, ...], int], Any]:
    try:
        loader = _LOADER(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _index_lines(path, node, (), lines)
    return lines, data


def _index_lines(path: Path, node: yaml.Node, prefix: tuple[Any, ...], out: dict) -> None:
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise ConfigError(
                    f"{path.name}:{key_node.start_mark.line + 1}: key {key!r} appears twice"
                )
            seen.add(key)
            _index_lines(path, value_node, prefix + (key,), out)
            out[prefix + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(path, item, prefix + (i,), out)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _field(loc: tuple[Any, ...]) -> str:
    """``tenants[3].database``; a key that is not a plain word is shown quoted."""
    out = []
    for i, p in enumerate(loc):
        if isinstance(p, int):
            out.append(f"[{p}]")
        elif not _PLAIN_KEY.fullmatch(str(p)):
            out.append(f"[{str(p)!r}]")
        else:
            out.append(f".{p}" if i else str(p))
    return "".join(out)


def _where(path: Path, lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> str:
    loc = tuple(p for p in loc if p != "[key]")  # pydantic's marker for a bad mapping key
    field = _field(loc)
    probe = tuple(loc)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    head = f"{path.name}:{line}" if line else path.name
    return f"{head}: {field}" if field else head


def _format_validation(path: Path, lines: dict, exc: ValidationError) -> str:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the README's tenants.yaml reference)"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        out.append(f"{_where(path, lines, loc)}: {msg}")
    return "\n".join(out)
