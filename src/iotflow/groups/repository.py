"""Every query on device groups and their members."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotflow.errors import Conflict, NotFound
from iotflow.storage.models import Device, Group, GroupMember


class Member(NamedTuple):
    device: Device
    added_at: int


class Membership(NamedTuple):
    group: Group
    added_at: int


def _integrity(exc: IntegrityError) -> Exception:
    text = str(exc.orig).lower()
    if "unique" in text or "duplicate" in text:
        return Conflict("You already have a group with that name", title="Group name already exists")
    return NotFound("The group's owner no longer exists", title="User not found")


class GroupRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    # ----- groups ----------------------------------------------------------------------------------

    async def add(self, group: Group) -> Group:
        try:
            async with self._sessions() as s, s.begin():
                s.add(group)
        except IntegrityError as exc:
            raise _integrity(exc) from None
        return group

    async def get(self, group_id: int) -> Group | None:
        async with self._sessions() as s:
            return await s.get(Group, group_id)

    async def find(self, *, user_id: int | None, limit: int, offset: int) -> tuple[list[Group], int]:
        """Groups of ``user_id`` (all groups when None), by id."""
        count = select(func.count(Group.id))
        stmt = select(Group)
        if user_id is not None:
            count = count.where(Group.user_id == user_id)
            stmt = stmt.where(Group.user_id == user_id)
        async with self._sessions() as s:
            total = (await s.execute(count)).scalar_one()
            rows = (await s.execute(stmt.order_by(Group.id).limit(limit).offset(offset))).scalars().all()
            return list(rows), int(total)

    async def update(self, group_id: int, values: Mapping[str, Any]) -> Group | None:
        try:
            async with self._sessions() as s, s.begin():
                group = await s.get(Group, group_id)
                if group is None:
                    return None
                for name, value in values.items():
                    setattr(group, name, value)
        except IntegrityError as exc:
            raise _integrity(exc) from None
        return group

    async def delete(self, group_id: int) -> int:
        """Delete the group (never its devices); returns how many memberships went with it."""
        async with self._sessions() as s, s.begin():
            result = await s.execute(delete(GroupMember).where(GroupMember.group_id == group_id))
            await s.execute(delete(Group).where(Group.id == group_id))
            return int(result.rowcount)  # type: ignore[attr-defined]

    # ----- members ---------------------------------------------------------------------------------

    async def device_counts(self, group_ids: Sequence[int]) -> dict[int, int]:
        if not group_ids:
            return {}
        stmt = (
            select(GroupMember.group_id, func.count(GroupMember.device_id))
            .where(GroupMember.group_id.in_(group_ids))
            .group_by(GroupMember.group_id)
        )
        async with self._sessions() as s:
            counts = {int(g): int(n) for g, n in (await s.execute(stmt)).all()}
        return {g: counts.get(g, 0) for g in group_ids}

    async def members(self, group_ids: Sequence[int]) -> dict[int, list[Member]]:
        """The devices of each group, oldest membership first."""
        out: dict[int, list[Member]] = {g: [] for g in group_ids}
        if not group_ids:
            return out
        stmt = (
            select(GroupMember.group_id, GroupMember.added_at, Device)
            .join(Device, Device.id == GroupMember.device_id)
            .where(GroupMember.group_id.in_(group_ids))
            .order_by(GroupMember.group_id, GroupMember.added_at, Device.id)
        )
        async with self._sessions() as s:
            for group_id, added_at, device in (await s.execute(stmt)).all():
                out[int(group_id)].append(Member(device, int(added_at)))
        return out

    async def member_ids(self, group_id: int) -> list[int]:
        stmt = (
            select(GroupMember.device_id)
            .where(GroupMember.group_id == group_id)
            .order_by(GroupMember.added_at, GroupMember.device_id)
        )
        async with self._sessions() as s:
            return [int(i) for i in (await s.execute(stmt)).scalars().all()]

    async def device_owners(self, device_ids: Sequence[int]) -> dict[int, int | None]:
        """Owner (user pk or None) of each existing device among ``device_ids``."""
        async with self._sessions() as s:
            stmt = select(Device.id, Device.user_id).where(Device.id.in_(device_ids))
            return {int(i): owner for i, owner in (await s.execute(stmt)).all()}

    async def add_members(
        self, group_id: int, device_ids: Sequence[int], now_ms: int
    ) -> tuple[list[int], list[int]]:
        """Add devices to a group in one transaction → (added, already members), in request order."""
        for attempt in range(2):
            try:
                async with self._sessions() as s, s.begin():
                    stmt = select(GroupMember.device_id).where(
                        GroupMember.group_id == group_id, GroupMember.device_id.in_(device_ids)
                    )
                    present = {int(i) for i in (await s.execute(stmt)).scalars().all()}
                    added = [i for i in device_ids if i not in present]
                    s.add_all(GroupMember(group_id=group_id, device_id=i, added_at=now_ms) for i in added)
                return added, [i for i in device_ids if i in present]
            except IntegrityError:
                if attempt:  # a device deleted (or the group) in between
                    raise Conflict(
                        "The group or one of the devices changed meanwhile; try again",
                        title="Membership changed",
                    ) from None
        raise AssertionError("unreachable")

    async def remove_member(self, group_id: int, device_id: int) -> bool:
        async with self._sessions() as s, s.begin():
            result = await s.execute(
                delete(GroupMember).where(
                    GroupMember.group_id == group_id, GroupMember.device_id == device_id
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def groups_of_device(self, device_id: int) -> list[Membership]:
        stmt = (
            select(Group, GroupMember.added_at)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.device_id == device_id)
            .order_by(Group.name, Group.id)
        )
        async with self._sessions() as s:
            return [Membership(g, int(added)) for g, added in (await s.execute(stmt)).all()]
