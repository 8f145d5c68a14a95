"""The telemetry read fast paths: a device polling its own latest values or history with its key.

Dashboards and devices poll ``GET /api/v1/telemetry/{id}/latest`` and ``GET /api/v1/telemetry/{id}``
far more often than anything else is read. Through the framework (routing, request objects, the
signature model, the response object) a 10-point history cost 165 µs of the event loop and a
1,000-point one 220 µs, where the store's own part is a pipe write and a read of bytes already
encoded as JSON; without it, 80 and 165 µs.
:class:`FastReads`, an ASGI layer in front of the framework, answers both for **a device reading its
own data with its X-API-Key and nothing unusual**, with the same shared pieces as the handlers:

    API key → the device itself → the query (``history_query``) → rate limit (the route's rule)
    → ``latest_answer`` / ``history_answer``

Every other case goes to the framework handler, which gives the same answers and all the errors: a
user or admin token (``Authorization`` takes precedence over ``X-API-Key``), a wrong key, another
device, a missing device, no latest values, a query that does not parse, a query string that is not
plain (percent-encoding, ``+``, anything outside ``[A-Za-z0-9_.,:=&-]``, an empty item, a name
without ``=``, an unknown or repeated parameter). The rate limit is counted only once a
request is taken, so a request handed on is never counted twice; a history query that fails after
that (a read process that died: 503) is answered here, as the framework would.

The framework handlers stay registered: they document the routes in OpenAPI and serve them when
``IOTFLOW_HTTP_FASTPATH=false`` (or the app runs under another ASGI server); a test compares every
answer of both.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.enums import ScopeType

from iotflow.ingest.http_fast import error_answer
from iotflow.ratelimit.service import SCOPE_KEY
from iotflow.telemetry.endpoints import HISTORY_PARAMS, history_answer, history_query
from iotflow.telemetry.service import latest_answer

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

    from iotflow.runtime import Runtime

LATEST_TEMPLATE = "/api/v1/telemetry/{device_id}/latest"  # the routes' templates, as the framework's
HISTORY_TEMPLATE = "/api/v1/telemetry/{device_id}"
_PREFIX = "/api/v1/telemetry/"
_LATEST_SUFFIX = "/latest"
_PLAIN_QUERY = re.compile(rb"[A-Za-z0-9_.,:=&-]*")  # nothing to decode: read the same by any parser
_encode = msgspec.json.Encoder().encode


def _device_id(digits: str) -> int | None:
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18 or digits.startswith("0"):
        return None
    return int(digits)


def _latest_device(scope: Scope) -> int | None:
    """The device id of ``GET /api/v1/telemetry/<id>/latest`` without a query string, else None."""
    path: str = scope["path"]
    if scope["query_string"] or not (path.startswith(_PREFIX) and path.endswith(_LATEST_SUFFIX)):
        return None
    return _device_id(path[len(_PREFIX) : -len(_LATEST_SUFFIX)])


def _history_device(scope: Scope) -> int | None:
    """The device id of ``GET /api/v1/telemetry/<id>``, else None."""
    path: str = scope["path"]
    return _device_id(path[len(_PREFIX) :]) if path.startswith(_PREFIX) else None


def history_params(query: bytes) -> dict[str, str] | None:
    """The parameters of a plain history query string (no percent-encoding, no ``+``, each known
    parameter at most once, every item ``name=value``); None for anything else."""
    if not _PLAIN_QUERY.fullmatch(query):
        return None
    params: dict[str, str] = {}
    if not query:
        return params
    for item in query.decode("ascii").split("&"):
        name, eq, value = item.partition("=")
        if not eq or name not in HISTORY_PARAMS or name in params:
            return None
        params[name] = value
    return params


def _device_key(scope: Scope) -> str | None:
    """The first X-API-Key, as the framework reads it; None when absent, empty, or when an
    Authorization header is there (it takes precedence: the framework decides)."""
    api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            return None
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip()
    return api_key or None


class FastReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "GET":
            device_id = _latest_device(scope)
            if device_id is not None:
                if await self._latest(scope, send, device_id):
                    return
            else:
                device_id = _history_device(scope)
                if device_id is not None and await self._history(scope, send, device_id):
                    return
        await self.app(scope, receive, send)

    async def _own(self, scope: Scope, device_id: int) -> tuple[Runtime, Any] | None:
        """The runtime and the device, when the request carries that device's own key; else None."""
        api_key = _device_key(scope)
        if api_key is None:
            return None
        state: Any = scope
        rt: Runtime = state["litestar_app"].state.runtime
        auth = await rt.devices.authenticate(api_key)
        if auth is None or auth.id != device_id:
            return None
        return rt, await rt.devices.get_recent(device_id)

    async def _limit(self, rt: Runtime, scope: Scope, send: Send, template: str) -> bool:
        """Count the request against its route's rule; False when refused (429 sent)."""
        state: Any = scope
        state["path_template"] = template  # for the metrics layer around this one
        limits = rt.limits
        if limits.enabled:
            rule = limits.rule_for("GET", template)
            try:
                state[SCOPE_KEY] = await limits.hit(rule, limits.identity(rule, scope))
            except Exception as exc:  # 429, or a limiter that failed: answered as the framework would
                await respond(send, *error_answer(scope, exc))
                return False
        return True

    async def _latest(self, scope: Scope, send: Send, device_id: int) -> bool:
        """A device reading its own latest values; False: not taken (the framework answers)."""
        try:
            own = await self._own(scope, device_id)
            if own is None:
                return False
            rt, device = own
            values = await rt.telemetry.latest(device_id)
        except Exception:  # NotFound (deleted meanwhile), the database...: the framework answers
            return False
        if not values:
            return False
        if await self._limit(rt, scope, send, LATEST_TEMPLATE):
            await respond(send, 200, latest_answer(device_id, device.name, device.device_type, values), None)
        return True

    async def _history(self, scope: Scope, send: Send, device_id: int) -> bool:
        """A device reading its own history; False: not taken (the framework answers)."""
        params = history_params(scope["query_string"])
        if params is None:
            return False
        try:
            own = await self._own(scope, device_id)
            if own is None:
                return False
            rt, device = own
            query = history_query(params, rt, device_id)
        except Exception:  # a bad query (400), NotFound...: the framework answers
            return False
        if not await self._limit(rt, scope, send, HISTORY_TEMPLATE):
            return True
        try:
            answer = await history_answer(rt, device, query)
        except Exception as exc:  # counted already: answered here, as the framework would
            await respond(send, *error_answer(scope, exc))
            return True
        await respond(send, 200, answer, None)
        return True


async def respond(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None) -> None:
    payload = _encode(body)
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if headers:
        raw_headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    start: Any = {"type": "http.response.start", "status": status, "headers": raw_headers}
    await send(start)
    await send({"type": "http.response.body", "body": payload, "more_body": False})
