"""Alert rules and alerts: the in-memory alert record, API representations and rule validation."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iotflow.devices.schemas import ts_or_none
from iotflow.errors import ValidationFailed
from iotflow.storage.models import AlertRule
from iotflow.timeutil import format_ts
from iotflow.validation import opt_str

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES = ("info", "warning", "critical")
STATES = ("open", "acknowledged", "resolved")
MAX_FOR_SECONDS = 7 * 86_400
MAX_THRESHOLD = 1e300


@dataclass(slots=True, eq=False)
class AlertRecord:
    """One alert as kept in memory (open ones) and returned by the repository.

    ``user_id`` is the owner of the alerting device (None for devices without an owner): the user who
    sees and manages the alert.
    """

    id: int | None
    rule_id: int
    user_id: int | None
    device_id: int
    key: str
    value: float
    threshold: float
    operator: str
    severity: str
    state: str
    message: str
    opened_at: int
    acknowledged_at: int | None = None
    resolved_at: int | None = None


def alert_dict(a: AlertRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "rule_id": a.rule_id,
        "device_id": a.device_id,
        "key": a.key,
        "value": a.value,
        "threshold": a.threshold,
        "operator": a.operator,
        "severity": a.severity,
        "state": a.state,
        "message": a.message,
        "opened_at": format_ts(a.opened_at),
        "acknowledged_at": ts_or_none(a.acknowledged_at),
        "resolved_at": ts_or_none(a.resolved_at),
    }


def rule_dict(r: AlertRule) -> dict[str, Any]:
    return {
        "id": r.id,
        "user_id": r.user_id,
        **rule_body(r),
        "created_at": format_ts(r.created_at),
        "updated_at": format_ts(r.updated_at),
    }


def alert_message(name: str, key: str, value: float, op: str, threshold: float) -> str:
    return f"{name}: {key} = {_num(value)} ({op} {_num(threshold)})"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))


def _opt_id(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise ValidationFailed(field, f"{field} must be a positive integer or null")
    return value


def _threshold(body: dict[str, Any]) -> float:
    value = body.get("threshold")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or abs(value) > MAX_THRESHOLD
    ):
        raise ValidationFailed("threshold", "threshold must be a finite number")
    return float(value)


def _choice(body: dict[str, Any], field: str, choices: tuple[str, ...]) -> str:
    value = body.get(field)
    if not isinstance(value, str) or value not in choices:
        raise ValidationFailed(field, f"{field} must be one of {', '.join(choices)}")
    return value


def rule_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The complete, validated fields of a rule (``body`` is the merged rule for an update)."""
    key = opt_str(body, "key", min_len=1, max_len=128)
    if key is None:
        raise ValidationFailed("key", "key is required: the telemetry key the rule watches")
    device_id, group_id = _opt_id(body, "device_id"), _opt_id(body, "group_id")
    if device_id is not None and group_id is not None:
        raise ValidationFailed("group_id", "give device_id or group_id, not both (neither = all devices)")
    op = _choice(body, "operator", tuple(OPERATORS))
    threshold = _threshold(body)
    name = opt_str(body, "name", min_len=1, max_len=100) or f"{key} {op} {_num(threshold)}"[:100]
    for_seconds = body.get("for_seconds", 0)
    if isinstance(for_seconds, bool) or not isinstance(for_seconds, int) or for_seconds < 0:
        raise ValidationFailed("for_seconds", "for_seconds must be a non-negative integer")
    if for_seconds > MAX_FOR_SECONDS:
        raise ValidationFailed("for_seconds", f"for_seconds must be at most {MAX_FOR_SECONDS}")
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValidationFailed("enabled", "enabled must be true or false")
    return {
        "name": name,
        "device_id": device_id,
        "group_id": group_id,
        "key": key,
        "operator": op,
        "threshold": threshold,
        "severity": _choice({"severity": body.get("severity", "warning")}, "severity", SEVERITIES),
        "for_seconds": for_seconds,
        "enabled": enabled,
    }


def rule_body(r: AlertRule) -> dict[str, Any]:
    """A stored rule as an input body (the base an update is merged onto)."""
    return {
        "name": r.name,
        "device_id": r.device_id,
        "group_id": r.group_id,
        "key": r.key,
        "operator": r.operator,
        "threshold": r.threshold,
        "severity": r.severity,
        "for_seconds": r.for_seconds,
        "enabled": r.enabled,
    }
