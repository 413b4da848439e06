"""Everything a command reads from disk, validated before any database is touched.

tenants.yaml (already a :class:`~tenantctl.config.Project`), the migrations
folder, the seed, lint findings and ``--to`` targets: any problem here is bad
input (exit 2) and nothing has been changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path

from .config import Project
from .errors import BadInputError, MigrationFileError
from .lint_rules import Finding
from .migrations import Migration, Script, Version, load_migrations, parse_name, read_script
from .modes import Mode
from .outcome import RunResult
from .parse_cache import CACHE_DIR, ParseCache, text_key, tool_identity
from .plan import missing_downs


@dataclass(frozen=True)
class Inputs:
    project: Project
    migrations: tuple[Migration, ...]
    seed: Script | None
    notices: tuple[str, ...] = ()  # entries of the folder that were ignored, by name
    cache: ParseCache = field(default_factory=lambda: ParseCache(None), compare=False, repr=False)

    @property
    def latest(self) -> str | None:
        return self.migrations[-1].version.text if self.migrations else None

    @property
    def scripts(self) -> list[Script]:
        """Every script in version order (each up, then its down), then the seed."""
        out = [s for m in self.migrations for s in (m.up, m.down) if s is not None]
        return out + ([self.seed] if self.seed is not None else [])


def parse_all(inputs: Inputs) -> None:
    """Split every script into statements (from the parse cache where it can):
    raises MigrationFileError (exit 2) at the first broken one. Runs call this
    before touching anything unless every tenant's marker proves there is
    nothing to do (runs.py); lint, check-reversible and rollback need it too."""
    inputs.cache.prime(inputs.scripts)


def load_inputs(project: Project, *, with_seed: bool = False) -> Inputs:
    allow = project.settings.allow_external_symlinks
    notices: list[str] = []
    migrations = load_migrations(
        project.migrations_dir, notices=notices, allow_external_symlinks=allow)
    seed = None
    if with_seed and project.seed_path is not None:
        # not resolved: a symlinked seed is judged by where it points
        seed_path = project.base_dir / (project.file.seed or "")
        if not seed_path.is_file():
            raise MigrationFileError(f"seed file {seed_path} does not exist")
        seed = read_script(seed_path, root=project.base_dir, allow_external_symlinks=allow)
    return Inputs(project, migrations, seed, tuple(notices),
                  ParseCache(project.state_dir / CACHE_DIR))


@dataclass(frozen=True)
class LintReport:
    """Findings after the project's ``lint:`` block; ``hidden``: how many the baseline hid."""

    findings: list[Finding]
    hidden: int = 0
    baseline: str | None = None


def lint(inputs: Inputs, only: tuple[Path, ...] = (), *, all_files: bool = False) -> list[Finding]:
    """Lint findings for the folder (or for ``only`` these files, judged in context).

    Files outside the folder are linted after the folder's migrations, so
    "existing table" means what the folder creates. tenants.yaml's ``lint:``
    block applies (see :func:`lint_report`).
    """
    return lint_report(inputs, only, all_files=all_files).findings


def lint_report(inputs: Inputs, only: tuple[Path, ...] = (), *, all_files: bool = False) -> LintReport:
    """:func:`lint`, with the count of findings the baseline hid.

    tenants.yaml's ``lint:`` block: ``disable``d rules and files matching an
    ``exclude`` pattern report nothing (excluded files are still read, so the
    tables they create are known); ``severity`` overrides a rule's; findings in
    migrations at or below ``baseline`` are hidden unless ``all_files``.
    """
    migrations = list(inputs.migrations)
    wanted = {p.resolve() for p in only}
    known = {m.up.path.resolve() for m in migrations}
    for path in sorted(wanted - known):
        try:
            version, description, is_down = parse_name(path.name)
        except ValueError:
            version, description, is_down = Version.parse("999999"), path.stem, False
        if not is_down:
            migrations.append(Migration(version, description, read_script(path)))
    project = inputs.project
    findings = _folder_findings(inputs, tuple(migrations), cached=not wanted)
    if wanted:
        names = {p.name for p in wanted}
        findings = [f for f in findings if f.file in names]
    config = project.file.lint
    baseline = None if config.baseline is None else Version.parse(config.baseline)
    # a finding's file -> (its migration's version, the up script's name)
    owner: dict[str, tuple[Version | None, str]] = {
        s.path.name: (m.version, m.up.path.name) for m in migrations for s in (m.up, m.down) if s is not None}
    kept: list[Finding] = []
    hidden = 0
    for f in findings:
        at, up_name = owner.get(f.file, (None, f.file))
        if f.rule in config.disable or any(
                fnmatchcase(f.file, p) or fnmatchcase(up_name, p) for p in config.exclude):
            continue
        if baseline is not None and at is not None and not at > baseline and not all_files:
            hidden += 1
            continue
        severity = config.severity.get(f.rule, f.severity)
        kept.append(f if severity == f.severity else replace(f, severity=severity))
    return LintReport(kept, hidden, config.baseline)


