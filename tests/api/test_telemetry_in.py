"""Telemetry in (spec §3): payload forms, timestamps, types, batches, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import HIGH_RATE_LIMITS, key_headers, register
from tests.server import Server


@pytest.fixture(scope="module", params=["fast path", "framework handlers"])
def ingest_server(
    request: pytest.FixtureRequest, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Every test here runs twice: against the HTTP fast path (the default) and without it."""
    if request.param == "fast path":
        yield server
        return
    srv = Server(
        tmp_path_factory.mktemp("framework"), IOTFLOW_HTTP_FASTPATH="false", **HIGH_RATE_LIMITS
    ).start()
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture()
def api(ingest_server: Server) -> Iterator[httpx.Client]:
    with ingest_server.client() as client:
        yield client


T0 = "2025-07-02T14:30:00Z"
T0_MS = 1751466600000


def post(
    api: httpx.Client, device: dict[str, Any], body: Any, path: str = "/api/v1/devices/telemetry"
) -> httpx.Response:
    return api.post(path, json=body, headers=key_headers(device))


def history(api: httpx.Client, device: dict[str, Any], **params: Any) -> list[dict[str, Any]]:
    params.setdefault("start_time", "2025-01-01T00:00:00Z")
    r = api.get(f"/api/v1/telemetry/{device['id']}", params=params, headers=key_headers(device))
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def test_both_endpoints_acknowledge_with_counts(api: httpx.Client, device: dict[str, Any]) -> None:
    r = post(api, device, {"data": {"temperature": 23.5, "humidity": 65}, "timestamp": T0})
    assert r.status_code == 201
    body = r.json()
    assert body == {
        "message": "Telemetry data received successfully",
        "device_id": device["id"],
        "device_name": device["name"],
        "timestamp": "2025-07-02T14:30:00.000Z",
        "points": 2,
    }
    r = post(api, device, {"data": {"pressure": 1013}}, path="/api/v1/telemetry")
    assert r.status_code == 201
    assert r.json()["message"] == "Telemetry data stored successfully"
    assert r.json()["points"] == 1


def test_timestamp_forms_all_land_on_the_right_millisecond(api: httpx.Client, device: dict[str, Any]) -> None:
    forms = {
        "iso": ("2025-07-02T14:30:00Z", T0_MS),
        "offset": ("2025-07-02T16:30:01+02:00", T0_MS + 1000),
        "epoch_s": (1751466602, T0_MS + 2000),
        "epoch_ms": (1751466603123, T0_MS + 3123),
        "epoch_us_str": ("1751466604000500", T0_MS + 4000),
        "space": ("2025-07-02 14:30:05.250", T0_MS + 5250),
        "mmdd": ("07/02/2025 14:30:06", T0_MS + 6000),
        "ddmm": ("13/07/2025 14:30:07", T0_MS + 11 * 86_400_000 + 7000),
    }
    for name, (ts, _) in forms.items():
        assert post(api, device, {"data": {name: 1}, "timestamp": ts}).status_code == 201, name
    records = history(api, device, order="asc", end_time="2025-08-01T00:00:00Z")
    got = {k: r["timestamp"] for r in records for k in r if k != "timestamp"}
    for name, (_, ms) in forms.items():
        expected = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
        assert got[name] == expected, name


def test_missing_timestamp_means_receive_time(api: httpx.Client, device: dict[str, Any]) -> None:
    before = int(time.time() * 1000)
    r = post(api, device, {"data": {"temperature": 20}})
    after = int(time.time() * 1000)
    assert r.status_code == 201
    rec = history(api, device, start_time="-1m")[0]
    from datetime import datetime

    ms = int(datetime.fromisoformat(rec["timestamp"]).timestamp() * 1000)
    assert before - 5 <= ms <= after + 5
    assert rec["timestamp"].endswith("Z")


def test_readings_without_timestamp_never_replace_each_other(
    api: httpx.Client, device: dict[str, Any]
) -> None:
    """Receive-time stamps are unique per device, so every acknowledged reading is kept."""
    assert post(api, device, {"batch": [{"data": {"n": i}} for i in range(5)]}).status_code == 201
    for i in range(5, 25):
        assert post(api, device, {"data": {"n": i}}).status_code == 201
    records = history(api, device, start_time="-1m", order="asc")
    assert [r["n"] for r in records] == list(range(25))


