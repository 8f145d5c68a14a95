"""Telemetry payloads → points. Shared by every transport (HTTP now, MQTT and import later).

Accepted bodies (``spec/api.md`` §3): one payload ``{"data": {...}, "metadata"?: {...}, "timestamp"?: ...}``,
``{"batch": [payload, ...]}`` or a JSON array of payloads. A batch is all-or-nothing: one bad payload
rejects the request, naming the field (``batch[3].data.temperature``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from iotflow.errors import BadRequest, InvalidTimestamp, ValidationFailed
from iotflow.storage.timeseries.base import Point, Value
from iotflow.timeutil import TimestampError, parse_timestamp

MAX_KEYS = 1000
MAX_KEY_LEN = 128
MAX_STRING_BYTES = 65536
MAX_BATCH = 10_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Message(NamedTuple):
    """One parsed payload."""

    points: list[Point]
    ts_ms: int  # the message timestamp (server receive time when absent)
    metadata: dict[str, Any] | None


def payloads_of(body: Any) -> list[tuple[str, Any]]:
    """Split a request body into (field prefix, payload) pairs."""
    if isinstance(body, list):
        items, prefix = body, ""
    elif isinstance(body, dict) and "batch" in body and "data" not in body:
        items, prefix = body["batch"], "batch"
        if not isinstance(items, list):
            raise ValidationFailed("batch", "batch must be an array of telemetry payloads")
    else:
        return [("", body)]
    if not items:
        raise ValidationFailed(
            prefix or "body", "A batch must contain at least one payload", title="Telemetry data is required"
        )
    if len(items) > MAX_BATCH:
        raise ValidationFailed(
            prefix or "body", f"A batch holds at most {MAX_BATCH} payloads, got {len(items)}"
        )
    return [(f"{prefix}[{i}]", item) for i, item in enumerate(items)]


def parse_body(
    body: Any, device_id: int, *, now_ms: int, max_future_ms: int, receive_ts: Callable[[], int] | None = None
) -> list[Message]:
    """Parse every payload of a body. ``receive_ts`` stamps payloads that carry no timestamp."""
    return [
        parse_payload(
            payload,
            device_id,
            now_ms=now_ms,
            max_future_ms=max_future_ms,
            prefix=prefix,
            receive_ts=receive_ts,
        )
        for prefix, payload in payloads_of(body)
    ]


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _timestamp(value: Any, field: str, now_ms: int, max_future_ms: int) -> int:
    try:
        return parse_timestamp(value, field=field, now_ms=now_ms, max_future_ms=max_future_ms)
    except TimestampError as exc:
        raise InvalidTimestamp(exc.field, str(exc)) from None


def parse_payload(
    payload: Any,
    device_id: int,
    *,
    now_ms: int,
    max_future_ms: int,
    prefix: str = "",
    receive_ts: Callable[[], int] | None = None,
) -> Message:
    if not isinstance(payload, dict):
        raise ValidationFailed(
            prefix or "body",
            "A telemetry payload must be a JSON object with a 'data' object",
            title="Invalid data format",
        )
    data = payload.get("data")
    if data is None:
        raise ValidationFailed(
            _field(prefix, "data"),
            "'data' is required: an object of key → value",
            title="Telemetry data is required",
        )
    if not isinstance(data, dict):
        raise ValidationFailed(
            _field(prefix, "data"), "'data' must be an object of key → value", title="Invalid data format"
        )
    if not data:
        raise ValidationFailed(
            _field(prefix, "data"), "'data' must not be empty", title="Telemetry data is required"
        )
    if len(data) > MAX_KEYS:
        raise ValidationFailed(
            _field(prefix, "data"), f"At most {MAX_KEYS} keys per message, got {len(data)}"
        )

    raw_ts = payload.get("timestamp", payload.get("ts"))
    if raw_ts is None:
        ts_ms = now_ms if receive_ts is None else receive_ts()
    else:
        ts_ms = _timestamp(
            raw_ts, _field(prefix, "timestamp" if "timestamp" in payload else "ts"), now_ms, max_future_ms
        )

    metadata = payload.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationFailed(_field(prefix, "metadata"), "'metadata' must be an object")

    data_prefix = _field(prefix, "data")
    points: list[Point] = []
    append = points.append
    for key, raw in data.items():
        check_key(key, data_prefix)
        unit: str | None = None
        point_ts = ts_ms
        if type(raw) is dict and "value" in raw:
            unit_raw = raw.get("unit")
            if unit_raw is not None:
                if not isinstance(unit_raw, str) or len(unit_raw) > 64:
                    raise ValidationFailed(
                        f"{data_prefix}.{key}.unit", "unit must be a string of at most 64 chars"
                    )
                unit = unit_raw
            rts = raw.get("timestamp", raw.get("ts"))
            if rts is not None:
                point_ts = _timestamp(rts, f"{data_prefix}.{key}.timestamp", now_ms, max_future_ms)
            value = check_value(raw["value"], data_prefix, key, ".value")
            append(_new(Point, (device_id, key, point_ts, value, unit)))
        else:
            append(_new(Point, (device_id, key, point_ts, check_value(raw, data_prefix, key), unit)))
    return Message(points, ts_ms, metadata)


# Point(...) without the Python-level __new__ NamedTuple generates: half the cost per reading.
_new = tuple.__new__

# Keys already found valid: a fleet sends the same few keys millions of times.
_valid_keys: set[str] = set()
_VALID_KEYS_MAX = 10_000


def check_key(key: str, prefix: str) -> None:
    if key in _valid_keys:
        return
    if not key or len(key) > MAX_KEY_LEN or "/" in key or not key.isprintable():
        raise ValidationFailed(
            f"{prefix}.{key}" if key else prefix,
            f"Invalid key {key!r}: keys are 1-{MAX_KEY_LEN} printable characters without '/'",
        )
    if len(_valid_keys) >= _VALID_KEYS_MAX:
        _valid_keys.clear()
    _valid_keys.add(key)


def check_value(value: Any, prefix: str, key: str, suffix: str = "") -> Value:
    """The value as stored; an error names the field ``{prefix}.{key}{suffix}`` (built only then: this
    runs for every reading)."""
    t = type(value)
    if t is float:
        if math.isfinite(value):
            return value + 0.0  # type: ignore[no-any-return]  # -0.0 is kept as 0.0, as the store does
        raise ValidationFailed(f"{prefix}.{key}{suffix}", "Numbers must be finite")
    if t is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value  # type: ignore[no-any-return]
        raise ValidationFailed(f"{prefix}.{key}{suffix}", "Integers must fit in 64 bits")
    if t is bool:
        return value  # type: ignore[no-any-return]
    if t is str:
        if len(value) > MAX_STRING_BYTES // 4 and len(value.encode()) > MAX_STRING_BYTES:
            raise ValidationFailed(f"{prefix}.{key}{suffix}", f"Strings are at most {MAX_STRING_BYTES} bytes")
        return value  # type: ignore[no-any-return]
    if t is dict or t is list:
        return value  # type: ignore[no-any-return]
    if value is None:
        raise ValidationFailed(f"{prefix}.{key}{suffix}", "null is not a telemetry value")
    raise BadRequest(f"Unsupported value type at {prefix}.{key}{suffix}")
