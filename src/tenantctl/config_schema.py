"""The schema of tenants.yaml: frozen dataclasses, their checks attached as metadata.

Each field's check (names, durations, ranges) rides in its ``Annotated`` type
as a :class:`Check`; pydantic reads them when config_validate.py validates a
file (``extra="forbid"``: an unknown key is an error). Defining these classes
needs no pydantic: a run whose tenants.yaml was validated before builds them
from the config cache (config_cache.py) without importing pydantic or PyYAML.
The checks across fields (server names, database collisions, ...) are
load_project's, in config.py.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from .config_fields import (
    INT2_MAX,
    check_identifier,
    check_role,
    check_table_name,
    check_wave,
    parse_duration,
    short_repr,
)
from .drivers.pg_version import CloneStrategy
from .lint_rules import RULES
from .migrations import Version
from .tenant_column import DEFAULT_TENANT_COLUMN, check_tenant_column

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema


@dataclass(frozen=True)
class Check:
    """A field's check, as ``Annotated`` metadata that pydantic applies.

    ``before``: called with what YAML produced, returns the value (or raises
    ValueError with the message for the user); ``after``: called with the typed
    value; ``limits``: pydantic ``Field`` constraints (``ge``, ``min_length``,
    ``strict``, ...). pydantic is imported only when a file is validated.
    """

    before: Callable[[Any], Any] | None = None
    after: Callable[[Any], Any] | None = None
    limits: tuple[tuple[str, object], ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic import AfterValidator, BeforeValidator, Field

        meta: list[object] = []
        if self.limits:
            meta.append(Field(**dict(self.limits)))  # type: ignore[call-overload]
        if self.before is not None:
            meta.append(BeforeValidator(self.before))
        if self.after is not None:
            meta.append(AfterValidator(self.after))
        return handler(Annotated[(source, *meta)] if meta else source)


def limits(**constraints: object) -> Check:
    return Check(limits=tuple(constraints.items()))


Duration = Annotated[float, Check(before=parse_duration)]
Identifier = Annotated[str, Check(before=check_identifier)]
RoleName = Annotated[str, Check(before=check_role)]
WaveName = Annotated[str, Check(before=check_wave)]
TableName = Annotated[str, Check(before=check_table_name)]
ColumnName = Annotated[str, Check(before=check_tenant_column)]
Int2Id = Annotated[int, limits(strict=True, ge=1, le=INT2_MAX)]


def check_rule_id(value: object) -> str:
    """A lint rule id of lint_rules.RULES (docs/lint-rules.md lists them)."""
    if isinstance(value, str) and value in RULES:
        return value
    close = difflib.get_close_matches(str(value), RULES, n=1) if isinstance(value, str) else []
    also = f"; did you mean {close[0]!r}?" if close else " (docs/lint-rules.md lists the rules)"
    raise ValueError(f"{short_repr(value)} is not a lint rule{also}")


def check_version(value: object) -> str:
    """A migration version (``1.0.41``, ``V2``, ``20240101``), as text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if isinstance(value, float):
            raise ValueError(f"{value!r} was read by YAML as a number (1.10 would become 1.1): "
                             "quote the version, e.g. \"1.10\"")
        raise ValueError(f"{short_repr(value)} is not a version such as 1.0.1")
    return Version.parse(str(value)).text


def check_tenant_name(name: str) -> str:
    # Names are data (bind parameters, settings), but a NUL cannot be stored in
    # PostgreSQL text at all, and line breaks or escapes garble logs.
    for i, ch in enumerate(name):
        if ch != "\t" and unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise ValueError(f"contains a control character (U+{ord(ch):04X}) at position {i + 1}")
    return name


def check_unique_sites(sites: tuple[int, ...]) -> tuple[int, ...]:
    dupes = sorted({s for s in sites if sites.count(s) > 1})
    if dupes:
        raise ValueError(f"site ids must be unique, repeated: {dupes}")
    return sites


def check_database_pattern(value: str) -> str:
    if not isinstance(value, str) or value.count("{clnt_id}") != 1:
        raise ValueError("must contain {clnt_id} exactly once")
    # the longest and the shortest result must both be plain identifiers
    for clnt_id in (INT2_MAX, 1):
        check_identifier(value.replace("{clnt_id}", str(clnt_id)))
    return value


RuleId = Annotated[str, Check(before=check_rule_id)]
MigrationVersion = Annotated[str, Check(before=check_version)]
GlobPattern = Annotated[str, limits(min_length=1)]
TenantName = Annotated[str, Check(after=check_tenant_name, limits=(("min_length", 1), ("max_length", 200)))]
SiteIds = Annotated[tuple[Int2Id, ...], Check(after=check_unique_sites)]
DatabasePattern = Annotated[str, Check(after=check_database_pattern)]

