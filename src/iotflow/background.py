"""Periodic background work owned by a service (flushes, sweeps, reloads)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``func`` every ``interval`` seconds in its own task until stopped.

    A failing call is logged and the loop goes on: the next call retries whatever was left.
    """

    def __init__(self, name: str, interval: float, func: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.interval = interval
        self._func = func
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"iotflow-{self.name}")

    async def stop(self) -> None:
        """Cancel the loop and wait for it (a call in progress is cancelled too)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._func()
            except Exception as exc:
                log.warning("%s failed: %s", self.name, exc)
