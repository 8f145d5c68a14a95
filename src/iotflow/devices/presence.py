"""Connectivity: when each device was last heard, and reported attributes — written coalesced.

Every telemetry message or heartbeat marks its device seen. Writing ``last_seen`` to the database on
every message would cost a transaction per message, so marks are kept in memory and flushed every
second in one transaction (and once more at shutdown). ``is_online`` is derived: a device is online
when it was heard within ``IOTFLOW_DEVICE_OFFLINE_AFTER`` seconds.

Transitions are recorded in the event log: ``device.online`` when a device that was offline is heard,
``device.offline`` when the flush loop finds it has been silent for the offline timeout.

A device can also go offline *at once* (:meth:`Presence.mark_offline`: MQTT ``status/offline``, a clean
MQTT disconnect, the broker's last will). It then stays offline until it is heard again after that
moment; pass ``device_id`` to :meth:`Presence.is_online` so that this is taken into account.
"""

from __future__ import annotations

import logging
from typing import Any

from iotflow.background import Periodic
from iotflow.cache.base import Cache
from iotflow.devices.repository import DeviceRepository
from iotflow.events.service import EventLog
from iotflow.timeutil import now_ms

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self,
        repo: DeviceRepository,
        cache: Cache,
        events: EventLog,
        *,
        offline_after_s: int,
        flush_every_s: float = 1.0,
    ):
        self._repo = repo
        self._cache = cache
        self._events = events
        self._online: dict[int, int] = {}  # devices currently online -> last heard (ms)
        self.offline_after_ms = offline_after_s * 1000
        self._seen: dict[int, int] = {}
        self._offline: dict[int, int] = {}  # devices marked offline at once -> when (ms)
        self._reported: dict[int, dict[str, Any]] = {}
        # Reported attributes being written, and the ones the last flush wrote: a request that read the
        # device row before that write still shows them (pending_reported overlays them on the row).
        self._flushing: dict[int, dict[str, Any]] = {}
        self._flushed: dict[int, dict[str, Any]] = {}
        self._periodic = Periodic("presence flush", flush_every_s, self._tick)

    def seen(self, device_id: int, ts_ms: int) -> None:
        if ts_ms > self._seen.get(device_id, -1):
            self._seen[device_id] = ts_ms
        offline_at = self._offline.get(device_id)
        if offline_at is not None:
            if ts_ms < offline_at:
                return  # heard before it went offline: that does not bring it back
            del self._offline[device_id]
        previous = self._online.get(device_id)
        if previous is None or ts_ms - previous > self.offline_after_ms:
            self._events.record_nowait("device.online", device_id=device_id, ts_ms=ts_ms)
        if previous is None or ts_ms > previous:
            self._online[device_id] = ts_ms

    def mark_offline(self, device_id: int, ts_ms: int, *, reason: str) -> bool:
        """The device went offline at ``ts_ms`` (it said so, or its connection ended).

        Ignored (False) when the device was heard after ``ts_ms``: a late or replayed message does not
        rewrite what happened since. Records ``device.offline`` when the device was online.
        """
        heard = max(self._online.get(device_id, -1), self._seen.get(device_id, -1))
        if heard > ts_ms or ts_ms <= self._offline.get(device_id, -1):
            return False
        self._offline[device_id] = ts_ms
        last = self._online.pop(device_id, None)
        if last is not None:
            self._events.record_nowait(
                "device.offline",
                device_id=device_id,
                ts_ms=ts_ms,
                details={"last_seen_ms": last, "reason": reason},
            )
        return True

    def last_heard(self, device_id: int) -> int | None:
        """When the device was last heard, as far as this process knows (no database read)."""
        heard = max(self._online.get(device_id, -1), self._seen.get(device_id, -1))
        return heard if heard >= 0 else None

    def _sweep_offline(self, now: int) -> None:
        for device_id, last in list(self._online.items()):
            if now - last > self.offline_after_ms:
                del self._online[device_id]
                self._events.record_nowait(
                    "device.offline", device_id=device_id, details={"last_seen_ms": last}
                )

    def report(self, device_id: int, attributes: dict[str, Any]) -> None:
        self._reported.setdefault(device_id, {}).update(attributes)

    def forget(self, device_id: int) -> None:
        self._seen.pop(device_id, None)
        self._online.pop(device_id, None)
        self._offline.pop(device_id, None)
        self._reported.pop(device_id, None)
        self._flushing.pop(device_id, None)
        self._flushed.pop(device_id, None)

    def pending_reported(self, device_id: int) -> dict[str, Any]:
        """Reported attributes the device row may not show yet, to overlay on it."""
        return {
            **self._flushed.get(device_id, {}),
            **self._flushing.get(device_id, {}),
            **self._reported.get(device_id, {}),
        }

    async def last_seen(self, device_id: int, stored: int | None) -> int | None:
        """The newest of: not yet flushed marks, the cache, and the stored value."""
        return (await self.last_seen_many({device_id: stored}))[device_id]

    async def last_seen_many(self, stored: dict[int, int | None]) -> dict[int, int | None]:
        cached = await self._cache.get_last_seen(stored.keys())
        out: dict[int, int | None] = {}
        for device_id, value in stored.items():
            candidates = [
                t for t in (value, cached.get(device_id), self._seen.get(device_id)) if t is not None
            ]
            out[device_id] = max(candidates) if candidates else None
        return out

    def is_online(self, last_seen: int | None, now_ms: int, device_id: int | None = None) -> bool:
        if last_seen is None or now_ms - last_seen > self.offline_after_ms:
            return False
        offline_at = None if device_id is None else self._offline.get(device_id)
        return offline_at is None or last_seen > offline_at

    async def start(self) -> None:
        now = now_ms()
        for device_id, last in (await self._repo.last_seen_all()).items():
            if last is not None and now - last <= self.offline_after_ms:
                self._online[device_id] = last
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()
        await self.flush()

    async def _tick(self) -> None:
        self._sweep_offline(now_ms())
        await self.flush()  # on failure the marks are kept and written next time

    async def flush(self) -> None:
        if not self._seen and not self._reported:
            self._flushed = {}  # written a flush ago: every device row read since shows them
            return
        seen, self._seen = self._seen, {}
        reported, self._reported = self._reported, {}
        self._flushing = reported
        try:
            await self._cache.mark_seen(seen)
            await self._repo.touch_many(seen, reported)
        except Exception:
            for device_id, ts in seen.items():
                self.seen(device_id, ts)
            for device_id, attrs in reported.items():
                self._reported[device_id] = {**attrs, **self._reported.get(device_id, {})}
            raise
        finally:
            self._flushing = {}
        self._flushed = reported
