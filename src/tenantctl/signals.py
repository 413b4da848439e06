"""Running a command's coroutine with SIGINT/SIGTERM wired to a stop event."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_async(make: Callable[[asyncio.Event], Awaitable[T]]) -> tuple[T | None, bool]:
    """Run ``make(stop)`` to completion; returns (result, interrupted).

    First signal: ``stop`` is set, so no new tenant starts and in-flight work
    commits or rolls back. Second signal: in-flight work is cancelled
    (connections close, open transactions roll back) and the result is None.
    """

    async def main() -> tuple[T | None, bool]:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        signals_seen = 0

        def on_signal() -> None:
            nonlocal signals_seen
            signals_seen += 1
            stop.set()
            if signals_seen > 1 and task is not None:
                task.cancel()

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (e.g. under a test runner) or no signals
        try:
            result = await make(stop)
            return result, stop.is_set()
        except asyncio.CancelledError:
            return None, True
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
