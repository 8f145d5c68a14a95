"""Users and sessions (``spec/api.md`` §1)."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, patch, post, put
from litestar.datastructures import State

from iotflow.auth.guards import require_admin, require_user
from iotflow.auth.principal import Principal
from iotflow.errors import Forbidden, Unauthorized
from iotflow.http import json_object, query_int, runtime
from iotflow.storage.models import User
from iotflow.users.schemas import user_dict

Req = Request[Any, Any, State]


@post("/auth/register", status_code=201, summary="Create a user account and get a token")
async def register_user(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    if not rt.settings.user_registration:
        raise Forbidden("User registration is turned off on this server", title="Registration disabled")
    body = await json_object(request)
    user = await rt.users.create(body.get("username"), body.get("email"), body.get("password"))
    await rt.events.record("user.registered", user_id=user.id, details={"username": user.username})
    return {
        "status": "success",
        "message": "Registration successful",
        "user": user_dict(user),
        "token": rt.users.issue_token(user),
    }


@post("/auth/login", status_code=200, summary="Log in with username (or email) and password")
async def login(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    body = await json_object(request)
    login_name = body.get("username") or body.get("email")
    await rt.limits.check_login(request, login_name if isinstance(login_name, str) else "")
    user = await rt.users.login(login_name, body.get("password"))
    await rt.events.record("user.login", user_id=user.id)
    return {
        "status": "success",
        "message": "Login successful",
        "user": user_dict(user),
        "token": rt.users.issue_token(user),
        "token_type": "bearer",
        "expires_in": rt.users.token_ttl,
    }


def _bearer_token(request: Req) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send 'Authorization: Bearer <token>'", title="Authentication required")
    return token.strip()


@post("/auth/logout", status_code=200, summary="Revoke the token used for this request")
async def logout(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    user, claims = await rt.users.authenticate(_bearer_token(request))
    await rt.users.logout(claims)
    await rt.events.record("user.logout", user_id=user.pk)
    return {"status": "success", "message": "Logged out"}


async def _me(request: Req) -> User:
    principal = await require_user(request)
    if principal.user_id is None:
        raise Forbidden("The admin token is not a user; log in as a user for /users/me")
    return await runtime(request).users.get(principal.user_id)


@get("/users/me", summary="The calling user")
async def me(request: Req) -> dict[str, Any]:
    return {"status": "success", "user": user_dict(await _me(request))}


@put("/users/me", summary="Change the calling user's username, email or password")
async def update_me(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    user = await _me(request)
    body = await json_object(request)
    updated = await rt.users.update(user.id, body, by_admin=False, require_current=True)
    return {"status": "success", "user": user_dict(updated)}


@get("/users/me/preferences", summary="The calling user's preferences (any JSON object)")
async def get_preferences(request: Req) -> dict[str, Any]:
    return {"preferences": (await _me(request)).preferences or {}}


@put("/users/me/preferences", summary="Replace the calling user's preferences (JSON object, at most 64 KiB)")
async def put_preferences(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    user = await _me(request)
    body = await json_object(request)  # the body is the preferences object itself
    return {"preferences": await rt.users.set_preferences(user.id, body)}


@get("/users", summary="All users (admin)")
async def list_users(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    await require_admin(request)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    users, total = await rt.users.repo.find(limit=limit, offset=offset)
    return {
        "status": "success",
        "users": [user_dict(u) for u in users],
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


async def _self_or_admin(request: Req, user_id: str) -> tuple[Principal, User]:
    principal = await require_user(request)
    user = await runtime(request).users.by_public_id(user_id)
    if not principal.is_admin and principal.user_id != user.id:
        raise Forbidden("You may only see and change your own account")
    return principal, user


@get("/users/{user_id:str}", summary="One user (that user or admin)")
async def get_user(request: Req, user_id: str) -> dict[str, Any]:
    _, user = await _self_or_admin(request, user_id)
    return {"status": "success", "user": user_dict(user)}


@put("/users/{user_id:str}", summary="Change a user (is_admin / is_active: admin only)")
async def update_user(request: Req, user_id: str) -> dict[str, Any]:
    rt = runtime(request)
    principal, user = await _self_or_admin(request, user_id)
    body = await json_object(request)
    updated = await rt.users.update(
        user.id, body, by_admin=principal.is_admin, require_current=not principal.is_admin
    )
    return {"status": "success", "user": user_dict(updated)}


@delete("/users/{user_id:str}", status_code=200, summary="Delete a user and their devices")
async def delete_user(request: Req, user_id: str) -> dict[str, Any]:
    rt = runtime(request)
    _, user = await _self_or_admin(request, user_id)
    _, devices = await rt.users.delete(user.id)
    await rt.events.record(
        "user.deleted", user_id=user.id, details={"username": user.username, "devices": devices}
    )
    return {"status": "success", "message": f"User {user.username} deleted", "devices_deleted": devices}


async def _set_active(request: Req, user_id: str, active: bool) -> dict[str, Any]:
    rt = runtime(request)
    await require_admin(request)
    user = await rt.users.set_active((await rt.users.by_public_id(user_id)).id, active)
    await rt.events.record("user.activated" if active else "user.deactivated", user_id=user.id)
    return {
        "status": "success",
        "message": f"User {user.username} {'activated' if active else 'deactivated'}",
        "user": user_dict(user),
    }


@patch("/users/{user_id:str}/activate", summary="Activate a user (admin)")
async def activate(request: Req, user_id: str) -> dict[str, Any]:
    return await _set_active(request, user_id, True)


@patch("/users/{user_id:str}/deactivate", summary="Deactivate a user (admin); their tokens stop working")
async def deactivate(request: Req, user_id: str) -> dict[str, Any]:
    return await _set_active(request, user_id, False)


ROUTES = [
    register_user,
    login,
    logout,
    me,
    update_me,
    get_preferences,
    put_preferences,
    list_users,
    get_user,
    update_user,
    delete_user,
    activate,
    deactivate,
]
