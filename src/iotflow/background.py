"""Periodic background work owned by a service (flushes, sweeps, reloads), and stopping it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
"""How long stopping waits for work in progress (a flush, a sweep) before cancelling it: as long as a
database write may wait for a lock (``busy_timeout``)."""


async def finish(tasks: Iterable[asyncio.Task[Any]], grace: float = STOP_GRACE_S) -> None:
    """Wait up to ``grace`` seconds for ``tasks`` to end, then cancel what is left and wait for it.

    Cancelling a task in the middle of a database transaction loses what it was writing (the marks a
    flush took) and interrupts the connection's rollback, so work in progress gets to end first.
    """
    tasks = list(tasks)
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        log.warning("%s did not end within %.0f s of shutdown: cancelled", task.get_name(), grace)
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Periodic:
    """Calls ``func`` every ``interval`` seconds in its own task until stopped.

    A failing call is logged and the loop goes on: the next call retries whatever was left. Stopping
    lets a call in progress end (see :func:`finish`) and starts no other.
    """

    def __init__(self, name: str, interval: float, func: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval = interval
        self._func = func
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name=f"iotflow-{self.name}")

    async def stop(self) -> None:
        """End the loop once the call in progress, if any, has ended."""
        if self._task is not None:
            self._stopping.set()
            await finish([self._task])
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                pass
            else:
                return
            try:
                await self._func()
            except Exception as exc:
                log.warning("%s failed: %s", self.name, exc)
