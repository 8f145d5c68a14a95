"""Administration endpoints (``spec/api.md`` §8). Every one needs admin credentials."""

from __future__ import annotations

import math
from typing import Any

from litestar import Request, delete, get, put
from litestar.datastructures import State

from iotflow.alerts.schemas import alert_dict
from iotflow.auth.guards import require_admin
from iotflow.devices.schemas import device_dict
from iotflow.errors import ValidationFailed
from iotflow.http import json_object, query_int, query_str, runtime
from iotflow.storage.models import Device
from iotflow.timeutil import format_ts, now_ms

Req = Request[Any, Any, State]
DAY = 86_400_000


async def _device_out(request: Req, d: Device) -> dict[str, Any]:
    rt = runtime(request)
    last_seen, online = await rt.devices.connectivity(d)
    out = device_dict(d, last_seen=last_seen, is_online=online, reported=rt.presence.pending_reported(d.id))
    owner = await rt.users.repo.get(d.user_id) if d.user_id is not None else None
    out["owner"] = (
        None
        if owner is None
        else {"username": owner.username, "email": owner.email, "user_id": owner.user_id}
    )
    return out


@get("/admin/devices", summary="All devices, filtered and paged")
async def admin_devices(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    await require_admin(request)
    page = query_int(request, "page", 1, lo=1)
    per_page = query_int(request, "per_page", 50, lo=1, hi=100)
    filters: dict[str, Any] = {
        k: v for k in ("status", "device_type", "search") if (v := query_str(request, k))
    }
    user_raw = query_str(request, "user_id")
    if user_raw:
        try:
            filters["user_id"] = int(user_raw)
        except ValueError:
            raise ValidationFailed("user_id", "user_id must be an integer") from None
    devices, total = await rt.devices.repo.find(filters, limit=per_page, offset=(page - 1) * per_page)
    return {
        "status": "success",
        "devices": [await _device_out(request, d) for d in devices],
        "total_devices": total,
        "pagination": {
            "page": page,
            "per_page": per_page,
            "total": total,
            "pages": math.ceil(total / per_page),
        },
    }


@get("/admin/devices/{device_id:int}", summary="One device with configuration and telemetry figures")
async def admin_device(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_admin(request)
    device = await rt.devices.get(device_id)
    now = now_ms()
    store = rt.store
    return {
        "status": "success",
        "device": await _device_out(request, device),
        "configurations": [
            {
                "config_key": c.config_key,
                "config_value": c.config_value,
                "data_type": c.data_type,
                "updated_at": format_ts(c.updated_at),
            }
            for c in await rt.devices.configs(device_id)
        ],
        "telemetry_stats": {
            "total_points": await store.count_points(device_id),
            "last_24_hours": await store.count_points(device_id, since_ms=now - DAY),
            "last_7_days": await store.count_points(device_id, since_ms=now - 7 * DAY),
            "last_30_days": await store.count_points(device_id, since_ms=now - 30 * DAY),
        },
    }


@put("/admin/devices/{device_id:int}", summary="Edit any device")
async def admin_update_device(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_admin(request)
    device = await rt.devices.update(device_id, await json_object(request))
    return {
        "status": "success",
        "message": "Device updated successfully",
        "device": await _device_out(request, device),
    }


@put("/admin/devices/{device_id:int}/status", summary="Set a device's administrative status")
async def admin_set_status(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_admin(request)
    body = await json_object(request)
    if "status" not in body:
        raise ValidationFailed("status", "status is required: active, inactive or maintenance")
    old = (await rt.devices.get(device_id)).status
    device = await rt.devices.update(device_id, {"status": body["status"]})
    return {
        "status": "success",
        "message": f"Device status updated from {old} to {device.status}",
        "device_id": device_id,
        "old_status": old,
        "new_status": device.status,
    }


@delete("/admin/devices/{device_id:int}", status_code=200, summary="Delete a device and its telemetry")
async def admin_delete_device(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_admin(request)
    device, points = await rt.devices.delete(device_id)
    return {
        "status": "success",
        "message": f"Device {device.name} deleted successfully",
        "device_id": device_id,
        "deleted_points": points,
    }


@get("/admin/stats", summary="Device, telemetry and ingest figures")
async def admin_stats(request: Req) -> dict[str, Any]:
    await require_admin(request)
    return await _stats(request)


async def _stats(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    counts = await rt.devices.repo.status_counts()
    now = now_ms()
    total, online = await rt.devices.online_counts()
    telemetry = await rt.telemetry.status()
    return {
        "status": "success",
        "timestamp": format_ts(now),
        "user_stats": await rt.users.repo.counts(),
        "device_stats": {
            "total": sum(counts.values()),
            "active": counts.get("active", 0),
            "inactive": counts.get("inactive", 0),
            "maintenance": counts.get("maintenance", 0),
            "online": online,
            "offline": total - online,
        },
        "telemetry_stats": {
            "total_points": telemetry["total_points"],
            "points_last_hour": telemetry["points_last_hour"],
            "points_last_day": await rt.store.count_points(since_ms=now - DAY),
        },
        "ingest": telemetry["ingest"],
    }


@get("/admin/dashboard", summary="Stats, recent events and open alerts in one answer")
async def dashboard(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    principal = await require_admin(request)
    stats = await _stats(request)
    now = now_ms()
    events, _ = await rt.events.query(
        user_id=None, types=None, device_id=None, start_ms=now - 7 * DAY, end_ms=now, limit=20, offset=0
    )
    alerts, open_total = await rt.alerts.list_alerts(
        principal,
        states=("open", "acknowledged"),
        severities=(),
        device_id=None,
        start_ms=None,
        end_ms=None,
        limit=20,
        offset=0,
    )
    return {
        **stats,
        "alert_stats": rt.alerts.stats(),
        "recent_events": events,
        "open_alerts": [alert_dict(a) for a in alerts],
        "open_alerts_total": open_total,
    }


@get("/admin/cache/device-status", summary="Cache figures")
async def cache_stats(request: Req) -> dict[str, Any]:
    await require_admin(request)
    return {"status": "success", "cache_stats": await runtime(request).cache.stats()}


@delete("/admin/cache/device-status", status_code=200, summary="Clear every cache (they refill on demand)")
async def clear_cache(request: Req) -> dict[str, Any]:
    await require_admin(request)
    await runtime(request).cache.clear()
    return {"status": "success", "message": "Cache cleared"}


@delete("/admin/cache/devices/{device_id:int}", status_code=200, summary="Clear the cache of one device")
async def clear_device_cache(request: Req, device_id: int) -> dict[str, Any]:
    await require_admin(request)
    await runtime(request).cache.forget_device(device_id)
    return {"status": "success", "message": f"Cache of device {device_id} cleared", "device_id": device_id}


ROUTES = [
    admin_devices,
    admin_device,
    admin_update_device,
    admin_set_status,
    admin_delete_device,
    admin_stats,
    dashboard,
    cache_stats,
    clear_cache,
    clear_device_cache,
]
