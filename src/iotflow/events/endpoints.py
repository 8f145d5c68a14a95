"""The event log (``spec/api.md`` §7): ``GET /events``."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State

from iotflow.auth.guards import require_user
from iotflow.errors import ValidationFailed
from iotflow.http import query_int, query_keys, query_str, runtime
from iotflow.timeutil import TimestampError, now_ms, parse_time_bound

Req = Request[Any, Any, State]

DAY_MS = 86_400_000


def _range(request: Req) -> tuple[int, int]:
    now = now_ms()
    try:
        start = parse_time_bound(
            query_str(request, "start_time", "start_date"),
            field="start_time",
            now_ms=now,
            default=now - DAY_MS,
        )
        end = parse_time_bound(
            query_str(request, "end_time", "end_date", "stop_time"), field="end_time", now_ms=now, default=now
        )
    except TimestampError as exc:
        raise ValidationFailed(exc.field, str(exc), title="Invalid time range") from None
    if start > end:
        raise ValidationFailed("start_time", "start_time is after end_time", title="Invalid time range")
    return start, end


@get("/events", summary="The event log, newest first (own devices and own user events; admin: all)")
async def list_events(request: Req) -> dict[str, Any]:
    """Filters: ``type`` (comma list; a trailing ``*`` matches a prefix, e.g. ``alert.*``),
    ``device_id``, ``start_time`` (default -24h) / ``end_time`` (default now), ``limit`` (100, max
    1000), ``offset``."""
    principal = await require_user(request)
    types = query_keys(request, "type")
    device_id = None
    if query_str(request, "device_id") not in (None, ""):
        device_id = query_int(request, "device_id", 0, lo=1, hi=2**63 - 1)
    start, end = _range(request)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    events, total = await runtime(request).events.query(
        user_id=None if principal.is_admin else (principal.user_id or 0),
        types=types,
        device_id=device_id,
        start_ms=start,
        end_ms=end,
        limit=limit,
        offset=offset,
    )
    return {
        "status": "success",
        "events": events,
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


ROUTES = [list_events]
