"""The cache contract: API key → device, latest values, last-seen times.

Implementations: :mod:`iotflow.cache.memory` (in-process, default) and, when ``IOTFLOW_REDIS_URL`` is
set, a Redis one shared by every worker. The contract suite ``tests/contract/test_cache.py`` runs
against each. The cache is never the source of truth: a miss falls back to the database or the
time-series store, and clearing it only costs lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from iotflow.storage.timeseries.base import LatestValue


class DeviceAuth(NamedTuple):
    """What a request needs to know about the device that owns an API key."""

    id: int
    name: str
    device_type: str
    status: str
    user_id: int | None


class Cache(Protocol):
    backend: str

    async def close(self) -> None: ...

    # API key (by its SHA-256 hex digest) → device
    async def get_device_auth(self, key_hash: str) -> DeviceAuth | None: ...
    async def set_device_auth(self, key_hash: str, device: DeviceAuth) -> None: ...
    async def forget_device(self, device_id: int) -> None:
        """Drop everything cached for a device (key entries, latest values, last seen)."""

    # latest value of every key of a device
    async def get_latest(self, device_id: int) -> dict[str, LatestValue] | None:
        """None means "not cached" (ask the store); {} means "cached: no data"."""

    async def set_latest(self, device_id: int, values: Mapping[str, LatestValue]) -> None:
        """Replace the cached latest values of a device (after a store lookup)."""

    async def merge_latest(self, updates: Mapping[int, Mapping[str, LatestValue]]) -> None:
        """Apply newly committed values; an older timestamp never replaces a newer one.

        Devices not cached yet are left uncached (the store answers them and fills the cache).
        """

    # connectivity
    async def mark_seen(self, seen: Mapping[int, int]) -> None:
        """Record device id → last-seen ms (only moving forward)."""

    async def get_last_seen(self, device_ids: Iterable[int]) -> dict[int, int]: ...

    # administration
    async def clear(self) -> None: ...
    async def stats(self) -> dict[str, Any]: ...
