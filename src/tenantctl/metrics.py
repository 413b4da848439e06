"""``--metrics-file``: the run's outcome in the Prometheus text exposition format.

node_exporter's textfile collector and a Pushgateway both read this format.
The file is rewritten at the end of every (real) run, atomically: written to a
temporary file in the same directory, flushed to disk, then renamed over the
old one, so a scraper never reads half a file. Series of other commands are
carried over from the existing file, and so is a command's
``tenantctl_run_last_success_timestamp_seconds`` when this run did not exit 0:
that series is what "no successful nightly run for 26 h" alerts watch.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import EXIT_OK, BadInputError
from .outcome import STATUSES, RunResult

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

# name -> (help, type); the order is the file's order
FAMILIES: dict[str, tuple[str, str]] = {
    "tenantctl_run_tenants": (
        "Tenants of the last run of a command, by outcome.", "gauge"),
    "tenantctl_run_duration_seconds": (
        "Wall-clock duration of the last run of a command.", "gauge"),
    "tenantctl_run_last_timestamp_seconds": (
        "When the last run of a command ended (Unix time), whatever its outcome.", "gauge"),
    "tenantctl_run_last_success_timestamp_seconds": (
        "When the last run of a command that exited 0 ended (Unix time).", "gauge"),
    "tenantctl_run_exit_code": (
        "Exit code of the last run of a command (0 ok, 1 failed, 2 bad input, 130 interrupted).",
        "gauge"),
    "tenantctl_tenants_pending_migrations": (
        "Tenants of the last run not confirmed at the latest migration afterwards "
        "(failed, skipped, behind, or without a database).", "gauge"),
}


@dataclass(frozen=True)
class RunMetrics:
    """What one run contributes to the file."""

    command: str
    exit_code: int
    finished_at: float  # Unix time
    duration_s: float
    tenants: dict[str, int]  # every status -> tenants
    pending_tenants: int | None  # None: unknown (the run stopped before any tenant)

    @classmethod
    def of_run(cls, run: RunResult, exit_code: int, finished_at: float,
               latest: str | None) -> RunMetrics:
        from .migrations import Version

        newest = Version.parse(latest) if latest else None
        pending = 0
        for t in run.tenants:
            version = t.from_version if run.dry_run else t.to_version
            if newest is not None and (version is None or Version.parse(version) < newest):
                pending += 1
        return cls(run.command, exit_code, finished_at, run.duration_ms / 1000,
                   {s: run.count(s) for s in STATUSES}, pending)

    @classmethod
    def of_failure(cls, command: str, exit_code: int, finished_at: float,
                   duration_s: float) -> RunMetrics:
        """A run that stopped before any tenant (servers unreachable, bad input)."""
        return cls(command, exit_code, finished_at, duration_s, dict.fromkeys(STATUSES, 0), None)


def escape(value: str) -> str:
    """A label value as the exposition format wants it: ``\\``, ``"`` and newlines escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse_samples(text: str) -> Samples:
    """The samples of our own families in a file this module wrote (others are dropped)."""
    out: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if line.startswith("#") or match is None or match.group(1) not in FAMILIES:
            continue
        labels = tuple(sorted((k, _unescape(v)) for k, v in _LABEL.findall(match.group(2) or "")))
        try:
            out[(match.group(1), labels)] = float(match.group(3))
        except ValueError:
            continue
    return out


def merge(previous: Samples, run: RunMetrics) -> Samples:
    """The new file's samples: this run's series replace its command's, the rest stay."""
    mine = ("command", run.command)
    out: Samples = {key: value for key, value in previous.items()
                    if key[0] != "tenantctl_tenants_pending_migrations" and mine not in key[1]}
    for status, count in run.tenants.items():
        out[("tenantctl_run_tenants", (mine, ("status", status)))] = count
    out[("tenantctl_run_duration_seconds", (mine,))] = run.duration_s
    out[("tenantctl_run_last_timestamp_seconds", (mine,))] = run.finished_at
    out[("tenantctl_run_exit_code", (mine,))] = run.exit_code
    success = ("tenantctl_run_last_success_timestamp_seconds", (mine,))
    if run.exit_code == EXIT_OK:
        out[success] = run.finished_at
    elif success in previous:
        out[success] = previous[success]
    pending = ("tenantctl_tenants_pending_migrations", ())
    if run.pending_tenants is not None:
        out[pending] = run.pending_tenants
    elif pending in previous:
        out[pending] = previous[pending]
    return out


def _number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(samples: Samples) -> str:
    lines = []
    for name, (help_text, kind) in FAMILIES.items():
        rows = sorted((labels, value) for (n, labels), value in samples.items() if n == name)
        if not rows:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in rows:
            body = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{body}}} {_number(value)}" if body else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _directory_lock(folder: Path) -> Iterator[None]:
    """Serialises writers of one directory (two commands finishing at once)."""
    try:
        import fcntl
    except ImportError:  # not on Windows: last writer wins
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write(path: Path, run: RunMetrics) -> None:
    """Merge ``run`` into the file at ``path`` and replace it atomically."""
    folder = path.parent if str(path.parent) else Path(".")
    with _directory_lock(folder):
        try:
            previous = parse_samples(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            previous = {}
        text = render(merge(previous, run))
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o644)  # the collector runs as another user
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def check_path(given: str | None) -> Path | None:
    """``--metrics-file``, checked before the run: its directory must exist."""
    if not given:
        return None
    path = Path(given)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BadInputError(f"--metrics-file {given}: directory {folder} does not exist")
    return path


def _write_logged(path: Path, run: RunMetrics) -> None:
    from . import logs

    try:
        write(path, run)
    except OSError as exc:
        logs.error(f"--metrics-file {path}: not written: {exc}", kind="metrics_not_written")


def record_run(path: Path | None, run: RunResult, exit_code: int, latest: str | None) -> None:
    """Write the run's metrics (a dry run changes nothing, so it leaves the file alone)."""
    if path is None:
        return
    if run.dry_run:
        from . import logs

        logs.warning(f"--metrics-file {path}: not written by a dry run")
        return
    _write_logged(path, RunMetrics.of_run(run, exit_code, time.time(), latest))


def record_failure(path: Path | None, command: str, exit_code: int, started: float) -> None:
    """Write the metrics of a run that stopped before any tenant (``started``: monotonic)."""
    if path is None:
        return
    _write_logged(path, RunMetrics.of_failure(command, exit_code, time.time(),
                                              time.monotonic() - started))
