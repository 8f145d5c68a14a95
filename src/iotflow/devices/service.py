"""Device logic: registration, keys, lookups, updates, configuration, deletion."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from iotflow.auth.apikeys import digests_match, generate_api_key, hash_api_key
from iotflow.background import Periodic, finish
from iotflow.cache.base import Cache, DeviceAuth
from iotflow.devices.presence import Presence
from iotflow.devices.repository import DeviceRepository
from iotflow.devices.schemas import DEVICE_STATUSES, config_dict, encode_config
from iotflow.errors import BadRequest, NotFound, ValidationFailed
from iotflow.events.service import EventLog
from iotflow.storage.models import Device, DeviceConfiguration
from iotflow.storage.timeseries.base import TimeseriesStore
from iotflow.timeutil import now_ms
from iotflow.validation import opt_float, opt_str, req_str

MAX_ID = 2**63 - 1  # ids beyond a 64-bit integer cannot exist: 404 without asking the database
RECENT_S = 2.0  # a telemetry read's copy of a device is read again once it is older than this
RECENT_STALE_S = 60.0  # ...in the background, while reads go on using it up to this age
RECENT_MAX = 10_000
KEY_RECHECK_S = 5.0  # how often cached API keys are checked against the database
KEYS_SWEPT_MAX = 200_000

log = logging.getLogger(__name__)

EDITABLE_TEXT = {
    "name": (1, 100),
    "description": (0, 1000),
    "location": (0, 500),
    "firmware_version": (0, 100),
    "hardware_version": (0, 100),
}


def _tags(body: dict[str, Any]) -> list[str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if (
        not isinstance(tags, list)
        or not all(isinstance(t, str) and 0 < len(t) <= 100 for t in tags)
        or len(tags) > 100
    ):
        raise ValidationFailed("tags", "tags must be a list of at most 100 non-empty strings (≤ 100 chars)")
    return list(dict.fromkeys(tags))


def _attributes(body: dict[str, Any]) -> dict[str, Any] | None:
    attrs = body.get("attributes")
    if attrs is None:
        return None
    if not isinstance(attrs, dict):
        raise ValidationFailed("attributes", "attributes must be a JSON object")
    return attrs


def descriptive_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The validated descriptive fields present in ``body`` (for register and update)."""
    values: dict[str, Any] = {}
    for name, (lo, hi) in EDITABLE_TEXT.items():
        if name in body:
            values[name] = opt_str(body, name, min_len=lo, max_len=hi)
    if "device_type" in body:
        values["device_type"] = req_str(body, "device_type", max_len=100)
    if "latitude" in body:
        values["latitude"] = opt_float(body, "latitude", -90, 90)
    if "longitude" in body:
        values["longitude"] = opt_float(body, "longitude", -180, 180)
    if (tags := _tags(body)) is not None:
        values["tags"] = tags
    if (attrs := _attributes(body)) is not None:
        values["attributes"] = attrs
    return values


def _auth_of(d: Device) -> DeviceAuth:
    return DeviceAuth(d.id, d.name, d.device_type, d.status, d.user_id)


