"""Credential checks used by the endpoints.

- device: ``X-API-Key`` → the device it belongs to (cached lookup, SHA-256 digest only).
- admin: ``Authorization: admin <IOTFLOW_ADMIN_TOKEN>`` compared in constant time.
- device data (telemetry reads, status, config of a device by id): the device's own key or admin
  (and, once users exist, the owner's token).
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Request

from iotflow.auth.principal import Principal
from iotflow.cache.base import DeviceAuth
from iotflow.errors import Forbidden, Unauthorized
from iotflow.http import runtime


def _api_key(request: Request[Any, Any, Any]) -> str | None:
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


async def require_device(request: Request[Any, Any, Any], *, active: bool = False) -> DeviceAuth:
    """The device whose key is in ``X-API-Key``; 401 without or with an unknown key."""
    key = _api_key(request)
    if not key:
        raise Unauthorized("Send the device's API key in the X-API-Key header", title="API key required")
    device = await runtime(request).devices.authenticate(key)
    if device is None:
        raise Unauthorized("The API key is not valid (rotated or deleted device?)", title="Invalid API key")
    if active and device.status != "active":
        raise Forbidden(f"Device is currently {device.status}", title="Device inactive")
    return device


def _admin_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "admin":
        return None
    return token.strip()


def _check_admin_token(request: Request[Any, Any, Any], token: str) -> None:
    expected = runtime(request).settings.admin_token or ""
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("The admin token is not valid", title="Invalid admin token")


def require_admin(request: Request[Any, Any, Any]) -> Principal:
    token = _admin_token(request)
    if token is None:
        raise Unauthorized("Send 'Authorization: admin <IOTFLOW_ADMIN_TOKEN>'", title="Admin token required")
    _check_admin_token(request, token)
    return Principal("admin")


async def require_device_access(request: Request[Any, Any, Any], device_id: int) -> Principal:
    """A principal allowed to read/manage device ``device_id``: that device's key or admin."""
    token = _admin_token(request)
    if token is not None:
        _check_admin_token(request, token)
        return Principal("admin")
    if _api_key(request):
        device = await require_device(request)
        if device.id != device_id:
            raise Forbidden("An API key may only access its own device", title="Forbidden: device mismatch")
        return Principal("device", device=device)
    raise Unauthorized(
        "Send the device's X-API-Key or 'Authorization: admin <token>'", title="Authentication required"
    )
