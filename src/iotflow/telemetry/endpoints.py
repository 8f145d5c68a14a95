"""Telemetry endpoints (``spec/api.md`` §3 in, §4 out)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

from litestar import Request, delete, get, post
from litestar.datastructures import State

from iotflow.auth.guards import require_device, require_device_access, require_principal
from iotflow.devices.schemas import config_dict, device_dict, ts_or_none
from iotflow.errors import BadRequest, Forbidden, NotFound, ValidationFailed
from iotflow.http import (
    Params,
    json_body,
    param_int,
    param_keys,
    param_str,
    query_bool,
    query_int,
    query_keys,
    query_str,
    runtime,
)
from iotflow.storage.models import Device
from iotflow.storage.timeseries.base import record_dict, record_dicts
from iotflow.telemetry.service import FILL_MODES, latest_answer, normalise_aggregation
from iotflow.timeutil import (
    TimestampError,
    WindowError,
    format_ts,
    format_window,
    now_ms,
    parse_time_bound,
    parse_window,
)

if TYPE_CHECKING:
    from iotflow.runtime import Runtime

Req = Request[Any, Any, State]

HOUR = 3_600_000
DAY = 24 * HOUR


def time_range(request: Req, *, default_start: int, device_id: int | None = None) -> tuple[int, int]:
    """The request's time range (see :func:`params_time_range`)."""
    rt = runtime(request)
    return params_time_range(request.query_params, rt, default_start=default_start, device_id=device_id)


START_NAMES = ("start_time", "start_date")  # a time range's parameters, aliases after the first
END_NAMES = ("end_time", "end_date", "stop_time")
HISTORY_PARAMS = frozenset(("keys", "limit", "order", *START_NAMES, *END_NAMES))  # what history_query reads


def params_time_range(
    params: Params, rt: Runtime, *, default_start: int, device_id: int | None = None
) -> tuple[int, int]:
    """The query's time range. An omitted end is now, or for ``device_id`` the newest receive-time
    stamp given to its readings if that is later: readings sent without a timestamp faster than one
    a millisecond are stamped a few ms ahead of the clock, and stay in the default range."""
    now = now_ms()
    default_end = now if device_id is None else max(now, rt.telemetry.last_receive_ts(device_id))
    start_raw, end_raw = param_str(params, *START_NAMES), param_str(params, *END_NAMES)
    try:
        start = parse_time_bound(start_raw, field="start_time", now_ms=now, default=now - default_start)
        end = parse_time_bound(end_raw, field="end_time", now_ms=now, default=default_end)
    except TimestampError as exc:
        raise ValidationFailed(exc.field, str(exc), title="Invalid time range") from None
    if start > end:
        raise ValidationFailed("start_time", "start_time is after end_time", title="Invalid time range")
    return start, end


def _order(request: Req) -> str:
    return params_order(request.query_params)


def params_order(params: Params) -> str:
    order = (param_str(params, "order") or "desc").lower()
    if order not in ("asc", "desc"):
        raise ValidationFailed("order", "order must be asc or desc")
    return order


class HistoryQuery(NamedTuple):
    keys: list[str] | None
    start_ms: int
    end_ms: int
    limit: int
    order: str


def history_query(params: Params, rt: Runtime, device_id: int) -> HistoryQuery:
    """The query of ``GET /telemetry/{device_id}`` (400 for a bad one)."""
    start, end = params_time_range(params, rt, default_start=HOUR, device_id=device_id)
    limit = param_int(params, "limit", 1000, lo=1, hi=10_000)
    return HistoryQuery(param_keys(params), start, end, limit, params_order(params))


async def history_answer(rt: Runtime, device: Device, q: HistoryQuery) -> dict[str, Any]:
    """The answer of ``GET /telemetry/{device_id}`` for an allowed caller."""
    data, count = await rt.telemetry.history_json(
        device.id, keys=q.keys, start_ms=q.start_ms, end_ms=q.end_ms, limit=q.limit, order=q.order
    )
    return {
        "device_id": device.id,
        "device_name": device.name,
        "device_type": device.device_type,
        "start_time": format_ts(q.start_ms),
        "end_time": format_ts(q.end_ms),
        "data": data,
        "count": count,
    }


