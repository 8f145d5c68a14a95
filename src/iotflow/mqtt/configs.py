"""A device's configuration on MQTT: ``iotflow/devices/{id}/config``, QoS 1, retained (``spec/mqtt.md``).

Whenever a device's configuration changes (``PUT /devices/{id}/configuration`` by its owner or an
admin, ``POST /devices/config`` by the device), the whole configuration is published, retained:

    {"device_id": 42, "configuration": {"interval": {"value": 30, "data_type": "integer",
     "updated_at": "..."}}, "timestamp": "..."}

``configuration`` has the shape of ``GET /devices/config``. A device subscribed to its ``config``
topic gets it at once; one that subscribes later gets the retained copy. Deleting the device clears
the retained copy. The embedded broker keeps retained messages in memory only (docs/mqtt.md).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from iotflow.mqtt import topics
from iotflow.mqtt.base import MqttTransport
from iotflow.timeutil import format_ts, now_ms

log = logging.getLogger(__name__)


class ConfigPublisher:
    """Device-service hooks that publish (and clear) the retained configuration of a device."""

    def __init__(self, transport: MqttTransport) -> None:
        self._transport = transport

    async def changed(self, device_id: int, configuration: dict[str, Any]) -> None:
        body = {"device_id": device_id, "configuration": configuration, "timestamp": format_ts(now_ms())}
        await self._send(device_id, msgspec.json.encode(body))

    async def deleted(self, device_id: int) -> None:
        await self._send(device_id, b"")  # an empty retained message clears the retained copy

    async def _send(self, device_id: int, payload: bytes) -> None:
        topic = topics.config_topic(device_id)
        try:
            if not await self._transport.publish(topic, payload, qos=1, retain=True):
                log.debug("configuration not published on %s (transport not connected)", topic)
        except Exception as exc:  # the configuration is saved; the device reads it over HTTP meanwhile
            log.warning("publishing the configuration on %s failed: %s", topic, exc)
