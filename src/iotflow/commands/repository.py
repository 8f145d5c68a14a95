"""Every query on commands (and the device owner look-ups their events need)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotflow.commands.schemas import OPEN, RANK
from iotflow.storage.models import Command, Device

_CHUNK = 500  # ids per IN (...) list


class Expired(NamedTuple):
    id: int
    device_id: int
    command: str
    command_type: str


def _status_is(status: str, now: int) -> ColumnElement[bool]:
    """The SQL condition for an *effective* status: open commands past their expiry count as expired."""
    if status == "expired":
        return or_(Command.status == "expired", and_(Command.status.in_(OPEN), Command.expires_at <= now))
    if status in OPEN:
        return and_(Command.status == status, Command.expires_at > now)
    return Command.status == status


class CommandRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(self, commands: Sequence[Command]) -> Sequence[Command]:
        """Insert commands in one transaction (ids are assigned in order)."""
        async with self._sessions() as s, s.begin():
            s.add_all(commands)
        return commands

    async def get(self, device_id: int, command_id: int) -> Command | None:
        async with self._sessions() as s:
            c = await s.get(Command, command_id)
            return c if c is not None and c.device_id == device_id else None

    async def open_commands(
        self, device_id: int, now: int, *, statuses: Collection[str] = OPEN, limit: int = 1000
    ) -> list[Command]:
        """Unexpired commands of the device in ``statuses`` (pending and/or delivered), oldest first."""
        stmt = (
            select(Command)
            .where(
                Command.device_id == device_id,
                Command.status.in_(list(statuses)),
                Command.expires_at > now,
            )
            .order_by(Command.created_at, Command.id)
            .limit(limit)
        )
        async with self._sessions() as s:
            return list((await s.execute(stmt)).scalars().all())

    async def find(
        self, device_id: int, statuses: Sequence[str], now: int, *, limit: int, offset: int
    ) -> tuple[list[Command], int]:
        """The device's commands newest first, optionally only those in (effective) ``statuses``."""
        stmt = select(Command).where(Command.device_id == device_id)
        if statuses:
            stmt = stmt.where(or_(*[_status_is(st, now) for st in statuses]))
        async with self._sessions() as s:
            total = (await s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
            rows = await s.execute(
                stmt.order_by(Command.created_at.desc(), Command.id.desc()).limit(limit).offset(offset)
            )
            return list(rows.scalars().all()), int(total)

    async def move(
        self, device_id: int, command_id: int, status: str, now: int, *, result: Any = None, set_result: bool
    ) -> tuple[Command | None, bool]:
        """Move the command forward to ``status`` if it is in a lower state and not expired.

        Returns (the command as it is afterwards or None when it does not exist, whether it moved).
        One conditional UPDATE, so concurrent updates cannot move a command backwards.
        """
        lower = [st for st, rank in RANK.items() if rank < RANK[status]]
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if set_result:
            values["result"] = result
        stmt = (
            update(Command)
            .where(
                Command.id == command_id,
                Command.device_id == device_id,
                Command.status.in_(lower),
                or_(Command.status.not_in(OPEN), Command.expires_at > now),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        async with self._sessions() as s, s.begin():
            moved = bool((await s.execute(stmt)).rowcount)  # type: ignore[attr-defined]
            c = await s.get(Command, command_id, populate_existing=True)
        if c is None or c.device_id != device_id:
            return None, False
        return c, moved

    async def expire(self, now: int) -> list[Expired]:
        """Mark every open command past its expiry as expired; returns those it changed."""
        stmt = (
            update(Command)
            .where(Command.status.in_(OPEN), Command.expires_at <= now)
            .values(status="expired", updated_at=now)
            .returning(Command.id, Command.device_id, Command.command, Command.command_type)
            .execution_options(synchronize_session=False)
        )
        async with self._sessions() as s, s.begin():
            rows = (await s.execute(stmt)).all()
        return [Expired(*row) for row in rows]

    async def device_owners(self, device_ids: Collection[int]) -> dict[int, int | None]:
        """Owner of each device that exists (devices that do not are missing from the answer)."""
        ids = sorted(device_ids)
        out: dict[int, int | None] = {}
        async with self._sessions() as s:
            for i in range(0, len(ids), _CHUNK):
                stmt = select(Device.id, Device.user_id).where(Device.id.in_(ids[i : i + _CHUNK]))
                out.update({row[0]: row[1] for row in (await s.execute(stmt)).all()})
        return out
