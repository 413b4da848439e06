"""tenants.yaml: the only reader of the registry file and of the environment.

The file is parsed twice by PyYAML, once into plain data and once into a node
tree, so every validation error can name the file, the field path and the
line. pydantic models with ``extra="forbid"`` do the validation; what leaves
this module is a frozen :class:`Project`.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
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
from .redact import redact, redact_dsn

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
# PostgreSQL's own databases: never a tenant's, the template, control or shared one.
SYSTEM_DATABASES = ("postgres", "template0", "template1")
# PostgreSQL's timeouts (statement_timeout, lock_timeout) are int4 milliseconds;
# a longer value is refused by the server (22023) after databases were created.
MAX_DURATION_MS = 2147483647


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "a huge number"
    return text if len(text) <= limit else text[: limit - 4] + "…" + text[-3:]


def parse_duration(value: Any) -> float:
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
            raise ValueError(f"{_short(value)} is not a duration such as 5s, 500ms or 2min")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if math.isnan(seconds):
        raise ValueError("a duration must be a number, not NaN")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    # postgres.py sends int(seconds * 1000) ms
    if math.isinf(seconds) or seconds * 1000 >= MAX_DURATION_MS + 1:
        raise ValueError(
            f"{_short(value)} is too long: PostgreSQL's limit is {MAX_DURATION_MS}ms (about 24.8 days)"
        )
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


# Role names PostgreSQL reserves or that would hand the shared database to the
# wrong principal: ``postgres`` (the bootstrap superuser), ``pg_*`` (predefined
# roles), and the pseudo-roles GRANT/ALTER understand specially.
RESERVED_ROLES = frozenset({"postgres", "public", "none", "current_user", "session_user", "current_role"})


def check_role(value: str) -> str:
    check_identifier(value)
    if value in RESERVED_ROLES or value.startswith("pg_"):
        raise ValueError(
            f"{value!r} is reserved by PostgreSQL (postgres, pg_*, public, none, current_user, "
            "session_user, current_role): choose a role of its own"
        )
    return value


def check_dsn(dsn: str) -> str:
    """``dsn`` unchanged if it is ``embedded``, a postgresql:// (or postgres://) URL or
    a libpq key=value string with valid ports; else ValueError (password redacted)."""
    if dsn == EMBEDDED:
        return dsn
    scheme = _SCHEME.match(dsn)
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


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_PORT = re.compile(r"[0-9]{1,5}")


def _port_problem(port: str) -> str | None:
    if port == "":
        return None  # libpq: the default port
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        return f"port {_short(port)} is not a number from 1 to 65535"
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
                return f"unclosed '[' in host {_short(host)}"
            after = host[end + 1:]
            if after and not after.startswith(":"):
                return f"unexpected {_short(after)} after the IPv6 address"
            port = after[1:] if after else ""
        else:
            port = host.partition(":")[2]
            if ":" in port:
                return f"host {_short(host)} has more than one ':' (put IPv6 addresses in [ ])"
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
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            return f"{_short(key) if key else 'an empty key'} is not a key of a key=value pair"
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            return f"key {key!r} is not followed by '=' (key=value pairs)"
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value = []
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


Identifier = Annotated[str, BeforeValidator(check_identifier)]
RoleName = Annotated[str, BeforeValidator(check_role)]
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
    app_role: RoleName = "cvs_app"
    owner_role: RoleName = "cvs_owner"
    # tables without clnt_id that every tenant may read (reference data)
    global_tables: tuple[TableName, ...] = ()
    # how check-isolation logs in as app_role (default: the server DSN with the user swapped)
    probe_dsn: str | None = None


class Settings(_Model):
    """Run settings; most can also be given on the command line.

    Durations (``lock_timeout``, ``statement_timeout``, ``lock_wait``) accept
    ``5``, ``5s``, ``500ms``, ``2min``, ``1h``, at most 2147483647 ms.

    ``allow_external_symlinks`` (default false): a migration or seed file that
    is a symbolic link to somewhere outside the project folder is refused
    unless this is true (a link could otherwise make tenantctl run SQL from
    anywhere on the machine).
    """

    concurrency: int = Field(default=8, ge=1, le=1000)
    lock_timeout: Duration = 5.0
    statement_timeout: Duration = 0.0
    lock_wait: Duration = 120.0
    retries: int = Field(default=3, ge=0, le=100)
    strict_lint: bool = False  # lint errors refuse a migrate/provision (exit 2)
    template: bool = True  # provision new databases by cloning a migrated template
    allow_external_symlinks: bool = False  # migration/seed links may point outside the project


class Tenant(_Model):
    clnt_id: Int2Id
    name: str = Field(min_length=1, max_length=200)
    sites: tuple[Int2Id, ...] = Field(min_length=1)
    mode: Literal["database", "shared"] | None = None
    wave: WaveName | None = None
    server: str | None = None
    database: Identifier | None = None

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        # Names are data (bind parameters, settings), but a NUL cannot be stored
        # in PostgreSQL text at all, and line breaks or escapes garble logs.
        for i, ch in enumerate(name):
            if ch != "\t" and unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
                raise ValueError(
                    f"contains a control character (U+{ord(ch):04X}) at position {i + 1}"
                )
        return name

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

    def database_roles(self) -> dict[str, dict[str, str]]:
        """Per server, every database name bound to a purpose: ``{server: {database:
        purpose}}`` with purpose ``"system"`` (postgres, template0, template1),
        ``"template"``, ``"control"``, ``"shared"`` or ``"tenant <clnt_id>"``.

        load_project guarantees no name has two purposes on one server; use this
        at run time to check that a database about to be created or used is not
        one tenantctl (or PostgreSQL) keeps for something else. A fresh dict.
        """
        roles: dict[str, dict[str, str]] = {}

        def claim(server: str, name: str, purpose: str) -> None:
            on = roles.setdefault(server, dict.fromkeys(SYSTEM_DATABASES, "system"))
            on.setdefault(name, purpose)

        for server in self.servers:
            roles.setdefault(server, dict.fromkeys(SYSTEM_DATABASES, "system"))
        for server, name, purpose in _purpose_databases(self.file, self.servers, self.default_server):
            claim(server, name, purpose)
        for t in self.tenants:
            if t.mode == "database":
                claim(t.server, t.database, f"tenant {t.clnt_id}")
        return roles

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
        raise ConfigError(redact(_format_validation(path, lines, exc))) from None

    problems: list[tuple[tuple[Any, ...] | str, str]] = []
    servers = _resolve_servers(model, dsn, env, problems)
    model = _resolve_probe_dsn(model, env, problems)
    if model.shared.app_role == model.shared.owner_role:
        problems.append((
            ("shared", "owner_role"),
            f"{model.shared.owner_role!r} is also shared.app_role: the application role must "
            "not own the tables (it would bypass row-level security)",
        ))
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
            for key in ("database", "server"):
                if getattr(t, key) is not None:
                    problems.append((where + (key,), f"a shared-mode tenant lives in "
                                     f"shared.{key}; remove {key}: here, or set mode: database"))
        else:
            database = t.database or model.database_pattern.format(clnt_id=t.clnt_id)
            other = databases.get(database)
            if other is not None:
                problems.append((where + ("database",), f"database {database} is also used by clnt_id {other}"))
            databases[database] = t.clnt_id
        tenants.append(
            TenantSpec(t.clnt_id, t.name, t.sites, mode, t.wave, server, database)
        )
    _check_databases(model, servers, default, tenants, seen, lines, problems)
    if problems:
        # messages that hold a DSN redacted it already (check_dsn)
        raise ConfigError("\n".join(
            f"{loc if isinstance(loc, str) else _where(path, lines, loc)}: {msg}"
            for loc, msg in problems
        ))
    return Project(path, model, servers, default, tuple(tenants))


_FIELDS = {"template": "template_database", "control": "control_database", "shared": "shared.database"}


def _purpose_databases(
    file: ConfigFile, servers: dict[str, Server], default: str
) -> list[tuple[str, str, str]]:
    """(server, database, purpose) of the databases tenantctl itself uses: the
    template on every server (any of them may provision), the control database
    on the default server, the shared database on its server."""
    out = [(server, file.template_database, "template") for server in servers]
    out.append((default, file.control_database, "control"))
    out.append((file.shared.server or default, file.shared.database, "shared"))
    return out


def _check_databases(
    model: ConfigFile,
    servers: dict[str, Server],
    default: str,
    tenants: list[TenantSpec],
    index: dict[int, int],
    lines: dict[tuple[Any, ...], int],
    problems: list[tuple[tuple[Any, ...] | str, str]],
) -> None:
    """Every database name bound to one purpose per server: PostgreSQL's own,
    the template, the control and the shared database, each dedicated tenant's.

    A collision is reported at the name the file spells out (a tenant's
    ``database:`` or ``template_database:``), not at a default or a pattern.
    """
    system = ", ".join(SYSTEM_DATABASES)
    locs = {"template": ("template_database",), "control": ("control_database",),
            "shared": ("shared", "database")}
    names = {"template": model.template_database, "control": model.control_database,
             "shared": model.shared.database}
    # the purpose databases: not PostgreSQL's own, and pairwise distinct wherever they live
    for purpose, name in names.items():
        if name in SYSTEM_DATABASES:
            problems.append((locs[purpose], f"{name} is one of PostgreSQL's own databases ({system})"))
    purposes = list(names)
    for a_i, a in enumerate(purposes):
        for b in purposes[a_i + 1:]:
            if names[a] != names[b] or names[a] in SYSTEM_DATABASES:
                continue
            # blame the one written in the file (the later line if both are)
            blame, other = (a, b) if lines.get(locs[a], 0) > lines.get(locs[b], 0) else (b, a)
            problems.append((locs[blame], f"{names[blame]} is also the {other} database ({_FIELDS[other]})"))
    claimed: dict[tuple[str, str], str] = {}
    for server, name, purpose in _purpose_databases(model, servers, default):
        claimed.setdefault((server, name), purpose)
    for t in tenants:
        if t.mode != "database":
            continue  # a shared-mode tenant lives in the shared database: its purpose
        i = index[t.clnt_id]
        loc = ("tenants", i, "database")
        if t.database in SYSTEM_DATABASES:
            problems.append((loc, f"{t.database} is one of PostgreSQL's own databases ({system})"))
            continue
        purpose = claimed.get((t.server, t.database))
        if purpose is None:
            continue
        if loc not in lines and locs[purpose] in lines:  # the name came from database_pattern
            problems.append((
                locs[purpose],
                f"{t.database} is also the database of clnt_id {t.clnt_id} (tenants[{i}], "
                f"from database_pattern) on server {t.server}",
            ))
        else:
            problems.append((
                loc, f"{t.database} is the {purpose} database ({_FIELDS[purpose]}) on server {t.server}"
            ))


def _resolve_servers(
    model: ConfigFile,
    dsn: str | None,
    env: dict[str, str],
    problems: list[tuple[tuple[Any, ...] | str, str]],
) -> dict[str, Server]:
    """Servers with ${VAR}s expanded and the --dsn / TENANTCTL_DSN override applied;
    every DSN checked (scheme, ports) so a bad one is exit 2, not a failed connect."""
    servers: dict[str, Server] = {}
    for name, server in model.servers.items():
        try:
            servers[name] = server.model_copy(
                update={"dsn": check_dsn(interpolate_env(server.dsn, env))}
            )
        except ValueError as exc:
            problems.append((("servers", name, "dsn"), str(exc)))
    override = dsn or env.get(DSN_ENV)
    default = model.default_server or (next(iter(model.servers)) if model.servers else "default")
    if override:
        try:
            check_dsn(override)
        except ValueError as exc:
            problems.append(("--dsn (or TENANTCTL_DSN)" if dsn else DSN_ENV, str(exc)))
        base = servers.get(default) or Server(dsn=override)
        servers[default] = base.model_copy(update={"dsn": override})
    elif not model.servers:
        servers[default] = Server(dsn=EMBEDDED)
    return servers


def _resolve_probe_dsn(
    model: ConfigFile, env: dict[str, str], problems: list[tuple[tuple[Any, ...] | str, str]]
) -> ConfigFile:
    """shared.probe_dsn with ${VAR}s expanded (it usually holds the app role's password)."""
    raw = model.shared.probe_dsn
    if raw is None:
        return model
    try:
        probe = check_dsn(interpolate_env(raw, env))
    except ValueError as exc:
        problems.append((("shared", "probe_dsn"), str(exc)))
        return model
    if probe == EMBEDDED:
        problems.append((("shared", "probe_dsn"), "must be a connection string of the app role"))
        return model
    shared = model.shared.model_copy(update={"probe_dsn": probe})
    return model.model_copy(update={"shared": shared})


# libyaml when PyYAML was built with it: a registry of 1,000 tenants parses in
# about 0.03 s instead of 0.35 s with the pure-Python loader (same nodes, marks).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# Limits checked on the event stream before anything is composed, so hostile
# YAML costs a linear scan of its text and nothing more:
# * nesting: a tenants.yaml is 4 levels deep (tenants / entry / sites / id);
#   100,000 levels crashed the process (SIGSEGV in the recursive composer).
MAX_YAML_DEPTH = 50
# * aliases: a registry needs few or none (an anchored tenant entry merged into
#   a few others with `<<: *base`, a shared `sites:` list). 100 uses is far above
#   that and still small enough to read every one of them.
MAX_YAML_ALIASES = 100
# * expansion: each alias use stands for its whole anchored node, and anchors
#   may nest ("billion laughs": 9 levels of 9 aliases expand to 387 million
#   nodes with only 72 alias uses; it ran for minutes and reached 12 GB). Every
#   later step (line index, validation) walks the expanded tree, so the nodes
#   aliases add are counted and bounded too.
MAX_YAML_ALIAS_NODES = 100_000


_NUMBER_LIKE = re.compile(r"[-+]?[0-9][0-9a-fA-FxXoObB_:.]*")


def _check_yaml_events(path: Path, text: str) -> None:
    """Refuse a document nested too deep or expanding too much through aliases.

    Walks PyYAML's event stream (libyaml when available): no recursion, no
    composed tree, memory bounded by the anchors' sizes.
    """
    depth = 0
    aliases = 0
    added = 0
    sizes: dict[str, int] = {}  # anchor -> nodes it stands for, expanded
    frames: list[list[Any]] = []  # open collections: [nodes so far, anchor]
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{path.name}:{event.start_mark.line + 1}: YAML nested more than "
                    f"{MAX_YAML_DEPTH} levels deep (a tenants.yaml needs about 4)"
                )
            frames.append([1, event.anchor])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            count, anchor = frames.pop()
            if anchor is not None:
                sizes[anchor] = count
            if frames:
                frames[-1][0] += count
        elif isinstance(event, yaml.ScalarEvent):
            if event.implicit[0] and len(event.value) > 1000 and _NUMBER_LIKE.fullmatch(event.value):
                # PyYAML would turn it into an int; past 4,300 digits Python refuses
                raise ConfigError(
                    f"{path.name}:{event.start_mark.line + 1}: a number of "
                    f"{len(event.value):,} characters (quote it if it is meant as text)"
                )
            if event.anchor is not None:
                sizes[event.anchor] = 1
            if frames:
                frames[-1][0] += 1
        elif isinstance(event, yaml.AliasEvent):
            where = f"{path.name}:{event.start_mark.line + 1}"
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(
                    f"{where}: more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                    "write the values out instead"
                )
            if any(anchor == event.anchor for _, anchor in frames):
                raise ConfigError(f"{where}: YAML alias *{event.anchor} refers to a node containing itself")
            size = sizes.get(event.anchor)
            if size is None:
                continue  # undefined: the composer reports it with its line
            added += size
            if added > MAX_YAML_ALIAS_NODES:
                raise ConfigError(
                    f"{where}: YAML aliases expand to more than {MAX_YAML_ALIAS_NODES:,} "
                    "values (nested anchors, as in a \"billion laughs\" document)"
                )
            if frames:
                frames[-1][0] += size


def _parse_yaml(path: Path, text: str) -> tuple[dict[tuple[Any, ...], int], Any]:
    try:
        _check_yaml_events(path, text)
        lines: dict[tuple[Any, ...], int] = {}
        loader = _LOADER(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return lines, None
            # index first: constructing flattens `<<: *base` merges into the
            # mapping in place, and an explicit key overriding a merged one
            # would then look like a duplicate
            _index_lines(path, node, (), lines)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, max(0, exc.position)) + 1
        raise ConfigError(
            f"{path.name}:{line}: not valid YAML: character U+{exc.character:04X}: {exc.reason}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    return lines, data


def _index_lines(path: Path, node: yaml.Node, prefix: tuple[Any, ...], out: dict) -> None:
    out[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    f"{path.name}:{key_node.start_mark.line + 1}: a key must be a plain value, "
                    "not a list or a mapping"
                )
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
            msg = f"{msg} (got {_short(err['input'], 80)})"
        out.append(f"{_where(path, lines, loc)}: {msg}")
    return "\n".join(out)
