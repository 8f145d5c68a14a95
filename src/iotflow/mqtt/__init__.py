"""MQTT: the transport chosen by the settings (``spec/mqtt.md`` "Two modes")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iotflow.config import Settings
from iotflow.errors import ConfigError
from iotflow.mqtt.base import DisabledTransport, MqttTransport

if TYPE_CHECKING:
    from iotflow.runtime import Runtime


def open_transport(settings: Settings) -> MqttTransport:
    """The transport for ``settings.mqtt_mode`` (not started)."""
    mode = settings.mqtt_mode
    if mode == "disabled":
        return DisabledTransport()
    if mode == "external":
        raise ConfigError(
            "external MQTT mode (IOTFLOW_MQTT_BROKER_URL) is not built yet: unset IOTFLOW_MQTT_BROKER_URL "
            "to use the embedded broker, or set IOTFLOW_MQTT_ENABLED=false"
        )
    from iotflow.mqtt.embedded import EmbeddedTransport  # amqtt is imported only when it is used

    return EmbeddedTransport(settings)


def bind_runtime(transport: MqttTransport, rt: Runtime) -> None:
    """Hand the running services to a transport that needs them (it starts before they all exist)."""
    bind: Any = getattr(transport, "bind", None)
    if callable(bind):
        bind(rt)