class DeviceService:
    def __init__(
        self,
        repo: DeviceRepository,
        cache: Cache,
        store: TimeseriesStore,
        presence: Presence,
        events: EventLog,
        *,
        key_length: int,
    ) -> None:
        self.repo = repo
        self._cache = cache
        self._store = store
        self.presence = presence
        self._events = events
        self._delete_hooks: list[Callable[[int], Awaitable[None]]] = []
        self._revoke_hooks: list[Callable[[int], Awaitable[None]]] = []
        self._key_hooks: list[Callable[[int, str], Awaitable[None]]] = []
        self._status_hooks: list[Callable[[int, str], Awaitable[None]]] = []
        self._config_hooks: list[Callable[[int, dict[str, Any]], Awaitable[None]]] = []
        self._recheck_hooks: list[Callable[[int], Awaitable[None]]] = []
        self._key_length = key_length
        # device id → (read at, device): the device as telemetry reads check it (owner, status,
        # name), kept so that a dashboard's reads do not each query the database (get_recent)
        self._recent: dict[int, tuple[float, Device]] = {}
        self._recent_changes = 0  # bumped by every change: a read that overlapped one keeps no copy
        self._refreshing: dict[int, asyncio.Task[None]] = {}
        # API key hash → the device it named when it was cached (recheck_keys compares)
        self._keys_cached: dict[str, DeviceAuth] = {}
        self._key_sweep = Periodic("API key check", KEY_RECHECK_S, self.recheck_keys)
        self._closed = False

    # ----- keys ------------------------------------------------------------------------------------

    async def authenticate(self, api_key: str) -> DeviceAuth | None:
        if not api_key or len(api_key) > 256:
            return None
        key_hash = hash_api_key(api_key)
        cached = await self._cache.get_device_auth(key_hash)
        if cached is not None:
            return cached
        device = await self.repo.by_key_hash(key_hash)
        if device is None or not digests_match(device.api_key_hash, key_hash):
            return None
        auth = _auth_of(device)
        await self._cache.set_device_auth(key_hash, auth)
        self._keys_cached[key_hash] = auth
        while len(self._keys_cached) > KEYS_SWEPT_MAX:  # the oldest, as the cache drops them
            del self._keys_cached[next(iter(self._keys_cached))]
        return auth

    async def recheck_keys(self) -> None:
        """Every ``KEY_RECHECK_S``: the cached API keys against the database, a query per 500.

        A key rotated, or a device deleted or changed, by another process (the CLI) stops working,
        or changes, within that time, and the ``on_recheck`` hooks close the device's MQTT sessions
        that used such a key; changes made through this service act at once."""
        hashes = list(self._keys_cached)
        revoked: set[int] = set()  # devices with a key that no longer works (or no longer active)
        for first in range(0, len(hashes), 500):
            chunk = hashes[first : first + 500]
            found = {d.api_key_hash: d for d in await self.repo.by_key_hashes(chunk)}
            for key_hash in chunk:
                cached = self._keys_cached.get(key_hash)
                if cached is None:
                    continue
                device = found.get(key_hash)
                if device is None:  # rotated or deleted
                    del self._keys_cached[key_hash]
                    await self._cache.forget_device(cached.id)
                    revoked.add(cached.id)
                elif (auth := _auth_of(device)) != cached:  # renamed, deactivated...
                    self._keys_cached[key_hash] = auth
                    await self._cache.set_device_auth(key_hash, auth)
                    if auth.status != "active":
                        revoked.add(cached.id)
        for device_id in revoked:
            for hook in self._recheck_hooks:
                try:
                    await hook(device_id)
                except Exception as exc:  # the others still get theirs; this key is out of the cache
                    log.warning("ending device %s's sessions after a key change failed: %s", device_id, exc)

    async def rotate_key(self, device_id: int) -> tuple[Device, str]:
        await self.get(device_id)
        api_key = generate_api_key(self._key_length)
        device = await self.repo.update(
            device_id, {"api_key_hash": hash_api_key(api_key), "updated_at": now_ms()}
        )
        if device is None:
            raise NotFound(f"Device {device_id} not found", title="Device not found")
        self._forget_recent(device_id)
        await self._cache.forget_device(device_id)
        await self._revoked(device_id)
        await self._key_set(device_id, api_key)
        self._events.record_nowait("device.key_rotated", device_id=device_id, user_id=device.user_id)
        return device, api_key

    # ----- lifecycle -------------------------------------------------------------------------------

    async def register(self, body: dict[str, Any], *, user_id: int | None = None) -> tuple[Device, str]:
        if "name" not in body:
            raise ValidationFailed("name", "name is required (1-100 characters)")
        if "device_type" not in body:
            raise ValidationFailed("device_type", "device_type is required")
        values = descriptive_fields(body)
        api_key = generate_api_key(self._key_length)
        ts = now_ms()
        device = Device(
            **{"tags": [], "attributes": {}, **values},
            status="active",
            reported={},
            user_id=user_id,
            owner_scope=user_id or 0,
            api_key_hash=hash_api_key(api_key),
            created_at=ts,
            updated_at=ts,
        )
        device = await self.repo.add(device)
        await self._key_set(device.id, api_key)
        self._events.record_nowait(
            "device.registered",
            device_id=device.id,
            user_id=user_id,
            details={"name": device.name, "device_type": device.device_type},
        )
        return device, api_key

    async def get(self, device_id: int) -> Device:
        device = await self.repo.get(device_id) if 0 < device_id <= MAX_ID else None
        if device is None:
            raise NotFound(f"Device {device_id} not found", title="Device not found")
        return device

    async def get_recent(self, device_id: int) -> Device:
        """The device as read at most ``RECENT_S`` ago (plus one background read), for telemetry reads.

        Every change made through this service (update, status, key, delete) forgets the copy at
        once, and a read that overlapped a change keeps nothing. A copy older than ``RECENT_S`` is
        still answered while a background task reads the device again (a request never waits for the
        database once its device is known), so what changes elsewhere (``last_seen``, another
        process) shows after ``RECENT_S`` and one read; a copy older than ``RECENT_STALE_S`` is not
        used."""
        hit = self._recent.get(device_id)
        if hit is not None:
            age = time.monotonic() - hit[0]
            if age < RECENT_S:
                return hit[1]
            if age < RECENT_STALE_S and not self._closed:
                if device_id not in self._refreshing:
                    self._refreshing[device_id] = asyncio.get_running_loop().create_task(
                        self._refresh(device_id)
                    )
                return hit[1]
        return await self._read_recent(device_id)

    async def _read_recent(self, device_id: int) -> Device:
        changes, read_at = self._recent_changes, time.monotonic()
        device = await self.get(device_id)
        if changes == self._recent_changes:
            if len(self._recent) >= RECENT_MAX:
                self._recent.clear()
            self._recent[device_id] = (read_at, device)
        return device

    async def _refresh(self, device_id: int) -> None:
        try:
            await self._read_recent(device_id)
        except NotFound:
            self._recent.pop(device_id, None)
        except Exception as exc:  # the database is in trouble: the next read asks it itself
            log.warning("reading device %s again failed: %s", device_id, exc)
            self._recent.pop(device_id, None)
        finally:
            self._refreshing.pop(device_id, None)

    def _forget_recent(self, device_id: int) -> None:
        self._recent.pop(device_id, None)
        self._recent_changes += 1

    def start(self) -> None:
        """Start the periodic API key check (see :meth:`recheck_keys`)."""
        self._key_sweep.start()

    async def close(self) -> None:
        """Stop the background work (the runtime closes the service before the database)."""
        self._closed = True
        await self._key_sweep.stop()
        await finish(list(self._refreshing.values()))

    async def update(self, device_id: int, body: dict[str, Any]) -> Device:
        current = await self.get(device_id)
        values = descriptive_fields(body)
        if "name" in values and values["name"] is None:
            raise ValidationFailed("name", "name cannot be null")
        if "status" in body:
            values["status"] = self.check_status(body["status"])
        if not values:
            raise BadRequest("Nothing to update: send at least one editable field", title="No changes")
        values["updated_at"] = now_ms()
        device = await self.repo.update(device_id, values)
        self._forget_recent(device_id)
        if device is None:
            raise NotFound(f"Device {device_id} not found", title="Device not found")
        if device.status != current.status or device.name != current.name:
            await self._cache.forget_device(device_id)
        if device.status != current.status and device.status != "active":
            await self._revoked(device_id)
        if device.status != current.status:
            for status_hook in self._status_hooks:
                await status_hook(device_id, device.status)
            self._events.record_nowait(
                "device.status_changed",
                device_id=device_id,
                user_id=device.user_id,
                details={"old_status": current.status, "new_status": device.status},
            )
        return device

    @staticmethod
    def check_status(status: Any) -> str:
        if status not in DEVICE_STATUSES:
            raise ValidationFailed("status", f"status must be one of {', '.join(DEVICE_STATUSES)}")
        return str(status)

    def on_delete(self, hook: Callable[[int], Awaitable[None]]) -> None:
        """Run ``hook(device_id)`` after a device was deleted (services that keep per-device state)."""
        self._delete_hooks.append(hook)

    def on_revoke(self, hook: Callable[[int], Awaitable[None]]) -> None:
        """Run ``hook(device_id)`` when a device's sessions must end: key rotated, device no longer
        active, or deleted (the MQTT transport disconnects it)."""
        self._revoke_hooks.append(hook)

    def on_config(self, hook: Callable[[int, dict[str, Any]], Awaitable[None]]) -> None:
        """Run ``hook(device_id, configuration)`` after a device's configuration changed (the whole
        configuration, as ``GET /devices/config`` shows it): the MQTT transport publishes it."""
        self._config_hooks.append(hook)

    def on_recheck(self, hook: Callable[[int], Awaitable[None]]) -> None:
        """Run ``hook(device_id)`` when the periodic key check found a key of the device rotated, or the
        device deleted or no longer active, by another process: the MQTT transport closes the
        device's sessions whose key no longer works (a session with the new key stays)."""
        self._recheck_hooks.append(hook)

    def on_key(self, hook: Callable[[int, str], Awaitable[None]]) -> None:
        """Run ``hook(device_id, api_key)`` after a device got a key (registration, rotation). The plain
        key is never stored: it exists only in memory, for this call (the broker's dynamic security)."""
        self._key_hooks.append(hook)

    def on_status(self, hook: Callable[[int, str], Awaitable[None]]) -> None:
        """Run ``hook(device_id, new_status)`` after a device's status changed."""
        self._status_hooks.append(hook)

    async def _key_set(self, device_id: int, api_key: str) -> None:
        for hook in self._key_hooks:
            await hook(device_id, api_key)

    async def _revoked(self, device_id: int) -> None:
        for hook in self._revoke_hooks:
            await hook(device_id)

    async def sweep_orphans(self) -> list[int]:
        """Delete the telemetry of devices that no longer exist, and return their ids.

        A device's row is deleted before its points (so that nothing new is accepted for it); a
        server stopped in between (killed, or a telemetry writer that died) left the points behind.
        The store is asked first: a device with points then was created before, so a device the
        metadata does not know afterwards is really gone."""
        with_points = await self._store.device_ids()
        known = set(await self.repo.all_ids())
        orphans = [d for d in with_points if d not in known]
        for device_id in orphans:
            deleted = await self._store.delete_device(device_id)
            log.warning(
                "deleted %d telemetry points of device %d, which no longer exists", deleted, device_id
            )
        return orphans

    async def delete(self, device_id: int) -> tuple[Device, int]:
        device = await self.get(device_id)
        await self.repo.delete(device_id)
        self._forget_recent(device_id)
        await self._cache.forget_device(device_id)
        # Sessions end before the points go: deleting them can take seconds, and nothing the device
        # sends meanwhile may be stored after them.
        await self._revoked(device_id)
        self.presence.forget(device_id)
        deleted_points = await self._store.delete_device(device_id)
        for hook in self._delete_hooks:
            await hook(device_id)
        self._events.record_nowait(
            "device.deleted",
            device_id=device_id,
            user_id=device.user_id,
            details={"name": device.name, "points_deleted": deleted_points},
        )
        return device, deleted_points

    # ----- connectivity ----------------------------------------------------------------------------

    async def connectivity(self, device: Device) -> tuple[int | None, bool]:
        last_seen = await self.presence.last_seen(device.id, device.last_seen)
        return last_seen, self.presence.is_online(last_seen, now_ms(), device.id)

    async def online_counts(self) -> tuple[int, int]:
        """(devices in total, devices online now)."""
        seen = await self.presence.last_seen_many(await self.repo.last_seen_all())
        now = now_ms()
        return len(seen), sum(
            1 for device_id, ts in seen.items() if self.presence.is_online(ts, now, device_id)
        )

    # ----- configuration ---------------------------------------------------------------------------

    async def configs(self, device_id: int) -> list[DeviceConfiguration]:
        return await self.repo.configs(device_id)

    async def set_config(self, device_id: int, key: Any, value: Any, data_type: Any) -> tuple[str, str]:
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            raise ValidationFailed("config_key", "config_key is required: a string of 1-128 characters")
        if value is None:
            raise ValidationFailed("config_value", "config_value is required")
        if data_type is not None and not isinstance(data_type, str):
            raise ValidationFailed("data_type", "data_type must be a string")
        text, dtype = encode_config(key, value, data_type)
        await self.repo.set_configs(device_id, [(key, text, dtype)], now_ms(), replace=False)
        await self._config_changed(device_id)
        return text, dtype

    async def replace_configs(self, device_id: int, configuration: Any) -> None:
        if not isinstance(configuration, dict):
            raise ValidationFailed("configuration", "configuration must be an object of key → value")
        items = []
        for key, value in configuration.items():
            if not 1 <= len(key) <= 128:
                raise ValidationFailed(f"configuration.{key}", "configuration keys are 1-128 characters")
            if value is None:
                raise ValidationFailed(f"configuration.{key}", "null is not a configuration value")
            text, dtype = encode_config(key, value, None)
            items.append((key, text, dtype))
        await self.repo.set_configs(device_id, items, now_ms(), replace=True)
        await self._config_changed(device_id)

    async def _config_changed(self, device_id: int) -> None:
        if self._config_hooks:
            configuration = config_dict(await self.repo.configs(device_id))
            for hook in self._config_hooks:
                await hook(device_id, configuration)
