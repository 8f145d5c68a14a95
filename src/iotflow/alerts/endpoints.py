"""Alert rules, alerts and the alert stream (``spec/api.md`` §7).

Every endpoint takes a user's Bearer token (own rules; alerts on own devices) or admin credentials
(everything); a device key counts as missing credentials (401). Someone else's rule or alert → 403,
an unknown one → 404. Acknowledging an alert that is not open, or resolving a resolved one → 409.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.datastructures import State
from litestar.response import Stream

from iotflow.alerts.schemas import SEVERITIES, STATES, alert_dict, rule_dict
from iotflow.auth.guards import require_user
from iotflow.errors import ValidationFailed
from iotflow.http import json_object, query_int, query_keys, query_str, runtime
from iotflow.timeutil import TimestampError, now_ms, parse_time_bound

Req = Request[Any, Any, State]


def _choices(request: Req, name: str, allowed: tuple[str, ...]) -> list[str]:
    values = query_keys(request, name) or []
    for value in values:
        if value not in allowed:
            raise ValidationFailed(name, f"{name} must be one of {', '.join(allowed)} (comma-separated)")
    return values


def _bound(request: Req, *names: str) -> int | None:
    raw = query_str(request, *names)
    if raw is None or not raw.strip():
        return None
    try:
        return parse_time_bound(raw, field=names[0], now_ms=now_ms(), default=0)
    except TimestampError as exc:
        raise ValidationFailed(exc.field, str(exc), title="Invalid time range") from None


def _device_filter(request: Req) -> int | None:
    if query_str(request, "device_id") in (None, ""):
        return None
    return query_int(request, "device_id", 0, lo=1, hi=2**63 - 1)


# ----- rules ------------------------------------------------------------------------------------------


@post("/alerts/rules", status_code=201, summary="Create an alert rule")
async def create_rule(request: Req) -> dict[str, Any]:
    """``{name?, device_id?, group_id?, key, operator, threshold, severity?, for_seconds?, enabled?}``;
    neither device_id nor group_id: all of the caller's devices (the admin token: every device)."""
    principal = await require_user(request)
    body = await json_object(request)
    rule = await runtime(request).alerts.create_rule(principal, body)
    return {"status": "success", "message": "Alert rule created", "rule": rule_dict(rule)}


@get("/alerts/rules", summary="Alert rules (own; admin: all)")
async def list_rules(request: Req) -> dict[str, Any]:
    principal = await require_user(request)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    rules, total = await runtime(request).alerts.list_rules(
        principal, device_id=_device_filter(request), limit=limit, offset=offset
    )
    return {
        "status": "success",
        "rules": [rule_dict(r) for r in rules],
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


@get("/alerts/rules/{rule_id:int}", summary="One alert rule")
async def get_rule(request: Req, rule_id: int) -> dict[str, Any]:
    principal = await require_user(request)
    rule = await runtime(request).alerts.rule_for(principal, rule_id)
    return {"status": "success", "rule": rule_dict(rule)}


@put("/alerts/rules/{rule_id:int}", summary="Change an alert rule (fields left out keep their values)")
async def update_rule(request: Req, rule_id: int) -> dict[str, Any]:
    principal = await require_user(request)
    body = await json_object(request)
    rule = await runtime(request).alerts.update_rule(principal, rule_id, body)
    return {"status": "success", "message": "Alert rule updated", "rule": rule_dict(rule)}


@delete("/alerts/rules/{rule_id:int}", status_code=200, summary="Delete an alert rule and its alerts")
async def delete_rule(request: Req, rule_id: int) -> dict[str, Any]:
    principal = await require_user(request)
    await runtime(request).alerts.delete_rule(principal, rule_id)
    return {"status": "success", "message": f"Alert rule {rule_id} deleted"}


# ----- alerts -----------------------------------------------------------------------------------------


@get("/alerts", summary="Alerts, newest first (own devices; admin: all)")
async def list_alerts(request: Req) -> dict[str, Any]:
    """Filters: ``state`` and ``severity`` (comma lists), ``device_id``, ``start_time`` / ``end_time``
    (on ``opened_at``; default: no bound), ``limit`` (100, max 1000), ``offset``."""
    principal = await require_user(request)
    states = _choices(request, "state", STATES)
    severities = _choices(request, "severity", SEVERITIES)
    device_id = _device_filter(request)
    start = _bound(request, "start_time", "start_date")
    end = _bound(request, "end_time", "end_date", "stop_time")
    if start is not None and end is not None and start > end:
        raise ValidationFailed("start_time", "start_time is after end_time", title="Invalid time range")
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    offset = query_int(request, "offset", 0, lo=0)
    alerts, total = await runtime(request).alerts.list_alerts(
        principal,
        states=states,
        severities=severities,
        device_id=device_id,
        start_ms=start,
        end_ms=end,
        limit=limit,
        offset=offset,
    )
    return {
        "status": "success",
        "alerts": [alert_dict(a) for a in alerts],
        "meta": {"total": total, "limit": limit, "offset": offset},
    }


@post("/alerts/{alert_id:int}/acknowledge", status_code=200, summary="Acknowledge an open alert")
async def acknowledge(request: Req, alert_id: int) -> dict[str, Any]:
    principal = await require_user(request)
    alert = await runtime(request).alerts.acknowledge(principal, alert_id)
    return {"status": "success", "message": "Alert acknowledged", "alert": alert_dict(alert)}


@post("/alerts/{alert_id:int}/resolve", status_code=200, summary="Resolve an alert by hand")
async def resolve(request: Req, alert_id: int) -> dict[str, Any]:
    principal = await require_user(request)
    alert = await runtime(request).alerts.resolve(principal, alert_id)
    return {"status": "success", "message": "Alert resolved", "alert": alert_dict(alert)}


@get(
    "/alerts/stream",
    media_type="text/event-stream",
    summary="Server-Sent Events of alert changes (own devices; admin: all)",
)
async def alert_stream(request: Req) -> Stream:
    """``event: alert`` with the alert and ``"change": "opened"|"acknowledged"|"resolved"`` as JSON
    data; a ``: ping`` comment every 15 s of silence."""
    principal = await require_user(request)
    return Stream(
        runtime(request).alerts.stream(principal),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


ROUTES = [
    create_rule,
    list_rules,
    get_rule,
    update_rule,
    delete_rule,
    list_alerts,
    acknowledge,
    resolve,
    alert_stream,
]
