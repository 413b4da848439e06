"""A transaction that is always rolled back: for trials and probes.

Not the ``tenantctl rollback`` command (down scripts): this undoes whatever a
block did on one session, ``SET LOCAL`` included, however the block ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .drivers.base import Session


class _Rewind(Exception):
    """Raised at the end of the block, inside the transaction, to roll it back."""


@asynccontextmanager
async def rolled_back(session: Session) -> AsyncIterator[None]:
    """A transaction (a savepoint when one is open) that is always rolled back.

    An exception raised by the block rolls it back and propagates as usual;
    a block that ends normally is rolled back too, and nothing is raised.
    """
    try:
        async with session.transaction():
            yield
            raise _Rewind
    except _Rewind:
        pass
