"""Contract of the rate-limit Window protocol (a moving window), run against every implementation.

``LimitsWindow`` runs here on the ``limits`` library's in-process storage; the same class takes its
Redis storage to share limits between workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from limits.aio.storage import MemoryStorage

from iotflow.ratelimit.window import LimitsWindow, MemoryWindow, Window

FACTORIES: dict[str, Callable[[], Window]] = {
    "memory": MemoryWindow,
    "limits-memory": lambda: LimitsWindow(MemoryStorage()),
}


def run(factory: Callable[[], Window], test: Callable[[Window], Coroutine[Any, Any, None]]) -> None:
    async def go() -> None:
        await test(factory())  # built inside the loop: a storage may start tasks of its own

    asyncio.run(go())


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Callable[[], Window]:
    return FACTORIES[request.param]


class TestWindowContract:
    def test_counts_down_then_refuses(self, factory: Callable[[], Window]) -> None:
        async def test(window: Window) -> None:
            first = time.time()
            for left in (2, 1, 0):
                state = await window.hit("a", 3, 60)
                assert state.allowed and state.remaining == left
                assert first + 59 <= state.reset_at <= time.time() + 60.5
            refused = await window.hit("a", 3, 60)
            assert not refused.allowed and refused.remaining == 0
            assert first + 59 <= refused.reset_at <= time.time() + 60.5
            # keys are independent
            assert (await window.hit("b", 3, 60)).remaining == 2

        run(factory, test)

    def test_the_window_moves(self, factory: Callable[[], Window]) -> None:
        async def test(window: Window) -> None:
            started = time.time()
            assert (await window.hit("k", 2, 2)).allowed
            await asyncio.sleep(1.0)
            assert (await window.hit("k", 2, 2)).allowed
            assert not (await window.hit("k", 2, 2)).allowed  # refused hits do not count
            # once the first hit has left the window (the second has not), one slot is free again
            await asyncio.sleep(started + 2.1 - time.time())
            state = await window.hit("k", 2, 2)
            assert state.allowed and state.remaining == 0
            assert not (await window.hit("k", 2, 2)).allowed

        run(factory, test)
