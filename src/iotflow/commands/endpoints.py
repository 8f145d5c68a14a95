"""Commands to devices (``spec/api.md`` §5).

Who may do what: creating a command, listing the pending ones and reporting a status take the device's
own API key, its owner's token or admin credentials; the history takes the owner or admin; the
``/mqtt/...`` senders take admin credentials (the fleet sender also the group's owner).

When the device is not connected to MQTT, ``POST /mqtt/device/{id}/command`` still answers 200: the
command is stored ``pending`` ("queued until the device connects") and is delivered when the device
connects, or picked up by HTTP polling.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.datastructures import State

from iotflow.auth.guards import require_admin, require_device_access, require_user
from iotflow.commands.schemas import STATUSES, command_dict, command_topic, new_command
from iotflow.errors import ValidationFailed
from iotflow.http import json_object, query_int, query_keys, runtime
from iotflow.timeutil import now_ms

Req = Request[Any, Any, State]


@post("/devices/{device_id:int}/control", status_code=201, summary="Send a command to a device")
async def create_command(request: Req, device_id: int) -> dict[str, Any]:
    """``{command (1-100 chars), parameters? (object), command_type? (control|config|firmware, default
    control), expires_in? (seconds, default 3600, 1..2592000)}`` → 201 Command (``delivered`` when the
    device is connected to MQTT, else ``pending``)."""
    principal, device = await require_device_access(request, device_id)
    req = new_command(await json_object(request))
    rt = runtime(request)
    by = await rt.commands.created_by(principal)
    [command] = await rt.commands.create([(device.id, device.user_id)], req, by=by)
    return command_dict(command, now_ms())


@get("/devices/{device_id:int}/control/pending", summary="Commands waiting for the device, oldest first")
async def pending_commands(request: Req, device_id: int) -> list[dict[str, Any]]:
    """A JSON array of the device's pending and delivered commands that have not expired (``limit``:
    100, max 1000). Polling changes nothing; the device reports progress with ``.../status``."""
    _, device = await require_device_access(request, device_id)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    now = now_ms()
    return [command_dict(c, now) for c in await runtime(request).commands.pending(device.id, limit=limit)]


@post(
    "/devices/{device_id:int}/control/{command_id:int}/status",
    status_code=200,
    summary="Report a command's progress (forward only)",
)
async def command_status(request: Req, device_id: int, command_id: int) -> dict[str, Any]:
    """``{status (delivered|acknowledged|completed|failed), result?}``; the status moves forward only
    along pending → delivered → acknowledged → completed|failed, otherwise 400."""
    _, device = await require_device_access(request, device_id)
    body = await json_object(request)
    command = await runtime(request).commands.set_status(device.id, device.user_id, command_id, body)
    return command_dict(command, now_ms())


@get("/devices/{device_id:int}/commands", summary="A device's command history, newest first")
async def command_history(request: Req, device_id: int) -> dict[str, Any]:
    """Filters: ``status`` (comma list), ``limit`` (100, max 1000), ``offset``."""
    _, device = await require_device_access(request, device_id, allow_device=False)
    statuses = query_keys(request, "status") or []
    for status in statuses:
        if status not in STATUSES:
            raise ValidationFailed("status", f"status must be one of {', '.join(STATUSES)} (comma-separated)")
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    commands, total = await runtime(request).commands.history(device.id, statuses, limit=limit, offset=offset)
    now = now_ms()
    return {
        "status": "success",
        "commands": [command_dict(c, now) for c in commands],
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


@post("/mqtt/device/{device_id:int}/command", status_code=200, summary="Send a command over MQTT (admin)")
async def mqtt_device_command(request: Req, device_id: int) -> dict[str, Any]:
    """``{command_type (control|config|firmware), command, qos? (0|1, default 1), parameters?,
    expires_in?}``. A device that is not connected gets the command when it connects (still 200)."""
    principal = await require_admin(request)
    req = new_command(await json_object(request), type_required=True, with_qos=True)
    rt = runtime(request)
    device = await rt.devices.get(device_id)
    by = await rt.commands.created_by(principal)
    [command] = await rt.commands.create([(device.id, device.user_id)], req, by=by)
    sent = command.status == "delivered"
    return {
        "status": "success",
        "message": "Command sent successfully" if sent else "Command queued until the device connects",
        "device_id": device.id,
        "command_type": command.command_type,
        "topic": command_topic(device.id, command.command_type),
        "qos": req.qos,
        "command_id": command.id,
        "command_status": command.status,
    }


@post(
    "/mqtt/fleet/{group_id:int}/command", status_code=200, summary="Send a command to every device of a group"
)
async def mqtt_fleet_command(request: Req, group_id: int) -> dict[str, Any]:
    """Admin or the group's owner; body as for ``/mqtt/device/{id}/command``. One command per device
    (delivered to connected devices, pending for the others) and one message on
    ``iotflow/fleet/commands/{group_id}``."""
    principal = await require_user(request)
    rt = runtime(request)
    group = await rt.groups.get_for(principal, group_id)
    req = new_command(await json_object(request), type_required=True, with_qos=True)
    member_ids = await rt.groups.member_ids(group.id)
    by = await rt.commands.created_by(principal)
    commands = await rt.commands.send_fleet(group.id, member_ids, req, by=by)
    delivered = sum(1 for c in commands if c.status == "delivered")
    return {
        "status": "success",
        "message": f"Command sent to {len(commands)} device(s) of group {group.id}",
        "group_id": group.id,
        "command_ids": [c.id for c in commands],
        "delivered": delivered,
        "pending": len(commands) - delivered,
    }


ROUTES = [
    create_command,
    pending_commands,
    command_status,
    command_history,
    mqtt_device_command,
    mqtt_fleet_command,
]
