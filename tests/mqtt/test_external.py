"""External broker mode (``spec/mqtt.md``): a real Mosquitto started here, IoTFlow as its client."""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.conftest import ADMIN, HIGH_RATE_LIMITS, key_headers
from tests.mosquitto import Mosquitto
from tests.server import Server

# Without Mosquitto these tests are skipped on a developer machine, but never in CI (.ci/run installs it).
pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not os.environ.get("CI"), reason="mosquitto is not installed"
)

_ids = iter(range(1, 1_000_000))


def _mosquitto(tmp: Path) -> Mosquitto:
    return Mosquitto(tmp, "allow_anonymous true", "max_queued_messages 100000", "max_inflight_messages 100")


def _iotflow(tmp: Path, broker: Mosquitto, client_id: str) -> Server:
    return Server(
        tmp,
        IOTFLOW_MQTT_ENABLED="true",
        IOTFLOW_MQTT_BROKER_URL=f"mqtt://127.0.0.1:{broker.port}?client_id={client_id}",
        **HIGH_RATE_LIMITS,
    )


@dataclass
class Setup:
    broker: Mosquitto
    server: Server


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    broker = _mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        server = _iotflow(tmp_path_factory.mktemp("iotflow"), broker, f"iotflow-test-{next(_ids)}").start()
        yield Setup(broker, server)
        server.stop()
        log = server.log()
        assert "Traceback" not in log and "Internal server error" not in log, log
    finally:
        broker.stop()


@pytest.fixture()
def api(setup: Setup) -> Iterator[httpx.Client]:
    with setup.server.client() as client:
        yield client


