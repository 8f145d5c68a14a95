"""The MQTT transport contract, used by the rest of IoTFlow (commands, alerts, device lifecycle).

Implementations: ``embedded`` (an amqtt broker inside the process), ``external`` (a client of a real
broker with a shared subscription) and :class:`DisabledTransport` (``IOTFLOW_MQTT_ENABLED=false``).
The transport owns its connections; the lifespan starts and stops it.
"""

from __future__ import annotations

from typing import Any, Protocol


class MqttTransport(Protocol):
    mode: str  # "embedded" | "external" | "disabled"

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    def is_connected(self, device_id: int) -> bool:
        """Whether the device has a live MQTT session that can receive a command now."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Publish from IoTFlow (commands, config, errors, alerts). False when it could not be sent."""

    async def disconnect_device(self, device_id: int) -> None:
        """Drop the device's sessions (key rotated, device deactivated or deleted)."""

    async def recheck_device(self, device_id: int) -> None:
        """Drop the device's sessions whose key no longer names an active device (changed elsewhere)."""

    def status(self) -> dict[str, Any]:
        """The ``mqtt_status`` object of ``GET /api/v1/mqtt/status``."""

    def metrics(self) -> dict[str, Any]:
        """Detailed counters for ``GET /api/v1/mqtt/monitoring/metrics``."""


class DisabledTransport:
    """MQTT turned off: nothing is connected, nothing can be published."""

    mode = "disabled"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def is_connected(self, device_id: int) -> bool:
        return False

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        return False

    async def disconnect_device(self, device_id: int) -> None:
        return None

    async def recheck_device(self, device_id: int) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {
            "mode": "disabled",
            "connected": False,
            "host": None,
            "port": None,
            "clients_connected": 0,
            "subscriptions": 0,
            "messages": {"received": 0, "sent": 0, "rejected": 0, "last_message_time": None},
        }

    def metrics(self) -> dict[str, Any]:
        return {"mode": "disabled"}
