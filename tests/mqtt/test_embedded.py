"""The embedded MQTT broker (``spec/mqtt.md``), driven by real paho-mqtt 2 clients against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from amqtt.adapters import StreamReaderAdapter

from iotflow.mqtt.lean import LeanHandler, LeanSession
from tests.conftest import ADMIN, HIGH_RATE_LIMITS, key_headers, register
from tests.server import Server, free_port

BAD_CREDENTIALS = 134  # CONNACK 4 "bad user name or password", as paho reports it
NOT_AUTHORIZED = 135  # CONNACK 5
MAX_PAYLOAD = 4096


@dataclass
class Broker:
    server: Server
    port: int
    ws_port: int | None = None

    def api(self) -> httpx.Client:
        return self.server.client()


def _start(tmp: Path, **env: str) -> Broker:
    port = free_port()
    ws_port = free_port()
    server = Server(
        tmp,
        IOTFLOW_MQTT_ENABLED="true",
        IOTFLOW_MQTT_PORT=str(port),
        IOTFLOW_MQTT_WS_PORT=str(ws_port),
        IOTFLOW_MQTT_MAX_PAYLOAD=str(MAX_PAYLOAD),
        **HIGH_RATE_LIMITS,
        **env,
    ).start()
    return Broker(server, port, ws_port)


def _stop(broker: Broker) -> None:
    broker.server.stop()
    log = broker.server.log()
    assert "Traceback" not in log and "Internal server error" not in log, log


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = _start(tmp_path_factory.mktemp("mqtt"))
    yield b
    _stop(b)


@pytest.fixture()
def api(broker: Broker) -> Iterator[httpx.Client]:
    with broker.api() as client:
        yield client


class Device:
    """A paho-mqtt 2 client with blocking helpers."""

    def __init__(
        self,
        port: int,
        device: dict[str, Any] | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        will: tuple[str, str] | None = None,
        transport: str = "tcp",
        clean_session: bool = True,
    ) -> None:
        self.port = port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean_session,
            transport=transport,  # type: ignore[arg-type]
            reconnect_on_failure=False,
        )
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if device is not None:
            username, password = str(device["id"]), device["api_key"]
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.connack: queue.Queue[Any] = queue.Queue()
        self.subacks: dict[int, list[Any]] = {}
        self.session_present: bool | None = None
        self.unsubacks: queue.Queue[int] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnected = threading.Event()
        self._suback = threading.Condition()
        c = self.client
        c.on_connect = self._on_connect
        c.on_unsubscribe = lambda _c, _u, mid, _codes, _p: self.unsubacks.put(mid)
        c.on_message = lambda _c, _u, msg: self.messages.put(msg)
        c.on_disconnect = lambda _c, _u, _f, _rc, _p: self.disconnected.set()
        c.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connack.put(rc)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[Any], _p: Any) -> None:
        with self._suback:
            self.subacks[mid] = codes
            self._suback.notify_all()

    def connect(self, keepalive: int = 60) -> int:
        """Connect and return the CONNACK reason code value (0 = accepted)."""
        self.client.connect("127.0.0.1", self.port, keepalive=keepalive)
        self.client.loop_start()
        rc = self.connack.get(timeout=10)
        return int(rc.value)

    def publish(self, topic: str, payload: Any, qos: int = 1) -> None:
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        info = self.client.publish(topic, data, qos=qos)
        if qos:
            info.wait_for_publish(10)
            assert info.is_published(), f"no PUBACK for {topic}"

    def subscribe(self, topic: str) -> bool:
        """True when granted, False on a SUBACK failure."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self._suback:
            assert self._suback.wait_for(lambda: mid in self.subacks, timeout=10)
            return not self.subacks[mid][0].is_failure

    def expect(self, topic: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if msg.topic == topic:
                return json.loads(msg.payload)  # type: ignore[no-any-return]

    def kill(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the last will)."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def telemetry(device: dict[str, Any], sub: str = "") -> str:
    return f"iotflow/devices/{device['id']}/telemetry" + (f"/{sub}" if sub else "")


def base(device: dict[str, Any]) -> str:
    return f"iotflow/devices/{device['id']}"


def history(api: httpx.Client, device: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    params = {"start_time": "2020-01-01T00:00:00Z", "limit": 10000, **params}
    r = api.get(f"/api/v1/telemetry/{device['id']}", params=params, headers=key_headers(device))
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def metrics(api: httpx.Client) -> dict[str, Any]:
    r = api.get("/api/v1/mqtt/monitoring/metrics", headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["metrics"]  # type: ignore[no-any-return]


def rejected(api: httpx.Client) -> dict[str, int]:
    return metrics(api)["messages"]["rejected_by_reason"]  # type: ignore[no-any-return]


def wait_for(check: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def events(api: httpx.Client, device: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    r = api.get("/api/v1/events", params={"type": type_, "device_id": device["id"]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["events"]  # type: ignore[no-any-return]


def is_online(api: httpx.Client, device: dict[str, Any]) -> bool:
    r = api.get(f"/api/v1/devices/{device['id']}/status", headers=key_headers(device))
    assert r.status_code == 200, r.text
    return bool(r.json()["device"]["is_online"])


@pytest.fixture()
def connected(broker: Broker, api: httpx.Client) -> Iterator[tuple[dict[str, Any], Device]]:
    device = register(api)
    client = Device(broker.port, device, client_id=f"device_{device['id']}")
    assert client.connect() == 0
    yield device, client
    client.close()


# ----- telemetry ------------------------------------------------------------------------------------------


def test_qos1_puback_means_stored(api: httpx.Client, connected: tuple[dict[str, Any], Device]) -> None:
    device, client = connected
    client.publish(telemetry(device), {"data": {"temperature": 21.5}, "timestamp": "2025-07-02T14:30:00Z"})
    client.publish(telemetry(device, "sensors"), {"humidity": 40, "timestamp": "2025-07-02T14:31:00Z"})
    client.publish(
        telemetry(device, "metrics"),
        {"rpm": {"value": 1200, "unit": "rpm"}, "ok": True, "ts": 1751466720000, "metadata": {"fw": "1"}},
    )
    client.publish(telemetry(device), {"level": 3, "timestamp": "2025-07-02T14:33:00Z"}, qos=2)  # PUBCOMP
    # No waiting: PUBACK came after the commit, so the readings are there now.
    assert history(api, device, order="asc") == [
        {"timestamp": "2025-07-02T14:30:00.000Z", "temperature": 21.5},
        {"timestamp": "2025-07-02T14:31:00.000Z", "humidity": 40},
        {"timestamp": "2025-07-02T14:32:00.000Z", "rpm": 1200, "ok": True},
        {"timestamp": "2025-07-02T14:33:00.000Z", "level": 3},
    ]


def test_qos0_is_stored(api: httpx.Client, connected: tuple[dict[str, Any], Device]) -> None:
    device, client = connected
    for i in range(20):
        client.publish(telemetry(device), {"counter": i}, qos=0)
    rows = wait_for(
        lambda: len(history(api, device)) == 20 and history(api, device), what="20 QoS 0 readings"
    )
    assert sorted(r["counter"] for r in rows) == list(range(20))


def test_same_readings_on_two_topics_are_stored_once(
    api: httpx.Client, connected: tuple[dict[str, Any], Device]
) -> None:
    device, client = connected
    reading = {"temperature": 19.0, "timestamp": "2025-07-02T10:00:00Z"}
    client.publish(telemetry(device), reading)
    client.publish(telemetry(device, "sensors"), reading)
    assert history(api, device) == [{"timestamp": "2025-07-02T10:00:00.000Z", "temperature": 19.0}]


def test_websocket_listener(broker: Broker, api: httpx.Client) -> None:
    assert broker.ws_port is not None
    device = register(api)
    client = Device(broker.ws_port, device, transport="websockets")
    assert client.connect() == 0
    client.publish(telemetry(device), {"pressure": 1013, "timestamp": "2025-07-02T10:00:00Z"})
    client.close()
    assert history(api, device) == [{"timestamp": "2025-07-02T10:00:00.000Z", "pressure": 1013}]


# ----- authentication and access --------------------------------------------------------------------------


def test_bad_credentials_are_refused(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    other = register(api)
    cases = [
        (str(device["id"]), "wrong-key"),  # wrong password
        (str(device["id"]), other["api_key"]),  # another device's key
        ("999999999", device["api_key"]),  # unknown device
        ("sensor-1", device["api_key"]),  # not a device id
        (str(device["id"]), ""),  # no password
    ]
    for username, password in cases:
        assert Device(broker.port, username=username, password=password).connect() == BAD_CREDENTIALS
    assert Device(broker.port).connect() == NOT_AUTHORIZED  # anonymous: off by default
    refused = metrics(api)["connections"]["refused"]
    assert refused["bad_credentials"] >= 5 and refused["anonymous_not_allowed"] >= 1


def test_inactive_device_is_not_authorized(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    r = api.put(f"/api/v1/devices/{device['id']}", json={"status": "inactive"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert Device(broker.port, device).connect() == NOT_AUTHORIZED


def test_publishing_for_another_device_is_refused_and_reported(
    api: httpx.Client, connected: tuple[dict[str, Any], Device]
) -> None:
    device, client = connected
    victim = register(api)
    before = rejected(api).get("wrong_device", 0)
    assert client.subscribe(f"{base(device)}/errors")
    client.publish(telemetry(victim), {"temperature": 99, "timestamp": "2025-07-02T10:00:00Z"})
    report = client.expect(f"{base(device)}/errors")
    assert report["error"] == "Forbidden: device mismatch"
    assert report["topic"] == telemetry(victim) and "timestamp" in report and report["message"]
    assert history(api, victim) == []
    assert rejected(api)["wrong_device"] == before + 1


def test_subscriptions_are_limited_to_the_devices_own_topics(
    api: httpx.Client, connected: tuple[dict[str, Any], Device]
) -> None:
    device, client = connected
    other = register(api)
    assert client.subscribe(f"{base(device)}/commands/#")
    assert client.subscribe(f"{base(device)}/config")
    assert client.subscribe(f"{base(device)}/errors")
    for refused in (
        f"{base(other)}/commands/#",
        f"{base(other)}/config",
        "iotflow/devices/+/commands/#",
        f"{base(device)}/#",  # would include its telemetry
        f"{base(device)}/telemetry",
        "#",
        "iotflow/system/alerts",
    ):
        assert not client.subscribe(refused), refused
    assert metrics(api)["subscriptions"]["refused"] >= 7


def test_rotating_the_key_ends_the_session(
    api: httpx.Client, connected: tuple[dict[str, Any], Device]
) -> None:
    device, client = connected
    r = api.post(f"/api/v1/devices/{device['id']}/rotate-key", headers=ADMIN)
    assert r.status_code == 200, r.text
    client.client.publish(telemetry(device), json.dumps({"t": 1, "timestamp": "2025-07-02T10:00:00Z"}), qos=1)
    assert client.disconnected.wait(10), "the session with the old key was not closed"
    new = {**device, "api_key": r.json()["api_key"]}
    assert history(api, new) == []
    assert Device(client.port, device).connect() == BAD_CREDENTIALS
    fresh = Device(client.port, new)
    assert fresh.connect() == 0
    fresh.close()


def test_a_revoked_session_gets_no_commands(
    api: httpx.Client, connected: tuple[dict[str, Any], Device]
) -> None:
    device, client = connected
    assert client.subscribe(f"{base(device)}/commands/#")
    r = api.put(f"/api/v1/devices/{device['id']}", json={"status": "inactive"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    r = api.post(f"/api/v1/devices/{device['id']}/control", json={"command": "reboot"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "pending"  # not handed to the session of an inactive device
    assert client.disconnected.wait(10), "the session of the deactivated device was not closed"
    assert client.messages.empty()


def test_a_key_rotated_by_the_cli_ends_the_session_within_seconds(broker: Broker, api: httpx.Client) -> None:
    """Another process (the CLI) rotates the key: the running server's periodic key check closes the
    session that used the old key, and a session with the new key stays."""
    device = register(api)
    old = Device(broker.port, device, client_id=f"cli-old-{device['id']}")
    assert old.connect() == 0
    assert old.subscribe(f"{base(device)}/commands/#")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTFLOW_")}
    out = subprocess.run(
        [sys.executable, "-m", "iotflow", "devices", "rotate-key", str(device["id"])],
        env={**env, "IOTFLOW_DATA_DIR": str(broker.server.data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rotated_at = time.monotonic()
    new = Device(broker.port, {**device, "api_key": out.stdout.split("api key:")[1].strip()})
    assert new.connect() == 0
    assert old.disconnected.wait(10), "the session with the rotated key stayed open"
    assert time.monotonic() - rotated_at < 7.0
    time.sleep(5.5)  # one more key check: the session with the new key is left alone
    assert not new.disconnected.is_set()
    new.close()


# ----- presence -------------------------------------------------------------------------------------------


def offline_reasons(api: httpx.Client, device: dict[str, Any]) -> list[str]:
    return [e["details"]["reason"] for e in reversed(events(api, device, "device.offline"))]


def test_last_will_marks_the_device_offline(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    client = Device(broker.port, device, will=(f"{base(device)}/status/offline", "offline"))
    assert client.connect() == 0
    client.publish(f"{base(device)}/status/heartbeat", "")
    assert is_online(api, device)
    client.kill()
    assert wait_for(lambda: offline_reasons(api, device), what="device.offline") == ["last_will"]


def test_lwt_topic_and_keepalive(broker: Broker, api: httpx.Client) -> None:
    """A silent client is dropped after 1.5 keep-alives; its last will on lwt/devices/{id} applies."""
    device = register(api)
    client = Device(broker.port, device, will=(f"iotflow/lwt/devices/{device['id']}", "gone"))
    assert client.connect(keepalive=1) == 0
    client.client.loop_stop()  # the socket stays open, but no PINGREQ is sent any more
    try:
        assert wait_for(lambda: offline_reasons(api, device), timeout=8, what="keep-alive") == ["last_will"]
        assert metrics(api)["connections"]["disconnects"]["keepalive"] >= 1
    finally:
        client.kill()


def test_clean_disconnect_marks_the_device_offline(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    client = Device(broker.port, device, will=(f"{base(device)}/status/offline", "offline"))
    assert client.connect() == 0
    wait_for(lambda: is_online(api, device), what="online after connect")
    client.close()
    assert wait_for(lambda: offline_reasons(api, device), what="device.offline") == ["disconnect"]


def test_status_messages(api: httpx.Client, connected: tuple[dict[str, Any], Device]) -> None:
    device, client = connected
    wait_for(lambda: events(api, device, "device.online"), what="online at connect")
    client.publish(f"{base(device)}/status/offline", {"status": "offline"})
    assert wait_for(lambda: offline_reasons(api, device), what="offline") == ["status"]
    client.publish(f"{base(device)}/status/online", "online")
    wait_for(lambda: len(events(api, device, "device.online")) == 2, what="online again")
    client.publish(f"{base(device)}/status/connectivity", {"connected": False})
    wait_for(lambda: offline_reasons(api, device) == ["status", "status"], what="offline again")
    client.publish(f"{base(device)}/status/connectivity", {"status": "online"})
    wait_for(lambda: len(events(api, device, "device.online")) == 3, what="online a third time")
    # A retained status replayed later (older than last_seen) does not rewrite history.
    stale_before = metrics(api)["messages"]["ignored_stale_status"]
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    client.publish(f"{base(device)}/status/offline", {"status": "offline", "timestamp": old})
    assert metrics(api)["messages"]["ignored_stale_status"] == stale_before + 1
    before = rejected(api).get("bad_payload", 0)
    client.publish(f"{base(device)}/status/connectivity", {"connected": "maybe"})
    assert rejected(api)["bad_payload"] == before + 1
    time.sleep(0.6)  # one event-log flush: no new offline event
    assert offline_reasons(api, device) == ["status", "status"]


def test_offline_at_once_shows_in_the_device_status(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    client = Device(broker.port, device)
    assert client.connect() == 0
    assert is_online(api, device)
    client.publish(f"{base(device)}/status/offline", "offline")
    assert not is_online(api, device)
    client.publish(f"{base(device)}/status/online", "online")
    assert is_online(api, device)
    client.close()
    wait_for(lambda: not is_online(api, device), what="offline after a clean disconnect")


# ----- commands -------------------------------------------------------------------------------------------


def test_commands_are_delivered_and_acknowledged(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    r = api.post(f"/api/v1/devices/{device['id']}/control", json={"command": "reboot"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    queued = r.json()
    assert queued["status"] == "pending"  # not connected yet
    client = Device(broker.port, device)
    assert client.connect() == 0
    assert client.subscribe(f"{base(device)}/commands/#")  # subscribing delivers what is pending
    delivered = client.expect(f"{base(device)}/commands/control")
    assert delivered["command_id"] == queued["id"] and delivered["command"] == "reboot"
    r = api.post(f"/api/v1/devices/{device['id']}/control", json={"command": "blink"}, headers=ADMIN)
    assert r.json()["status"] == "delivered"  # connected: published at once
    assert client.expect(f"{base(device)}/commands/control")["command"] == "blink"
    client.publish(f"{base(device)}/commands/ack", {"command_id": queued["id"], "status": "completed"})
    r = api.get(f"/api/v1/devices/{device['id']}/commands", headers=ADMIN)
    statuses = {c["id"]: c["status"] for c in r.json()["commands"]}
    assert statuses[queued["id"]] == "completed"
    before = rejected(api).get("unknown_command", 0)
    client.publish(f"{base(device)}/commands/ack", {"command_id": 10**9, "status": "completed"})
    assert rejected(api)["unknown_command"] == before + 1
    client.close()


# ----- connection life cycle ------------------------------------------------------------------------------


def send_control(api: httpx.Client, device: dict[str, Any], command: str) -> dict[str, Any]:
    r = api.post(f"/api/v1/devices/{device['id']}/control", json={"command": command}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_second_connection_with_the_same_client_id_takes_over(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    first = Device(broker.port, device, client_id=f"take-over-{device['id']}")
    assert first.connect() == 0
    assert first.subscribe(f"{base(device)}/commands/#")
    second = Device(broker.port, device, client_id=f"take-over-{device['id']}")
    assert second.connect() == 0
    assert first.disconnected.wait(10), "the first connection was not closed"
    assert second.subscribe(f"{base(device)}/commands/#")
    assert send_control(api, device, "blink")["status"] == "delivered"
    assert second.expect(f"{base(device)}/commands/control")["command"] == "blink"
    assert first.messages.empty()
    second.close()


def test_wrong_credentials_with_a_live_client_id_change_nothing(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    client_id = f"live-{device['id']}"
    live = Device(broker.port, device, client_id=client_id, clean_session=False)
    assert live.connect() == 0
    assert live.subscribe(f"{base(device)}/commands/#")
    for clean in (True, False):
        intruder = Device(
            broker.port,
            username=str(device["id"]),
            password="wrong",
            client_id=client_id,
            clean_session=clean,
        )
        assert intruder.connect() == BAD_CREDENTIALS
        intruder.close()
    assert not live.disconnected.wait(0.5), "a refused connection closed the live one"
    assert send_control(api, device, "blink")["status"] == "delivered"
    assert live.expect(f"{base(device)}/commands/control")["command"] == "blink"
    live.close()


def test_a_persistent_session_keeps_its_subscription(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    client_id = f"persistent-{device['id']}"
    first = Device(broker.port, device, client_id=client_id, clean_session=False)
    assert first.connect() == 0 and first.session_present is False
    assert first.subscribe(f"{base(device)}/commands/#")
    first.close()
    wait_for(lambda: not is_online(api, device), what="offline after a clean disconnect")
    queued = send_control(api, device, "reboot")
    assert queued["status"] == "pending"
    # Back without subscribing again: the session brings its subscription, and the pending command.
    again = Device(broker.port, device, client_id=client_id, clean_session=False)
    assert again.connect() == 0 and again.session_present is True
    assert again.expect(f"{base(device)}/commands/control")["command_id"] == queued["id"]
    # A third connection takes the live session over; commands then reach it, not the old one.
    third = Device(broker.port, device, client_id=client_id, clean_session=False)
    assert third.connect() == 0 and third.session_present is True
    assert again.disconnected.wait(10), "the taken-over connection was not closed"
    wait_for(lambda: send_control(api, device, "ping")["status"] == "delivered", what="delivered")
    assert third.expect(f"{base(device)}/commands/control")["command"] == "ping"
    third.close()


class _Plugins:
    async def fire_event(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class _Writer:
    def __init__(self) -> None:
        self.closed = False

    def write(self, data: bytes) -> None:
        return None

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


def test_a_handler_stops_when_a_packet_comes_as_it_is_stopped() -> None:
    """The old connection of a take-over sends a packet just then: its handler still stops (and the new
    connection gets its CONNACK). amqtt's reader waits for a packet with asyncio.wait_for, which on
    Python 3.11 swallows the cancellation when the packet is already read."""

    async def nothing(*_args: Any) -> None:
        return None

    async def run() -> None:
        stream = asyncio.StreamReader()
        session = LeanSession()
        session.client_id, session.keep_alive = "stopped-mid-packet", 60
        writer = _Writer()
        handler = LeanHandler(_Plugins(), nothing, nothing)
        handler.attach(session, StreamReaderAdapter(stream), writer)
        await handler.start()
        stream.feed_data(b"\xc0\x00")  # PINGREQ, read in the same turn of the loop as the stop below
        await asyncio.wait_for(handler.stop(), 5)
        assert writer.closed and handler.disconnected.done()

    asyncio.run(run())


def subscription_count(api: httpx.Client) -> int:
    r = api.get("/api/v1/mqtt/status", headers=ADMIN)
    assert r.status_code == 200, r.text
    return int(r.json()["mqtt_status"]["subscriptions"])


def test_subscriptions_end_with_a_clean_session_and_stay_with_a_persistent_one(
    broker: Broker, api: httpx.Client
) -> None:
    before = subscription_count(api)
    clean, persistent = register(api), register(api)
    clients = [
        Device(broker.port, clean, client_id=f"clean-{clean['id']}"),
        Device(broker.port, persistent, client_id=f"kept-{persistent['id']}", clean_session=False),
    ]
    for client, device in zip(clients, (clean, persistent), strict=True):
        assert client.connect() == 0
        assert client.subscribe(f"{base(device)}/commands/#")
        assert client.subscribe(f"{base(device)}/config")
    assert subscription_count(api) == before + 4
    for client in clients:
        client.kill()
    wait_for(lambda: subscription_count(api) == before + 2, what="the clean session's subscriptions gone")
    time.sleep(1.5)  # amqtt's session monitor runs every second
    assert subscription_count(api) == before + 2


def test_another_devices_persistent_session_is_not_resumed(broker: Broker, api: httpx.Client) -> None:
    """Two devices with the same client id (a firmware default): the second starts afresh."""
    a, b = register(api), register(api)
    client_id = f"shared-{a['id']}"
    first = Device(broker.port, a, client_id=client_id, clean_session=False)
    assert first.connect() == 0
    assert first.subscribe(f"{base(a)}/commands/#")
    first.close()
    wait_for(lambda: not is_online(api, a), what="offline after a clean disconnect")
    before = subscription_count(api)
    second = Device(broker.port, b, client_id=client_id, clean_session=False)
    assert second.connect() == 0
    assert second.session_present is False
    assert subscription_count(api) == before - 1  # the first device's subscription went with its session
    assert second.subscribe(f"{base(b)}/commands/#")
    assert send_control(api, b, "blink")["status"] == "delivered"
    assert second.expect(f"{base(b)}/commands/control")["command"] == "blink"
    assert send_control(api, a, "reboot")["status"] == "pending"
    second.close()
    # The first device gets a session of its own again.
    again = Device(broker.port, a, client_id=client_id, clean_session=False)
    assert again.connect() == 0 and again.session_present is False
    again.close()


def test_subscribe_and_unsubscribe_are_answered_in_order(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    client = Device(broker.port, device)
    assert client.connect() == 0
    topic = f"{base(device)}/commands/#"
    for _ in range(5):  # sent back to back, without waiting for the SUBACK
        client.client.subscribe(topic, qos=1)
        _, mid = client.client.unsubscribe(topic)
    while client.unsubacks.get(timeout=10) != mid:
        pass
    assert send_control(api, device, "blink")["status"] == "pending"  # the last word was "unsubscribe"
    client.close()


def test_connect_and_disconnect_in_one_write(broker: Broker, api: httpx.Client) -> None:
    """A DISCONNECT that arrives with the CONNECT ends the connection cleanly (no half-open session)."""
    device = register(api)

    def field(text: str) -> bytes:
        return len(text.encode()).to_bytes(2, "big") + text.encode()

    body = field("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big")
    body += field(f"burst-{device['id']}") + field(str(device["id"])) + field(device["api_key"])
    connect = bytes([0x10, len(body)]) + body
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(connect + b"\xe0\x00")
        assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK: accepted
        assert sock.recv(1) == b""  # then closed by the server
    assert wait_for(lambda: offline_reasons(api, device), what="device.offline") == ["disconnect"]


# ----- configuration --------------------------------------------------------------------------------------


def test_configuration_is_published_retained(broker: Broker, api: httpx.Client) -> None:
    device = register(api)
    topic = f"{base(device)}/config"
    live = Device(broker.port, device)
    assert live.connect() == 0
    assert live.subscribe(topic)
    r = api.put(
        f"/api/v1/devices/{device['id']}/configuration",
        json={"configuration": {"interval": 30, "mode": "eco"}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    pushed = live.expect(topic)
    assert pushed["device_id"] == device["id"]
    assert {k: v["value"] for k, v in pushed["configuration"].items()} == {"interval": 30, "mode": "eco"}
    assert pushed["configuration"]["interval"]["data_type"] == "integer"
    # The device changes one value itself: the whole configuration goes out again.
    r = api.post(
        "/api/v1/devices/config",
        json={"config_key": "mode", "config_value": "boost"},
        headers=key_headers(device),
    )
    assert r.status_code == 200, r.text
    assert {k: v["value"] for k, v in live.expect(topic)["configuration"].items()} == {
        "interval": 30,
        "mode": "boost",
    }
    live.close()
    # A device that subscribes later gets the retained copy at once.
    later = Device(broker.port, device)
    assert later.connect() == 0
    assert later.subscribe(topic)
    msg = later.messages.get(timeout=10)
    assert msg.topic == topic and msg.retain
    assert json.loads(msg.payload)["configuration"]["mode"]["value"] == "boost"
    later.close()
    # Another device sees none of it.
    other = register(api)
    stranger = Device(broker.port, other)
    assert stranger.connect() == 0
    assert not stranger.subscribe(topic)
    assert stranger.subscribe(f"{base(other)}/config")
    time.sleep(0.3)
    assert stranger.messages.empty()
    stranger.close()


def test_a_persistent_session_gets_the_configuration_changed_while_it_was_away(
    broker: Broker, api: httpx.Client
) -> None:
    device = register(api)
    client_id, topic = f"cfg-{device['id']}", f"{base(device)}/config"
    first = Device(broker.port, device, client_id=client_id, clean_session=False)
    assert first.connect() == 0
    assert first.subscribe(topic)
    first.close()
    wait_for(lambda: not is_online(api, device), what="offline after a clean disconnect")
    r = api.put(
        f"/api/v1/devices/{device['id']}/configuration",
        json={"configuration": {"interval": 60}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    back = Device(broker.port, device, client_id=client_id, clean_session=False)
    assert back.connect() == 0 and back.session_present is True  # no new SUBSCRIBE
    msg = back.messages.get(timeout=10)
    assert msg.topic == topic and msg.retain
    assert json.loads(msg.payload)["configuration"]["interval"]["value"] == 60
    back.close()


# ----- abuse ----------------------------------------------------------------------------------------------


def test_a_flood_of_garbage_does_not_stop_other_clients(broker: Broker, api: httpx.Client) -> None:
    good, bad, victim = register(api), register(api), register(api)
    flooder = Device(broker.port, bad)
    assert flooder.connect() == 0
    before = rejected(api)
    garbage: list[tuple[str, bytes]] = [
        *[(telemetry(bad), b"\xff not json {") for _ in range(150)],
        *[(telemetry(bad), b'{"x": "' + b"a" * MAX_PAYLOAD + b'"}') for _ in range(30)],
        *[(f"iotflow/devices/{bad['id']}/nonsense", b"{}") for _ in range(100)],
        *[("some/other/topic", b"{}") for _ in range(50)],
        *[(telemetry(victim), b'{"t": 1}') for _ in range(100)],
        *[(telemetry(bad), b'{"api_key": "x"}') for _ in range(50)],
        *[(telemetry(bad), b'{"t": 1, "timestamp": "yesterday-ish"}') for _ in range(50)],
    ]
    expected = {
        "not_json": 150,
        "too_large": 30,
        "unknown_topic": 150,
        "wrong_device": 100,
        "no_readings": 50,
        "bad_timestamp": 50,
    }

    def flood() -> None:
        for topic, payload in garbage:
            flooder.client.publish(topic, payload, qos=0)

    worker = Device(broker.port, good)
    assert worker.connect() == 0
    flooding = threading.Thread(target=flood)
    started = time.perf_counter()
    flooding.start()
    for i in range(200):
        worker.publish(telemetry(good), {"n": i, "ts": 1751450000000 + i})
    elapsed = time.perf_counter() - started
    flooding.join()
    assert len(history(api, good)) == 200, "every acknowledged message of the good client is stored"
    assert elapsed < 20, f"the good client's 200 messages took {elapsed:.1f}s"

    def counted() -> bool:
        now = rejected(api)
        return all(now.get(reason, 0) - before.get(reason, 0) >= n for reason, n in expected.items())

    wait_for(counted, what="every rejection counted")
    now = rejected(api)
    assert {reason: now.get(reason, 0) - before.get(reason, 0) for reason in expected} == expected
    assert history(api, victim) == [] and history(api, bad) == []
    flooder.close()
    worker.close()


# ----- HTTP ---------------------------------------------------------------------------------------------


def test_status_and_metrics_endpoints(broker: Broker, api: httpx.Client) -> None:
    r = api.get("/api/v1/mqtt/status")
    assert r.status_code == 200
    status = r.json()["mqtt_status"]
    assert status["mode"] == "embedded" and status["connected"] is True
    assert status["port"] == broker.port and status["host"] == "127.0.0.1"
    assert {"clients_connected", "subscriptions"} <= status.keys()
    assert {"received", "sent", "rejected", "last_message_time"} <= status["messages"].keys()
    assert api.get("/api/v1/mqtt/monitoring/metrics").status_code == 401
    m = metrics(api)
    assert m["mode"] == "embedded" and m["broker"]["running"] is True
    assert {"connections", "messages", "throughput", "subscriptions"} <= m.keys()
    assert m["messages"]["received_by_type"]["telemetry"] > 0


# ----- compatibility mode ---------------------------------------------------------------------------------


def test_anonymous_compatibility_mode(tmp_path: Path) -> None:
    b = _start(tmp_path / "anon", IOTFLOW_MQTT_ALLOW_ANONYMOUS="true")
    try:
        with b.api() as api:
            device, other = register(api), register(api)
            client = Device(b.port)
            assert client.connect() == 0
            assert not client.subscribe(f"{base(device)}/commands/#")  # nothing proven yet
            client.publish(telemetry(device), {"t": 1, "timestamp": "2025-07-02T10:00:00Z"})  # no key
            client.publish(
                telemetry(device), {"t": 2, "timestamp": "2025-07-02T10:01:00Z", "api_key": other["api_key"]}
            )
            assert rejected(api)["auth"] == 2
            assert history(api, device) == []
            client.publish(
                telemetry(device), {"t": 3, "timestamp": "2025-07-02T10:02:00Z", "api_key": device["api_key"]}
            )
            assert history(api, device) == [{"timestamp": "2025-07-02T10:02:00.000Z", "t": 3}]
            assert client.subscribe(f"{base(device)}/commands/#")
            assert client.subscribe(f"{base(device)}/config")
            assert not client.subscribe(f"{base(device)}/errors")
            assert not client.subscribe(f"{base(other)}/commands/#")
            client.close()
    finally:
        _stop(b)


# ----- start-up -------------------------------------------------------------------------------------------


def test_a_taken_mqtt_port_stops_serve_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = Server(
            tmp_path, IOTFLOW_MQTT_ENABLED="true", IOTFLOW_MQTT_PORT=str(port), IOTFLOW_LOG_LEVEL="WARNING"
        ).env
        done = subprocess.run(
            [sys.executable, "-m", "iotflow", "serve"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: MQTT port") and "IOTFLOW_MQTT_PORT" in lines[0], lines[0]
    assert "IOTFLOW_MQTT_BROKER_URL" in lines[0] and "Traceback" not in done.stderr + done.stdout


def test_commands_reach_their_device_while_others_subscribe_and_leave(
    broker: Broker, api: httpx.Client
) -> None:
    """A command is broadcast while other devices subscribe and disconnect (which adds and drops topic
    filters): every command arrives, and the broker logs no error. amqtt walked its filter table
    across awaits, and a filter added or dropped meanwhile ended that broadcast with a traceback."""
    target = register(api)
    listener = Device(broker.port, target)
    assert listener.connect() == 0
    assert listener.subscribe(f"{base(target)}/commands/#")
    others = [register(api) for _ in range(4)]
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for other in others:
                client = Device(broker.port, other)
                if client.connect() == 0:
                    client.subscribe(f"{base(other)}/commands/#")
                    client.subscribe(f"{base(other)}/config")
                client.close()

    churners = [threading.Thread(target=churn) for _ in range(2)]
    for thread in churners:
        thread.start()
    sent = 0
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            r = api.post(
                f"/api/v1/devices/{target['id']}/control", json={"command": f"c{sent}"}, headers=ADMIN
            )
            assert r.status_code == 201, r.text
            sent += 1
    finally:
        stop.set()
        for thread in churners:
            thread.join()
    received = [listener.expect(f"{base(target)}/commands/control")["command"] for _ in range(sent)]
    listener.close()
    assert received == [f"c{i}" for i in range(sent)]
    assert "changed size during iteration" not in broker.server.log()
