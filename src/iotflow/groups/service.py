"""Group logic: ownership, validation, membership (devices of the group's owner only), latest values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iotflow.auth.principal import Principal
from iotflow.errors import BadRequest, Forbidden, NotFound, ValidationFailed
from iotflow.groups.repository import GroupRepository, Member, Membership
from iotflow.groups.schemas import (
    DEFAULT_COLOR,
    MAX_ID,
    check_color,
    check_description,
    check_name,
    device_ids_of,
)
from iotflow.storage.models import Device, Group
from iotflow.storage.timeseries.base import LatestValue
from iotflow.telemetry.service import TelemetryService
from iotflow.timeutil import now_ms
from iotflow.users.service import UserService


class GroupService:
    def __init__(self, repo: GroupRepository, users: UserService, telemetry: TelemetryService) -> None:
        self.repo = repo
        self._users = users
        self._telemetry = telemetry

    # ----- access ----------------------------------------------------------------------------------

    async def get(self, group_id: int) -> Group:
        group = await self.repo.get(group_id) if 0 < group_id <= MAX_ID else None
        if group is None:
            raise NotFound(f"Group {group_id} not found", title="Group not found")
        return group

    async def get_for(self, principal: Principal, group_id: int) -> Group:
        """The group when ``principal`` owns it or is admin (404 unknown, 403 someone else's)."""
        group = await self.get(group_id)
        if not principal.is_admin and group.user_id != principal.user_id:
            raise Forbidden("This group belongs to another user")
        return group

    async def owner_for_create(self, principal: Principal, body: dict[str, Any]) -> int:
        """Who owns a new group: the calling user, or for an admin the body's ``user_id`` (32-hex)."""
        public_id = body.get("user_id")
        if public_id is None:
            if principal.user_id is None:
                raise ValidationFailed(
                    "user_id", "Groups belong to a user: with the admin token pass the owner's user_id"
                )
            return principal.user_id
        if not isinstance(public_id, str):
            raise ValidationFailed("user_id", "user_id must be a user's 32-hex public id")
        user = await self._users.repo.by_public_id(public_id) if len(public_id) == 32 else None
        if user is None or not user.is_active:
            raise ValidationFailed("user_id", f"No active user with user_id {public_id!r}")
        if not principal.is_admin and user.id != principal.user_id:
            raise Forbidden("A user may only create groups for themselves")
        return user.id

    # ----- groups ----------------------------------------------------------------------------------

    async def create(self, body: dict[str, Any], owner_pk: int) -> Group:
        name = check_name(body.get("name"))
        description = check_description(body.get("description"))
        color = DEFAULT_COLOR if body.get("color") is None else check_color(body["color"])
        ts = now_ms()
        group = Group(
            name=name, description=description, color=color, user_id=owner_pk, created_at=ts, updated_at=ts
        )
        return await self.repo.add(group)

    async def find(self, principal: Principal, *, limit: int, offset: int) -> tuple[list[Group], int]:
        user_id = None if principal.is_admin else principal.user_id
        return await self.repo.find(user_id=user_id, limit=limit, offset=offset)

    async def update(self, group_id: int, body: dict[str, Any]) -> Group:
        values: dict[str, Any] = {}
        if "name" in body:
            values["name"] = check_name(body["name"])
        if "description" in body:
            values["description"] = check_description(body["description"])
        if "color" in body:
            values["color"] = check_color(body["color"])
        if not values:
            raise BadRequest("Nothing to update: send name, description or color", title="No changes")
        values["updated_at"] = now_ms()
        group = await self.repo.update(group_id, values)
        if group is None:
            raise NotFound(f"Group {group_id} not found", title="Group not found")
        return group

    async def delete(self, group_id: int) -> int:
        """Delete a group; its devices stay. Returns how many memberships were removed."""
        return await self.repo.delete(group_id)

    async def device_counts(self, group_ids: Sequence[int]) -> dict[int, int]:
        return await self.repo.device_counts(group_ids)

    async def members(self, group_ids: Sequence[int]) -> dict[int, list[Member]]:
        return await self.repo.members(group_ids)

    async def member_ids(self, group_id: int) -> list[int]:
        return await self.repo.member_ids(group_id)

    # ----- membership ------------------------------------------------------------------------------

    async def add_devices(self, group: Group, body: dict[str, Any]) -> tuple[list[int], list[int]]:
        """Add devices of the group's owner → (added, already members). Any other id: 400, nothing added."""
        ids = device_ids_of(body)
        owners = await self.repo.device_owners(ids)
        refused = [i for i in ids if i not in owners or owners[i] != group.user_id]
        if refused:
            listed = ", ".join(str(i) for i in refused)
            raise BadRequest(
                f"Device(s) {listed} do not exist or do not belong to the group's owner; nothing was added",
                title="Invalid devices",
                details=[{"field": "device_ids", "message": f"not a device of the group's owner: {listed}"}],
                extra={"invalid_device_ids": refused},
            )
        return await self.repo.add_members(group.id, ids, now_ms())

    async def remove_device(self, group: Group, device_id: int) -> None:
        if not 0 < device_id <= MAX_ID or not await self.repo.remove_member(group.id, device_id):
            raise NotFound(
                f"Device {device_id} is not a member of group {group.id}", title="Device not in group"
            )

    async def groups_of_device(self, device_id: int) -> list[Membership]:
        return await self.repo.groups_of_device(device_id)

    async def latest(
        self, group: Group, keys: Sequence[str] | None
    ) -> list[tuple[Device, dict[str, LatestValue]]]:
        """The newest value of every key of every device in the group (cache first, then the store)."""
        members = (await self.repo.members([group.id]))[group.id]
        return [(m.device, await self._telemetry.latest(m.device.id, keys)) for m in members]
