"""MQTT payloads → what the rest of IoTFlow takes (``spec/mqtt.md`` "Topics").

Telemetry comes in two forms. The **structured** one is the HTTP body of ``spec/api.md`` §3 (``{"data":
{...}, "metadata"?, "timestamp"?}``, a ``{"batch": [...]}`` or a JSON array) and is handed unchanged to
:mod:`iotflow.telemetry.parse`. The **flat** one puts the readings at the top level — ``{"temperature":
21.5, "humidity": 40, "timestamp"?: ...}`` — and is rewritten here into the structured form, so both take
the same road (same validation, same timestamps, same store).

Every problem is a :class:`Rejected` carrying the reason it is counted under.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from iotflow.timeutil import TimestampError, parse_timestamp

#: members of a flat payload that are not readings
RESERVED = frozenset(
    {"api_key", "timestamp", "ts", "device_id", "device_name", "device_type", "location", "metadata"}
)

_decoder = msgspec.json.Decoder()


class Rejected(Exception):
    """A message IoTFlow does not accept; ``reason`` is its metrics label."""

    def __init__(self, reason: str, title: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.title = title
        self.message = message


def decode_json(payload: bytes) -> Any:
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise Rejected("not_json", "Invalid JSON", f"The payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise Rejected("not_json", "Invalid JSON", "The payload is nested too deeply") from None


def api_key_of(body: Any) -> str | None:
    """The ``api_key`` member of a JSON object payload (compatibility mode)."""
    if isinstance(body, dict):
        key = body.get("api_key")
        return key if isinstance(key, str) else None
    return None


def is_structured(body: Any) -> bool:
    if isinstance(body, list):
        return True
    return isinstance(body, dict) and (isinstance(body.get("data"), dict) or "batch" in body)


def telemetry_body(body: Any) -> Any:
    """The structured telemetry body for a decoded payload of either form."""
    if is_structured(body):
        return body
    if not isinstance(body, dict):
        raise Rejected(
            "bad_payload",
            "Invalid data format",
            'A telemetry payload is a JSON object: {"data": {...}} or flat readings {"temperature": 21.5}',
        )
    readings = {k: v for k, v in body.items() if k not in RESERVED}
    if not readings:
        raise Rejected("no_readings", "Telemetry data is required", "The payload carries no readings")
    out: dict[str, Any] = {"data": readings}
    for name in ("timestamp", "ts", "metadata"):
        if name in body:
            out[name] = body[name]
    return out


class StatusChange(NamedTuple):
    online: bool
    ts_ms: int | None  # the payload's own timestamp, if any


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode().strip().lower()
    except UnicodeDecodeError:
        return None


def _timestamp(body: dict[str, Any], now_ms: int, max_future_ms: int) -> int | None:
    raw = body.get("timestamp", body.get("ts"))
    if raw is None:
        return None
    try:
        return parse_timestamp(raw, field="timestamp", now_ms=now_ms, max_future_ms=max_future_ms)
    except TimestampError as exc:
        raise Rejected("bad_timestamp", "Invalid timestamp", str(exc)) from None


def _online_word(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("online", "connected", "true", "1"):
            return True
        if word in ("offline", "disconnected", "false", "0"):
            return False
    return None


def status_change(kind: str, payload: bytes, body: Any, *, now_ms: int, max_future_ms: int) -> StatusChange:
    """What a ``status/online|offline|connectivity`` message says.

    ``body`` is the decoded JSON or None (plain-text payloads such as ``online`` are accepted). For
    ``online``/``offline`` the topic decides; ``connectivity`` needs ``{"connected": bool}`` or
    ``{"status": "online"|"offline"}``.
    """
    ts: int | None = None
    said: bool | None = None
    if isinstance(body, dict):
        ts = _timestamp(body, now_ms, max_future_ms)
        said = _online_word(body["connected"]) if "connected" in body else _online_word(body.get("status"))
    elif body is not None:
        said = _online_word(body)
    else:
        said = _online_word(_text(payload) or "")
    if kind == "online":
        return StatusChange(True, ts)
    if kind == "offline":
        return StatusChange(False, ts)
    if said is None:
        raise Rejected(
            "bad_payload",
            "Invalid status",
            'A connectivity message is {"connected": true|false} or {"status": "online"|"offline"}',
        )
    return StatusChange(said, ts)


def ack_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or "command_id" not in body or "status" not in body:
        raise Rejected(
            "bad_payload",
            "Invalid command acknowledgement",
            'A command acknowledgement is {"command_id", "status": "acknowledged"|"completed"|"failed"}',
        )
    return body
