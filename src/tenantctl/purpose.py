"""Pure: what each database is for, and when tenantctl may touch one.

Every database tenantctl creates is tagged with its purpose in its own
per-database settings (``tenantctl.purpose``): ``tenant:<clnt_id>`` for a
dedicated tenant, ``shared`` for the shared database, ``template``,
``control``, ``scratch`` for check-reversible's databases (its scratch
database and the cached base it is cloned from), ``moving:<clnt_id>`` for a
move's target while it is being filled (a re-run of an interrupted move drops
only a database carrying this tag) and ``moved:<clnt_id>`` for a source kept
by ``move --keep-source`` (renamed, and never taken for a live tenant).
Before a run touches an existing database it compares the tag with what
tenants.yaml now says the database is for:

- the same tag: go on;
- another tag: refuse that tenant (tenants.yaml points it at a database that
  tenantctl made for something else: another tenant, the template, ...);
- no tag (made by hand, by another tool, or by a tenantctl from before the
  tags): adopt it only when it is empty, or when it holds tenantctl's history
  and the registry names no other tenant at that place; otherwise refuse.

A refusal fails that tenant only; nothing is created, migrated or dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

TENANT_PREFIX = "tenant:"
SHARED = "shared"
TEMPLATE = "template"
CONTROL = "control"
SCRATCH = "scratch"
MOVING_PREFIX = "moving:"
MOVED_PREFIX = "moved:"


def tenant(clnt_id: int) -> str:
    return f"{TENANT_PREFIX}{clnt_id}"


def moving(clnt_id: int) -> str:
    """The tag of a move's target database until the move's cutover."""
    return f"{MOVING_PREFIX}{clnt_id}"


def moved(clnt_id: int) -> str:
    """The tag of a tenant's old database kept by ``move --keep-source``."""
    return f"{MOVED_PREFIX}{clnt_id}"


def describe(purpose: str) -> str:
    if purpose.startswith(TENANT_PREFIX):
        return f"tenant {purpose[len(TENANT_PREFIX):]}"
    if purpose.startswith(MOVING_PREFIX):
        return f"an unfinished move of tenant {purpose[len(MOVING_PREFIX):]}"
    if purpose.startswith(MOVED_PREFIX):
        return f"the kept old copy of moved tenant {purpose[len(MOVED_PREFIX):]}"
    return {SHARED: "the shared database", TEMPLATE: "the template database",
            CONTROL: "the control database",
            SCRATCH: "check-reversible's scratch databases"}.get(purpose, repr(purpose))


def mismatch(database: str, expected: str, actual: str | None) -> str | None:
    """Why a tagged database must not be used for ``expected``; None when it may."""
    if actual is None or actual == expected:
        return None
    return (f"database {database} was created by tenantctl for {describe(actual)}, "
            f"not for {describe(expected)}: refusing to touch it")


def adoption_refusal(
    database: str, expected: str, *, has_history: bool, has_objects: bool,
    claimed_by: Iterable[int] = (), own: Iterable[int] = (),
) -> str | None:
    """Why an untagged existing database must not be adopted; None when it may.

    ``claimed_by``: the tenants the registry places in this database; ``own``:
    the tenants this run puts there (all of a shared database's)."""
    others = sorted(set(claimed_by) - set(own) - _tenant_ids(expected))
    if others:
        return (f"database {database} is registered to clnt_id {', '.join(map(str, others))}, "
                f"not to {describe(expected)}: refusing to touch it")
    if has_history or not has_objects:
        return None
    return (f"database {database} exists and holds objects, but tenantctl did not create it "
            f"for {describe(expected)} (no tenantctl.purpose tag, no tenantctl history): "
            "refusing to migrate it")


ADOPT_HINT = ("point the tenant at its own database in tenants.yaml; if this database really "
              "is that tenant's, tag it: ALTER DATABASE <name> SET tenantctl.purpose = '<purpose>'")


def _tenant_ids(purpose: str) -> set[int]:
    if purpose.startswith(TENANT_PREFIX):
        return {int(purpose[len(TENANT_PREFIX):])}
    return set()
