"""Device representations for the API, and typed configuration values."""

from __future__ import annotations

from typing import Any

import msgspec

from iotflow.errors import ValidationFailed
from iotflow.storage.models import Device, DeviceConfiguration
from iotflow.timeutil import format_ts

DEVICE_STATUSES = ("active", "inactive", "maintenance")
CONFIG_TYPES = ("string", "integer", "float", "boolean", "json")


def ts_or_none(ms: int | None) -> str | None:
    return None if ms is None else format_ts(ms)


def device_dict(
    d: Device, *, last_seen: int | None, is_online: bool, reported: dict[str, Any] | None = None
) -> dict[str, Any]:
    attributes = dict(d.attributes or {})
    merged_reported = {**(d.reported or {}), **(reported or {})}
    if merged_reported:
        attributes["reported"] = merged_reported
    return {
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "device_type": d.device_type,
        "status": d.status,
        "location": d.location,
        "firmware_version": d.firmware_version,
        "hardware_version": d.hardware_version,
        "tags": list(d.tags or []),
        "attributes": attributes,
        "latitude": d.latitude,
        "longitude": d.longitude,
        "user_id": d.user_id,
        "created_at": format_ts(d.created_at),
        "updated_at": format_ts(d.updated_at),
        "last_seen": ts_or_none(last_seen),
        "is_online": is_online,
    }


def status_dict(d: Device, *, last_seen: int | None, is_online: bool) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "device_type": d.device_type,
        "registration_status": d.status,
        "is_online": is_online,
        "status": "online" if is_online else "offline",
        "last_seen": ts_or_none(last_seen),
    }


# ----- configuration values -------------------------------------------------------------------------


def infer_config_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict | list):
        return "json"
    return "string"


def encode_config(key: str, value: Any, data_type: str | None) -> tuple[str, str]:
    """Check ``value`` against ``data_type`` (inferred when None) → (stored text, data_type)."""
    if data_type is None:
        data_type = infer_config_type(value)
    if data_type not in CONFIG_TYPES:
        raise ValidationFailed("data_type", f"data_type must be one of {', '.join(CONFIG_TYPES)}")
    field = f"config_value ({key})"
    try:
        if data_type == "string":
            if not isinstance(value, str):
                raise ValueError
            return value, data_type
        if data_type == "integer":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError
            return str(int(value)), data_type
        if data_type == "float":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError
            return repr(float(value)), data_type
        if data_type == "boolean":
            if isinstance(value, bool):
                return ("true" if value else "false"), data_type
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower(), data_type
            raise ValueError
        if isinstance(value, str):
            msgspec.json.decode(value)
            return value, data_type
        return msgspec.json.encode(value).decode(), data_type
    except (ValueError, RecursionError, msgspec.DecodeError):
        raise ValidationFailed(field, f"The value {value!r:.200} is not a valid {data_type}") from None


def decode_config(c: DeviceConfiguration) -> Any:
    if c.data_type == "integer":
        return int(c.config_value)
    if c.data_type == "float":
        return float(c.config_value)
    if c.data_type == "boolean":
        return c.config_value == "true"
    if c.data_type == "json":
        return msgspec.json.decode(c.config_value)
    return c.config_value


def config_dict(configs: list[DeviceConfiguration]) -> dict[str, Any]:
    return {
        c.config_key: {
            "value": decode_config(c),
            "data_type": c.data_type,
            "updated_at": format_ts(c.updated_at),
        }
        for c in configs
    }