class Device:
    """An anonymous paho client of the broker (the api_key travels in each payload)."""

    def __init__(self, port: int, device: dict[str, Any], *, inflight: int = 20) -> None:
        self.device = device
        self.base = f"iotflow/devices/{device['id']}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def payload(self, **fields: Any) -> str:
        return json.dumps({**fields, "api_key": self.device["api_key"]})

    def publish(self, sub: str, data: str, qos: int = 1) -> None:
        info = self.client.publish(f"{self.base}/{sub}", data, qos=qos)
        if qos:
            info.wait_for_publish(10)
            assert info.is_published()

    def subscribe(self, sub: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(f"{self.base}/{sub}", qos=1)
        assert done.wait(10)

    def expect(self, topic: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if msg.topic == topic:
                return json.loads(msg.payload)  # type: ignore[no-any-return]
        raise AssertionError(f"nothing on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _register(api: httpx.Client) -> dict[str, Any]:
    r = api.post(
        "/api/v1/devices/register",
        json={"name": f"ext-{next(_ids)}-{time.time_ns()}", "device_type": "sensor"},
    )
    assert r.status_code == 201, r.text
    return r.json()["device"]  # type: ignore[no-any-return]


def _until(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _status(api: httpx.Client, device: dict[str, Any]) -> bool:
    r = api.get(f"/api/v1/devices/{device['id']}/status", headers=key_headers(device))
    assert r.status_code == 200, r.text
    return bool(r.json()["device"]["is_online"])


def _records(api: httpx.Client, device: dict[str, Any]) -> list[dict[str, Any]]:
    r = api.get(
        f"/api/v1/telemetry/{device['id']}",
        params={"limit": 10000, "order": "asc"},
        headers=key_headers(device),
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def _points(api: httpx.Client, device: dict[str, Any], key: str) -> int:
    r = api.get(f"/api/v1/telemetry/{device['id']}/keys", headers=key_headers(device))
    assert r.status_code == 200, r.text
    return sum(k["count"] for k in r.json()["keys"] if k["key"] == key)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----- the basics ------------------------------------------------------------------------------------------


def test_status_reports_external_mode(api: httpx.Client) -> None:
    st = _until(lambda: api.get("/api/v1/mqtt/status").json()["mqtt_status"]["connected"] and True)
    assert st
    body = api.get("/api/v1/mqtt/status").json()["mqtt_status"]
    assert body["mode"] == "external"
    m = api.get("/api/v1/mqtt/monitoring/metrics", headers=ADMIN).json()["metrics"]
    assert m["mode"] == "external" and m["broker"]["connected"] is True
    assert "$share/iotflow/iotflow/devices/+/telemetry/#" in m["broker"]["shared_subscriptions"]


def test_telemetry_is_stored_and_readable(setup: Setup, api: httpx.Client) -> None:
    device = _register(api)
    dev = Device(setup.broker.port, device)
    try:
        dev.publish("telemetry", dev.payload(temperature=21.5, humidity=40))
        dev.publish(
            "telemetry/sensors", json.dumps({"data": {"pressure": 1013}, "api_key": device["api_key"]})
        )
        records = _until(lambda: len(_records(api, device)) >= 2 and _records(api, device))
        assert records, "telemetry not stored"
        merged = {k: v for r in records for k, v in r.items() if k != "timestamp"}
        assert merged == {"temperature": 21.5, "humidity": 40, "pressure": 1013}
        assert _status(api, device) is True  # heard
    finally:
        dev.close()


def test_messages_without_a_valid_key_are_refused(setup: Setup, api: httpx.Client) -> None:
    device = _register(api)
    dev = Device(setup.broker.port, device)
    try:
        dev.subscribe("errors")
        dev.publish("telemetry", json.dumps({"temperature": 1}))  # no key
        dev.publish("telemetry", json.dumps({"temperature": 2, "api_key": "wrong"}))
        dev.client.publish(
            "iotflow/devices/999999999/telemetry", json.dumps({"t": 1}), qos=1
        ).wait_for_publish(5)

        def rejected() -> int:
            m = api.get("/api/v1/mqtt/monitoring/metrics", headers=ADMIN).json()["metrics"]
            return int(m["messages"]["rejected_by_reason"].get("auth", 0))

        assert _until(lambda: rejected() >= 3)
        assert _records(api, device) == []
    finally:
        dev.close()


def test_fast_path_refuses_what_the_full_handler_refuses(setup: Setup, api: httpx.Client) -> None:
    """Once a device's key is proven its telemetry takes the fast path; a wrong key, garbage or a
    rotated key still get the full handler's refusal, and nothing refused is stored."""
    device = _register(api)
    dev = Device(setup.broker.port, device)

    def metrics() -> dict[str, Any]:
        return api.get("/api/v1/mqtt/monitoring/metrics", headers=ADMIN).json()["metrics"]  # type: ignore[no-any-return]

    try:
        dev.subscribe("errors")
        dev.publish("telemetry", dev.payload(temperature=1))  # proves the key (full handler)
        assert _until(lambda: _points(api, device, "temperature") == 1)
        fast_before = metrics()["broker"]["fast_path"]
        for i in range(20):
            dev.publish(
                "telemetry", dev.payload(data={"temperature": 10 + i}, timestamp=1_700_000_000_000 + i)
            )
        assert _until(lambda: _points(api, device, "temperature") == 21)
        assert metrics()["broker"]["fast_path"] > fast_before, "trusted telemetry did not take the fast path"

        dev.publish("telemetry", json.dumps({"temperature": 99, "api_key": "wrong-key"}))
        assert dev.expect(f"{dev.base}/errors")["error"] == "Invalid API key"
        dev.publish("telemetry", "{not json")
        assert dev.expect(f"{dev.base}/errors")["error"] == "Invalid JSON"

        old_key = device["api_key"]
        r = api.post(f"/api/v1/devices/{device['id']}/rotate-key", headers=ADMIN)
        assert r.status_code == 200, r.text
        refused = metrics()["messages"]["rejected_by_reason"].get("auth", 0)
        dev.publish("telemetry", json.dumps({"temperature": 98, "api_key": old_key}))
        assert _until(lambda: metrics()["messages"]["rejected_by_reason"].get("auth", 0) == refused + 1)
        assert _points(api, {**device, "api_key": r.json()["api_key"]}, "temperature") == 21
    finally:
        dev.close()


def test_a_trusted_devices_topic_cannot_be_jammed_with_odd_payloads(setup: Setup, api: httpx.Client) -> None:
    """Payloads the fast path cannot take (nested too deeply, a non-ASCII key) are refused by the full
    handler one by one; more of them than IoTFlow's window of 256 must not stop other devices."""
    device, other = _register(api), _register(api)
    dev, dev2 = Device(setup.broker.port, device), Device(setup.broker.port, other)
    try:
        dev.subscribe("errors")
        dev.publish("telemetry", dev.payload(temperature=1))  # trusted from now on
        assert _until(lambda: _points(api, device, "temperature") == 1)
        nested = b'{"t": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        for i in range(150):
            dev.client.publish(f"{dev.base}/telemetry", nested, qos=0)
            dev.client.publish(f"{dev.base}/telemetry", json.dumps({"t": i, "api_key": "é"}), qos=0)
        dev2.publish("telemetry", dev2.payload(temperature=2))
        assert _until(lambda: _points(api, other, "temperature") == 1), "another device's telemetry was stuck"
        dev.publish("telemetry", dev.payload(data={"temperature": 3}, timestamp=1_700_000_000_000))
        assert _until(lambda: _points(api, device, "temperature") == 2)
        errors = api.get("/api/v1/mqtt/monitoring/metrics", headers=ADMIN).json()["metrics"]
        assert errors["messages"]["rejected_by_reason"].get("not_json", 0) >= 1
    finally:
        dev.close()
        dev2.close()


def test_pending_commands_reach_a_trusted_device_that_comes_back(setup: Setup, api: httpx.Client) -> None:
    device = _register(api)
    dev = Device(setup.broker.port, device)
    try:
        dev.subscribe("commands/#")
        dev.publish("telemetry", dev.payload(temperature=1))  # trusted, online
        assert _until(lambda: _status(api, device))
        dev.publish("status/offline", dev.payload(status="offline"))
        assert _until(lambda: not _status(api, device))
        r = api.post(f"/api/v1/devices/{device['id']}/control", json={"command": "reboot"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "pending"
        dev.publish("telemetry", dev.payload(temperature=2))  # back, through the fast path
        got = dev.expect(f"{dev.base}/commands/control")
        assert got["command_id"] == r.json()["id"]
    finally:
        dev.close()


def test_status_online_and_offline(setup: Setup, api: httpx.Client) -> None:
    device = _register(api)
    dev = Device(setup.broker.port, device)
    try:
        dev.publish("status/online", dev.payload(status="online"))
        assert _until(lambda: _status(api, device))
        dev.publish("status/offline", dev.payload(status="offline"))
        assert _until(lambda: not _status(api, device))
    finally:
        dev.close()


def test_commands_reach_the_device_and_acks_move_them(setup: Setup, api: httpx.Client) -> None:
    device = _register(api)
    dev = Device(setup.broker.port, device)
    try:
        dev.subscribe("commands/#")
        dev.publish("status/online", dev.payload(status="online"))
        assert _until(lambda: _status(api, device))
        r = api.post(f"/api/v1/devices/{device['id']}/control", json={"command": "reboot"}, headers=ADMIN)
        assert r.status_code == 201, r.text
        command = r.json()
        assert command["status"] == "delivered"
        got = dev.expect(f"{dev.base}/commands/control")
        assert got["command"] == "reboot" and got["command_id"] == command["id"]
        dev.publish(
            "commands/ack", dev.payload(command_id=command["id"], status="completed", result={"ok": 1})
        )

        def status() -> str:
            r = api.get(f"/api/v1/devices/{device['id']}/commands", headers=ADMIN)
            return {c["id"]: c["status"] for c in r.json()["commands"]}[command["id"]]  # type: ignore[no-any-return]

        assert _until(lambda: status() == "completed")
    finally:
        dev.close()


def test_alerts_are_published_on_the_system_topic(setup: Setup, api: httpx.Client) -> None:
    device = _register(api)
    rule = {"name": "hot", "device_id": device["id"], "key": "temperature", "operator": ">", "threshold": 30}
    assert api.post("/api/v1/alerts/rules", json=rule, headers=ADMIN).status_code == 201
    watcher = Device(setup.broker.port, device)
    try:
        done = threading.Event()
        watcher.client.on_subscribe = lambda *_a: done.set()
        watcher.client.subscribe("iotflow/system/alerts", qos=1)
        assert done.wait(10)
        watcher.publish("telemetry", watcher.payload(data={"temperature": 35}))
        opened = watcher.expect("iotflow/system/alerts")
        assert opened["change"] == "opened" and opened["device_id"] == device["id"] and opened["value"] == 35
        watcher.publish("telemetry", watcher.payload(data={"temperature": 20}))
        resolved = watcher.expect("iotflow/system/alerts")
        assert resolved["change"] == "resolved" and resolved["id"] == opened["id"]
    finally:
        watcher.close()


def test_configuration_is_retained_on_the_broker_and_cleared_on_delete(
    setup: Setup, api: httpx.Client
) -> None:
    device = _register(api)
    r = api.put(
        f"/api/v1/devices/{device['id']}/configuration",
        json={"configuration": {"interval": 30}},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    later = Device(setup.broker.port, device)  # subscribes after the change: gets the retained copy
    try:
        later.subscribe("config")
        msg = later.messages.get(timeout=10)
        assert msg.retain and json.loads(msg.payload)["configuration"]["interval"]["value"] == 30
    finally:
        later.close()
    assert api.delete(f"/api/v1/devices/{device['id']}", headers=ADMIN).status_code == 200
    after = Device(setup.broker.port, device)
    try:
        after.subscribe("config")
        time.sleep(0.5)
        assert after.messages.empty(), "the retained configuration of a deleted device is still there"
    finally:
        after.close()


# ----- crash safety ---------------------------------------------------------------------------------------


def test_bursts_are_acknowledged_so_the_broker_sends_nothing_again(tmp_path: Path) -> None:
    """Fast-path bursts are acknowledged with one write of all their PUBACKs: after IoTFlow stops and
    starts again on the same persistent session, the broker has nothing left to send it."""
    broker = _mosquitto(tmp_path / "mosquitto")
    server = _iotflow(tmp_path / "iotflow", broker, f"iotflow-acks-{next(_ids)}").start()
    dev: Device | None = None
    total = 2000

    def metrics(api: httpx.Client) -> dict[str, Any]:
        return api.get("/api/v1/mqtt/monitoring/metrics", headers=ADMIN).json()["metrics"]  # type: ignore[no-any-return]

    try:
        with server.client() as api:
            device = _register(api)
            dev = Device(broker.port, device, inflight=100)
            dev.publish("telemetry", dev.payload(v=-1))  # proves the key: the rest takes the fast path
            assert _until(lambda: _points(api, device, "v") == 1)
            infos = [
                dev.client.publish(
                    f"{dev.base}/telemetry", dev.payload(v=i, timestamp=1_700_000_000_000 + i), qos=1
                )
                for i in range(total)
            ]
            for info in infos:
                info.wait_for_publish(30)
            assert _until(lambda: _points(api, device, "v") == total + 1, 30)
            assert metrics(api)["broker"]["fast_path"] >= total - 100
            assert metrics(api)["broker"]["not_acknowledged"] == 0
            time.sleep(0.5)  # the last PUBACKs leave the network thread
        server.stop()
        server.start()
        with server.client() as api:
            assert _until(lambda: metrics(api)["broker"]["connected"], 10)
            time.sleep(1.0)  # what the broker still held for the session would arrive now
            received = metrics(api)["messages"]["received"]
            assert received == 0, f"the broker sent {received} messages again"
            assert _points(api, device, "v") == total + 1
    finally:
        if dev is not None:
            dev.close()
        server.stop()
        broker.stop()


def test_kill9_loses_nothing_the_broker_accepted(tmp_path: Path) -> None:
    """IoTFlow is killed with SIGKILL while a device publishes QoS 1 at full speed: after a restart,
    every message the broker acknowledged to the device is stored exactly once."""
    broker = _mosquitto(tmp_path / "mosquitto")
    client_id = f"iotflow-kill-{next(_ids)}"
    server = _iotflow(tmp_path / "iotflow", broker, client_id).start()
    dev: Device | None = None
    try:
        with server.client() as api:
            device = _register(api)
        dev = Device(broker.port, device, inflight=100)
        acked: set[int] = set()
        lock = threading.Lock()
        mids: dict[int, int] = {}

        def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
            with lock:
                acked.add(mid)

        dev.client.on_publish = on_publish
        total = 6000
        base = datetime.now(UTC) - timedelta(minutes=10)
        stamps = [_iso(base + timedelta(milliseconds=i)) for i in range(total)]

        def publish_all() -> None:
            for i, ts in enumerate(stamps):
                while True:
                    info = dev.client.publish(f"{dev.base}/telemetry", dev.payload(v=i, timestamp=ts), qos=1)
                    if info.rc == mqtt.MQTT_ERR_SUCCESS:
                        break
                    time.sleep(0.001)  # in-flight window full
                with lock:
                    mids[info.mid] = i

        publisher = threading.Thread(target=publish_all)
        publisher.start()
        with server.client() as api:  # kill as soon as the first points are stored
            stored_before = _until(lambda: _points(api, device, "v"), 10)
        server.kill9()
        publisher.join(30)
        assert not publisher.is_alive()
        _until(lambda: len(acked) >= total, 20)
        with lock:
            accepted = {mids[m] for m in acked if m in mids}
        assert len(accepted) == total  # the broker took everything

        server.start()
        with server.client() as api:
            got = _until(lambda: _points(api, device, "v") >= total and _points(api, device, "v"), 30)
            records = _records(api, device)
            assert got == total, f"{_points(api, device, 'v')} points stored of {total}"
            assert sorted(r["v"] for r in records) == list(range(total))  # each once, at its own time
            assert len({r["timestamp"] for r in records}) == total
            assert 0 < stored_before < total, stored_before  # the kill happened mid-stream
    finally:
        if dev is not None:
            dev.close()
        server.stop()
        broker.stop()
