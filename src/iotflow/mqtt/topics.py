"""IoTFlow's MQTT topics (``spec/mqtt.md``): parsing what devices publish, building what IoTFlow
publishes, wildcard matching, and the per-device access rules. Shared by every MQTT mode.

Device → IoTFlow (``{id}`` is the decimal device id)::

    iotflow/devices/{id}/telemetry[/<anything>]      telemetry (structured or flat payload)
    iotflow/devices/{id}/status/online|offline        presence
    iotflow/devices/{id}/status/heartbeat             presence (seen)
    iotflow/devices/{id}/status/connectivity          presence from {"connected": bool} / {"status": ...}
    iotflow/devices/{id}/commands/ack                 command progress
    iotflow/lwt/devices/{id} (or lwt/devices/{id})    last will: offline

IoTFlow → device: ``.../commands/{control|config|firmware}``, ``.../config`` (retained), ``.../errors``,
``iotflow/system/alerts``, ``iotflow/fleet/commands/{group_id}``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

PREFIX = "iotflow/"
DEVICES = "iotflow/devices/"
SYSTEM_ALERTS = "iotflow/system/alerts"
STATUS_KINDS = frozenset({"online", "offline", "heartbeat", "connectivity"})
COMMAND_TYPES = ("control", "config", "firmware")
MAX_DEVICE_ID = 2**63 - 1


class Kind(StrEnum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    ACK = "commands_ack"
    LWT = "lwt"


class DeviceTopic(NamedTuple):
    """A topic a device publishes to, parsed."""

    device_id: int
    kind: Kind
    detail: str  # status kind ("online", ...) or the telemetry sub-topic ("" for the plain one)


def _device_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    return value if 0 < value <= MAX_DEVICE_ID else None


def parse(topic: str) -> DeviceTopic | None:
    """The device topic ``topic`` names, or None when it is not one a device may publish to."""
    if topic.startswith(DEVICES):
        parts = topic[len(DEVICES) :].split("/")
        if len(parts) < 2:
            return None
        device_id = _device_id(parts[0])
        if device_id is None:
            return None
        head, rest = parts[1], parts[2:]
        if head == "telemetry":
            return DeviceTopic(device_id, Kind.TELEMETRY, "/".join(rest))
        if head == "status" and len(rest) == 1 and rest[0] in STATUS_KINDS:
            return DeviceTopic(device_id, Kind.STATUS, rest[0])
        if head == "commands" and rest == ["ack"]:
            return DeviceTopic(device_id, Kind.ACK, "ack")
        return None
    for lwt in ("iotflow/lwt/devices/", "lwt/devices/"):
        if topic.startswith(lwt):
            device_id = _device_id(topic[len(lwt) :])
            return None if device_id is None else DeviceTopic(device_id, Kind.LWT, "")
    return None


def device_of(topic: str) -> int | None:
    """The device id in ``iotflow/devices/{id}/...`` (any sub-topic), else None."""
    if not topic.startswith(DEVICES):
        return None
    return _device_id(topic[len(DEVICES) :].split("/", 1)[0])


# ----- building ----------------------------------------------------------------------------------------


def device_base(device_id: int) -> str:
    return f"{DEVICES}{device_id}"


def telemetry_topic(device_id: int) -> str:
    return f"{DEVICES}{device_id}/telemetry"


def command_topic(device_id: int, command_type: str) -> str:
    return f"{DEVICES}{device_id}/commands/{command_type}"


def config_topic(device_id: int) -> str:
    return f"{DEVICES}{device_id}/config"


def errors_topic(device_id: int) -> str:
    return f"{DEVICES}{device_id}/errors"


def fleet_topic(group_id: int) -> str:
    return f"{PREFIX}fleet/commands/{group_id}"


# ----- matching and access -----------------------------------------------------------------------------


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest); ``$`` topics never match wildcards."""
    if topic_filter == topic:
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    filters = topic_filter.split("/")
    for i, level in enumerate(filters):
        if level == "#":
            return i == len(filters) - 1
        if i >= len(levels) or (level != "+" and level != levels[i]):
            return False
    return len(filters) == len(levels)


def valid_filter(topic_filter: str) -> bool:
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return bool(topic_filter)


def may_publish(device_id: int, topic: str) -> bool:
    """A device publishes only under its own ``iotflow/devices/<id>/`` (and its own last-will topic)."""
    parsed = parse(topic)
    return parsed is not None and parsed.device_id == device_id


def may_subscribe(device_id: int, topic_filter: str, *, errors: bool = True) -> bool:
    """Only the device's own ``commands/...``, ``config`` and (unless ``errors=False``) ``errors``.

    The filter must not reach any other topic: ``iotflow/devices/<id>/#`` is refused (it would match
    the device's telemetry), ``iotflow/devices/+/commands/#`` too (other devices).
    """
    if not valid_filter(topic_filter):
        return False
    base = f"{DEVICES}{device_id}/"
    if not topic_filter.startswith(base):
        return False
    rest = topic_filter[len(base) :]
    if rest in ("commands/#", "commands/+", "config") or (errors and rest == "errors"):
        return True
    return rest.startswith("commands/") and "/" not in rest[9:] and rest[9:] not in ("", "#", "+", "ack")


def may_receive(device_id: int, topic: str) -> bool:
    """What IoTFlow delivers to a device's session: its commands, config and errors."""
    base = f"{DEVICES}{device_id}/"
    if not topic.startswith(base):
        return False
    rest = topic[len(base) :]
    return rest in ("config", "errors") or (rest.startswith("commands/") and rest != "commands/ack")


def is_commands_filter(device_id: int, topic_filter: str) -> bool:
    """Whether a subscription brings the device its commands (any command type)."""
    return any(matches(topic_filter, command_topic(device_id, t)) for t in COMMAND_TYPES)
