"""Progress while a run goes: a live display on a terminal (text log format).

It writes to stderr (stdout is for the report). Elsewhere, and with
``--log-format json``, the tenants' lines are log records (:mod:`tenantctl.logs`).
``--quiet`` turns the display off.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Protocol

from .outcome import FAILED, SKIPPED, TenantResult
from .report import tenant_line

if TYPE_CHECKING:
    from rich.progress import TaskID


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def done(self, result: TenantResult) -> None: ...
    def close(self) -> None: ...


class Silent:
    def start(self, total: int) -> None:
        pass

    def done(self, result: TenantResult) -> None:
        pass

    def close(self) -> None:
        pass


class Live:
    """A rich progress bar: done / failed / skipped counts, rate and ETA.

    Failures are also printed above the bar as they happen, so they stay on
    screen after the run.
    """

    def __init__(self, *, dry_run: bool = False) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self.console = Console(stderr=True)
        self.dry_run = dry_run
        self.counts = {"failed": 0, "skipped": 0}
        self.started = time.monotonic()
        self.bar = RichProgress(
            TextColumn("[bold]tenants"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None  # set by start()

    def start(self, total: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("run", total=total, counts="", rate="")

    def done(self, result: TenantResult) -> None:
        if result.status == FAILED:
            self.counts["failed"] += 1
            self.console.print(f"[red]{tenant_line(result)}[/red]", highlight=False)
        elif result.status == SKIPPED:
            self.counts["skipped"] += 1
        elapsed = max(time.monotonic() - self.started, 1e-6)
        finished = (self.bar.tasks[0].completed if self.bar.tasks else 0) + 1
        counts = f"failed {self.counts['failed']} skipped {self.counts['skipped']}"
        assert self.task is not None, "start() comes first"
        self.bar.update(self.task, advance=1, counts=counts, rate=f"{finished / elapsed:.1f}/s")

    def close(self) -> None:
        self.bar.stop()


def choose(*, quiet: bool, dry_run: bool = False, live: bool = True) -> Progress:
    """The live display on a terminal when ``live`` (the text log format), else none."""
    if quiet or not live or not sys.stderr.isatty():
        return Silent()
    return Live(dry_run=dry_run)
