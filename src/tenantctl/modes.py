"""Tenancy modes: where a tenant's schema lives, and what that implies for a run.

Every per-mode difference the engine and the use cases act on is a field of
:class:`ModePolicy`, looked up once per unit with :func:`policy`; nothing
else branches on the mode. A new mode (a Citus-distributed one, say) is a new
:class:`Mode` member and one more policy here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from . import purpose


class Mode(StrEnum):
    DATABASE = "database"  # a dedicated database per tenant
    SHARED = "shared"  # many tenants in one database, isolated by row-level security
    TEMPLATE = "template"  # tenantctl's provisioning template (no tenants)


@dataclass(frozen=True)
class ModePolicy:
    mode: Mode
    clones_template: bool  # provisioning may clone the template database
    marks: bool  # keeps the schema marker that lets no-op runs skip the session
    seeds_on_migrate: bool  # migrate finishes a provisioning interrupted before the seed
    enforces: bool  # guarantees to re-establish after every change (forced RLS)
    marker_seeded: bool  # the marker records that the tenant was seeded

    def purpose(self, clnt_ids: Iterable[int]) -> str:
        """The purpose tag of a database of this mode (``tenantctl.purpose``)."""
        if self.mode is Mode.DATABASE:
            (only,) = tuple(clnt_ids)
            return f"{purpose.TENANT_PREFIX}{only}"
        return purpose.SHARED if self.mode is Mode.SHARED else purpose.TEMPLATE


_POLICIES = {
    Mode.DATABASE: ModePolicy(Mode.DATABASE, clones_template=True, marks=True,
                              seeds_on_migrate=True, enforces=False, marker_seeded=True),
    Mode.SHARED: ModePolicy(Mode.SHARED, clones_template=False, marks=False,
                            seeds_on_migrate=False, enforces=True, marker_seeded=False),
    Mode.TEMPLATE: ModePolicy(Mode.TEMPLATE, clones_template=False, marks=True,
                              seeds_on_migrate=False, enforces=False, marker_seeded=False),
}


def policy(mode: Mode | str) -> ModePolicy:
    return _POLICIES[Mode(mode)]