async def _device(request: Req, device_id: int) -> Device:
    """The device, when the caller is its own key, its owner or admin (403/404 otherwise)."""
    _, device = await require_device_access(request, device_id, recent=True)
    return device


# ----- in --------------------------------------------------------------------------------------------


async def _ingest(request: Req, device_id: int | None = None) -> tuple[Any, Any]:
    rt = runtime(request)
    try:
        device = await require_device(request, active=True)
        if device_id is not None and device.id != device_id:
            raise Forbidden(
                "An API key may only publish for its own device", title="Forbidden: device mismatch"
            )
        result = await rt.telemetry.ingest(device, await json_body(request))
    except Exception as exc:
        rt.metrics.telemetry_rejected("http", exc)
        raise
    rt.metrics.telemetry_received("http", result.points)
    return device, result


@post("/devices/telemetry", status_code=201, summary="Send telemetry (the device's own key)")
async def post_device_telemetry(request: Req) -> dict[str, Any]:
    device, result = await _ingest(request)
    return {
        "message": "Telemetry data received successfully",
        "device_id": device.id,
        "device_name": device.name,
        "timestamp": format_ts(result.ts_ms),
        "points": result.points,
    }


@post("/telemetry", status_code=201, summary="Send telemetry (the device's own key)")
async def post_telemetry(request: Req) -> dict[str, Any]:
    device, result = await _ingest(request)
    return {
        "message": "Telemetry data stored successfully",
        "device_id": device.id,
        "device_name": device.name,
        "timestamp": format_ts(result.ts_ms),
        "points": result.points,
    }


@post(
    "/mqtt/telemetry/{device_id:int}", status_code=201, summary="The HTTP twin of an MQTT telemetry publish"
)
async def post_mqtt_telemetry(request: Req, device_id: int) -> dict[str, Any]:
    device, result = await _ingest(request, device_id)
    return {
        "status": "success",
        "message": "Telemetry data processed successfully",
        "device_id": device.id,
        "device_name": device.name,
        "topic": f"iotflow/devices/{device.id}/telemetry",
        "timestamp": format_ts(result.ts_ms),
    }


# ----- out -------------------------------------------------------------------------------------------


