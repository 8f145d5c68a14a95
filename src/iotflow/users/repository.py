"""Every query on users and revoked tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from iotflow.errors import Conflict
from iotflow.storage.models import RevokedToken, User


def _conflict(exc: IntegrityError) -> Conflict:
    text = str(exc.orig).lower()
    if "email" in text:
        return Conflict("A user with that email already exists", title="Email already exists")
    return Conflict("A user with that username already exists", title="Username already exists")


class UserRepository:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(self, user: User) -> User:
        try:
            async with self._sessions() as s, s.begin():
                s.add(user)
        except IntegrityError as exc:
            raise _conflict(exc) from None
        return user

    async def get(self, pk: int) -> User | None:
        async with self._sessions() as s:
            return await s.get(User, pk)

    async def by_public_id(self, user_id: str) -> User | None:
        async with self._sessions() as s:
            return (await s.execute(select(User).where(User.user_id == user_id))).scalar_one_or_none()

    async def by_login(self, login: str) -> User | None:
        """By username or email (case-insensitive)."""
        lowered = login.lower()
        async with self._sessions() as s:
            stmt = select(User).where(
                or_(func.lower(User.username) == lowered, func.lower(User.email) == lowered)
            )
            return (await s.execute(stmt.limit(1))).scalars().first()

    async def name_taken(
        self, username: str | None, email: str | None, *, except_pk: int | None = None
    ) -> str | None:
        """'username' / 'email' when another user has it (case-insensitive), else None."""
        async with self._sessions() as s:
            for field, value in (("username", username), ("email", email)):
                if value is None:
                    continue
                column = User.username if field == "username" else User.email
                stmt = select(User.id).where(func.lower(column) == value.lower())
                if except_pk is not None:
                    stmt = stmt.where(User.id != except_pk)
                if (await s.execute(stmt.limit(1))).first() is not None:
                    return field
        return None

    async def find(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        async with self._sessions() as s:
            total = (await s.execute(select(func.count(User.id)))).scalar_one()
            rows = (
                (await s.execute(select(User).order_by(User.id).limit(limit).offset(offset))).scalars().all()
            )
            return list(rows), int(total)

    async def update(self, pk: int, values: Mapping[str, Any]) -> User | None:
        try:
            async with self._sessions() as s, s.begin():
                user = await s.get(User, pk)
                if user is None:
                    return None
                for name, value in values.items():
                    setattr(user, name, value)
        except IntegrityError as exc:
            raise _conflict(exc) from None
        return user

    async def delete(self, pk: int) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(delete(User).where(User.id == pk))

    async def counts(self) -> dict[str, int]:
        async with self._sessions() as s:
            total = (await s.execute(select(func.count(User.id)))).scalar_one()
            active = (
                await s.execute(select(func.count(User.id)).where(User.is_active.is_(True)))
            ).scalar_one()
            admins = (
                await s.execute(select(func.count(User.id)).where(User.is_admin.is_(True)))
            ).scalar_one()
            return {"total": int(total), "active": int(active), "admins": int(admins)}

    # ----- revoked tokens --------------------------------------------------------------------------

    async def revoke(self, jti: str, expires_at: int) -> None:
        async with self._sessions() as s, s.begin():
            if await s.get(RevokedToken, jti) is None:
                s.add(RevokedToken(jti=jti, expires_at=expires_at))

    async def revoked_since(self, now_s: int) -> list[str]:
        """Revoked tokens that have not expired yet (older rows are deleted)."""
        async with self._sessions() as s, s.begin():
            await s.execute(delete(RevokedToken).where(RevokedToken.expires_at < now_s))
            return list((await s.execute(select(RevokedToken.jti))).scalars().all())

    async def is_revoked(self, jti: str) -> bool:
        async with self._sessions() as s:
            return await s.get(RevokedToken, jti) is not None
