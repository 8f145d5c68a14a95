"""MQTT: the transport chosen by the settings (``spec/mqtt.md`` "Two modes")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iotflow.config import Settings
from iotflow.mqtt.base import DisabledTransport, MqttTransport

if TYPE_CHECKING:
    from iotflow.runtime import Runtime


def open_transport(settings: Settings) -> MqttTransport:
    """The transport for ``settings.mqtt_mode`` (not started)."""
    mode = settings.mqtt_mode
    if mode == "disabled":
        return DisabledTransport()
    if mode == "external":
        from iotflow.mqtt.external import ExternalTransport  # paho is imported only when it is used

        return ExternalTransport(settings)
    from iotflow.mqtt.embedded import EmbeddedTransport  # amqtt is imported only when it is used

    return EmbeddedTransport(settings)


def bind_runtime(transport: MqttTransport, rt: Runtime) -> None:
    """Hand the running services to a transport that needs them (it starts before they all exist)."""
    bind: Any = getattr(transport, "bind", None)
    if callable(bind):
        bind(rt)
