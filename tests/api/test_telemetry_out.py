"""Telemetry out (spec §4): history, latest, aggregated, device form, keys, delete, status."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, key_headers, register

T0_MS = 1751466600000  # 2025-07-02T14:30:00Z
MIN = 60_000


@pytest.fixture()
def loaded(api: httpx.Client) -> dict[str, Any]:
    """A device with 60 minutes of per-minute data: temp = i (int), hum = i + 0.5, tag every 10 min."""
    device = register(api)
    batch = []
    for i in range(60):
        data: dict[str, Any] = {"temp": i, "hum": i + 0.5}
        if i % 10 == 0:
            data["note"] = f"n{i}"
        batch.append({"data": data, "timestamp": T0_MS + i * MIN})
    r = api.post("/api/v1/devices/telemetry", json={"batch": batch}, headers=key_headers(device))
    assert r.status_code == 201 and r.json()["points"] == 126
    return device


def get(api: httpx.Client, path: str, device: dict[str, Any] | None = None, **params: Any) -> httpx.Response:
    headers = key_headers(device) if device else ADMIN
    return api.get("/api/v1" + path, params=params, headers=headers)


RANGE = {"start_time": "2025-07-02T14:00:00Z", "end_time": "2025-07-02T16:00:00Z"}


def test_history_order_limit_keys(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    body = get(api, f"/telemetry/{d['id']}", d, **RANGE).json()
    assert body["count"] == 60 and body["device_name"] == d["name"] and body["device_type"] == "sensor"
    assert body["start_time"] == "2025-07-02T14:00:00.000Z" and body["end_time"] == "2025-07-02T16:00:00.000Z"
    assert body["data"][0] == {"timestamp": "2025-07-02T15:29:00.000Z", "temp": 59, "hum": 59.5}
    asc = get(api, f"/telemetry/{d['id']}", d, order="asc", limit=3, **RANGE).json()["data"]
    assert [r["temp"] for r in asc] == [0, 1, 2] and asc[0]["note"] == "n0"
    only = get(api, f"/telemetry/{d['id']}", d, keys="note", **RANGE).json()["data"]
    assert [r["note"] for r in only] == [f"n{i}" for i in (50, 40, 30, 20, 10, 0)]
    assert all(set(r) == {"timestamp", "note"} for r in only)


def test_history_relative_and_absolute_ranges(api: httpx.Client, device: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    # 30 s clear of every 10-minute boundary, so the request's own "now" cannot tip a point over
    batch = [{"data": {"v": i}, "timestamp": now - i * 10 * MIN - 30_000} for i in range(12)]
    assert (
        api.post("/api/v1/devices/telemetry", json={"batch": batch}, headers=key_headers(device)).status_code
        == 201
    )
    default = get(api, f"/telemetry/{device['id']}", device).json()  # default: the last hour
    assert [r["v"] for r in default["data"]] == [0, 1, 2, 3, 4, 5]
    assert [
        r["v"] for r in get(api, f"/telemetry/{device['id']}", device, start_time="-30m").json()["data"]
    ] == [0, 1, 2]
    two_h = get(api, f"/telemetry/{device['id']}", device, start_time="-2h", end_time="-1h").json()["data"]
    assert [r["v"] for r in two_h] == [6, 7, 8, 9, 10, 11]
    epoch = get(api, f"/telemetry/{device['id']}", device, start_time=str((now - 15 * MIN) // 1000)).json()[
        "data"
    ]
    assert [r["v"] for r in epoch] == [0, 1]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": "-5x"}, "end_time"),
        ({"start_time": "-1h", "end_time": "-2h"}, "start_time"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_history_bad_query_is_400(
    api: httpx.Client, device: dict[str, Any], params: dict[str, str], field: str
) -> None:
    r = get(api, f"/telemetry/{device['id']}", device, **params)
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["field"] == field


def test_own_history(api: httpx.Client, device: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    batch = [{"data": {"v": i}, "timestamp": now - i * MIN} for i in range(5)]
    api.post("/api/v1/devices/telemetry", json={"batch": batch}, headers=key_headers(device))
    body = get(api, "/devices/telemetry", device, limit=3).json()
    assert body["status"] == "success" and body["count"] == 3 and body["limit"] == 3
    assert [r["v"] for r in body["telemetry"]] == [0, 1, 2]
    assert get(api, "/devices/telemetry", device, limit=1001).status_code == 400


def test_latest(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    body = get(api, f"/telemetry/{d['id']}/latest", d).json()
    assert body["latest_data"] == body["data"]
    assert body["data"] == {"timestamp": "2025-07-02T15:29:00.000Z", "temp": 59, "hum": 59.5, "note": "n50"}
    assert body["keys"]["note"] == {"value": "n50", "timestamp": "2025-07-02T15:20:00.000Z"}
    only = get(api, f"/telemetry/{d['id']}/latest", d, keys="temp").json()
    assert set(only["keys"]) == {"temp"}
    # a newer point shows at once; an older backfill does not replace it
    h = key_headers(d)
    api.post(
        "/api/v1/devices/telemetry", json={"data": {"temp": 100}, "timestamp": T0_MS + 61 * MIN}, headers=h
    )
    api.post("/api/v1/devices/telemetry", json={"data": {"temp": -1}, "timestamp": T0_MS - MIN}, headers=h)
    assert get(api, f"/telemetry/{d['id']}/latest", d).json()["keys"]["temp"]["value"] == 100
    # the same after the cache is cleared (served from the store)
    assert api.delete("/api/v1/admin/cache/device-status", headers=ADMIN).status_code == 200
    assert get(api, f"/telemetry/{d['id']}/latest", d).json()["keys"]["temp"]["value"] == 100


def test_latest_without_data_is_404(api: httpx.Client, device: dict[str, Any]) -> None:
    r = get(api, f"/telemetry/{device['id']}/latest", device)
    assert r.status_code == 404 and r.json()["error"] == "No telemetry data found"


@pytest.mark.parametrize(
    ("func", "values"),
    [
        ("mean", [4.5, 14.5, 24.5, 34.5, 44.5, 54.5]),
        ("avg", [4.5, 14.5, 24.5, 34.5, 44.5, 54.5]),
        ("sum", [45, 145, 245, 345, 445, 545]),
        ("count", [10] * 6),
        ("min", [0, 10, 20, 30, 40, 50]),
        ("max", [9, 19, 29, 39, 49, 59]),
        ("first", [0, 10, 20, 30, 40, 50]),
        ("last", [9, 19, 29, 39, 49, 59]),
        ("median", [4.5, 14.5, 24.5, 34.5, 44.5, 54.5]),
    ],
)
def test_aggregated_functions(
    api: httpx.Client, loaded: dict[str, Any], func: str, values: list[float]
) -> None:
    d = loaded
    body = get(
        api,
        f"/telemetry/{d['id']}/aggregated",
        d,
        field="temp",
        aggregation=func,
        window="10m",
        start_time="2025-07-02T14:30:00Z",
        end_time="2025-07-02T15:29:59Z",
    ).json()
    assert [b["value"] for b in body["data"]] == values
    assert body["data"][0]["timestamp"] == "2025-07-02T14:30:00.000Z"
    assert [b["count"] for b in body["data"]] == [10] * 6
    assert body["window"] == "10m" and body["field"] == "temp" and body["count"] == 6


def test_aggregated_stddev_and_skipping_strings(api: httpx.Client, device: dict[str, Any]) -> None:
    h = key_headers(device)
    for i, v in enumerate([2, 4, 4, 4, 5, 5, 7, 9, "n/a", True]):
        api.post(
            "/api/v1/devices/telemetry", json={"data": {"x": v}, "timestamp": T0_MS + i * 1000}, headers=h
        )
    body = get(
        api,
        f"/telemetry/{device['id']}/aggregated",
        device,
        field="x",
        aggregation="stddev",
        window="1h",
        start_time="2025-07-02T14:30:00Z",
        end_time="2025-07-02T15:00:00Z",
    ).json()
    assert body["data"] == [{"timestamp": "2025-07-02T14:30:00.000Z", "value": 2.0, "count": 8}]


def test_aggregated_fill(api: httpx.Client, device: dict[str, Any]) -> None:
    h = key_headers(device)
    for minute, v in ((0, 1.0), (3, 4.0)):
        api.post(
            "/api/v1/devices/telemetry", json={"data": {"x": v}, "timestamp": T0_MS + minute * MIN}, headers=h
        )
    params = {
        "field": "x",
        "aggregation": "max",
        "window": "1m",
        "start_time": "2025-07-02T14:30:00Z",
        "end_time": "2025-07-02T14:34:59Z",
    }
    none = get(api, f"/telemetry/{device['id']}/aggregated", device, **params).json()["data"]
    assert [b["value"] for b in none] == [1.0, 4.0]
    null = get(api, f"/telemetry/{device['id']}/aggregated", device, fill="null", **params).json()["data"]
    assert [b["value"] for b in null] == [1.0, None, None, 4.0, None]
    prev = get(api, f"/telemetry/{device['id']}/aggregated", device, fill="previous", **params).json()["data"]
    assert [b["value"] for b in prev] == [1.0, 1.0, 1.0, 4.0, 4.0]
    assert [b["count"] for b in prev] == [1, 0, 0, 1, 0]


def test_aggregated_errors(api: httpx.Client, device: dict[str, Any]) -> None:
    url = f"/telemetry/{device['id']}/aggregated"
    r = get(api, url, device, aggregation="mode")
    assert r.status_code == 400 and "median" in r.json()["valid_functions"]
    assert get(api, url, device, window="0s").status_code == 400
    assert get(api, url, device, window="5 parsecs").status_code == 400
    assert get(api, url, device, fill="zero").status_code == 400
    assert get(api, url, device, window="1s", start_time="-30d").status_code == 400  # too many buckets


def test_device_form_paginates(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    p1 = get(
        api,
        f"/telemetry/device/{d['id']}",
        d,
        limit=25,
        page=1,
        start_date="2025-07-02T14:00:00Z",
        end_date="2025-07-02T16:00:00Z",
    ).json()
    assert p1["success"] is True and p1["pagination"] == {
        "total": 60,
        "currentPage": 1,
        "totalPages": 3,
        "limit": 25,
    }
    assert p1["telemetry"][0] == {
        "timestamp": "2025-07-02T15:29:00.000Z",
        "device_id": d["id"],
        "measurements": {"temp": 59, "hum": 59.5},
    }
    p3 = get(
        api,
        f"/telemetry/device/{d['id']}",
        d,
        limit=25,
        page=3,
        start_date="2025-07-02T14:00:00Z",
        end_date="2025-07-02T16:00:00Z",
    ).json()
    assert len(p3["telemetry"]) == 10 and p3["telemetry"][-1]["measurements"]["temp"] == 0
    notes = get(
        api,
        f"/telemetry/device/{d['id']}",
        d,
        data_type="note",
        start_date="2025-07-02T14:00:00Z",
        end_date="2025-07-02T16:00:00Z",
    ).json()
    assert notes["pagination"]["total"] == 6
    assert get(api, f"/telemetry/device/{d['id']}", d, page="0").status_code == 400


def test_device_form_aggregate(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    body = get(
        api,
        f"/telemetry/device/{d['id']}/aggregated",
        d,
        data_type="hum",
        aggregation="avg",
        start_date="2025-07-02T14:00:00Z",
        end_date="2025-07-02T16:00:00Z",
    ).json()
    assert body["aggregation"]["value"] == pytest.approx(30.0) and body["aggregation"]["count"] == 60
    assert body["aggregation"]["type"] == "avg" and body["aggregation"]["data_type"] == "hum"
    assert get(api, f"/telemetry/device/{d['id']}/aggregated", d, data_type="hum").status_code == 400
    assert get(api, f"/telemetry/device/{d['id']}/aggregated", d, aggregation="avg").status_code == 400
    r = get(api, f"/telemetry/device/{d['id']}/aggregated", d, data_type="hum", aggregation="median")
    assert r.status_code == 400


def test_keys_catalogue(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    h = key_headers(d)
    api.post(
        "/api/v1/devices/telemetry",
        json={"data": {"temp": {"value": 1.5, "unit": "C"}}, "timestamp": T0_MS + 70 * MIN},
        headers=h,
    )
    keys = {k["key"]: k for k in get(api, f"/telemetry/{d['id']}/keys", d).json()["keys"]}
    assert set(keys) == {"temp", "hum", "note"}
    assert keys["temp"] == {
        "key": "temp",
        "unit": "C",
        "first_timestamp": "2025-07-02T14:30:00.000Z",
        "last_timestamp": "2025-07-02T15:40:00.000Z",
        "count": 61,
        "value_types": ["float", "int"],
    }
    assert keys["note"]["value_types"] == ["string"] and keys["note"]["count"] == 6


def test_delete_range_and_keys(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    url = f"/api/v1/telemetry/{d['id']}"
    r = api.delete(
        url,
        params={"start_time": "2025-07-02T14:30:00Z", "stop_time": "2025-07-02T14:39:00Z", "keys": "temp"},
        headers=key_headers(d),
    )
    assert r.status_code == 200 and r.json()["deleted"] == 10
    r = api.request("DELETE", url, json={"keys": ["note"]}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["deleted"] == 6
    recs = get(api, f"/telemetry/{d['id']}", d, order="asc", **RANGE).json()["data"]
    assert recs[0] == {"timestamp": "2025-07-02T14:30:00.000Z", "hum": 0.5}
    assert recs[10] == {"timestamp": "2025-07-02T14:40:00.000Z", "temp": 10, "hum": 10.5}
    assert get(api, f"/telemetry/{d['id']}/latest", d).json()["data"].get("note") is None
    r = api.delete(url, headers=ADMIN)
    assert r.status_code == 200 and r.json()["deleted"] == 110
    assert get(api, f"/telemetry/{d['id']}", d, **RANGE).json()["count"] == 0
    assert api.delete(url, params={"start_time": "never"}, headers=ADMIN).status_code == 400


def test_reads_are_limited_to_own_device_or_admin(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    other = register(api)
    for path in (
        f"/telemetry/{d['id']}",
        f"/telemetry/{d['id']}/latest",
        f"/telemetry/{d['id']}/keys",
        f"/telemetry/{d['id']}/aggregated",
        f"/telemetry/device/{d['id']}",
        f"/devices/{d['id']}/summary",
        f"/devices/{d['id']}/status",
    ):
        r = get(api, path, other)
        assert r.status_code == 403 and r.json()["error"] == "Forbidden: device mismatch", path
        assert api.get("/api/v1" + path).status_code == 401, path
        assert api.get("/api/v1" + path, headers={"Authorization": "admin wrong"}).status_code == 403, path
        assert get(api, path, None).status_code == 200, path
        assert get(api, path, d).status_code == 200, path
    assert api.delete(f"/api/v1/telemetry/{d['id']}", headers=key_headers(other)).status_code == 403
    assert get(api, "/telemetry/999999", None).status_code == 404
    assert get(api, "/telemetry/99999999999999999999999", None).status_code == 404
    assert get(api, "/telemetry/-1", None).status_code == 404


def test_status(api: httpx.Client, loaded: dict[str, Any]) -> None:
    body = api.get("/api/v1/telemetry/status").json()
    assert body["status"] == "healthy" and body["backend"] == "sqlite" and body["available"] is True
    assert body["total_points"] >= 126 and body["total_devices"] >= 1
    assert {"queue_depth", "points_per_second", "batches_committed"} <= set(body["ingest"])


def test_summary(api: httpx.Client, loaded: dict[str, Any]) -> None:
    d = loaded
    body = get(api, f"/devices/{d['id']}/summary", d, telemetry_limit=2).json()
    assert body["telemetry"]["count"] == 2
    assert body["telemetry"]["recent_data"][0]["temp"] == 59
    assert body["status"]["is_online"] is True and body["device"]["id"] == d["id"]
    assert body["configuration"] == {}
    assert get(api, f"/devices/{d['id']}/summary", d, include_config="false").json()["configuration"] is None
    assert get(api, f"/devices/{d['id']}/summary", d, telemetry_limit=101).status_code == 400
