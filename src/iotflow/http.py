"""HTTP edge helpers shared by every endpoint module: JSON bodies, query parameters, error rendering."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from iotflow.errors import (
    BadRequest,
    IoTFlowError,
    UnsupportedMediaType,
    ValidationFailed,
)

if TYPE_CHECKING:
    from iotflow.runtime import Runtime

log = logging.getLogger("iotflow.http")

_decoder = msgspec.json.Decoder()

_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Rate limit exceeded",
    503: "Service unavailable",
}


def runtime(request: Request[Any, Any, Any]) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


# ----- bodies ---------------------------------------------------------------------------------------


def check_json_content_type(ctype: str | None) -> None:
    """415 unless the content type is JSON (``application/json`` or ``application/*+json``) or absent."""
    if ctype is None:
        return  # tolerated: many device clients send none
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return
    raise UnsupportedMediaType(
        f"Content-Type {mime or ctype!r} is not supported: send JSON with 'Content-Type: application/json'"
    )


def decode_json(raw: bytes) -> Any:
    """A request body decoded as JSON; 400 when it is empty or not JSON."""
    if not raw.strip():
        raise BadRequest("A JSON request body is required", title="Invalid JSON")
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}", title="Invalid JSON") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply", title="Invalid JSON") from None


async def json_body(request: Request[Any, Any, Any], *, required: bool = True) -> Any:
    """The request body decoded as JSON (400 when not JSON, 415 for another content type)."""
    raw = await request.body()
    if not required and not raw.strip():
        return None
    if raw.strip():
        check_json_content_type(request.headers.get("content-type"))
    return decode_json(raw)


async def json_object(request: Request[Any, Any, Any], *, required: bool = True) -> dict[str, Any]:
    body = await json_body(request, required=required)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object", title="Invalid JSON")
    return body


# ----- query parameters -----------------------------------------------------------------------------


class Params(Protocol):
    """Query parameters: a request's ``query_params``, or a plain mapping of them."""

    def get(self, name: str, /) -> Any: ...


def query_str(request: Request[Any, Any, Any], *names: str) -> str | None:
    """The first of ``names`` present in the query string (aliases), or None."""
    return param_str(request.query_params, *names)


def param_str(params: Params, *names: str) -> str | None:
    """:func:`query_str` of a mapping of parameters."""
    for name in names:
        value = params.get(name)
        if value is not None:
            return str(value)
    return None


def query_int(
    request: Request[Any, Any, Any], name: str, default: int, *, lo: int = 1, hi: int | None = None
) -> int:
    return param_int(request.query_params, name, default, lo=lo, hi=hi)


def param_int(params: Params, name: str, default: int, *, lo: int = 1, hi: int | None = None) -> int:
    """:func:`query_int` of a mapping of parameters."""
    raw = param_str(params, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(name, f"{name} must be an integer, got {raw!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ValidationFailed(name, f"{name} must be {bound}, got {value}")
    return value


def query_bool(request: Request[Any, Any, Any], name: str, default: bool) -> bool:
    raw = query_str(request, name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValidationFailed(name, f"{name} must be true or false, got {raw!r}")


def query_keys(request: Request[Any, Any, Any], name: str = "keys") -> list[str] | None:
    return param_keys(request.query_params, name)


def param_keys(params: Params, name: str = "keys") -> list[str] | None:
    """:func:`query_keys` of a mapping of parameters."""
    raw = param_str(params, name)
    if raw is None or raw.strip() == "":
        return None
    return [k.strip() for k in raw.split(",") if k.strip()]


# ----- errors ---------------------------------------------------------------------------------------


def _response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(content=body, status_code=status, headers=headers, media_type="application/json")


def render_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one place that turns an exception into ``{"error","message"[,"details"]}``."""
    if isinstance(exc, IoTFlowError):
        if exc.internal:
            return _internal(request, exc)
        return _response(exc.status_code, exc.body(), exc.headers)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status >= 500 and status != 503:
            return _internal(request, exc)
        title = _TITLES.get(status, "Error")
        message = _http_message(request, status, exc)
        body: dict[str, Any] = {"error": title, "message": message}
        extra = getattr(exc, "extra", None)
        if status == 400 and isinstance(extra, list) and extra:
            body["details"] = [
                {"field": str(e.get("key", "")), "message": str(e.get("message", ""))}
                for e in extra
                if isinstance(e, dict)
            ]
        headers = dict(exc.headers or {})
        return _response(status, body, headers)
    return _internal(request, exc)


def _http_message(request: Request[Any, Any, Any], status: int, exc: HTTPException) -> str:
    if status == 404:
        return f"No resource at {request.url.path}; see /schema for the API"
    if status == 405:
        return f"Method {request.method} is not allowed on {request.url.path}"
    if status == 413:
        limit = runtime(request).settings.max_body_bytes
        return f"The request body exceeds the limit of {limit} bytes"
    return str(exc.detail)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    request_id = uuid.uuid4().hex
    log.error(
        "request %s %s %s failed (request_id=%s)",
        request.method,
        request.url.path,
        type(exc).__name__,
        request_id,
        exc_info=exc,
    )
    return _response(
        500,
        {
            "error": "Internal server error",
            "message": "An unexpected error occurred; it has been logged",
            "request_id": request_id,
        },
    )
