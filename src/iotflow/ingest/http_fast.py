"""The HTTP telemetry fast paths.

A device posting one reading per request spends most of the request in the HTTP layers (ASGI
messages, routing, request and response objects, hooks), not in IoTFlow. Two routes carry almost
all HTTP traffic of a fleet, ``POST /api/v1/devices/telemetry`` and ``POST /api/v1/telemetry``:
:func:`ingest_answer` serves them with exactly what their framework handlers do, with the same
shared pieces,

    rate limit (telemetry rule) → API key → device active → body (size limit, content type, JSON)
    → ``TelemetryService.ingest`` (parse, pipeline, 201 only after commit) → the same JSON answer

and ``iotflow serve``'s HTTP protocol (:mod:`iotflow.httpserver`) calls it straight from the
connection, before any ASGI layer.

:class:`FastLatest`, an ASGI layer in front of the framework, answers ``GET
/api/v1/telemetry/{id}/latest`` (no query string) for a device reading its own latest values with
its key — the commonest dashboard poll — and hands every other case of that route to the framework
handler (see :meth:`FastLatest._latest`).

Errors are rendered from the same :class:`~iotflow.errors.IoTFlowError` bodies. The framework
handlers stay registered: they document the routes in OpenAPI and serve them when
``IOTFLOW_HTTP_FASTPATH=false`` (or the app runs under another ASGI server); the test suite runs
the telemetry tests both ways.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType

from iotflow.auth.guards import device_of_key
from iotflow.errors import IoTFlowError, PayloadTooLarge
from iotflow.http import check_json_content_type, decode_json
from iotflow.ratelimit.service import SCOPE_KEY
from iotflow.telemetry.service import latest_answer
from iotflow.timeutil import format_ts

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

    from iotflow.runtime import Runtime

log = logging.getLogger(__name__)

ROUTES = {
    "/api/v1/devices/telemetry": "Telemetry data received successfully",
    "/api/v1/telemetry": "Telemetry data stored successfully",
}
LATEST_TEMPLATE = "/api/v1/telemetry/{device_id:int}/latest"  # the framework's template of the route
_LATEST_PREFIX = "/api/v1/telemetry/"
_LATEST_SUFFIX = "/latest"
_encode = msgspec.json.Encoder().encode


def _latest_device(scope: Scope) -> int | None:
    """The device id of ``GET /api/v1/telemetry/<id>/latest`` without a query string, else None."""
    path: str = scope["path"]
    if scope["query_string"] or not (path.startswith(_LATEST_PREFIX) and path.endswith(_LATEST_SUFFIX)):
        return None
    digits = path[len(_LATEST_PREFIX) : -len(_LATEST_SUFFIX)]
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18 or digits.startswith("0"):
        return None
    return int(digits)


class _ClientGone(Exception):
    """The client disconnected before its body arrived."""


class FastLatest:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "GET":
            device_id = _latest_device(scope)
            if device_id is not None and await self._latest(scope, send, device_id):
                return
        await self.app(scope, receive, send)

    async def _latest(self, scope: Scope, send: Send, device_id: int) -> bool:
        """A device reading its own latest values with its key, and nothing else; False: not taken.

        Every other case (a user or admin token, a wrong key, another device, a missing device, no data)
        goes to the framework handler, which gives the same answers and all the errors. The rate limit
        is counted only once the request is taken, so a request handed on is never counted twice."""
        state: Any = scope
        api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                return False  # it takes precedence over X-API-Key: the framework decides
            if name == b"x-api-key" and api_key is None:  # the first one, as the framework reads it
                api_key = value.decode("latin-1").strip()
        if not api_key:
            return False
        rt: Runtime = state["litestar_app"].state.runtime
        try:
            auth = await rt.devices.authenticate(api_key)
            if auth is None or auth.id != device_id:
                return False
            device = await rt.devices.get_recent(device_id)
            values = await rt.telemetry.latest(device_id)
        except Exception:  # NotFound (deleted meanwhile), the database...: the framework answers
            return False
        if not values:
            return False
        state["path_template"] = LATEST_TEMPLATE  # for the metrics layer around this one
        limits = rt.limits
        if limits.enabled:
            rule = limits.rule_for("GET", LATEST_TEMPLATE)
            try:
                state[SCOPE_KEY] = await limits.hit(rule, limits.identity(rule, scope))
            except IoTFlowError as exc:
                await _respond(send, exc.status_code, exc.body(), exc.headers)
                return True
        await _respond(send, 200, latest_answer(device_id, device.name, device.device_type, values), None)
        return True


Answer = tuple[int, dict[str, Any], "dict[str, str] | None"]
Receiver = Callable[[], Awaitable[Any]]  # an ASGI receive, or uvicorn's own


async def ingest_answer(rt: Runtime, scope: Scope, receive: Receiver, message: str) -> Answer | None:
    """The answer (status, body, headers) to a telemetry POST (``message`` is its route's) whose
    headers are in ``scope`` and whose body ``receive`` gives; None when the client left before its
    body arrived (nobody to answer). The 201 comes only once the points are committed."""
    try:
        return 201, await _handle(rt, scope, receive, message), None
    except _ClientGone:
        return None  # nothing was queued; there is nobody to answer
    except IoTFlowError as exc:
        if exc.status_code >= 500 and not exc.headers:
            return 500, _internal(scope, exc), None
        rt.metrics.telemetry_rejected("http", exc)
        return exc.status_code, exc.body(), exc.headers
    except Exception as exc:
        rt.metrics.telemetry_rejected("http", exc)
        return 500, _internal(scope, exc), None


async def _handle(rt: Runtime, scope: Any, receive: Receiver, message: str) -> dict[str, Any]:
    limits = rt.limits
    if limits.enabled:
        scope[SCOPE_KEY] = await limits.hit(limits.telemetry, limits.identity(limits.telemetry, scope))
    api_key = ctype = None
    for name, value in scope["headers"]:  # the first of each, as the framework reads them
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip()
        elif name == b"content-type" and ctype is None:
            ctype = value.decode("latin-1")
    device = await device_of_key(rt.devices, api_key, active=True)
    raw = await _read_body(receive, rt.settings.max_body_bytes)
    if raw.strip():
        check_json_content_type(ctype)
    result = await rt.telemetry.ingest(device, decode_json(raw))
    rt.metrics.telemetry_received("http", result.points)
    return {
        "message": message,
        "device_id": device.id,
        "device_name": device.name,
        "timestamp": format_ts(result.ts_ms),
        "points": result.points,
    }


def _internal(scope: Scope, exc: Exception) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    log.error("request POST %s failed (request_id=%s)", scope["path"], request_id, exc_info=exc)
    return {
        "error": "Internal server error",
        "message": "An unexpected error occurred; it has been logged",
        "request_id": request_id,
    }


async def _read_body(receive: Receiver, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        event: Any = await receive()
        if event["type"] == "http.disconnect":
            raise _ClientGone
        chunk = event.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        if not event.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None) -> None:
    payload = _encode(body)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if headers:
        raw_headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    start: Any = {"type": "http.response.start", "status": status, "headers": raw_headers}
    await send(start)
    await send({"type": "http.response.body", "body": payload, "more_body": False})
