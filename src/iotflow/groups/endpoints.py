"""Device groups (``spec/api.md`` §6) and ``GET /devices/{id}/groups`` (§2).

Every group endpoint takes a user's Bearer token (own groups) or admin credentials (all groups); a
device key counts as missing credentials (401). Someone else's group → 403, an unknown one → 404.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.datastructures import State

from iotflow.auth.guards import require_device_access, require_user
from iotflow.devices.schemas import device_dict
from iotflow.groups.repository import Member
from iotflow.groups.schemas import group_dict
from iotflow.http import json_object, query_bool, query_int, query_keys, runtime
from iotflow.storage.models import Group
from iotflow.telemetry.service import latest_dict
from iotflow.timeutil import format_ts

Req = Request[Any, Any, State]


async def _member_out(request: Req, member: Member) -> dict[str, Any]:
    rt = runtime(request)
    device = member.device
    last_seen, online = await rt.devices.connectivity(device)
    out = device_dict(
        device, last_seen=last_seen, is_online=online, reported=rt.presence.pending_reported(device.id)
    )
    out["added_at"] = format_ts(member.added_at)
    return out


async def _groups_out(request: Req, groups: list[Group], *, with_devices: bool) -> list[dict[str, Any]]:
    svc = runtime(request).groups
    ids = [g.id for g in groups]
    if not with_devices:
        counts = await svc.device_counts(ids)
        return [group_dict(g, device_count=counts[g.id]) for g in groups]
    members = await svc.members(ids)
    out = []
    for g in groups:
        devices = [await _member_out(request, m) for m in members[g.id]]
        out.append(group_dict(g, device_count=len(devices), devices=devices))
    return out


async def _group(request: Req, group_id: int) -> Group:
    principal = await require_user(request)
    return await runtime(request).groups.get_for(principal, group_id)


@post("/groups", status_code=201, summary="Create a device group")
async def create_group(request: Req) -> dict[str, Any]:
    """``{name, description?, color?}``; with the admin token also ``user_id`` (the owner's 32-hex id)."""
    rt = runtime(request)
    principal = await require_user(request)
    body = await json_object(request)
    owner = await rt.groups.owner_for_create(principal, body)
    group = await rt.groups.create(body, owner)
    await rt.events.record("group.created", user_id=owner, details={"group_id": group.id, "name": group.name})
    return {
        "status": "success",
        "message": "Group created successfully",
        "group": group_dict(group, device_count=0, devices=[]),
    }


@get("/groups", summary="The caller's groups (admin: all)")
async def list_groups(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    principal = await require_user(request)
    with_devices = query_bool(request, "include_devices", False)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    groups, total = await rt.groups.find(principal, limit=limit, offset=offset)
    return {
        "status": "success",
        "groups": await _groups_out(request, groups, with_devices=with_devices),
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


@get("/groups/{group_id:int}", summary="One group with its devices")
async def get_group(request: Req, group_id: int) -> dict[str, Any]:
    group = await _group(request, group_id)
    return {"status": "success", "group": (await _groups_out(request, [group], with_devices=True))[0]}


@put("/groups/{group_id:int}", summary="Rename a group or change its description or colour")
async def update_group(request: Req, group_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await _group(request, group_id)
    body = await json_object(request)
    group = await rt.groups.update(group_id, body)
    return {
        "status": "success",
        "message": "Group updated successfully",
        "group": (await _groups_out(request, [group], with_devices=False))[0],
    }


@delete("/groups/{group_id:int}", status_code=200, summary="Delete a group (its devices stay)")
async def delete_group(request: Req, group_id: int) -> dict[str, Any]:
    rt = runtime(request)
    group = await _group(request, group_id)
    removed = await rt.groups.delete(group_id)
    await rt.events.record("group.deleted", user_id=group.user_id, details={"group_id": group_id})
    return {
        "status": "success",
        "message": f"Group {group.name} deleted successfully",
        "group_id": group_id,
        "devices_removed": removed,
    }


@post("/groups/{group_id:int}/devices", status_code=200, summary="Add devices of the group's owner")
async def add_devices(request: Req, group_id: int) -> dict[str, Any]:
    """``{"device_id": n}`` or ``{"device_ids": [...]}`` (at most 1000).

    Only devices owned by the group's owner can join, also when an admin asks. Any other id (another
    user's device, an ownerless device, an id that does not exist) makes the whole request a **400**
    ``Invalid devices`` naming them in ``invalid_device_ids``, and nothing is added. 400 rather than
    403: the caller is allowed to manage the group, it is the input that is wrong; and answering
    unknown and foreign ids alike does not reveal which ids exist.
    """
    rt = runtime(request)
    group = await _group(request, group_id)
    body = await json_object(request)
    added, already = await rt.groups.add_devices(group, body)
    return {
        "status": "success",
        "group_id": group_id,
        "added": added,
        "already_members": already,
        "device_count": (await rt.groups.device_counts([group_id]))[group_id],
    }


@delete(
    "/groups/{group_id:int}/devices/{device_id:int}",
    status_code=200,
    summary="Remove a device from a group (the device stays)",
)
async def remove_device(request: Req, group_id: int, device_id: int) -> dict[str, Any]:
    """404 ``Device not in group`` when the device is not a member."""
    rt = runtime(request)
    group = await _group(request, group_id)
    await rt.groups.remove_device(group, device_id)
    return {
        "status": "success",
        "message": f"Device {device_id} removed from group {group.name}",
        "group_id": group_id,
        "device_id": device_id,
    }


@get("/groups/{group_id:int}/telemetry/latest", summary="The newest values of every device in a group")
async def group_latest(request: Req, group_id: int) -> dict[str, Any]:
    """``keys`` (comma list) narrows the keys; a device without data has ``latest_data: null``."""
    rt = runtime(request)
    group = await _group(request, group_id)
    devices = []
    for device, values in await rt.groups.latest(group, query_keys(request)):
        record, keys = latest_dict(values)
        devices.append(
            {
                "device_id": device.id,
                "device_name": device.name,
                "device_type": device.device_type,
                "latest_data": record or None,
                "keys": keys,
            }
        )
    return {
        "status": "success",
        "group_id": group.id,
        "group_name": group.name,
        "devices": devices,
        "device_count": len(devices),
        "devices_with_data": sum(1 for d in devices if d["latest_data"] is not None),
    }


@get("/devices/{device_id:int}/groups", summary="The groups a device belongs to (owner or admin)")
async def device_groups(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    _, device = await require_device_access(request, device_id, allow_device=False)
    groups = [
        {"id": m.group.id, "name": m.group.name, "color": m.group.color, "added_at": format_ts(m.added_at)}
        for m in await rt.groups.groups_of_device(device_id)
    ]
    return {
        "status": "success",
        "device_id": device.id,
        "device_name": device.name,
        "groups": groups,
        "total_groups": len(groups),
    }


ROUTES = [
    create_group,
    list_groups,
    get_group,
    update_group,
    delete_group,
    add_devices,
    remove_device,
    group_latest,
    device_groups,
]
