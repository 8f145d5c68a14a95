"""One MQTT connection as IoTFlow sees it, and why a connection is refused."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from iotflow.cache.base import DeviceAuth
from iotflow.mqtt import topics

# CONNACK return codes of MQTT 3.1.1
BAD_CREDENTIALS = 4
NOT_AUTHORIZED = 5


class Refused(Exception):
    """A connection IoTFlow does not accept; ``code`` is the CONNACK return code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(eq=False, slots=True)
class Client:
    """One MQTT connection as IoTFlow sees it."""

    client_id: str
    device: DeviceAuth | None  # None: anonymous (compatibility mode)
    keys: dict[int, str]  # device id → API key: the CONNECT password, or keys proven (anonymous)
    will: tuple[str, bytes, int] | None = None  # (topic, payload, qos) given at CONNECT
    subscriptions: set[str] = field(default_factory=set)
    kick: Callable[[str], None] | None = None  # closes the connection (set by the transport)
    backlog: deque[tuple[str, bytes]] | None = None  # QoS 0 messages waiting (made on the first one)
    backlog_bytes: int = 0
    draining: bool = False  # a task is working through the backlog
    drained: asyncio.Event | None = None  # set when the draining task is done
    revoked: bool = False  # key rotated / device deleted: no last will, no further messages
    closed: bool = False
    ended_by: str | None = None  # why IoTFlow closed the connection (kicked, keepalive, overload)

    def device_ids(self) -> list[int]:
        return list(self.keys)

    def close(self, why: str) -> None:
        if self.ended_by is None:
            self.ended_by = why
        if self.kick is not None and not self.closed:
            self.kick(why)


def device_id_of_username(username: str) -> int | None:
    text = username.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= topics.MAX_DEVICE_ID else None
