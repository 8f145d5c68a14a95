"""Credential checks used by the endpoints (``spec/api.md`` §0 "Credentials").

- device: ``X-API-Key`` → the device it belongs to (cached lookup by SHA-256 digest).
- user: ``Authorization: Bearer <token>`` → the user (an ``is_admin`` user counts as admin).
- admin: ``Authorization: admin <IOTFLOW_ADMIN_TOKEN>``, compared in constant time.

A credential of a kind the endpoint does not take counts as missing (401); a valid credential that is
not allowed to touch the resource gets 403.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request

from iotflow.auth.principal import Principal
from iotflow.cache.base import DeviceAuth
from iotflow.devices.service import DeviceService
from iotflow.errors import Forbidden, Unauthorized
from iotflow.http import runtime
from iotflow.storage.models import Device

Req = Request[Any, Any, Any]


def _api_key(request: Req) -> str | None:
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def _authorization(request: Req) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return scheme.lower(), token.strip()


async def device_of_key(devices: DeviceService, key: str | None, *, active: bool = False) -> DeviceAuth:
    """The device an API key belongs to; 401 without or with an unknown key, 403 when not active."""
    if not key:
        raise Unauthorized("Send the device's API key in the X-API-Key header", title="API key required")
    device = await devices.authenticate(key)
    if device is None:
        raise Unauthorized("The API key is not valid (rotated or deleted device?)", title="Invalid API key")
    if active and device.status != "active":
        raise Forbidden(f"Device is currently {device.status}", title="Device inactive")
    return device


async def require_device(request: Req, *, active: bool = False) -> DeviceAuth:
    """The device whose key is in ``X-API-Key``."""
    return await device_of_key(runtime(request).devices, _api_key(request), active=active)


def _check_admin_token(request: Req, token: str) -> Principal:
    expected = runtime(request).settings.admin_token or ""
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("The admin token is not valid", title="Invalid admin token")
    return Principal("admin")


async def _bearer(request: Req, token: str) -> Principal:
    if not token:
        raise Unauthorized("The Bearer token is empty", title="Invalid token")
    user, _ = await runtime(request).users.authenticate(token)
    return Principal("admin" if user.is_admin else "user", user_id=user.pk)


async def optional_principal(request: Req) -> Principal | None:
    """Whoever the credentials name (any kind), or None without credentials."""
    auth = _authorization(request)
    if auth is not None:
        scheme, token = auth
        if scheme == "admin":
            return _check_admin_token(request, token)
        if scheme == "bearer":
            return await _bearer(request, token)
    if _api_key(request):
        return Principal("device", device=await require_device(request))
    return None


async def require_principal(request: Req) -> Principal:
    found = await optional_principal(request)
    if found is None:
        raise Unauthorized(
            "Send a device's X-API-Key, 'Authorization: Bearer <token>' or 'Authorization: admin <token>'",
            title="Authentication required",
        )
    return found


async def require_user(request: Req) -> Principal:
    """A user's Bearer token or admin credentials."""
    auth = _authorization(request)
    if auth is not None and auth[0] in ("bearer", "admin"):
        return await optional_principal(request)  # type: ignore[return-value]
    raise Unauthorized(
        "Send 'Authorization: Bearer <token>' from POST /api/v1/auth/login", title="Authentication required"
    )


async def require_admin(request: Req) -> Principal:
    auth = _authorization(request)
    if auth is not None and auth[0] == "admin":
        return _check_admin_token(request, auth[1])
    if auth is not None and auth[0] == "bearer":
        found = await _bearer(request, auth[1])
        if found.is_admin:
            return found
        raise Forbidden("This needs an administrator", title="Forbidden")
    raise Unauthorized("Send 'Authorization: admin <IOTFLOW_ADMIN_TOKEN>'", title="Admin token required")


def check_device(principal: Principal, device: Device, *, allow_device: bool = True) -> None:
    """Raise 403 unless ``principal`` may access ``device``: its own key, its owner, or admin."""
    if principal.is_admin:
        return
    if principal.kind == "device":
        assert principal.device is not None
        if not allow_device:
            raise Forbidden("A device key cannot be used here; use the owner's token", title="Forbidden")
        if principal.device.id != device.id:
            raise Forbidden("An API key may only access its own device", title="Forbidden: device mismatch")
        return
    if device.user_id is None or device.user_id != principal.user_id:
        raise Forbidden("You do not own this device", title="Forbidden")


async def require_device_access(
    request: Req, device_id: int, *, allow_device: bool = True, recent: bool = False
) -> tuple[Principal, Device]:
    """A principal allowed to read/manage device ``device_id``, and the device (404 when missing).

    ``recent``: the device may be a copy up to a moment old (telemetry reads; see
    ``DeviceService.get_recent``), instead of read from the database now."""
    principal = await require_principal(request)
    devices = runtime(request).devices
    device = await (devices.get_recent(device_id) if recent else devices.get(device_id))
    check_device(principal, device, allow_device=allow_device)
    return principal, device