@get("/telemetry/{device_id:int}", summary="History: records of a device in a time range")
async def history(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    device = await _device(request, device_id)
    return await history_answer(rt, device, history_query(request.query_params, rt, device_id))


@get("/devices/telemetry", summary="The calling device's own history")
async def own_history(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    auth = await require_device(request)
    start, end = time_range(request, default_start=DAY, device_id=auth.id)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    data, count = await rt.telemetry.history_json(
        auth.id, keys=query_keys(request), start_ms=start, end_ms=end, limit=limit, order=_order(request)
    )
    return {
        "status": "success",
        "telemetry": data,
        "count": count,
        "limit": limit,
        "start_time": format_ts(start),
        "end_time": format_ts(end),
    }


@get("/telemetry/{device_id:int}/latest", summary="The newest value of every key")
async def latest(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    device = await _device(request, device_id)
    values = await rt.telemetry.latest(device_id, query_keys(request))
    if not values:
        raise NotFound(
            f"No telemetry data found for device {device_id}",
            title="No telemetry data found",
            extra={"device_id": device_id},
        )
    return latest_answer(device_id, device.name, device.device_type, values)


def _window(request: Req) -> int:
    try:
        return parse_window(query_str(request, "window") or "1h")
    except WindowError as exc:
        raise ValidationFailed(exc.field, str(exc), title="Invalid window") from None


def _fill(request: Req) -> str:
    fill = (query_str(request, "fill") or "none").lower()
    if fill not in FILL_MODES:
        raise ValidationFailed("fill", f"fill must be one of {', '.join(FILL_MODES)}")
    return fill


def _json_number(value: float | int | None) -> float | int | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@get("/telemetry/{device_id:int}/aggregated", summary="Aggregates of one or more keys in time windows")
async def aggregated(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    device = await _device(request, device_id)
    func_name = query_str(request, "aggregation") or "mean"
    func = normalise_aggregation(func_name)
    window = _window(request)
    fill = _fill(request)
    start, end = time_range(request, default_start=DAY, device_id=device_id)
    fields = query_keys(request, "fields") or [query_str(request, "field") or "temperature"]
    results: dict[str, list[dict[str, Any]]] = {}
    for field in fields:
        buckets = await rt.telemetry.aggregate(
            device_id, field, func, start_ms=start, end_ms=end, window_ms=window, fill=fill
        )
        results[field] = [
            {"timestamp": format_ts(b.start_ms), "value": _json_number(b.value), "count": b.count}
            for b in buckets
        ]
    first = results[fields[0]]
    out: dict[str, Any] = {
        "device_id": device_id,
        "device_name": device.name,
        "device_type": device.device_type,
        "field": fields[0] if len(fields) == 1 else ",".join(fields),
        "aggregation": func_name.lower(),
        "window": format_window(window),
        "start_time": format_ts(start),
        "end_time": format_ts(end),
        "data": first,
        "count": len(first),
    }
    if len(fields) > 1:
        out["fields"] = results
    return out


@get("/telemetry/device/{device_id:int}", summary="Paged measurements of a device (original dashboard form)")
async def device_measurements(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    device = await _device(request, device_id)
    start, end = time_range(request, default_start=DAY, device_id=device_id)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    page = query_int(request, "page", 1, lo=1)
    data_type = query_str(request, "data_type")
    keys = [data_type] if data_type else None
    total = await rt.store.count_records(device_id, keys=keys, start_ms=start, end_ms=end)
    records = await rt.telemetry.history(
        device_id, keys=keys, start_ms=start, end_ms=end, limit=limit, offset=(page - 1) * limit
    )
    return {
        "success": True,
        "device_id": device_id,
        "device_name": device.name,
        "device_type": device.device_type,
        "telemetry": [
            {"timestamp": format_ts(r.ts_ms), "device_id": device_id, "measurements": r.values}
            for r in records
        ],
        "pagination": {
            "total": total,
            "currentPage": page,
            "totalPages": max(1, math.ceil(total / limit)),
            "limit": limit,
        },
    }


@get("/telemetry/device/{device_id:int}/aggregated", summary="One aggregate of one key over a range")
async def device_aggregate(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    device = await _device(request, device_id)
    data_type = query_str(request, "data_type")
    agg = query_str(request, "aggregation")
    if not data_type:
        raise ValidationFailed("data_type", "data_type (the key to aggregate) is required")
    if not agg:
        raise ValidationFailed("aggregation", "aggregation is required: avg, sum, min, max or count")
    if agg.lower() not in ("avg", "sum", "min", "max", "count"):
        raise ValidationFailed(
            "aggregation",
            "aggregation must be one of avg, sum, min, max, count",
            extra={"valid_functions": ["avg", "count", "max", "min", "sum"]},
        )
    start, end = time_range(request, default_start=DAY, device_id=device_id)
    (bucket,) = await rt.telemetry.aggregate(
        device_id,
        data_type,
        normalise_aggregation(agg),
        start_ms=start,
        end_ms=end,
        window_ms=None,
        fill="none",
    )
    return {
        "success": True,
        "device_id": device_id,
        "device_name": device.name,
        "device_type": device.device_type,
        "aggregation": {
            "type": agg.lower(),
            "data_type": data_type,
            "value": _json_number(bucket.value),
            "count": bucket.count,
            "start_date": format_ts(start),
            "end_date": format_ts(end),
        },
    }


@get("/telemetry/{device_id:int}/keys", summary="The measurement catalogue of a device")
async def keys_catalogue(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await _device(request, device_id)
    infos = await rt.store.keys(device_id)
    return {
        "device_id": device_id,
        "keys": [
            {
                "key": i.key,
                "unit": i.unit,
                "first_timestamp": None if i.first_ts_ms is None else format_ts(i.first_ts_ms),
                "last_timestamp": None if i.last_ts_ms is None else format_ts(i.last_ts_ms),
                "count": i.count,
                "value_types": i.value_types,
            }
            for i in infos
        ],
    }


@delete("/telemetry/{device_id:int}", status_code=200, summary="Delete telemetry of a device (range, keys)")
async def delete_telemetry(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    await _device(request, device_id)
    body = await json_body(request, required=False) or {}
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object", title="Invalid JSON")
    now = now_ms()

    def bound(*names: str) -> int | None:
        raw = query_str(request, *names)
        if raw is None:
            raw = next((str(body[n]) for n in names if body.get(n) is not None), None)
        if raw is None:
            return None
        try:
            return parse_time_bound(raw, field=names[0], now_ms=now, default=now)
        except TimestampError as exc:
            raise ValidationFailed(exc.field, str(exc), title="Invalid time range") from None

    start, stop = bound("start_time", "start"), bound("stop_time", "end_time", "stop")
    if start is not None and stop is not None and start > stop:
        raise ValidationFailed("start_time", "start_time is after stop_time", title="Invalid time range")
    keys = query_keys(request)
    if keys is None and body.get("keys") is not None:
        raw_keys = body["keys"]
        keys = raw_keys.split(",") if isinstance(raw_keys, str) else raw_keys
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValidationFailed("keys", "keys must be a list of strings or a comma-separated string")
    deleted = await rt.store.delete(device_id, keys=keys, start_ms=start, end_ms=stop)
    await rt.cache.forget_device(device_id)
    return {
        "message": "Telemetry data deleted",
        "device_id": device_id,
        "start_time": None if start is None else format_ts(start),
        "stop_time": None if stop is None else format_ts(stop),
        "deleted": deleted,
    }


@get("/telemetry/status", summary="Telemetry store status and ingest figures")
async def telemetry_status(request: Req) -> dict[str, Any]:
    rt = runtime(request)
    status = await rt.telemetry.status()
    status["total_devices"] = len(await rt.devices.repo.all_ids())
    return status


@get("/devices/{device_id:int}/summary", summary="Device, connectivity, recent telemetry and configuration")
async def device_summary(request: Req, device_id: int) -> dict[str, Any]:
    rt = runtime(request)
    _, device = await require_device_access(request, device_id)  # fresh: last_seen is shown
    limit = query_int(request, "telemetry_limit", 10, lo=1, hi=100)
    include_config = query_bool(request, "include_config", True)
    last_seen, online = await rt.devices.connectivity(device)
    now = now_ms()
    records = await rt.telemetry.history(
        device_id, keys=None, start_ms=-(2**62), end_ms=now + DAY, limit=limit
    )
    return {
        "device": device_dict(
            device, last_seen=last_seen, is_online=online, reported=rt.presence.pending_reported(device_id)
        ),
        "status": {"is_online": online, "last_seen": ts_or_none(last_seen), "status": device.status},
        "telemetry": {"recent_data": record_dicts(records), "count": len(records)},
        "configuration": config_dict(await rt.devices.configs(device_id)) if include_config else None,
        "summary_generated_at": format_ts(now),
    }


@get("/telemetry/user/{user_id:str}", summary="Recent telemetry of every device of one user")
async def user_telemetry(request: Req, user_id: str) -> dict[str, Any]:
    """That user, admin, or the key of one of that user's devices. Records newest first, merged."""
    rt = runtime(request)
    principal = await require_principal(request)
    user = await rt.users.by_public_id(user_id)
    allowed = principal.is_admin or principal.user_id == user.id
    if principal.kind == "device":
        assert principal.device is not None
        allowed = principal.device.user_id == user.id
    if not allowed:
        raise Forbidden("You may only read your own devices' telemetry")
    start, end = time_range(request, default_start=DAY)
    limit = query_int(request, "limit", 100, lo=1, hi=1000)
    device_ids = await rt.devices.repo.ids_of_owner(user.id)
    rows: list[tuple[int, int, dict[str, Any]]] = []
    total = 0
    for device_id in device_ids:
        total += await rt.store.count_records(device_id, start_ms=start, end_ms=end)
        for record in await rt.telemetry.history(
            device_id, keys=None, start_ms=start, end_ms=end, limit=limit
        ):
            rows.append((-record.ts_ms, device_id, {**record_dict(record), "device_id": device_id}))
    rows.sort(key=lambda row: row[:2])
    telemetry = [row[2] for row in rows[:limit]]
    return {
        "status": "success",
        "user_id": user.user_id,
        "telemetry": telemetry,
        "count": len(telemetry),
        "total_count": total,
        "limit": limit,
        "start_time": format_ts(start),
        "end_time": format_ts(end),
    }


ROUTES = [
    user_telemetry,
    post_device_telemetry,
    post_telemetry,
    post_mqtt_telemetry,
    history,
    own_history,
    latest,
    aggregated,
    device_measurements,
    device_aggregate,
    keys_catalogue,
    delete_telemetry,
    telemetry_status,
    device_summary,
]
