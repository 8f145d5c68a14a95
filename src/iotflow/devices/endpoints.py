"""Device endpoints (``spec/api.md`` §2). Thin: authenticate, decode, call the service, encode."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.datastructures import State

from iotflow.auth.guards import (
    optional_principal,
    require_device,
    require_device_access,
    require_user,
)
from iotflow.auth.principal import Principal
from iotflow.devices.schemas import config_dict, device_dict, status_dict
from iotflow.errors import BadRequest, Forbidden, IoTFlowError, Unauthorized, ValidationFailed
from iotflow.http import json_object, query_bool, query_int, query_str, runtime
from iotflow.storage.models import Device
from iotflow.timeutil import format_ts, now_ms

Req = Request[Any, Any, State]


async def _device_out(request: Req, device: Device) -> dict[str, Any]:
    rt = runtime(request)
    last_seen, online = await rt.devices.connectivity(device)
    return device_dict(
        device, last_seen=last_seen, is_online=online, reported=rt.presence.pending_reported(device.id)
    )


async def _owner(request: Req, user_pk: int | None) -> dict[str, Any] | None:
    if user_pk is None:
        return None
    user = await runtime(request).users.repo.get(user_pk)
    return None if user is None else {"username": user.username, "email": user.email, "user_id": user.user_id}


async def _registration_owner(request: Req, body: dict[str, Any]) -> int | None:
    """Who will own a device being registered (``spec/api.md`` §2 "Who may register a device")."""
    rt = runtime(request)
    principal = await optional_principal(request)
    if principal is not None and principal.kind == "device":
        principal = None  # a device key does not register devices
    if rt.settings.device_registration == "authenticated" and principal is None:
        raise Unauthorized(
            "Registration needs a user's Bearer token or admin credentials", title="Authentication required"
        )
    body_user = body.get("user_id")
    if body_user is not None:
        user = await rt.users.repo.by_public_id(body_user) if isinstance(body_user, str) else None
        if user is None or not user.is_active:
            raise Unauthorized("Invalid user_id or user is not active", title="Authentication failed")
        if principal is not None and principal.kind == "user" and principal.user_id != user.id:
            raise Forbidden("A user may only register devices for themselves")
        return user.id
    return principal.user_id if principal is not None else None


@post("/devices/register", status_code=201, summary="Register a device and get its API key")
async def register_device(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    body = await json_object(request)
    owner = await _registration_owner(request, body)
    device, api_key = await rt.devices.register(body, user_id=owner)
    out = await _device_out(request, device)
    out["api_key"] = api_key
    owner_info = await _owner(request, owner)
    out["owner"] = (
        None if owner_info is None else {"username": owner_info["username"], "email": owner_info["email"]}
    )
    return {"message": "Device registered successfully", "device": out}


@get("/devices/status", summary="The calling device, with its stored point count")
async def own_status(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    auth = await require_device(request)
    device = await rt.devices.get(auth.id)
    out = await _device_out(request, device)
    out["telemetry_count"] = await rt.store.count_points(device.id)
    return {"status": "success", "device": out}


def _topics(device_id: int) -> dict[str, str]:
    base = f"iotflow/devices/{device_id}"
    return {
        "telemetry": f"{base}/telemetry",
        "status": f"{base}/status",
        "commands": f"{base}/commands",
        "heartbeat": f"{base}/status/heartbeat",
    }


@get("/devices/credentials", summary="How firmware learns its id from its key")
async def credentials(request: Req) -> dict[str, Any]:
    auth = await require_device(request)
    owner = await _owner(request, auth.user_id)
    return {
        "status": "success",
        "device": {
            "id": auth.id,
            "name": auth.name,
            "device_type": auth.device_type,
            "user_id": auth.user_id,
            "status": auth.status,
            "mqtt_topics": _topics(auth.id),
            "owner": None if owner is None else {"username": owner["username"], "user_id": owner["user_id"]},
        },
    }


@get("/devices/mqtt-credentials", summary="MQTT connection parameters of the calling device")
async def mqtt_credentials(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    auth = await require_device(request)
    base = f"iotflow/devices/{auth.id}"
    return {
        "status": "success",
        "credentials": {
            "mqtt_host": rt.settings.mqtt_host,
            "mqtt_port": rt.settings.mqtt_port,
            "client_id": f"device_{auth.id}",
            "username": str(auth.id),
            "password_is_api_key": True,
            "topics": {
                "telemetry_publish": f"{base}/telemetry",
                "status_publish": f"{base}/status",
                "commands_subscribe": f"{base}/commands/#",
                "config_subscribe": f"{base}/config",
            },
        },
    }


@post("/devices/heartbeat", status_code=200, summary="Mark the calling device as seen")
async def heartbeat(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    auth = await require_device(request)
    await request.body()  # the body is optional and ignored
    ts = now_ms()
    rt.presence.seen(auth.id, ts)
    return {
        "message": "Heartbeat received",
        "device_id": auth.id,
        "timestamp": format_ts(ts),
        "status": "online",
    }


@put("/devices/config", summary="A device updates its own status, location and versions")
async def device_update_self(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    auth = await require_device(request)
    body = await json_object(request)
    allowed = {"status", "location", "firmware_version", "hardware_version"}
    changes = {k: v for k, v in body.items() if k in allowed}
    if not changes:
        raise BadRequest(f"Send at least one of: {', '.join(sorted(allowed))}", title="No changes")
    if changes.get("status") == "inactive":
        raise Forbidden("A device may set itself to active or maintenance, not inactive")
    device = await rt.devices.update(auth.id, changes)
    return {
        "message": "Device configuration updated successfully",
        "device": await _device_out(request, device),
    }


@get("/devices/config", summary="The calling device's configuration")
async def device_get_config(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    auth = await require_device(request)
    return {
        "status": "success",
        "device_id": auth.id,
        "configuration": config_dict(await rt.devices.configs(auth.id)),
    }


@post("/devices/config", status_code=200, summary="Set one configuration value of the calling device")
async def device_set_config(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    auth = await require_device(request)
    body = await json_object(request)
    key = body.get("config_key")
    _, dtype = await rt.devices.set_config(auth.id, key, body.get("config_value"), body.get("data_type"))
    return {
        "status": "success",
        "message": "Configuration updated successfully",
        "config_key": key,
        "config_value": body.get("config_value"),
        "data_type": dtype,
    }


@get("/devices/{device_id:int}/configuration", summary="A device's configuration (owner or admin)")
async def get_configuration(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_device_access(request, device_id, allow_device=False)
    return {
        "status": "success",
        "device_id": device_id,
        "configuration": config_dict(await rt.devices.configs(device_id)),
    }


@put("/devices/{device_id:int}/configuration", summary="Replace a device's configuration (owner or admin)")
async def put_configuration(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_device_access(request, device_id, allow_device=False)
    body = await json_object(request)
    if "configuration" not in body:
        raise ValidationFailed("configuration", "configuration is required: an object of key → value")
    await rt.devices.replace_configs(device_id, body["configuration"])
    return {
        "status": "success",
        "device_id": device_id,
        "configuration": config_dict(await rt.devices.configs(device_id)),
    }


async def _list(
    request: Req, principal: Principal, *, default_limit: int = 100
) -> tuple[list[Device], int, int, int]:
    """Devices visible to ``principal`` (a user's own; all for admin), filtered and paged."""
    rt = runtime(request)
    limit = query_int(request, "limit", default_limit, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    filters: dict[str, Any] = {} if principal.is_admin else {"user_id": principal.user_id}
    for name in ("status", "device_type", "tag", "search"):
        value = query_str(request, name)
        if value:
            filters[name] = value
    devices, total = await rt.devices.repo.find(filters, limit=limit, offset=offset)
    return devices, total, limit, offset


@get("/devices/statuses", summary="Online status of the caller's devices (admin: all)")
async def statuses(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    principal = await require_user(request)
    online_filter = query_str(request, "online")
    want_online = None if online_filter in (None, "") else query_bool(request, "online", False)
    devices, total, limit, offset = await _list(request, principal)
    out = []
    for d in devices:
        last_seen, online = await rt.devices.connectivity(d)
        if want_online is None or online == want_online:
            out.append(status_dict(d, last_seen=last_seen, is_online=online))
    return {"status": "success", "devices": out, "meta": {"total": total, "limit": limit, "offset": offset}}


@get("/devices", summary="List the caller's devices (admin: all)")
async def list_devices(request: Req) -> dict[str, Any]:
    principal = await require_user(request)
    devices, total, limit, offset = await _list(request, principal)
    return {
        "devices": [await _device_out(request, d) for d in devices],
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


@get("/devices/{device_id:int}/status", summary="Online status of one device")
async def device_status(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    _, device = await require_device_access(request, device_id)
    last_seen, online = await rt.devices.connectivity(device)
    return {"status": "success", "device": status_dict(device, last_seen=last_seen, is_online=online)}


@get("/devices/{device_id:int}", summary="One device")
async def get_device(request: Req, device_id: int) -> dict[str, Any]:
    _, device = await require_device_access(request, device_id, allow_device=False)
    return {"status": "success", "device": await _device_out(request, device)}


@put("/devices/{device_id:int}", summary="Edit a device's descriptive fields, tags, attributes, status")
async def update_device(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_device_access(request, device_id, allow_device=False)
    body = await json_object(request)
    device = await rt.devices.update(device_id, body)
    return {
        "status": "success",
        "message": "Device updated successfully",
        "device": await _device_out(request, device),
    }


@delete("/devices/{device_id:int}", status_code=200, summary="Delete a device and its telemetry")
async def delete_device(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_device_access(request, device_id, allow_device=False)
    device, points = await rt.devices.delete(device_id)
    return {
        "status": "success",
        "message": f"Device {device.name} deleted successfully",
        "device_id": device_id,
        "deleted_points": points,
    }


@post(
    "/devices/{device_id:int}/rotate-key",
    status_code=200,
    summary="Issue a new API key; the old one stops working",
)
async def rotate_key(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await require_device_access(request, device_id, allow_device=False)
    _, api_key = await rt.devices.rotate_key(device_id)
    return {"status": "success", "device_id": device_id, "api_key": api_key}


@post("/devices/bulk", status_code=201, summary="Register up to 1000 devices at once")
async def bulk_register(request: Req) -> dict[str, Any]:
    """Each item is a registration body. Items that fail are reported in ``errors``; the rest are created."""
    rt = runtime(request)
    principal = await require_user(request)
    body = await json_object(request)
    items = body.get("devices")
    if not isinstance(items, list) or not items:
        raise ValidationFailed("devices", "devices must be a non-empty array of device bodies")
    if len(items) > 1000:
        raise ValidationFailed("devices", f"At most 1000 devices per request, got {len(items)}")
    created: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValidationFailed(f"devices[{index}]", "each device must be a JSON object")
            owner = principal.user_id
            if principal.is_admin and item.get("user_id") is not None:
                owner = await _registration_owner(request, {"user_id": item["user_id"]})
            device, api_key = await rt.devices.register(item, user_id=owner)
            out = await _device_out(request, device)
            out["api_key"] = api_key
            created.append(out)
        except IoTFlowError as exc:
            errors.append({"index": index, "error": exc.title, "message": exc.message})
    return {"created": created, "errors": errors}


@get("/devices/user/{user_id:str}", summary="The devices of one user (that user or admin)")
async def devices_of_user(request: Req, user_id: str) -> dict[str, Any]:
    rt = runtime(request)
    principal = await require_user(request)
    user = await rt.users.by_public_id(user_id)
    if not principal.is_admin and principal.user_id != user.id:
        raise Forbidden("You may only list your own devices")
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    devices, total = await rt.devices.repo.find({"user_id": user.id}, limit=limit, offset=offset)
    return {
        "status": "success",
        "user_id": user.user_id,
        "username": user.username,
        "total_devices": total,
        "devices": [await _device_out(request, d) for d in devices],
        "meta": {"limit": limit, "offset": offset, "returned": len(devices)},
    }


ROUTES = [
    bulk_register,
    devices_of_user,
    register_device,
    own_status,
    credentials,
    mqtt_credentials,
    heartbeat,
    device_update_self,
    device_get_config,
    device_set_config,
    get_configuration,
    put_configuration,
    statuses,
    list_devices,
    device_status,
    get_device,
    update_device,
    delete_device,
    rotate_key,
]
