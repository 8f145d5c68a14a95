"""User logic: registration, login/logout, token checks, profile, administration."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import msgspec

from iotflow.auth.passwords import hash_password, verify_password
from iotflow.auth.tokens import TokenClaims, TokenCodec
from iotflow.devices.service import DeviceService
from iotflow.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from iotflow.storage.models import User
from iotflow.timeutil import now_ms
from iotflow.users.repository import UserRepository
from iotflow.users.schemas import check_email, check_password, check_username

MAX_PREFERENCES_BYTES = 64 * 1024
AUTH_CACHE_SECONDS = 5.0  # how long a token's user (active/admin flags) is trusted without a lookup


class UserAuth(NamedTuple):
    pk: int
    user_id: str
    username: str
    is_active: bool
    is_admin: bool


def _auth_of(u: User) -> UserAuth:
    return UserAuth(u.id, u.user_id, u.username, u.is_active, u.is_admin)


class UserService:
    def __init__(self, repo: UserRepository, codec: TokenCodec, devices: DeviceService) -> None:
        self.repo = repo
        self._codec = codec
        self._devices = devices
        self._revoked: set[str] = set()
        self._auth_cache: dict[int, tuple[float, UserAuth]] = {}
        self._delete_hooks: list[Callable[[int], Awaitable[None]]] = []

    def on_delete(self, hook: Callable[[int], Awaitable[None]]) -> None:
        """Run ``hook(user_pk)`` after a user was deleted (their devices first)."""
        self._delete_hooks.append(hook)

    @property
    def token_ttl(self) -> int:
        return self._codec.ttl

    async def start(self) -> None:
        self._revoked = set(await self.repo.revoked_since(int(time.time())))

    # ----- accounts --------------------------------------------------------------------------------

    async def create(self, username: Any, email: Any, password: Any, *, is_admin: bool = False) -> User:
        username, email = check_username(username), check_email(email)
        password = check_password(password)
        taken = await self.repo.name_taken(username, email)
        if taken == "username":
            raise Conflict("A user with that username already exists", title="Username already exists")
        if taken == "email":
            raise Conflict("A user with that email already exists", title="Email already exists")
        ts = now_ms()
        user = User(
            user_id=secrets.token_hex(16),
            username=username,
            email=email,
            password_hash=await hash_password(password),
            is_active=True,
            is_admin=is_admin,
            preferences={},
            created_at=ts,
            updated_at=ts,
        )
        return await self.repo.add(user)

    def issue_token(self, user: User) -> str:
        token, _ = self._codec.issue(user.id)
        return token

    async def login(self, login: Any, password: Any) -> User:
        if not isinstance(login, str) or not login or not isinstance(password, str):
            raise ValidationFailed("username", "username (or email) and password are required")
        user = await self.repo.by_login(login)
        ok = await verify_password(user.password_hash if user else None, password)
        if user is None or not ok:
            raise Unauthorized("Wrong username/email or password", title="Authentication failed")
        if not user.is_active:
            raise Forbidden("This account is inactive; ask an administrator", title="Account inactive")
        updated = await self.repo.update(user.id, {"last_login": now_ms()})
        return updated or user

    async def logout(self, claims: TokenClaims) -> None:
        await self.repo.revoke(claims.jti, claims.expires_at)
        self._revoked.add(claims.jti)

    async def authenticate(self, token: str) -> tuple[UserAuth, TokenClaims]:
        claims = self._codec.decode(token)
        if claims.jti in self._revoked:
            raise Unauthorized("The token was revoked (logged out); log in again", title="Invalid token")
        auth = await self.auth_of(claims.user_pk)
        if auth is None:
            raise Unauthorized("The token's user no longer exists", title="Invalid token")
        if not auth.is_active:
            raise Forbidden("This account is inactive; ask an administrator", title="Account inactive")
        return auth, claims

    async def auth_of(self, pk: int) -> UserAuth | None:
        cached = self._auth_cache.get(pk)
        now = time.monotonic()
        if cached is not None and now - cached[0] < AUTH_CACHE_SECONDS:
            return cached[1]
        user = await self.repo.get(pk)
        if user is None:
            self._auth_cache.pop(pk, None)
            return None
        auth = _auth_of(user)
        self._auth_cache[pk] = (now, auth)
        return auth

    def _forget(self, pk: int) -> None:
        self._auth_cache.pop(pk, None)

    # ----- lookups ---------------------------------------------------------------------------------

    async def get(self, pk: int) -> User:
        user = await self.repo.get(pk)
        if user is None:
            raise NotFound(f"User {pk} not found", title="User not found")
        return user

    async def by_public_id(self, user_id: str) -> User:
        user = await self.repo.by_public_id(user_id) if len(user_id) == 32 else None
        if user is None:
            raise NotFound(f"User {user_id} not found", title="User not found")
        return user

    # ----- changes ---------------------------------------------------------------------------------

    async def update(self, pk: int, body: dict[str, Any], *, by_admin: bool, require_current: bool) -> User:
        user = await self.get(pk)
        values: dict[str, Any] = {}
        if "username" in body:
            values["username"] = check_username(body["username"])
        if "email" in body:
            values["email"] = check_email(body["email"])
        if "password" in body:
            password = check_password(body["password"])
            if require_current and not await verify_password(
                user.password_hash, str(body.get("current_password", ""))
            ):
                raise ValidationFailed("current_password", "current_password is required and must be right")
            values["password_hash"] = await hash_password(password)
        for flag in ("is_admin", "is_active"):
            if flag in body:
                if not by_admin:
                    raise Forbidden(f"Only an administrator may change {flag}")
                if not isinstance(body[flag], bool):
                    raise ValidationFailed(flag, f"{flag} must be true or false")
                values[flag] = body[flag]
        if not values:
            raise BadRequest(
                "Nothing to update: send username, email, password, is_active or is_admin", title="No changes"
            )
        taken = await self.repo.name_taken(values.get("username"), values.get("email"), except_pk=pk)
        if taken:
            raise Conflict(
                f"A user with that {taken} already exists", title=f"{taken.capitalize()} already exists"
            )
        values["updated_at"] = now_ms()
        updated = await self.repo.update(pk, values)
        self._forget(pk)
        if updated is None:
            raise NotFound(f"User {pk} not found", title="User not found")
        return updated

    async def set_active(self, pk: int, active: bool) -> User:
        return await self.update(pk, {"is_active": active}, by_admin=True, require_current=False)

    async def set_preferences(self, pk: int, preferences: Any) -> dict[str, Any]:
        if not isinstance(preferences, dict):
            raise ValidationFailed("preferences", "preferences must be a JSON object")
        if len(msgspec.json.encode(preferences)) > MAX_PREFERENCES_BYTES:
            raise ValidationFailed(
                "preferences", f"preferences are at most {MAX_PREFERENCES_BYTES} bytes of JSON"
            )
        await self.repo.update(pk, {"preferences": preferences, "updated_at": now_ms()})
        return preferences

    async def delete(self, pk: int) -> tuple[User, int]:
        """Delete the user, their devices (with telemetry). Returns (user, devices deleted)."""
        user = await self.get(pk)
        device_ids = await self._devices.repo.ids_of_owner(pk)
        for device_id in device_ids:
            await self._devices.delete(device_id)
        await self.repo.delete(pk)
        self._forget(pk)
        for hook in self._delete_hooks:
            await hook(pk)
        return user, len(device_ids)
