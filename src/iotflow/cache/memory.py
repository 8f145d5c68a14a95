"""In-process cache: plain dicts, no locks needed on one event loop."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from iotflow.cache.base import DeviceAuth
from iotflow.storage.timeseries.base import LatestValue


class MemoryCache:
    backend = "memory"

    def __init__(self, max_key_entries: int = 100_000) -> None:
        self._auth: dict[str, DeviceAuth] = {}
        self._auth_by_device: dict[int, set[str]] = {}
        self._latest: dict[int, dict[str, LatestValue]] = {}
        self._seen: dict[int, int] = {}
        self._max_key_entries = max_key_entries
        self._hits = {"api_key": 0, "latest": 0}
        self._misses = {"api_key": 0, "latest": 0}

    async def close(self) -> None:
        await self.clear()

    async def get_device_auth(self, key_hash: str) -> DeviceAuth | None:
        found = self._auth.get(key_hash)
        if found is None:
            self._misses["api_key"] += 1
        else:
            self._hits["api_key"] += 1
        return found

    async def set_device_auth(self, key_hash: str, device: DeviceAuth) -> None:
        if len(self._auth) >= self._max_key_entries:
            # Bounded: drop the oldest entry (dicts keep insertion order).
            old_hash, old = next(iter(self._auth.items()))
            del self._auth[old_hash]
            self._auth_by_device.get(old.id, set()).discard(old_hash)
        self._auth[key_hash] = device
        self._auth_by_device.setdefault(device.id, set()).add(key_hash)

    async def forget_device(self, device_id: int) -> None:
        for key_hash in self._auth_by_device.pop(device_id, set()):
            self._auth.pop(key_hash, None)
        self._latest.pop(device_id, None)
        self._seen.pop(device_id, None)

    async def get_latest(self, device_id: int) -> dict[str, LatestValue] | None:
        found = self._latest.get(device_id)
        if found is None:
            self._misses["latest"] += 1
            return None
        self._hits["latest"] += 1
        return dict(found)

    async def set_latest(self, device_id: int, values: Mapping[str, LatestValue]) -> None:
        self._latest[device_id] = dict(values)

    async def merge_latest(self, updates: Mapping[int, Mapping[str, LatestValue]]) -> None:
        for device_id, values in updates.items():
            current = self._latest.get(device_id)
            if current is None:
                continue
            for key, new in values.items():
                old = current.get(key)
                if old is None or new.ts_ms >= old.ts_ms:
                    current[key] = new if new.unit is not None or old is None else new._replace(unit=old.unit)

    async def mark_seen(self, seen: Mapping[int, int]) -> None:
        for device_id, ts in seen.items():
            if ts > self._seen.get(device_id, -1):
                self._seen[device_id] = ts

    async def get_last_seen(self, device_ids: Iterable[int]) -> dict[int, int]:
        return {d: self._seen[d] for d in device_ids if d in self._seen}

    async def clear(self) -> None:
        self._auth.clear()
        self._auth_by_device.clear()
        self._latest.clear()
        self._seen.clear()

    async def stats(self) -> dict[str, Any]:
        def rate(kind: str) -> float | None:
            total = self._hits[kind] + self._misses[kind]
            return round(self._hits[kind] / total, 4) if total else None

        return {
            "backend": self.backend,
            "device_status_count": len(self._seen),
            "api_key_entries": len(self._auth),
            "latest_entries": len(self._latest),
            "hit_rate": {"api_key": rate("api_key"), "latest": rate("latest")},
        }
