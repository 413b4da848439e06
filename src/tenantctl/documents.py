"""The ``--json`` document and exit code of each command, built once.

The CLI prints these and ``tenantctl.api`` returns them (``Report.to_dict()``),
so a script that switches from ``tenantctl migrate --all --json`` to
``tenantctl.api.migrate(...)`` reads the same keys. No click, no printing, no
I/O except :func:`write_run_files`, which writes what ``--report FILE`` and
``--junit FILE`` ask for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import report
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    import os

    from .outcome import RunResult, TenantResult
    from .status import StatusRow, VerifyFinding


def run_document(run: RunResult) -> dict[str, Any]:
    """provision / migrate / rollback / repair: the run, its tenants, the lint findings
    of the migrations pending for them, and ``error`` (its kind) when it did not end well."""
    return run.to_json()


def run_exit_code(run: RunResult, *, interrupted: bool) -> int:
    """130 when a signal (or the caller's stop event) cut the run short, 1 when a
    tenant failed or the ledger could not record a result, else 0."""
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if run.failed else EXIT_OK


def write_run_files(run: RunResult, doc: dict[str, Any], *,
                    report_file: str | os.PathLike[str] | None,
                    junit_file: str | os.PathLike[str] | None) -> None:
    """``--report FILE`` (the JSON document) and ``--junit FILE`` (one test case per tenant)."""
    if report_file:
        Path(report_file).write_text(report.to_json(doc) + "\n", encoding="utf-8")
    if junit_file:
        Path(junit_file).write_text(report.junit_xml(run) + "\n", encoding="utf-8")


def status_document(rows: Sequence[StatusRow], latest: str | None) -> dict[str, Any]:
    """``status --json``: every selected tenant's row, and the folder's latest version."""
    return {"tenants": [r.to_json() for r in rows], "latest": latest,
            "servers": report.servers_json(rows)}


def status_exit_code(rows: Sequence[StatusRow], *, interrupted: bool) -> int:
    """1 when a tenant's server (or database) cannot be reached; the other problems
    are states in ``rows`` (verify exits 1 on them); 130 when interrupted."""
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(r.state == "unreachable" for r in rows) else EXIT_OK


def verify_document(rows: Sequence[StatusRow], findings: Sequence[VerifyFinding]) -> dict[str, Any]:
    """``verify --json``: every finding, and a short row per tenant checked."""
    return {
        "findings": [f.to_json() for f in findings],
        "tenants": [{"clnt_id": r.clnt_id, "database": r.database, "version": r.version,
                     "pending": r.pending, "state": r.state} for r in rows],
    }


def verify_exit_code(findings: Sequence[VerifyFinding], *, interrupted: bool) -> int:
    """1 on any finding (drift, gap, missing database, ...), 130 when interrupted."""
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if findings else EXIT_OK


def _as_printed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as the CLI prints it and a reader parses it back (tuples become
    lists, anything else JSON lacks becomes its text)."""
    parsed: dict[str, Any] = json.loads(report.to_json(doc))
    return parsed


# ------------------------------------------------------------------ what tenantctl.api returns


@dataclass(frozen=True)
class RunReport:
    """What provision, migrate or rollback did (or, with ``dry_run``, would do)."""

    run: RunResult
    notices: tuple[str, ...] = ()  # what the CLI prints as ``warning:`` lines before the run
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0, 1 (a tenant failed) or 130 (``stop`` was set)."""
        return run_exit_code(self.run, interrupted=self.interrupted)

    @property
    def run_id(self) -> str:
        """The run's id in the ledger (``runs show`` and ``--resume`` take it)."""
        return self.run.run_id

    @property
    def tenants(self) -> tuple[TenantResult, ...]:
        return self.run.tenants

    def to_dict(self) -> dict[str, Any]:
        """Exactly the ``--json`` document of the same command (a fresh copy)."""
        return _as_printed(run_document(self.run))


@dataclass(frozen=True)
class StatusReport:
    """Each selected tenant's row of ``tenantctl status`` (version, pending, state)."""

    rows: tuple[StatusRow, ...]
    latest: str | None  # the folder's latest version
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 1 when a tenant is unreachable, 130 when stopped, else 0."""
        return status_exit_code(self.rows, interrupted=self.interrupted)

    def to_dict(self) -> dict[str, Any]:
        """Exactly the document of ``tenantctl status --json``."""
        return _as_printed(status_document(self.rows, self.latest))


@dataclass(frozen=True)
class VerifyReport:
    """``tenantctl verify``: every tenant checked, and each finding (drift, gap, ...)."""

    rows: tuple[StatusRow, ...]
    findings: tuple[VerifyFinding, ...]
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """1 on any finding, as ``tenantctl verify`` exits."""
        return verify_exit_code(self.findings, interrupted=self.interrupted)

    def to_dict(self) -> dict[str, Any]:
        """Exactly the document of ``tenantctl verify --json``."""
        return _as_printed(verify_document(self.rows, self.findings))