def test_values_keep_their_types(api: httpx.Client, device: dict[str, Any]) -> None:
    data = {
        "f": 23.5,
        "i": 65,
        "big": 2**62,
        "b": False,
        "s": "ok",
        "gps": {"lat": 1.2, "lon": 3.4},
        "arr": [1, "two", None],
        "evil": "O'Brien; DROP TABLE devices",
        "html": "<b>&amp;</b>",
        "uni": "température ✓ 温度",
        "empty": "",
    }
    assert post(api, device, {"data": data, "timestamp": T0}).status_code == 201
    (rec,) = history(api, device)
    assert rec == {"timestamp": "2025-07-02T14:30:00.000Z", **data}
    assert type(rec["f"]) is float and type(rec["i"]) is int and type(rec["b"]) is bool
    # the metadata table survived the string above
    assert api.get(f"/api/v1/telemetry/{device['id']}/latest", headers=key_headers(device)).status_code == 200


def test_type_changes_on_one_key_are_all_accepted(api: httpx.Client, device: dict[str, Any]) -> None:
    for i, value in enumerate([50, 50.0, "n/a"]):
        r = post(api, device, {"data": {"level": value}, "timestamp": T0_MS + i})
        assert r.status_code == 201, r.text
    values = [r["level"] for r in history(api, device, order="asc")]
    assert values == [50, 50.0, "n/a"]
    assert [type(v) for v in values] == [int, float, str]


def test_readings_carry_unit_and_own_timestamp(api: httpx.Client, device: dict[str, Any]) -> None:
    body = {
        "data": {"rpm": {"value": 1200, "unit": "rpm", "timestamp": T0_MS + 123}, "t": 1},
        "timestamp": T0,
    }
    assert post(api, device, body).status_code == 201
    records = history(api, device, order="asc")
    assert records == [
        {"timestamp": "2025-07-02T14:30:00.000Z", "t": 1},
        {"timestamp": "2025-07-02T14:30:00.123Z", "rpm": 1200},
    ]
    latest = api.get(f"/api/v1/telemetry/{device['id']}/latest", headers=key_headers(device)).json()
    assert latest["keys"]["rpm"] == {"value": 1200, "timestamp": "2025-07-02T14:30:00.123Z", "unit": "rpm"}


def test_batches_and_arrays(api: httpx.Client, device: dict[str, Any]) -> None:
    batch = {"batch": [{"data": {"x": i}, "timestamp": T0_MS + i * 1000} for i in range(50)]}
    r = post(api, device, batch)
    assert r.status_code == 201 and r.json()["points"] == 50
    array = [{"data": {"y": i, "z": -i}, "timestamp": T0_MS + i * 1000} for i in range(10)]
    r = post(api, device, array)
    assert r.status_code == 201 and r.json()["points"] == 20
    records = history(api, device, order="asc", limit=100)
    assert len(records) == 50
    assert records[3] == {"timestamp": "2025-07-02T14:30:03.000Z", "x": 3, "y": 3, "z": -3}


def test_a_bad_payload_rejects_the_whole_batch(api: httpx.Client, device: dict[str, Any]) -> None:
    batch = {"batch": [{"data": {"x": 1}, "timestamp": T0}, {"data": {"x": 2}, "timestamp": "yesterday"}]}
    r = post(api, device, batch)
    assert r.status_code == 400
    assert r.json()["details"][0]["field"] == "batch[1].timestamp"
    assert history(api, device) == []


def test_rewrite_of_same_timestamp_is_idempotent(api: httpx.Client, device: dict[str, Any]) -> None:
    for _ in range(3):
        assert post(api, device, {"data": {"v": 1.5}, "timestamp": T0}).status_code == 201
    assert post(api, device, {"data": {"v": 2.5}, "timestamp": T0}).status_code == 201
    assert history(api, device) == [{"timestamp": "2025-07-02T14:30:00.000Z", "v": 2.5}]


def test_metadata_becomes_reported_attributes_not_telemetry(
    api: httpx.Client, device: dict[str, Any]
) -> None:
    body = {
        "data": {"t": 1},
        "metadata": {"location": "Living Room", "sensor_status": "active"},
        "timestamp": T0,
    }
    assert post(api, device, body).status_code == 201
    assert history(api, device) == [{"timestamp": "2025-07-02T14:30:00.000Z", "t": 1}]
    dev = api.get("/api/v1/devices/status", headers=key_headers(device)).json()["device"]
    assert dev["attributes"]["reported"] == {"location": "Living Room", "sensor_status": "active"}
    assert dev["telemetry_count"] == 1
    assert dev["is_online"] is True


