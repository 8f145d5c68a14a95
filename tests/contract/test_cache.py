"""Contract of the Cache protocol, run against every cache backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from iotflow.cache.base import Cache, DeviceAuth
from iotflow.cache.memory import MemoryCache
from iotflow.storage.timeseries.base import LatestValue

T = TypeVar("T")

FACTORIES: dict[str, Callable[[], Cache]] = {"memory": MemoryCache}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(params=sorted(FACTORIES))
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    c = FACTORIES[request.param]()
    yield c
    run(c.close())


DEV = DeviceAuth(1, "boiler", "sensor", "active", None)


class TestCacheContract:
    def test_api_key_entries(self, cache: Cache) -> None:
        async def go() -> None:
            assert await cache.get_device_auth("h1") is None
            await cache.set_device_auth("h1", DEV)
            await cache.set_device_auth("h2", DeviceAuth(2, "other", "x", "inactive", 7))
            assert await cache.get_device_auth("h1") == DEV
            await cache.forget_device(1)
            assert await cache.get_device_auth("h1") is None
            assert (await cache.get_device_auth("h2")) == DeviceAuth(2, "other", "x", "inactive", 7)

        run(go())

    def test_latest_values_never_go_back_in_time(self, cache: Cache) -> None:
        async def go() -> None:
            assert await cache.get_latest(1) is None  # not cached: the caller asks the store
            await cache.merge_latest({1: {"t": LatestValue(1.0, 100, None)}})
            assert await cache.get_latest(1) is None  # merging does not invent a partial entry
            await cache.set_latest(1, {})
            assert await cache.get_latest(1) == {}  # cached: no data
            await cache.set_latest(1, {"t": LatestValue(1.0, 100, "C")})
            await cache.merge_latest({1: {"t": LatestValue(2.0, 50, None), "h": LatestValue("x", 10, None)}})
            assert await cache.get_latest(1) == {
                "t": LatestValue(1.0, 100, "C"),
                "h": LatestValue("x", 10, None),
            }
            await cache.merge_latest({1: {"t": LatestValue(3, 200, None)}})
            latest = await cache.get_latest(1)
            assert latest is not None and latest["t"] == LatestValue(3, 200, "C")  # the unit is kept
            await cache.forget_device(1)
            assert await cache.get_latest(1) is None

        run(go())

    def test_last_seen_moves_forward(self, cache: Cache) -> None:
        async def go() -> None:
            await cache.mark_seen({1: 100, 2: 50})
            await cache.mark_seen({1: 90})
            assert await cache.get_last_seen([1, 2, 3]) == {1: 100, 2: 50}

        run(go())

    def test_clear_and_stats(self, cache: Cache) -> None:
        async def go() -> None:
            await cache.set_device_auth("h1", DEV)
            await cache.get_device_auth("h1")
            await cache.get_device_auth("nope")
            stats = await cache.stats()
            assert stats["backend"] == cache.backend and stats["api_key_entries"] == 1
            assert stats["hit_rate"]["api_key"] == 0.5
            await cache.clear()
            assert await cache.get_device_auth("h1") is None
            assert (await cache.stats())["api_key_entries"] == 0

        run(go())
