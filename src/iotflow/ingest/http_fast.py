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

The fast paths of the commonest reads (a device's own latest values and history) are in
:mod:`iotflow.telemetry.fast_reads`.

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

from iotflow.auth.guards import device_of_key
from iotflow.errors import IoTFlowError, PayloadTooLarge
from iotflow.http import check_json_content_type, decode_json
from iotflow.ratelimit.service import SCOPE_KEY
from iotflow.timeutil import format_ts

if TYPE_CHECKING:
    from litestar.types import Scope

    from iotflow.runtime import Runtime

log = logging.getLogger(__name__)

ROUTES = {
    "/api/v1/devices/telemetry": "Telemetry data received successfully",
    "/api/v1/telemetry": "Telemetry data stored successfully",
}


class _ClientGone(Exception):
    """The client disconnected before its body arrived."""


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
    except Exception as exc:
        rt.metrics.telemetry_rejected("http", exc)  # as the framework's handlers count it, 500s too
        return error_answer(scope, exc)


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


def error_answer(scope: Scope, exc: Exception) -> Answer:
    """The answer to a request that raised ``exc``, as the framework's error rendering gives it."""
    if isinstance(exc, IoTFlowError) and not exc.internal:
        return exc.status_code, exc.body(), exc.headers
    return 500, _internal(scope, exc), None


def _internal(scope: Scope, exc: Exception) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    http: Any = scope
    log.error("request %s %s failed (request_id=%s)", http["method"], http["path"], request_id, exc_info=exc)
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