def test_mqtt_http_twin(api: httpx.Client, device: dict[str, Any]) -> None:
    r = post(api, device, {"data": {"t": 5}, "timestamp": T0}, path=f"/api/v1/mqtt/telemetry/{device['id']}")
    assert r.status_code == 201
    assert r.json()["topic"] == f"iotflow/devices/{device['id']}/telemetry"
    assert history(api, device) == [{"timestamp": "2025-07-02T14:30:00.000Z", "t": 5}]
    other = register(api)
    r = post(api, device, {"data": {"t": 5}}, path=f"/api/v1/mqtt/telemetry/{other['id']}")
    assert r.status_code == 403 and r.json()["error"] == "Forbidden: device mismatch"


def expect_400(r: httpx.Response, title: str | None = None, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["message"]
    if title:
        assert body["error"] == title
    if field:
        assert body["details"][0]["field"] == field
    return body  # type: ignore[no-any-return]


def test_bad_payloads_are_400_naming_the_problem(api: httpx.Client, device: dict[str, Any]) -> None:
    h = key_headers(device) | {"Content-Type": "application/json"}
    url = "/api/v1/devices/telemetry"
    expect_400(api.post(url, content=b"{not json", headers=h), "Invalid JSON")
    expect_400(api.post(url, content=b"", headers=h), "Invalid JSON")
    nested = b'{"data": {"t": ' + b"[" * 5000 + b"]" * 5000 + b"}}"  # deeper than the decoder goes
    assert (
        "nested too deeply" in expect_400(api.post(url, content=nested, headers=h), "Invalid JSON")["message"]
    )
    expect_400(post(api, device, {}), "Telemetry data is required", "data")
    expect_400(post(api, device, {"data": {}}), "Telemetry data is required", "data")
    expect_400(post(api, device, {"data": [1, 2]}), "Invalid data format", "data")
    expect_400(post(api, device, "just a string"), "Invalid data format")
    expect_400(post(api, device, {"data": {"a/b": 1}}), field="data.a/b")
    expect_400(post(api, device, {"data": {"x" * 129: 1}}))
    expect_400(post(api, device, {"data": {"n": None}}), field="data.n")
    expect_400(post(api, device, {"data": {"n": 2**70}}), field="data.n")
    expect_400(post(api, device, {"data": {"s": "x" * 70000}}), field="data.s")
    expect_400(post(api, device, {"data": {f"k{i}": i for i in range(1001)}}), field="data")
    expect_400(
        post(api, device, {"data": {"t": 1}, "timestamp": "not a time"}), "Invalid timestamp", "timestamp"
    )
    expect_400(post(api, device, {"data": {"t": 1}, "timestamp": True}), "Invalid timestamp")
    far = int(time.time()) + 3 * 86400
    expect_400(post(api, device, {"data": {"t": 1}, "timestamp": far}), "Invalid timestamp")
    expect_400(
        post(api, device, {"data": {"r": {"value": 1, "timestamp": "nope"}}}), field="data.r.timestamp"
    )
    expect_400(post(api, device, {"batch": []}))
    expect_400(post(api, device, {"batch": "x"}), field="batch")
    expect_400(post(api, device, {"data": {"t": 1}, "metadata": "x"}), field="metadata")
    assert history(api, device, start_time="-10d") == []


def test_credentials_and_status_are_checked(api: httpx.Client, device: dict[str, Any]) -> None:
    url = "/api/v1/devices/telemetry"
    r = api.post(url, json={"data": {"t": 1}})
    assert r.status_code == 401 and r.json()["error"] == "API key required"
    r = api.post(url, json={"data": {"t": 1}}, headers={"X-API-Key": "x" * 32})
    assert r.status_code == 401 and r.json()["error"] == "Invalid API key"
    from tests.conftest import ADMIN

    r = api.put(f"/api/v1/admin/devices/{device['id']}/status", json={"status": "maintenance"}, headers=ADMIN)
    assert r.status_code == 200
    r = post(api, device, {"data": {"t": 1}})
    assert r.status_code == 403
    assert r.json() == {"error": "Device inactive", "message": "Device is currently maintenance"}
    # reads still work
    assert api.get(f"/api/v1/telemetry/{device['id']}", headers=key_headers(device)).status_code == 200


def test_wrong_method_content_type_and_size(api: httpx.Client, device: dict[str, Any]) -> None:
    r = api.get("/api/v1/telemetry", headers=key_headers(device))
    assert r.status_code == 405 and r.json()["error"] == "Method not allowed"
    r = api.post(
        "/api/v1/devices/telemetry",
        content=b"temperature=1",
        headers=key_headers(device) | {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415 and "application/json" in r.json()["message"]
    big = b'{"data": {"s": "' + b"x" * (1024 * 1024 + 10) + b'"}}'
    r = api.post(
        "/api/v1/devices/telemetry",
        content=big,
        headers=key_headers(device) | {"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"] == "Payload too large"
    r = api.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "Not found"
