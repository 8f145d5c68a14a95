"""Commands: states and their order, the API representation, the MQTT payload, input validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from iotflow.errors import BadRequest, ValidationFailed
from iotflow.storage.models import Command
from iotflow.timeutil import format_ts
from iotflow.validation import req_str

COMMAND_TYPES = ("control", "config", "firmware")
STATUSES = ("pending", "delivered", "acknowledged", "completed", "failed", "expired")
OPEN = ("pending", "delivered")  # waiting for the device; these expire
FINAL = ("completed", "failed", "expired")
# Forward order: a command may move to any state of a higher rank (pending → completed is a jump).
RANK = {"pending": 0, "delivered": 1, "acknowledged": 2, "completed": 3, "failed": 3}
ORDER_TEXT = "pending → delivered → acknowledged → completed|failed"
SETTABLE = ("delivered", "acknowledged", "completed", "failed")  # by a device or a user
ACK_STATUSES = ("acknowledged", "completed", "failed")  # on MQTT commands/ack

DEFAULT_EXPIRES_IN = 3600
MAX_EXPIRES_IN = 30 * 86_400
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A validated command request."""

    command: str
    command_type: str
    parameters: dict[str, Any]
    expires_in: int
    qos: int = 1


def effective_status(c: Command, now: int) -> str:
    """The stored status, except that a pending/delivered command past ``expires_at`` is ``expired``
    (also before the expiry task has written it)."""
    return "expired" if c.status in OPEN and c.expires_at <= now else c.status


def command_dict(c: Command, now: int) -> dict[str, Any]:
    return {
        "id": c.id,
        "device_id": c.device_id,
        "command": c.command,
        "command_type": c.command_type,
        "parameters": c.parameters or {},
        "status": effective_status(c, now),
        "result": c.result,
        "created_at": format_ts(c.created_at),
        "updated_at": format_ts(c.updated_at),
        "expires_at": format_ts(c.expires_at),
        "created_by": c.created_by,
    }


def command_topic(device_id: int, command_type: str) -> str:
    return f"iotflow/devices/{device_id}/commands/{command_type}"


def fleet_topic(group_id: int) -> str:
    return f"iotflow/fleet/commands/{group_id}"


def mqtt_payload(c: Command, now: int) -> bytes:
    return msgspec.json.encode(
        {
            "command_id": c.id,
            "command": c.command,
            "parameters": c.parameters or {},
            "timestamp": format_ts(now),
            "source": "iotflow",
        }
    )


# ----- input ------------------------------------------------------------------------------------------


def _choice(body: dict[str, Any], field: str, choices: tuple[str, ...], default: str | None) -> str:
    value = body.get(field, default)
    if value is None:
        raise ValidationFailed(field, f"{field} is required: one of {', '.join(choices)}")
    if not isinstance(value, str) or value not in choices:
        raise ValidationFailed(field, f"{field} must be one of {', '.join(choices)}")
    return value


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed("parameters", "parameters must be a JSON object")
    return value


def _int(body: dict[str, Any], field: str, default: int, lo: int, hi: int) -> int:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationFailed(field, f"{field} must be an integer between {lo} and {hi}")
    return value


def new_command(body: dict[str, Any], *, type_required: bool = False, with_qos: bool = False) -> NewCommand:
    """``{command, parameters?, command_type?, expires_in?[, qos?]}``; ``command_type`` defaults to
    ``control`` unless ``type_required``."""
    return NewCommand(
        command=req_str(body, "command", min_len=1, max_len=100),
        command_type=_choice(body, "command_type", COMMAND_TYPES, None if type_required else "control"),
        parameters=_parameters(body),
        expires_in=_int(body, "expires_in", DEFAULT_EXPIRES_IN, 1, MAX_EXPIRES_IN),
        qos=_int(body, "qos", 1, 0, 1) if with_qos else 1,
    )


def status_update(body: dict[str, Any]) -> tuple[str, Any, bool]:
    """``{status, result?}`` → (status, result, whether result was given)."""
    status = body.get("status")
    if status == "expired":
        raise ValidationFailed("status", "expired is set only by IoTFlow when a command's time is up")
    if not isinstance(status, str) or status not in SETTABLE:
        raise ValidationFailed("status", f"status must be one of {', '.join(SETTABLE)}")
    return status, body.get("result"), "result" in body


def ack_fields(payload: dict[str, Any]) -> tuple[int, str, Any, bool]:
    """An MQTT ``commands/ack`` payload → (command id, status, result, whether result was given)."""
    raw = payload.get("command_id")
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 < raw <= MAX_ID:
        raise ValidationFailed("command_id", "command_id must be the positive integer id of the command")
    status = payload.get("status")
    if not isinstance(status, str) or status not in ACK_STATUSES:
        raise ValidationFailed("status", f"status must be one of {', '.join(ACK_STATUSES)}")
    return raw, status, payload.get("result"), "result" in payload


def transition_error(command_id: int, current: str, wanted: str) -> BadRequest:
    """Why ``current`` → ``wanted`` is refused (400)."""
    if current == "expired":
        message = f"Command {command_id} has expired; it can no longer change"
    elif current in FINAL:
        message = f"Command {command_id} is already {current} (a final state); it can no longer change"
    else:
        message = (
            f"Command {command_id} cannot move from {current} to {wanted}: "
            f"status moves forward only, along {ORDER_TEXT}"
        )
    return BadRequest(
        message,
        title="Invalid status transition",
        extra={"current_status": current, "requested_status": wanted},
    )