def _folder_findings(inputs: Inputs, migrations: tuple[Migration, ...], *, cached: bool) -> list[Finding]:
    """lint_migrations over the folder, from the parse cache when nothing changed
    (every file's text, the shared tables and mode, tenantctl's and pglast's versions)."""
    project = inputs.project
    global_tables = frozenset(project.file.shared.global_tables)
    shared_mode = any(t.mode == Mode.SHARED for t in project.tenants)
    tenant_column = project.file.tenant_column
    key = ""
    if cached:
        digest = hashlib.sha256(
            f"{tool_identity()}\0{sorted(global_tables)}\0{shared_mode}\0{tenant_column}".encode())
        for m in migrations:
            for s in (m.up, m.down):
                if s is not None:
                    digest.update(f"\n{m.version.text}\0{s.path.name}\0{text_key(s)}".encode())
        key = digest.hexdigest()
        found = inputs.cache.lint(key)
        if found is not None:
            return found
    parse_all(Inputs(project, migrations, None, (), inputs.cache))  # broken files: exit 2
    from .lint import lint_migrations  # pglast: imported only when something is linted

    findings = lint_migrations(migrations, global_tables=global_tables, shared_mode=shared_mode,
                               tenant_column=tenant_column)
    if cached:
        inputs.cache.remember_lint(key, findings)
    return findings


def pending_lint(inputs: Inputs, lint: Callable[[], Sequence[Finding]], run: RunResult) -> list[Finding]:
    """The lint findings of migrations that were pending for at least one tenant of
    the run (what it applied, or could not reach): a 700-file history's old
    findings are not repeated on every nightly run. ``tenantctl lint`` shows all.
    ``lint`` gives the folder's findings; it is called only when something was
    pending, so a no-op run lints (and parses) nothing."""
    versions = {}
    for m in inputs.migrations:
        versions[m.filename] = m.version
        if m.down is not None:
            versions[m.down.path.name] = m.version
    oldest: Version | None = None
    unknown = False
    for tenant in run.tenants:
        if tenant.from_version is None:
            unknown = True
            break
        start = Version.parse(tenant.from_version)
        oldest = start if oldest is None or start < oldest else oldest
    if unknown or oldest is None:
        return list(lint()) if unknown else []
    if not any(oldest < m.version for m in inputs.migrations):
        return []  # nothing was pending for anyone: nothing to lint
    return [f for f in lint() if f.file not in versions or oldest < versions[f.file]]


def refuse_on_lint_errors(findings: list[Finding]) -> None:
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        listed = "\n  ".join(f"{f.file}:{f.line}: [{f.rule}] {f.message}" for f in errors)
        raise MigrationFileError(
            f"{len(errors)} lint error(s) and strict lint is on:\n  {listed}",
            hint="fix them, or accept a rule in the file with `-- tenantctl: allow <rule>`",
        )


def resolve_target(inputs: Inputs, to: str | None) -> Version | None:
    return known_version(inputs.migrations, "--to", to, inputs.project.migrations_dir.name)


EMPTY = Version.parse("0")  # `rollback --to 0`: before the first migration


def rollback_target(inputs: Inputs, to: str | None) -> Version | None:
    """rollback's ``--to``: a version in the folder, or ``0`` (back to empty)."""
    try:
        empty = to is not None and Version.parse(to) == EMPTY
    except ValueError:
        empty = False  # resolve_target names what is wrong with it
    return EMPTY if empty else resolve_target(inputs, to)


def known_version(migrations: tuple[Migration, ...], flag: str, text: str | None,
                  folder: str) -> Version | None:
    """The version ``text`` names, which must be one in the folder (None: none given)."""
    if text is None:
        return None
    try:
        version = Version.parse(text)
    except ValueError as exc:
        raise BadInputError(f"{flag}: {exc}") from None
    if not any(m.version == version for m in migrations):
        known = (f"{migrations[0].version} … {migrations[-1].version}" if migrations else "none")
        raise BadInputError(f"{flag} {text}: no migration with that version in {folder}/",
                            hint=f"versions in the folder: {known}")
    return version


def check_rollback_inputs(inputs: Inputs, target: Version) -> None:
    """Refuse (exit 2) before touching anything when a needed down script is missing."""
    missing = missing_downs(inputs.migrations, target)
    if missing:
        raise MigrationFileError(
            f"cannot roll back to {target}: {len(missing)} down script(s) missing:\n  "
            + "\n  ".join(missing),
            hint="write them (same stem + .down.sql); nothing was changed",
        )
