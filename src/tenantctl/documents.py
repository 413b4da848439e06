"""The ``--json`` document and exit code of each command, built once.

The CLI prints these and ``tenantctl.api`` returns them (``Report.to_dict()``),
so a script that switches from ``tenantctl migrate --all --json`` to
``tenantctl.api.migrate(...)`` reads the same keys. Pure functions: no click,
no printing, no I/O except :func:`write_run_files`, which writes what
``--report FILE`` and ``--junit FILE`` ask for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import report
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

if TYPE_CHECKING:
    import os

    from .commands import StatusReport, VerifyReport
    from .lint import Finding
    from .outcome import RunResult


def run_document(run: RunResult, lint: Sequence[Finding]) -> dict[str, Any]:
    """provision / migrate / rollback / repair: the run, and the lint findings of
    the migrations that were pending for its tenants."""
    doc = run.to_json()
    doc["lint"] = [f.to_json() for f in lint]
    return doc


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


def status_document(result: StatusReport) -> dict[str, Any]:
    """``status --json``: every selected tenant's row, and the folder's latest version."""
    return {"tenants": [r.to_json() for r in result.rows], "latest": result.latest}


def status_exit_code(result: StatusReport, *, interrupted: bool) -> int:
    """status reports problems as states (``result``'s rows), not as an exit code
    (verify does); 130 when interrupted."""
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def verify_document(result: VerifyReport) -> dict[str, Any]:
    """``verify --json``: every finding, and a short row per tenant checked."""
    return {
        "findings": [f.to_json() for f in result.findings],
        "tenants": [{"clnt_id": r.clnt_id, "database": r.database, "version": r.version,
                     "pending": r.pending, "state": r.state} for r in result.rows],
    }


def verify_exit_code(result: VerifyReport, *, interrupted: bool) -> int:
    """1 on any finding (drift, gap, missing database, ...), 130 when interrupted."""
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if result.findings else EXIT_OK
