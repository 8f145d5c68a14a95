"""Validation of JSON body fields: each failure names the field (400 with ``details``)."""

from __future__ import annotations

from typing import Any

from iotflow.errors import ValidationFailed


def opt_str(body: dict[str, Any], field: str, *, max_len: int = 1000, min_len: int = 0) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(field, f"{field} must be a string")
    if not min_len <= len(value) <= max_len:
        raise ValidationFailed(field, f"{field} must be {min_len}-{max_len} characters long")
    return value


def req_str(body: dict[str, Any], field: str, *, max_len: int = 1000, min_len: int = 1) -> str:
    value = opt_str(body, field, max_len=max_len, min_len=min_len)
    if value is None:
        raise ValidationFailed(field, f"{field} is required")
    return value


def opt_float(body: dict[str, Any], field: str, lo: float, hi: float) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValidationFailed(field, f"{field} must be a number between {lo} and {hi}")
    return float(value)
