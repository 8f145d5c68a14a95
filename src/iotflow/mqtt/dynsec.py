"""Mosquitto dynamic security managed by IoTFlow (``IOTFLOW_MQTT_DYNSEC=true``, external mode).

One broker client per device: username = the device id, password = its API key, and one role
``iotflow-device-<id>`` that lets it publish its own device topics and subscribe to what IoTFlow sends
it. IoTFlow talks to the plugin by publishing JSON commands to ``$CONTROL/dynamic-security/v1`` through
its own broker connection and reading the replies on ``.../response`` (``ExternalTransport.control``).

The device service calls the hooks below: a key is set (registration, rotation — the plain key lives
only in memory, for this one call), the status changes (a non-active device's client is disabled,
which also closes its connections), the device is deleted (client and role removed). A broker that
cannot be reached or refuses a command is logged, never an error of the HTTP request: rotating the
key again brings the broker client back in line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iotflow.devices.service import DeviceService
    from iotflow.mqtt.base import MqttTransport

log = logging.getLogger("iotflow.mqtt.dynsec")

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"

#: sends a batch of dynsec commands and returns one response per command, in order
Send = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


def role_name(device_id: int) -> str:
    return f"iotflow-device-{device_id}"


def device_acls(device_id: int) -> list[dict[str, Any]]:
    """What a device's broker client may do: publish its own telemetry, status, command
    acknowledgements and last will; subscribe to its commands, configuration and error reports.
    (Not ``iotflow/devices/<id>/#`` for publishing: its ``commands``, ``config`` and ``errors``
    topics are IoTFlow's to write.)"""
    base = f"iotflow/devices/{device_id}"
    publish = (
        f"{base}/telemetry/#",
        f"{base}/status/#",
        f"{base}/commands/ack",
        f"iotflow/lwt/devices/{device_id}",
    )
    subscribe = (f"{base}/commands/#", f"{base}/config", f"{base}/errors")
    acls = [{"acltype": "publishClientSend", "topic": t, "priority": 0, "allow": True} for t in publish]
    acls += [{"acltype": "subscribePattern", "topic": t, "priority": 0, "allow": True} for t in subscribe]
    return acls


class DynsecError(Exception):
    """The broker refused a dynsec command (``error`` of its response)."""


def _failed(response: dict[str, Any]) -> str | None:
    error = response.get("error")
    return str(error) if error else None


class DynamicSecurity:
    """Keeps one Mosquitto dynsec client (and role) per device in step with IoTFlow."""

    def __init__(self, send: Send) -> None:
        self._send = send

    async def _run(self, commands: list[dict[str, Any]]) -> list[str | None]:
        """The error of each command (None = done)."""
        responses = await self._send(commands)
        return [_failed(r) for r in responses]

    async def key_set(self, device_id: int, api_key: str) -> None:
        """A device was registered or got a new key: create its broker client, or change its password
        (Mosquitto closes the connections of a client whose password changes)."""
        try:
            errors = await self._run(
                [{"command": "setClientPassword", "username": str(device_id), "password": api_key}]
            )
            if errors[0] is None:
                return
            await self._create(device_id, api_key)
        except Exception as exc:
            log.error("dynsec: could not set the broker client of device %s: %s", device_id, exc)

    async def _create(self, device_id: int, api_key: str) -> None:
        role = role_name(device_id)
        errors = await self._run(
            [
                {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                {
                    "command": "createClient",
                    "username": str(device_id),
                    "password": api_key,
                    "textname": f"IoTFlow device {device_id}",
                    "roles": [{"rolename": role, "priority": 0}],
                },
            ]
        )
        role_error, client_error = errors
        if role_error is not None and "exists" not in role_error.lower():
            raise DynsecError(f"createRole {role}: {role_error}")
        if client_error is not None:
            raise DynsecError(f"createClient {device_id}: {client_error}")

    async def status_changed(self, device_id: int, status: str) -> None:
        """Only an active device may connect; disabling a client also closes its connections."""
        command = "enableClient" if status == "active" else "disableClient"
        try:
            errors = await self._run([{"command": command, "username": str(device_id)}])
            if errors[0] is not None:
                raise DynsecError(errors[0])
        except Exception as exc:
            log.error("dynsec: %s of device %s failed: %s", command, device_id, exc)

    async def deleted(self, device_id: int) -> None:
        """Remove the device's client (its connections are closed) and its role."""
        try:
            errors = await self._run(
                [
                    {"command": "deleteClient", "username": str(device_id)},
                    {"command": "deleteRole", "rolename": role_name(device_id)},
                ]
            )
            for error in errors:
                if error is not None and "not found" not in error.lower():
                    raise DynsecError(error)
        except Exception as exc:
            log.error("dynsec: removing the broker client of device %s failed: %s", device_id, exc)


def attach(transport: MqttTransport, devices: DeviceService) -> DynamicSecurity | None:
    """Keep the broker's clients in step with ``devices`` (external mode only)."""
    from iotflow.mqtt.external import ExternalTransport

    if transport.mode == "disabled":  # one-shot CLI commands, IOTFLOW_MQTT_ENABLED=false
        log.warning(
            "IOTFLOW_MQTT_DYNSEC: MQTT is off in this process, so the broker's device clients are not "
            "updated by it (register, rotate keys and delete devices through the running server)"
        )
        return None
    if not isinstance(transport, ExternalTransport):
        log.warning("IOTFLOW_MQTT_DYNSEC applies to an external broker (IOTFLOW_MQTT_BROKER_URL) only")
        return None
    control = transport.control

    async def send(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await control(CONTROL_TOPIC, commands)

    dynsec = DynamicSecurity(send)
    devices.on_key(dynsec.key_set)
    devices.on_status(dynsec.status_changed)
    devices.on_delete(dynsec.deleted)
    return dynsec
