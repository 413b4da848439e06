"""Destructive commands ask first: when to ask, when to refuse, what to show.

Pure; the CLI does the asking. The rule (rollback today, deprovision next):

- ``--yes`` answers the question: the command proceeds;
- on a TTY (stdin), the command shows what it will do and asks;
- without a TTY, a command whose tenants were listed by id proceeds (a script
  that names tenants has said which), anything wider (``--all``, ``--wave``,
  ``--only-failed``) is refused (exit 2) until ``--yes`` is given. A command
  that is destructive whatever it names (``deprovision``) passes
  ``listed=False`` and always needs ``--yes`` without a TTY.

"A TTY" means stdin and stderr both: the question is read from one and shown on
the other. Declining is exit 2, nothing changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from enum import StrEnum

from .errors import BadInputError
from .migrations import Version
from .outcome import FAILED, RunResult


class Consent(StrEnum):
    PROCEED = "proceed"
    ASK = "ask"
    REFUSE = "refuse"


def decide(*, yes: bool, interactive: bool, listed: bool) -> Consent:
    """Whether a destructive command proceeds, asks, or is refused."""
    if yes:
        return Consent.PROCEED
    if interactive:
        return Consent.ASK
    return Consent.PROCEED if listed else Consent.REFUSE


def refusal(what: str) -> BadInputError:
    """The exit-2 error of a destructive command run without a terminal or --yes."""
    return BadInputError(
        f"{what} needs confirmation, and there is no terminal to ask on: pass --yes",
        hint="--yes confirms it; --dry-run (rollback) shows what it would do; a rollback of "
        "listed clnt_ids runs without --yes")


def describe_selection(ids: tuple[int, ...], waves: tuple[str, ...], *, only_failed: bool = False,
                       resume_run: str | None = None, servers: tuple[str, ...] = ()) -> str:
    """How the tenants were chosen, as the command line says it (for messages)."""
    if ids:
        return " ".join(map(str, ids))
    if waves or servers:
        return " ".join([*(f"--wave {w}" for w in waves), *(f"--server {s}" for s in servers)])
    return "--only-failed" if only_failed else f"--resume {resume_run}" if resume_run else "--all"


def revert_preview(run: RunResult, down_files: Mapping[str, str]) -> tuple[list[str], int]:
    """What a rollback will revert, from its dry run: one line per migration
    (newest first) with the number of tenants it is reverted on, then a count
    line. Returns (lines, tenants that will change)."""
    per_version: Counter[str] = Counter(v for t in run.tenants for v in t.reverted)
    changing = sum(1 for t in run.tenants if t.reverted)
    failed = sum(1 for t in run.tenants if t.status == FAILED)
    target = run.target if run.target not in (None, "0") else "empty (no migration)"
    lines = [f"{run.command} to {target} will revert, newest first:"]
    for version in sorted(per_version, key=Version.parse, reverse=True):
        lines.append(f"  {version:<12} {down_files.get(version, '?'):<48} "
                     f"on {per_version[version]} tenant(s)")
    if not per_version:
        lines.append("  nothing")
    tail = (f"{len(run.tenants)} tenant(s) selected: {changing} will change, "
            f"{len(run.tenants) - changing - failed} already there")
    if failed:
        tail += f", {failed} could not be planned (they will fail again)"
    lines.append(tail)
    return lines, changing
