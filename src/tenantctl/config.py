"""tenants.yaml: the only reader of the registry file and of the environment.

PyYAML reads the file into a node tree (yaml_lines.py, after the limits of
yaml_guard.py), so every error can name the file, the field path and the line.
pydantic validates each field against the dataclasses of config_schema.py
(config_validate.py, ``extra="forbid"``); what that gives is kept in the config
cache (config_cache.py), so a run whose file is unchanged imports neither
PyYAML nor pydantic. load_project checks across fields and resolves servers,
DSNs and database names on every load. What leaves this module is a frozen
:class:`Project`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from . import config_cache
from .config_fields import (
    INT2_MAX,
    MAX_DURATION_MS,
    RESERVED_ROLES,
    check_identifier,
    check_role,
    check_table_name,
    check_wave,
    parse_duration,
)
from .config_schema import (
    ConfigFile,
    Duration,
    Identifier,
    Int2Id,
    LintConfig,
    RoleName,
    Server,
    Settings,
    Shared,
    TableName,
    Tenant,
    WaveName,
)
from .dsn import EMBEDDED, check_dsn
from .errors import ConfigError

if TYPE_CHECKING:
    from .yaml_lines import LineIndex, Loc

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "DSN_ENV",
    "EMBEDDED",
    "INT2_MAX",
    "MAX_DURATION_MS",
    "RESERVED_ROLES",
    "SYSTEM_DATABASES",
    "ConfigFile",
    "Duration",
    "Identifier",
    "Int2Id",
    "LintConfig",
    "Project",
    "RoleName",
    "Server",
    "Settings",
    "Shared",
    "TableName",
    "Tenant",
    "TenantSpec",
    "WaveName",
    "check_dsn",
    "check_identifier",
    "check_role",
    "check_table_name",
    "check_wave",
    "find_config",
    "interpolate_env",
    "load_project",
    "parse_duration",
]

DEFAULT_CONFIG = "tenants.yaml"
CONFIG_ENV = "TENANTCTL_CONFIG"
DSN_ENV = "TENANTCTL_DSN"
STATE_DIR = ".tenantctl"  # next to tenants.yaml: the embedded server, the caches

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# PostgreSQL's own databases: never a tenant's, the template, control or shared one.
SYSTEM_DATABASES = ("postgres", "template0", "template1")

# A problem found after validation: where (a field path, or a name such as
# "--dsn" for a value not from the file) and what.
Problem: TypeAlias = "tuple[Loc | str, str]"


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
    # tenants.yaml names the server (or the mode fixes it: shared); False: placement decides
    server_given: bool = True


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
        return self.base_dir / STATE_DIR

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


def find_config(explicit: str | None, env: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if env is None else env
    raw = explicit or environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{raw}: no such file",
            hint="run tenantctl from the folder holding tenants.yaml, or pass --config PATH",
        )
    return path.resolve()


def load_project(
    path: Path, *, dsn: str | None = None, env: dict[str, str] | None = None,
    text: str | None = None, use_cache: bool = True,
) -> Project:
    """Read and validate tenants.yaml. Raises ConfigError naming file, field, line.

    Duplicate keys, which PyYAML would silently resolve to the last one, are errors.
    ``text``: the file's content when it is not read from ``path`` (a copy
    rewritten in memory, as the pytest plugin's); relative paths stay relative to
    ``path``'s folder. ``use_cache``: take the validated file from the config
    cache when its text is unchanged (config_cache.py), else validate it.
    """
    env = dict(os.environ if env is None else env)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
    state_dir = path.parent / STATE_DIR
    cached = config_cache.load(state_dir, text) if use_cache else None
    lines: LineIndex
    if cached is not None:
        model, lines = cached, {}  # a file with cross-field problems is read again below
    else:
        lines, model = _read_and_validate(path, text)
        config_cache.store(state_dir, text, model)

    problems: list[Problem] = []
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
        at: Loc = ("tenants", i)
        if t.clnt_id in seen:
            problems.append(
                ((*at, "clnt_id"), f"clnt_id {t.clnt_id} is already used by tenants[{seen[t.clnt_id]}]")
            )
            continue
        seen[t.clnt_id] = i
        server = t.server or default
        if t.server and t.server not in servers:
            problems.append(((*at, "server"), f"no server named {t.server!r}"))
            continue
        if t.wave and t.wave not in model.waves:
            problems.append(
                ((*at, "wave"), f"wave {t.wave!r} is not declared in `waves:` {list(model.waves)}")
            )
        mode = t.mode or model.default_mode
        if mode == "shared":
            database = model.shared.database
            server = model.shared.server or default
            for key in ("database", "server"):
                if getattr(t, key) is not None:
                    problems.append(((*at, key), f"a shared-mode tenant lives in "
                                     f"shared.{key}; remove {key}: here, or set mode: database"))
        else:
            database = t.database or model.database_pattern.format(clnt_id=t.clnt_id)
            other = databases.get(database)
            if other is not None:
                problems.append(((*at, "database"), f"database {database} is also used by clnt_id {other}"))
            databases[database] = t.clnt_id
        tenants.append(
            TenantSpec(t.clnt_id, t.name, t.sites, mode, t.wave, server, database,
                       server_given=t.server is not None or mode == "shared")
        )
    _check_databases(model, servers, default, tenants, seen, lines, problems)
    if problems and cached is not None:  # name each problem's line: read the file itself
        return load_project(path, dsn=dsn, env=env, text=text, use_cache=False)
    if problems:
        from .yaml_lines import where_in_file

        # messages that hold a DSN redacted it already (check_dsn)
        raise ConfigError("\n".join(
            f"{loc if isinstance(loc, str) else where_in_file(path, lines, loc)}: {msg}"
            for loc, msg in problems
        ))
    return Project(path, model, servers, default, tuple(tenants))


def _read_and_validate(path: Path, text: str) -> tuple[LineIndex, ConfigFile]:
    from .config_validate import validate
    from .yaml_lines import parse_yaml

    lines, data = parse_yaml(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: the top level must be a mapping of keys")
    return lines, validate(path, lines, data)


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
    lines: LineIndex,
    problems: list[Problem],
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
        taken = claimed.get((t.server, t.database))
        if taken is None:
            continue
        if loc not in lines and locs[taken] in lines:  # the name came from database_pattern
            problems.append((
                locs[taken],
                f"{t.database} is also the database of clnt_id {t.clnt_id} (tenants[{i}], "
                f"from database_pattern) on server {t.server}",
            ))
        else:
            problems.append((
                loc, f"{t.database} is the {taken} database ({_FIELDS[taken]}) on server {t.server}"
            ))


def _resolve_servers(
    model: ConfigFile,
    dsn: str | None,
    env: dict[str, str],
    problems: list[Problem],
) -> dict[str, Server]:
    """Servers with ${VAR}s expanded and the --dsn / TENANTCTL_DSN override applied;
    every DSN checked (scheme, ports) so a bad one is exit 2, not a failed connect."""
    servers: dict[str, Server] = {}
    for name, server in model.servers.items():
        try:
            servers[name] = replace(server, dsn=check_dsn(interpolate_env(server.dsn, env)))
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
        servers[default] = replace(base, dsn=override)
    elif not model.servers:
        servers[default] = Server(dsn=EMBEDDED)
    return servers


def _resolve_probe_dsn(
    model: ConfigFile, env: dict[str, str], problems: list[Problem]
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
    return replace(model, shared=replace(model.shared, probe_dsn=probe))