# pydantic's configuration of every class here (a plain dict: no pydantic import)
_STRICT_KEYS: dict[str, object] = {"extra": "forbid"}


@dataclass(frozen=True)
class Server:
    __pydantic_config__: ClassVar[dict[str, object]] = _STRICT_KEYS

    dsn: Annotated[str, limits(min_length=1)]
    max_connections: Annotated[int, limits(ge=1, le=10000)] | None = None
    # least-tenants placement puts no more registered tenants than this here
    max_tenants: Annotated[int, limits(ge=0, le=1_000_000)] | None = None


@dataclass(frozen=True)
class Shared:
    __pydantic_config__: ClassVar[dict[str, object]] = _STRICT_KEYS

    server: str | None = None
    database: Identifier = "cvs_shared"
    app_role: RoleName = "cvs_app"
    owner_role: RoleName = "cvs_owner"
    # tables without the tenant column that every tenant may read (reference data)
    global_tables: tuple[TableName, ...] = ()
    # how check-isolation logs in as app_role (default: the server DSN with the user swapped)
    probe_dsn: str | None = None


@dataclass(frozen=True)
class Settings:
    """Run settings; most can also be given on the command line.

    Durations (``lock_timeout``, ``statement_timeout``, ``lock_wait``) accept
    ``5``, ``5s``, ``500ms``, ``2min``, ``1h``, at most 2147483647 ms.

    ``allow_external_symlinks`` (default false): a migration or seed file that
    is a symbolic link to somewhere outside the project folder is refused
    unless this is true (a link could otherwise make tenantctl run SQL from
    anywhere on the machine).
    """

    __pydantic_config__: ClassVar[dict[str, object]] = _STRICT_KEYS

    concurrency: Annotated[int, limits(ge=1, le=1000)] = 8
    lock_timeout: Duration = 5.0
    statement_timeout: Duration = 0.0
    lock_wait: Duration = 120.0
    retries: Annotated[int, limits(ge=0, le=100)] = 3
    strict_lint: bool = False  # lint errors refuse a migrate/provision (exit 2)
    template: bool = True  # provision new databases by cloning a migrated template
    # how the template is cloned: auto (the faster for the server's major), wal_log, file_copy
    template_strategy: CloneStrategy = CloneStrategy.AUTO
    allow_external_symlinks: bool = False  # migration/seed links may point outside the project
    # where a tenant without `server:` goes (placement.py); pinned in the registry
    placement: Literal["default", "least-tenants"] = "default"


@dataclass(frozen=True)
class LintConfig:
    """The ``lint:`` block: how this project applies the lint rules (inputs.lint).

    ``disable``: rules that never report; ``severity``: a rule's severity
    overridden (error or warning); ``exclude``: fnmatch patterns of migration
    file names whose findings are not reported (a down script also by its up
    script's name); ``baseline``: findings in migrations at or below this
    version are not reported unless ``tenantctl lint --all-files``.
    """

    __pydantic_config__: ClassVar[dict[str, object]] = _STRICT_KEYS

    disable: tuple[RuleId, ...] = ()
    severity: dict[RuleId, Literal["error", "warning"]] = field(default_factory=dict)
    exclude: tuple[GlobPattern, ...] = ()
    baseline: MigrationVersion | None = None


@dataclass(frozen=True)
class Tenant:
    __pydantic_config__: ClassVar[dict[str, object]] = _STRICT_KEYS

    clnt_id: Int2Id
    name: TenantName
    sites: SiteIds = ()  # optional: an application without sites has none
    mode: Literal["database", "shared"] | None = None
    wave: WaveName | None = None
    server: str | None = None
    database: Identifier | None = None


@dataclass(frozen=True)
class ConfigFile:
    __pydantic_config__: ClassVar[dict[str, object]] = _STRICT_KEYS

    migrations: str = "migrations"
    seed: str | None = None
    database_pattern: DatabasePattern = "cvs_client_{clnt_id}"
    # the column of every tenant table holding the tenant's id (tenant_column.py)
    tenant_column: ColumnName = DEFAULT_TENANT_COLUMN
    control_database: Identifier = "tenantctl"
    template_database: Identifier = "tenantctl_template"
    default_mode: Literal["database", "shared"] = "database"
    default_server: str | None = None
    servers: dict[Identifier, Server] = field(default_factory=dict)
    shared: Shared = field(default_factory=Shared)
    waves: tuple[WaveName, ...] = ("canary",)
    settings: Settings = field(default_factory=Settings)
    lint: LintConfig = field(default_factory=LintConfig)
    tenants: tuple[Tenant, ...] = ()
