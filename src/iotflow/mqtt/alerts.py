"""Alert changes on MQTT: ``iotflow/system/alerts`` (``spec/api.md`` §7, ``spec/mqtt.md``).

Opening and resolving an alert publish the alert (with ``"change"``) at QoS 1, not retained. Who may
subscribe is the broker's business: the embedded broker lets no device read it; on an external
broker, grant it to the operator's clients in the broker's ACL.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from iotflow.mqtt.base import MqttTransport
from iotflow.mqtt.topics import PREFIX

log = logging.getLogger(__name__)

TOPIC = f"{PREFIX}system/alerts"
PUBLISHED_CHANGES = ("opened", "resolved")


class AlertPublisher:
    """An observer of the alert hub that forwards openings and resolutions to the transport."""

    def __init__(self, transport: MqttTransport) -> None:
        self._transport = transport
        self._pending: set[asyncio.Task[None]] = set()

    def __call__(self, change: str, alert: dict[str, Any]) -> None:
        if change not in PUBLISHED_CHANGES:
            return
        task = asyncio.get_running_loop().create_task(self._send(msgspec.json.encode(alert)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, payload: bytes) -> None:
        try:
            if not await self._transport.publish(TOPIC, payload, qos=1, retain=False):
                log.debug("alert not published on %s (transport not connected)", TOPIC)
        except Exception as exc:
            log.warning("publishing an alert on %s failed: %s", TOPIC, exc)
