"""The schema of tenants.yaml: pydantic models, ``extra="forbid"``, frozen.

They check each field on its own (names, durations, ranges); the checks across
fields (server names, database collisions, ...) are load_project's, in config.py.
"""

from __future__ import annotations

import difflib
import unicodedata
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from .config_fields import (
    INT2_MAX,
    check_identifier,
    check_role,
    check_table_name,
    check_wave,
    parse_duration,
    short_repr,
)
from .lint_rules import RULES
from .migrations import Version
from .tenant_column import DEFAULT_TENANT_COLUMN, check_tenant_column

Duration = Annotated[float, BeforeValidator(parse_duration)]
Identifier = Annotated[str, BeforeValidator(check_identifier)]
RoleName = Annotated[str, BeforeValidator(check_role)]
WaveName = Annotated[str, BeforeValidator(check_wave)]
TableName = Annotated[str, BeforeValidator(check_table_name)]
ColumnName = Annotated[str, BeforeValidator(check_tenant_column)]
Int2Id = Annotated[int, Field(strict=True, ge=1, le=INT2_MAX)]


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


RuleId = Annotated[str, BeforeValidator(check_rule_id)]
MigrationVersion = Annotated[str, BeforeValidator(check_version)]
GlobPattern = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Server(_Model):
    dsn: str = Field(min_length=1)
    max_connections: int | None = Field(default=None, ge=1, le=10000)
    # least-tenants placement puts no more registered tenants than this here
    max_tenants: int | None = Field(default=None, ge=0, le=1_000_000)


class Shared(_Model):
    server: str | None = None
    database: Identifier = "cvs_shared"
    app_role: RoleName = "cvs_app"
    owner_role: RoleName = "cvs_owner"
    # tables without the tenant column that every tenant may read (reference data)
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
    # where a tenant without `server:` goes (placement.py); pinned in the registry
    placement: Literal["default", "least-tenants"] = "default"


class LintConfig(_Model):
    """The ``lint:`` block: how this project applies the lint rules (inputs.lint).

    ``disable``: rules that never report; ``severity``: a rule's severity
    overridden (error or warning); ``exclude``: fnmatch patterns of migration
    file names whose findings are not reported (a down script also by its up
    script's name); ``baseline``: findings in migrations at or below this
    version are not reported unless ``tenantctl lint --all-files``.
    """

    disable: tuple[RuleId, ...] = ()
    severity: dict[RuleId, Literal["error", "warning"]] = Field(default_factory=dict)
    exclude: tuple[GlobPattern, ...] = ()
    baseline: MigrationVersion | None = None


class Tenant(_Model):
    clnt_id: Int2Id
    name: str = Field(min_length=1, max_length=200)
    sites: tuple[Int2Id, ...] = ()  # optional: an application without sites has none
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
    # the column of every tenant table holding the tenant's id (tenant_column.py)
    tenant_column: ColumnName = DEFAULT_TENANT_COLUMN
    control_database: Identifier = "tenantctl"
    template_database: Identifier = "tenantctl_template"
    default_mode: Literal["database", "shared"] = "database"
    default_server: str | None = None
    servers: dict[Identifier, Server] = Field(default_factory=dict)
    shared: Shared = Field(default_factory=Shared)
    waves: tuple[WaveName, ...] = ("canary",)
    settings: Settings = Field(default_factory=Settings)
    lint: LintConfig = Field(default_factory=LintConfig)
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
