"""Group representation and input validation."""

from __future__ import annotations

import re
from typing import Any

from iotflow.errors import ValidationFailed
from iotflow.storage.models import Group
from iotflow.timeutil import format_ts

DEFAULT_COLOR = "#3B82F6"
COLOR_RE = re.compile(r"#[0-9A-Fa-f]{6}")
NAME_MAX = 100
DESCRIPTION_MAX = 1000
MAX_IDS = 1000  # devices per membership request
MAX_ID = 2**63 - 1


def group_dict(g: Group, *, device_count: int, devices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "color": g.color,
        "user_id": g.user_id,
        "created_at": format_ts(g.created_at),
        "updated_at": format_ts(g.updated_at),
        "device_count": device_count,
    }
    if devices is not None:
        out["devices"] = devices
    return out


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > NAME_MAX:
        raise ValidationFailed("name", f"name is required: 1-{NAME_MAX} characters, not only spaces")
    return value


def check_description(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > DESCRIPTION_MAX):
        raise ValidationFailed(
            "description", f"description must be a string of at most {DESCRIPTION_MAX} characters"
        )
    return value


def check_color(value: Any) -> str:
    if not isinstance(value, str) or not COLOR_RE.fullmatch(value):
        raise ValidationFailed("color", f"color must be #RRGGBB (six hex digits), e.g. {DEFAULT_COLOR}")
    return value


def _check_id(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise ValidationFailed(field, f"{field} must hold positive integer device ids")
    return value


def device_ids_of(body: dict[str, Any]) -> list[int]:
    """The device ids of ``{"device_id": n}`` or ``{"device_ids": [...]}`` (deduplicated, in order)."""
    if ("device_id" in body) == ("device_ids" in body):
        raise ValidationFailed("device_ids", 'Send either {"device_id": n} or {"device_ids": [n, ...]}')
    if "device_id" in body:
        return [_check_id(body["device_id"], "device_id")]
    raw = body["device_ids"]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_IDS:
        raise ValidationFailed("device_ids", f"device_ids must be a list of 1-{MAX_IDS} device ids")
    return list(dict.fromkeys(_check_id(v, "device_ids") for v in raw))
