"""PostgreSQL server versions: the supported range, and every SQL choice that depends on it.

tenantctl supports servers of major :data:`MIN_MAJOR` to :data:`NEWEST_TESTED_MAJOR`
(CI: the suite on 18 and 15, a compatibility subset on 16). Each server's ``server_version_num`` is
read once at the start of a run (:func:`tenantctl.fleet.server_facts`); a server
below the range fails its tenants before any of them is touched, one newer than
the newest tested gets a note.

This module is the one place where tenantctl's SQL differs by server version.
What 15 already has and tenantctl relies on everywhere (so no branch is needed):
``CREATE DATABASE … STRATEGY`` (15), ``security_invoker`` views (15),
``DROP DATABASE … WITH (FORCE)`` (13), ``pg_attribute.attcompression`` (14).
What differs within the range, and is chosen here:

* role membership options (16): ``GRANT role TO user WITH INHERIT TRUE, SET TRUE``
  and ``pg_has_role(…, 'SET')`` exist from 16 on; on 15 every membership
  inherits and allows SET ROLE;
* ``SET transaction_timeout`` (17), which ``pg_dump``/``pg_restore`` 17+ write
  into their output and 15/16 reject (see :mod:`tenantctl.pg_tools`);
* the default template clone strategy (:func:`clone_strategy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MIN_MAJOR = 15
NEWEST_TESTED_MAJOR = 18


@dataclass(frozen=True, order=True)
class ServerVersion:
    """A server's ``server_version_num`` (150018 is 15.18)."""

    num: int

    @property
    def major(self) -> int:
        return self.num // 10000

    @property
    def text(self) -> str:
        return f"{self.major}.{self.num % 10000}"

    @property
    def supported(self) -> bool:
        return self.major >= MIN_MAJOR

    def refusal(self, server: str) -> str | None:
        """Why tenantctl does not run on this server, if it does not."""
        if self.supported:
            return None
        return (f"server {server} runs PostgreSQL {self.text}, below the supported range "
                f"({MIN_MAJOR} to {NEWEST_TESTED_MAJOR}): its tenants were not touched")

    def note(self, server: str) -> str | None:
        """A note for the report when the server is newer than any tested major."""
        if self.major <= NEWEST_TESTED_MAJOR:
            return None
        return (f"server {server} runs PostgreSQL {self.text}, newer than the newest tested "
                f"major ({NEWEST_TESTED_MAJOR})")


UNSUPPORTED_HINT = (f"upgrade the server to PostgreSQL {MIN_MAJOR} or newer, or move its tenants "
                    "to a supported server")


class CloneStrategy(StrEnum):
    """How ``CREATE DATABASE … TEMPLATE`` copies the template (``settings.template_strategy``)."""

    AUTO = "auto"  # the faster one for the server's major, as measured (clone_strategy)
    WAL_LOG = "wal_log"  # block by block through the WAL (15+'s own default)
    FILE_COPY = "file_copy"  # copy the files after a checkpoint (the only way before 15)


# The faster strategy per major, as measured by bench/clone_strategy.py on this
# project's templates (the shipped example and the benchmark's, about 8 MB; the
# figures are in the README's "Supported PostgreSQL": WAL_LOG took 0.3 to 0.6 of
# FILE_COPY's time one clone at a time, and at most as long 8 at once). A major
# not listed (17 was not measured) gets WAL_LOG, PostgreSQL's own default since 15.
FASTER_CLONE: dict[int, CloneStrategy] = {
    15: CloneStrategy.WAL_LOG,
    16: CloneStrategy.WAL_LOG,
    18: CloneStrategy.WAL_LOG,
}


def clone_strategy(version: ServerVersion, setting: CloneStrategy) -> CloneStrategy:
    """The strategy tenantctl clones templates with on this server: the setting,
    or for ``auto`` the faster one on the server's major (:data:`FASTER_CLONE`).

    FILE_COPY copies the files but takes a checkpoint before and after each
    clone, which every tenant then waits for; WAL_LOG writes the template's
    blocks into the WAL instead. A large template (hundreds of MB) on a server
    with fast storage can tip the balance: measure and set the strategy.
    """
    if setting is not CloneStrategy.AUTO:
        return setting
    return FASTER_CLONE.get(version.major, CloneStrategy.WAL_LOG)


def create_database_sql(quoted_name: str, quoted_template: str | None = None,
                        strategy: CloneStrategy | None = None) -> str:
    """``CREATE DATABASE``, cloning ``quoted_template`` with ``strategy`` when given
    (names are quoted by the caller)."""
    sql = f"CREATE DATABASE {quoted_name}"
    if quoted_template:
        sql += f" TEMPLATE {quoted_template}"
        if strategy is not None and strategy is not CloneStrategy.AUTO:
            sql += f" STRATEGY = {strategy.value.upper()}"
    return sql


def drop_database_sql(quoted_name: str) -> str:
    """``DROP DATABASE``, ending the sessions still connected to it (13+)."""
    return f"DROP DATABASE IF EXISTS {quoted_name} WITH (FORCE)"


def role_usable_sql(version: ServerVersion) -> str:
    """SQL (``$1`` = role): does current_user have the role's privileges and may SET ROLE to it?"""
    sql = "SELECT pg_has_role(current_user, $1, 'USAGE')"
    if version.major >= 16:
        sql += " AND pg_has_role(current_user, $1, 'SET')"
    return sql


def grant_role_sql(quoted_role: str, version: ServerVersion) -> str:
    """Make current_user a member of the role, inheriting it and allowed to SET ROLE to it."""
    grant = f"GRANT {quoted_role} TO CURRENT_USER"
    if version.major >= 16:
        grant += " WITH INHERIT TRUE, SET TRUE"  # 15: every membership does both
    return grant


def has_transaction_timeout(version: ServerVersion) -> bool:
    """``transaction_timeout`` exists from 17 on; older servers reject ``SET`` of it."""
    return version.major >= 17
