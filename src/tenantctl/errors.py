"""The one exception hierarchy of tenantctl.

Every error a user can see is a :class:`TenantctlError`. Third-party errors are
translated into one of these exactly once, at the edge that meets them (the
``postgres`` adapter for asyncpg, ``config`` for YAML/pydantic), and the CLI
turns them into a message and an exit code in one place.

Exit codes (the contract with scripts and the nightly job):
  0 all good · 1 a tenant failed / drift found · 2 bad input, nothing changed ·
  130 interrupted.
"""

from __future__ import annotations

from enum import StrEnum

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class ErrorKind(StrEnum):
    """Why a command did not end well: ``error.kind`` in the JSON output.

    Scripts and alerts branch on this rather than on message text. The exit
    code stays the coarse contract (1: failed, 2: bad input, 130: interrupted).
    """

    TENANTS_FAILED = "tenants_failed"  # exit 1: the run went; one or more tenants failed
    ALL_SERVERS_UNREACHABLE = "all_servers_unreachable"  # exit 1: no server of the run answered
    SERVER_UNREACHABLE = "server_unreachable"  # exit 1: a server of the run did not answer
    CONTROL_UNREACHABLE = "control_unreachable"  # exit 1: the control database could not be used
    RECORDING_FAILED = "recording_failed"  # exit 1: the ledger stopped taking results mid-run
    BAD_INPUT = "bad_input"  # exit 2: config, arguments, files; nothing changed
    INTERRUPTED = "interrupted"  # exit 130: SIGINT/SIGTERM
    ABANDONED = "abandoned"  # (runs show) the run's process died without finishing
    ERROR = "error"  # exit 1: anything else (the message says what)


def is_connection_failure(sqlstate: str | None) -> bool:
    """A server that could not be reached or logged in to (class 08, 28, 57P03)."""
    if not sqlstate:
        return False
    return sqlstate == "57P03" or sqlstate[:2] in ("08", "28")


class TenantctlError(Exception):
    """Base of every error tenantctl reports.

    ``message`` says what is wrong, ``hint`` what to do next.
    """

    exit_code = EXIT_FAILED
    kind = ErrorKind.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class BadInputError(TenantctlError):
    """Bad configuration, arguments or migration files: nothing was changed."""

    exit_code = EXIT_BAD_INPUT
    kind = ErrorKind.BAD_INPUT


class ConfigError(BadInputError):
    """tenants.yaml (or the environment it reads) is invalid."""


class MigrationFileError(BadInputError):
    """The migrations folder holds a file tenantctl cannot accept."""


class ServerError(TenantctlError):
    """A PostgreSQL server (or the embedded one) could not be used at all."""


class Unreachable(ServerError):
    """The servers of a run could not be reached before any tenant was touched.

    ``kind`` tells the control database's server (nothing can be recorded)
    from one or every tenant server."""

    def __init__(self, message: str, kind: ErrorKind, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind


class DatabaseError(TenantctlError):
    """A PostgreSQL error, translated from the driver at the adapter.

    ``sqlstate`` is the five-character SQLSTATE (class 08 is used for a lost
    or refused connection, which has no server-side code).
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None,
        detail: str | None = None,
        hint: str | None = None,
        position: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.sqlstate = sqlstate
        self.detail = detail
        # 1-based character offset into the query text PostgreSQL reported (if it did)
        self.position = position
        self.migration: str | None = None  # set by the engine when a migration was running
        self.line: int | None = None  # the migration file's line, when the driver knows it

    @property
    def transient(self) -> bool:
        return is_transient(self.sqlstate)


class LockNotAcquired(DatabaseError):
    """Another tenantctl held the tenant's migration lock for the whole wait."""

    def __init__(self, database: str, waited_s: float) -> None:
        super().__init__(
            f"another tenantctl run held the migration lock of {database} "
            f"for {waited_s:.0f}s",
            sqlstate="55P03",
            hint="wait for the other run to finish, or raise --lock-wait",
        )


class LockLost(DatabaseError):
    """The tenant's migration lock was released while tenantctl held it.

    A migration that calls ``pg_advisory_unlock_all()`` (or unlocks the key)
    does this. The history write that would follow is refused and the
    migration's transaction rolled back, so a concurrent run cannot apply the
    same migration twice. Not transient: the migration itself is the cause.
    """

    def __init__(self, database: str) -> None:
        super().__init__(
            f"{database}: tenantctl's migration lock was released during the migration "
            "(does it call pg_advisory_unlock_all() or pg_advisory_unlock()?); "
            "its work was rolled back and not recorded",
            sqlstate=None,
            hint="a migration must not release advisory locks it did not take",
        )


class DriftDetected(TenantctlError):
    """An applied migration file was edited since it ran (that tenant is refused)."""


class MigrationFailed(TenantctlError):
    """A permanent database error inside one migration, seed or down script.

    ``migration`` names the file (or the step) it happened in; ``error`` is
    the translated database error with its SQLSTATE.
    """

    def __init__(self, error: DatabaseError, migration: str) -> None:
        super().__init__(error.message, hint=error.hint)
        self.error = error
        self.migration = migration


# SQLSTATEs worth another attempt: serialization and deadlock failures, lock and
# statement timeouts of our own sessions, a busy template, an administrator or
# crash ending the backend, the server starting up or short of resources.
# Class 08 (connection exceptions) is matched by prefix.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "55006",  # object_in_use (template busy)
        "57P01",  # admin_shutdown / pg_terminate_backend
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "53000",  # insufficient_resources
        "53200",  # out_of_memory
        "53300",  # too_many_connections
        "53400",  # configuration_limit_exceeded
    }
)


def is_transient(sqlstate: str | None) -> bool:
    """True when an error with this SQLSTATE may succeed if tried again."""
    if not sqlstate:
        return False
    return sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith("08")
