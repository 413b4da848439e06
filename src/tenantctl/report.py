"""Rendering results for people (text) and machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .outcome import APPLIED, FAILED, REVERTED, SKIPPED, UP_TO_DATE, RunResult, TenantResult

if TYPE_CHECKING:
    from .commands import ReversibleReport, ReversibleRequest
    from .inputs import LintReport
    from .isolation_check import IsolationFinding
    from .lint_rules import Finding
    from .run_history import RunRow
    from .status import StatusRow, VerifyFinding

_MARK = {APPLIED: "applied", REVERTED: "reverted", UP_TO_DATE: "up to date", FAILED: "FAILED",
         SKIPPED: "skipped"}


def tenant_line(r: TenantResult, *, dry_run: bool = False, command: str = "") -> str:
    """One line per tenant, as it finishes (goes to stderr: it is a log).

    A dry run says what *would* happen, in the words of the real run's line
    (``repair`` re-records checksums: its ``applied`` versions are re-recorded).
    """
    head = f"clnt_id {r.clnt_id:>5}  {r.database:<24}"
    versions = f"{r.from_version or '-'} -> {r.to_version or '-'}"
    if r.status == FAILED and r.error is not None:
        where = f" in {r.error.where}" if r.error.where else ""
        return f"{head} FAILED{where}: [{r.error.sqlstate or '-'}] {r.error.message}"
    if r.status == SKIPPED:
        return f"{head} skipped ({r.reason})" if r.reason else f"{head} skipped"
    if r.status in (APPLIED, REVERTED):
        done = _DONE_WORDS[dry_run]
        extra = []
        if r.created:
            extra.append(done["created"])
        if r.applied:
            extra.append(f"{done['repaired' if command == 'repair' else 'applied']} "
                         f"{', '.join(r.applied)}")
        if r.reverted:
            extra.append(f"{done['reverted']} {', '.join(r.reverted)}")
        if r.seeded:
            extra.append(done["seeded"])
        tail = f" ({'; '.join(extra)})" if extra else ""
        return f"{head} {versions}{tail} [{r.duration_ms} ms]"
    return f"{head} up to date at {r.to_version or '-'}"


_DONE_WORDS = {
    False: {"created": "database created", "applied": "applied", "repaired": "re-recorded",
            "reverted": "reverted", "seeded": "seeded"},
    True: {"created": "would create database", "applied": "would apply",
           "repaired": "would re-record", "reverted": "would revert", "seeded": "would seed"},
}


def run_summary(run: RunResult) -> str:
    marks = _MARK if not run.dry_run else {
        **_MARK, APPLIED: "to re-record" if run.command == "repair" else "to apply",
        REVERTED: "to revert"}
    parts = [f"{run.count(s)} {marks[s]}" for s in marks if run.count(s)]
    lines = [
        f"{run.command} run {run.run_id}: {len(run.tenants)} tenant(s): "
        f"{', '.join(parts) or 'nothing to do'} in {run.duration_ms / 1000:.1f}s"
        + (" (dry run: nothing changed)" if run.dry_run else "")
    ]
    lines += [f"note: {note}" for note in run.notes]
    if run.recording_error:
        lines.append(f"FAILED: {run.recording_error}")
    if run.interrupted:
        lines.append("interrupted: tenants not started are reported skipped; re-run to finish")
    failed = [t for t in run.tenants if t.status == FAILED]
    if failed:
        lines.append("failed tenants: " + " ".join(str(t.clnt_id) for t in failed))
    drifted = [str(t.clnt_id) for t in failed if t.error is not None and t.error.kind == "drift"]
    misplaced = [str(t.clnt_id) for t in failed if t.error is not None
                 and t.error.kind == "placement"]
    others = [str(t.clnt_id) for t in failed if str(t.clnt_id) not in drifted + misplaced]
    if misplaced:
        lines.append("tenants.yaml places these elsewhere than their data: move them with: "
                     f"tenantctl move {' '.join(misplaced)} (or revert tenants.yaml)")
    if drifted:
        lines.append("applied files were edited: restore them, or accept the edits with: "
                     f"tenantctl repair {' '.join(drifted)}")
    if others:
        lines.append(f"re-run them with: tenantctl {run.command} {' '.join(others)}")
    return "\n".join(lines)


def one_line(text: str) -> str:
    """Text for a table cell: line breaks and runs of white space folded."""
    return " ".join(text.split())


def status_table(rows: Sequence[StatusRow]) -> str:
    width = max([6, *(len(r.server) for r in rows)])
    header = (f"{'clnt_id':>7}  {'server':<{width}}  {'mode':<8}  {'database':<24}  "
              f"{'version':<10}  {'pending':>7}  state / last error")
    out = [header, "-" * len(header)]
    for r in rows:
        row = r.to_json()
        note = r.state
        if r.move is not None:
            note += f" (to {r.move.declared.describe()}: tenantctl move {r.clnt_id})"
        if row["drift"]:
            note += f" ({', '.join(row['drift'])})"
        if row["gaps"]:
            note += f" (not recorded: {', '.join(row['gaps'])})"
        if row["partial"]:
            note += f"; partial: {', '.join(row['partial'])}"
        err = r.last_error
        if err and r.last_status == FAILED:
            note += f"; last error [{err.get('sqlstate') or '-'}] {one_line(str(err.get('message')))}"
        pending = "-" if r.pending is None else str(r.pending)
        out.append(
            f"{r.clnt_id:>7}  {r.server:<{width}}  {r.mode:<8}  {r.database:<24}  "
            f"{r.version or '-':<10}  {pending:>7}  {note}"
        )
    out.append(status_summary(rows))
    return "\n".join(out)


def servers_json(rows: Sequence[StatusRow]) -> list[dict[str, object]]:
    """Each server of the rows with its PostgreSQL version (None: not reachable)."""
    seen: dict[str, StatusRow] = {}
    for r in rows:
        if r.server == "-":  # a tenant no server can take
            continue
        if r.server_version is not None or r.server not in seen:
            seen[r.server] = r
    return [{"name": name, "version": r.server_version, "supported": r.server_supported}
            for name, r in sorted(seen.items())]


def status_summary(rows: Sequence[StatusRow]) -> str:
    """``12 tenant(s) on 3 server(s): 10 up_to_date, 2 unreachable; per server: a 4
    (PostgreSQL 15.18), b 4 (PostgreSQL 18.1), c 4`` (no version: not reachable)."""
    states: dict[str, int] = {}
    servers: dict[str, int] = {}
    versions: dict[str, str] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
        servers[r.server] = servers.get(r.server, 0) + 1
        if r.server_version is not None:
            below = "" if r.server_supported else ", below the supported range"
            versions[r.server] = f" (PostgreSQL {r.server_version}{below})"
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    spread = ", ".join(f"{name} {n}{versions.get(name, '')}" for name, n in sorted(servers.items()))
    return (f"{len(rows)} tenant(s) on {len(servers)} server(s): {counts or 'none'}"
            + (f"; per server: {spread}" if spread else ""))


def verify_text(rows: Sequence[StatusRow], findings: Sequence[VerifyFinding]) -> str:
    lines = []
    for f in findings:
        where = f" {f.file or ''} (version {f.version})" if f.version else ""
        lines.append(f"clnt_id {f.clnt_id} {f.database}: {f.kind}{where}: {f.detail}")
    pending = sum(r.pending or 0 for r in rows)
    lines.append(f"{len(rows)} tenant(s) checked: {len(findings)} finding(s); "
                 f"{pending} pending migration(s) in all")
    return "\n".join(lines)


def runs_table(rows: Sequence[RunRow]) -> str:
    """``tenantctl runs``: one line per run, newest first (times in UTC)."""
    if not rows:
        return "no runs recorded"
    header = (f"{'run_id':<36}  {'command':<13}  {'status':<11}  {'started (UTC)':<19}  "
              f"{'took':>7}  {'tenants':<30}  by")
    out = [header, "-" * len(header)]
    for r in rows:
        command = r.command + (" (dry)" if r.dry_run else "")
        took = "-" if r.duration_s is None else f"{r.duration_s:.1f}s"
        counts = " ".join(f"{n} {_MARK[s]}" for s in _MARK if (n := r.counts.get(s)))
        counts = counts or f"{r.tenants} selected"
        who = f"{r.os_user or r.db_user}@{r.host or '?'} pid {r.pid or '?'} v{r.tool_version or '?'}"
        out.append(f"{r.run_id:<36}  {command:<13}  {r.status:<11}  "
                   f"{r.started_at.strftime('%Y-%m-%d %H:%M:%S'):<19}  {took:>7}  {counts:<30}  {who}")
    return "\n".join(out)


def finding_line(f: Finding) -> str:
    return f"{f.file}:{f.line}: [{f.rule}] {f.message}"


def lint_doc(result: LintReport) -> dict[str, Any]:
    from .lint import RULES

    return {"findings": [f.to_json() for f in result.findings],
            "errors": sum(1 for f in result.findings if f.severity == "error"),
            "rules": sorted(RULES), "baseline": result.baseline,
            "hidden_by_baseline": result.hidden}


def lint_text(result: LintReport) -> str:
    lines = []
    for f in result.findings:
        lines += [f"{f.severity}: {finding_line(f)}", f"    hint: {f.hint}"]
    errors = sum(1 for f in result.findings if f.severity == "error")
    hidden = (f" ({result.hidden} more in migrations at or below the baseline "
              f"{result.baseline}; --all-files shows them)" if result.hidden else "")
    lines.append(f"{len(result.findings)} finding(s), {errors} error(s){hidden}")
    return "\n".join(lines)


def isolation_doc(database: str, found: Sequence[IsolationFinding]) -> dict[str, Any]:
    return {"database": database, "isolated": not any(f.severity == "error" for f in found),
            "findings": [f.to_json() for f in found]}


def isolation_text(database: str, found: Sequence[IsolationFinding]) -> str:
    errors = sum(1 for f in found if f.severity == "error")
    lines = [f"{f.severity}: [{f.check}] {f.message}" for f in found]
    lines.append(f"{database}: " + ("isolated" if not errors else f"NOT isolated: {errors} error(s)"))
    return "\n".join(lines)


def reversible_doc(request: ReversibleRequest, outcome: ReversibleReport) -> dict[str, Any]:
    from .reversible_report import group_differences

    found = list(outcome.differences)
    return {
        "differences": [d.to_json() for d in found], "migrations": len(outcome.checked),
        "checked": list(outcome.checked),
        "objects": [g.to_json() for g in group_differences(found)],
        "range": {"from": request.from_version, "to": request.to_version,
                  "pending": request.pending},
        "base": outcome.base.to_json(), "notes": list(outcome.notes)}


def reversible_text(outcome: ReversibleReport) -> str:
    """One line per object that differs, after the base line, then the count."""
    from .reversible_report import group_differences

    found = list(outcome.differences)
    groups = group_differences(found)
    lines = [outcome.base.line] if outcome.base.line else []
    lines += [group.line for group in groups]
    objects = f" in {len(groups)} object(s)" if found else ""
    more = "; details: --json" if len(groups) < len(found) else ""
    lines.append(f"{len(outcome.checked)} migration(s) checked up -> down -> up: "
                 f"{len(found)} difference(s){objects}{more}")
    return "\n".join(lines)


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False, default=str)


def junit_xml(run: RunResult) -> str:
    """JUnit XML: one test case per tenant, so CI systems show each tenant."""
    from xml.etree import ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name=f"tenantctl {run.command}",
        tests=str(len(run.tenants)),
        failures=str(run.count(FAILED)),
        skipped=str(run.count(SKIPPED)),
        time=f"{run.duration_ms / 1000:.3f}",
    )
    suite.set("id", run.run_id)
    for t in run.tenants:
        case = ET.SubElement(
            suite, "testcase", classname=f"tenantctl.{run.command}",
            name=f"clnt_id {t.clnt_id} ({t.database})", time=f"{t.duration_ms / 1000:.3f}",
        )
        if t.status == FAILED and t.error is not None:
            failure = ET.SubElement(
                case, "failure", message=t.error.message, type=t.error.sqlstate or "error"
            )
            failure.text = json.dumps(t.error.to_json(), indent=2)
        elif t.status == SKIPPED:
            ET.SubElement(case, "skipped", message=t.reason or "skipped")
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"{t.status}: {t.from_version} -> {t.to_version}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
