"""User representation and input validation."""

from __future__ import annotations

import re
from typing import Any

from iotflow.devices.schemas import ts_or_none
from iotflow.errors import ValidationFailed
from iotflow.storage.models import User
from iotflow.timeutil import format_ts

USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,80}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def user_dict(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "user_id": u.user_id,
        "username": u.username,
        "email": u.email,
        "is_active": u.is_active,
        "is_admin": u.is_admin,
        "created_at": format_ts(u.created_at),
        "last_login": ts_or_none(u.last_login),
    }


def check_username(value: Any) -> str:
    if not isinstance(value, str) or not USERNAME_RE.fullmatch(value):
        raise ValidationFailed(
            "username", "username must be 3-80 characters of letters, digits, '_', '.' or '-'"
        )
    return value


def check_email(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 254 or not EMAIL_RE.fullmatch(value):
        raise ValidationFailed("email", "email must be a valid address (name@example.com)")
    return value


def check_password(value: Any, field: str = "password") -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise ValidationFailed(field, f"{field} must be a string of at least {MIN_PASSWORD} characters")
    return value
