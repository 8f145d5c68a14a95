"""Mosquitto dynamic security managed by IoTFlow (``IOTFLOW_MQTT_DYNSEC=true``): a real Mosquitto with
the plugin, one broker client per device (username = device id, password = API key)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.conftest import ADMIN, HIGH_RATE_LIMITS, key_headers
from tests.mosquitto import Mosquitto
from tests.server import Server

PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_USER, ADMIN_PASSWORD = "iotflow", "broker-admin-pw"

pytestmark = pytest.mark.skipif(
    (shutil.which("mosquitto") is None or shutil.which("mosquitto_ctrl") is None or not PLUGIN.exists())
    and not os.environ.get("CI"),
    reason="mosquitto with the dynamic-security plugin is not installed",
)


class DynsecMosquitto(Mosquitto):
    """A private Mosquitto with dynamic security, set up as ``docs/mqtt.md`` says."""

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        dynsec = tmp / "dynamic-security.json"
        subprocess.run(
            ["mosquitto_ctrl", "dynsec", "init", str(dynsec), ADMIN_USER, ADMIN_PASSWORD],
            check=True,
            capture_output=True,
        )
        super().__init__(tmp, "allow_anonymous false", f"plugin {PLUGIN}", f"plugin_opt_config_file {dynsec}")
        # IoTFlow's own rights: write what it sends to devices, read device topics (shared subscription)
        for args in (
            ["createRole", "iotflow-service"],
            ["addRoleACL", "iotflow-service", "publishClientSend", "iotflow/#", "allow"],
            ["addClientRole", ADMIN_USER, "iotflow-service"],
        ):
            self.ctrl(*args)

    def ctrl(self, *args: str) -> None:
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-u", ADMIN_USER, "-P", ADMIN_PASSWORD]
        subprocess.run(
            ["mosquitto_ctrl", *where, "dynsec", *args],
            check=True,
            capture_output=True,
            timeout=10,
        )


@dataclass
class Setup:
    broker: DynsecMosquitto
    server: Server


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    broker = DynsecMosquitto(tmp_path_factory.mktemp("mosquitto-dynsec"))
    try:
        server = Server(
            tmp_path_factory.mktemp("iotflow-dynsec"),
            IOTFLOW_MQTT_ENABLED="true",
            IOTFLOW_MQTT_BROKER_URL=(
                f"mqtt://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{broker.port}?client_id=iotflow-dynsec"
            ),
            IOTFLOW_MQTT_DYNSEC="true",
            **HIGH_RATE_LIMITS,
        ).start()
        yield Setup(broker, server)
        server.stop()
        log = server.log()
        assert "Traceback" not in log and "dynsec:" not in log, log
    finally:
        broker.stop()


@pytest.fixture()
def api(setup: Setup) -> Iterator[httpx.Client]:
    with setup.server.client() as client:
        yield client


class Conn:
    """A device connected to the broker with username = id, password = key (MQTT 3.1.1)."""

    def __init__(self, port: int, device_id: int, password: str) -> None:
        self.connack = threading.Event()
        self.disconnected = threading.Event()
        self.reason: Any = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(str(device_id), password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.client.reconnect_delay_set(30, 60)  # no quick reconnection: a kick stays visible
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connack.wait(10), "no CONNACK"

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        self.connack.set()

    @property
    def ok(self) -> bool:
        return not self.reason.is_failure

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        info = self.client.publish(topic, json.dumps(payload), qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(setup: Setup, device_id: int, password: str) -> Conn:
    return Conn(setup.broker.port, device_id, password)


def register(api: httpx.Client) -> dict[str, Any]:
    r = api.post(
        "/api/v1/devices/register",
        json={"name": f"dynsec-{time.time_ns()}", "device_type": "sensor"},
    )
    assert r.status_code == 201, r.text
    return r.json()["device"]  # type: ignore[no-any-return]


def points(api: httpx.Client, device: dict[str, Any]) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/telemetry/{device['id']}", params={"limit": 1000}, headers=key_headers(device))
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def wait_for(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def telemetry(device: dict[str, Any], value: float) -> tuple[str, dict[str, Any]]:
    return f"iotflow/devices/{device['id']}/telemetry", {"temperature": value, "api_key": device["api_key"]}


def test_registered_device_connects_and_its_telemetry_is_stored(setup: Setup, api: httpx.Client) -> None:
    device = register(api)
    conn = connect(setup, device["id"], device["api_key"])
    try:
        assert conn.ok, conn.reason
        conn.publish(*telemetry(device, 21.5))
        assert wait_for(lambda: points(api, device)), "the reading was not stored"
    finally:
        conn.close()


def test_wrong_password_is_refused_by_the_broker(setup: Setup, api: httpx.Client) -> None:
    device = register(api)
    conn = connect(setup, device["id"], device["api_key"] + "x")
    try:
        assert not conn.ok
    finally:
        conn.close()


def test_publishing_to_another_devices_topic_is_denied(setup: Setup, api: httpx.Client) -> None:
    mine, other = register(api), register(api)
    conn = connect(setup, mine["id"], mine["api_key"])
    try:
        assert conn.ok, conn.reason
        # even with the other device's key in the payload: the broker drops it
        conn.publish(*telemetry(other, 1.0))
        conn.publish(*telemetry(mine, 2.0))  # after the first one: once stored, the first was handled
        assert wait_for(lambda: points(api, mine))
        time.sleep(0.3)
        assert points(api, other) == []
    finally:
        conn.close()


def test_rotated_key_replaces_the_old_one(setup: Setup, api: httpx.Client) -> None:
    device = register(api)
    old = connect(setup, device["id"], device["api_key"])
    assert old.ok, old.reason
    r = api.post(f"/api/v1/devices/{device['id']}/rotate-key", headers=ADMIN)
    assert r.status_code == 200, r.text
    new_key = r.json()["api_key"]
    try:
        assert old.disconnected.wait(5), "the session with the old key was not closed"
        refused = connect(setup, device["id"], device["api_key"])
        assert not refused.ok
        refused.close()
        fresh = connect(setup, device["id"], new_key)
        assert fresh.ok, fresh.reason
        rotated = {**device, "api_key": new_key}
        fresh.publish(*telemetry(rotated, 3.0))
        assert wait_for(lambda: points(api, rotated))
        fresh.close()
    finally:
        old.close()


def test_inactive_device_is_disabled_and_enabled_again(setup: Setup, api: httpx.Client) -> None:
    device = register(api)
    r = api.put(f"/api/v1/devices/{device['id']}", json={"status": "inactive"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    conn = connect(setup, device["id"], device["api_key"])
    assert not conn.ok
    conn.close()
    r = api.put(f"/api/v1/devices/{device['id']}", json={"status": "active"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    conn = connect(setup, device["id"], device["api_key"])
    assert conn.ok, conn.reason
    conn.close()


def test_deleted_device_can_no_longer_connect(setup: Setup, api: httpx.Client) -> None:
    device = register(api)
    conn = connect(setup, device["id"], device["api_key"])
    assert conn.ok, conn.reason
    r = api.delete(f"/api/v1/devices/{device['id']}", headers=ADMIN)
    assert r.status_code == 200, r.text
    try:
        assert conn.disconnected.wait(5), "the deleted device's session was not closed"
        again = connect(setup, device["id"], device["api_key"])
        assert not again.ok
        again.close()
    finally:
        conn.close()
