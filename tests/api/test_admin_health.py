"""Administration (spec §8), health/status/root and OpenAPI (spec §10)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import ADMIN, key_headers, register


def test_root_health_status(api: httpx.Client) -> None:
    root = api.get("/").json()
    assert root["name"] == "IoTFlow" and root["documentation"] == "/schema" and root["version"]
    health = api.get("/health").json()
    assert health == {"status": "healthy", "message": "IoTFlow is running", "version": root["version"]}
    status = api.get("/status")
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["healthy"] is True and body["checks"]["database"]["backend"] == "sqlite"
    assert body["checks"]["telemetry"]["backend"] == "sqlite"
    assert {"total", "online", "offline"} <= set(body["metrics"]["devices"])
    detailed = api.get("/health", params={"detailed": "true"}).json()
    assert set(detailed["checks"]) == {"database", "telemetry", "cache", "mqtt"}
    limited = api.get("/health", params={"include": "database,cache"}).json()
    assert set(limited["checks"]) == {"database", "cache"}
    assert api.get("/health", params={"include": "coffee"}).status_code == 400
    assert api.get("/health", params={"detailed": "maybe"}).status_code == 400


def test_openapi_lists_the_endpoints(api: httpx.Client) -> None:
    r = api.get("/schema/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for path in (
        "/api/v1/devices/register",
        "/api/v1/devices/telemetry",
        "/api/v1/telemetry/{device_id}",
        "/api/v1/telemetry/{device_id}/aggregated",
        "/api/v1/admin/stats",
        "/health",
    ):
        assert path in paths, path
    assert api.get("/schema/swagger").status_code == 200


def test_admin_devices_and_stats(api: httpx.Client) -> None:
    dev = register(api, device_type="meter")
    h = key_headers(dev)
    assert api.post("/api/v1/devices/telemetry", json={"data": {"kwh": 1.5}}, headers=h).status_code == 201
    listed = api.get(
        "/api/v1/admin/devices", params={"device_type": "meter", "per_page": 100}, headers=ADMIN
    ).json()
    assert listed["status"] == "success" and dev["id"] in [d["id"] for d in listed["devices"]]
    assert listed["pagination"]["per_page"] == 100 and listed["total_devices"] >= 1
    assert all("owner" in d for d in listed["devices"])
    assert api.get("/api/v1/admin/devices", params={"per_page": 101}, headers=ADMIN).status_code == 400
    one = api.get(f"/api/v1/admin/devices/{dev['id']}", headers=ADMIN).json()
    assert one["telemetry_stats"] == {
        "total_points": 1,
        "last_24_hours": 1,
        "last_7_days": 1,
        "last_30_days": 1,
    }
    r = api.put(f"/api/v1/admin/devices/{dev['id']}/status", json={"status": "inactive"}, headers=ADMIN)
    assert r.json() == {
        "status": "success",
        "message": "Device status updated from active to inactive",
        "device_id": dev["id"],
        "old_status": "active",
        "new_status": "inactive",
    }
    assert api.put(f"/api/v1/admin/devices/{dev['id']}/status", json={}, headers=ADMIN).status_code == 400
    assert (
        api.put(f"/api/v1/admin/devices/{dev['id']}", json={"location": "Lab"}, headers=ADMIN).status_code
        == 200
    )
    stats = api.get("/api/v1/admin/stats", headers=ADMIN).json()
    assert stats["device_stats"]["inactive"] >= 1 and stats["device_stats"]["online"] >= 1
    assert stats["telemetry_stats"]["total_points"] >= 1 and "ingest" in stats
    assert api.get("/api/v1/devices/status", headers=h).status_code == 200  # the key is looked up and cached
    cache = api.get("/api/v1/admin/cache/device-status", headers=ADMIN).json()["cache_stats"]
    assert cache["backend"] == "memory" and cache["api_key_entries"] >= 1
    assert api.delete(f"/api/v1/admin/cache/devices/{dev['id']}", headers=ADMIN).status_code == 200
    r = api.delete(f"/api/v1/admin/devices/{dev['id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["deleted_points"] == 1
    assert api.get(f"/api/v1/admin/devices/{dev['id']}", headers=ADMIN).status_code == 404


def test_dashboard(api: httpx.Client) -> None:
    dev = register(api)
    rule = {"name": "hot", "device_id": dev["id"], "key": "t", "operator": ">", "threshold": 30}
    assert api.post("/api/v1/alerts/rules", json=rule, headers=ADMIN).status_code == 201
    assert (
        api.post("/api/v1/devices/telemetry", json={"data": {"t": 31}}, headers=key_headers(dev)).status_code
        == 201
    )
    deadline = time.monotonic() + 3
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get("/api/v1/admin/dashboard", headers=ADMIN).json()
        if any(a["device_id"] == dev["id"] for a in body["open_alerts"]):
            break
        time.sleep(0.05)
    assert any(a["device_id"] == dev["id"] and a["state"] == "open" for a in body["open_alerts"])
    assert body["open_alerts_total"] >= 1
    assert any(
        e["type"] == "device.registered" and e["device_id"] == dev["id"] for e in body["recent_events"]
    )
    assert {"device_stats", "user_stats", "telemetry_stats", "ingest"} <= set(body)
    assert api.get("/api/v1/admin/dashboard").status_code == 401


def test_admin_credentials_are_required(api: httpx.Client, device: dict[str, Any]) -> None:
    for method, path in (
        ("GET", "/api/v1/admin/devices"),
        ("GET", "/api/v1/admin/stats"),
        ("GET", "/api/v1/admin/cache/device-status"),
        ("DELETE", "/api/v1/admin/cache/device-status"),
        ("GET", f"/api/v1/admin/devices/{device['id']}"),
    ):
        r = api.request(method, path)
        assert r.status_code == 401 and r.json()["error"] == "Admin token required", path
        r = api.request(method, path, headers={"Authorization": "admin not-the-token"})
        assert r.status_code == 403 and r.json()["error"] == "Invalid admin token", path
        assert api.request(method, path, headers=key_headers(device)).status_code == 401, path
