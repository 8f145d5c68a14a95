"""Devices (spec §2): registration, key handling, self-service endpoints, admin management."""

from __future__ import annotations

import hashlib
import sqlite3
import string
from typing import Any

import httpx

from tests.conftest import ADMIN, key_headers, register
from tests.server import Server

DEVICE_FIELDS = {
    "id",
    "name",
    "description",
    "device_type",
    "status",
    "location",
    "firmware_version",
    "hardware_version",
    "tags",
    "attributes",
    "latitude",
    "longitude",
    "user_id",
    "created_at",
    "updated_at",
    "last_seen",
    "is_online",
}


def test_register_returns_a_32_char_key_stored_only_hashed(api: httpx.Client, server: Server) -> None:
    body = {
        "name": "Kitchen <sensor> & 'co'",
        "device_type": "sensor",
        "description": "O'Brien; DROP TABLE devices",
        "location": "Küche",
        "tags": ["a", "b"],
        "attributes": {"floor": 1},
        "latitude": 1.5,
        "longitude": -2.5,
        "firmware_version": "1.0",
        "unknown_field": "ignored",
    }
    r = api.post("/api/v1/devices/register", json=body)
    assert r.status_code == 201
    out = r.json()
    assert out["message"] == "Device registered successfully"
    dev = out["device"]
    assert set(dev) == DEVICE_FIELDS | {"api_key", "owner"}
    key = dev["api_key"]
    assert len(key) == 32 and set(key) <= set(string.ascii_letters + string.digits)
    for field in ("name", "description", "location", "tags", "attributes", "latitude", "longitude"):
        assert dev[field] == body[field], field
    assert dev["status"] == "active" and dev["is_online"] is False and dev["created_at"].endswith("Z")
    # at rest: only the SHA-256 digest, never the key
    with sqlite3.connect(server.data_dir / "iotflow.db") as db:
        rows = db.execute("SELECT api_key_hash FROM devices WHERE id = ?", (dev["id"],)).fetchall()
        dump = "\n".join(db.iterdump())
    assert rows == [(hashlib.sha256(key.encode()).hexdigest(),)]
    assert key not in dump
    # the key is never shown again
    got = api.get(f"/api/v1/devices/{dev['id']}", headers=ADMIN).json()["device"]
    assert "api_key" not in got and got["description"] == body["description"]


def test_register_validation(api: httpx.Client) -> None:
    url = "/api/v1/devices/register"
    cases = [
        ({"device_type": "x"}, "name"),
        ({"name": "x"}, "device_type"),
        ({"name": "", "device_type": "x"}, "name"),
        ({"name": "x" * 101, "device_type": "x"}, "name"),
        ({"name": 5, "device_type": "x"}, "name"),
        ({"name": "x", "device_type": "x", "tags": "a"}, "tags"),
        ({"name": "x", "device_type": "x", "attributes": [1]}, "attributes"),
        ({"name": "x", "device_type": "x", "latitude": 91}, "latitude"),
        ({"name": "x", "device_type": "x", "longitude": "east"}, "longitude"),
    ]
    for body, field in cases:
        r = api.post(url, json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["details"][0]["field"] == field
    assert api.post(url, content=b"[1,2]", headers={"Content-Type": "application/json"}).status_code == 400
    assert api.post(url, content=b"name=x", headers={"Content-Type": "text/plain"}).status_code == 415


def test_duplicate_name_is_409(api: httpx.Client) -> None:
    dev = register(api)
    r = api.post("/api/v1/devices/register", json={"name": dev["name"], "device_type": "other"})
    assert r.status_code == 409 and r.json()["error"] == "Device name already exists"


def test_self_service_endpoints(api: httpx.Client, device: dict[str, Any]) -> None:
    h = key_headers(device)
    creds = api.get("/api/v1/devices/credentials", headers=h).json()["device"]
    assert creds["id"] == device["id"]
    assert creds["mqtt_topics"]["telemetry"] == f"iotflow/devices/{device['id']}/telemetry"
    mqtt = api.get("/api/v1/devices/mqtt-credentials", headers=h).json()["credentials"]
    assert mqtt["username"] == str(device["id"]) and mqtt["client_id"] == f"device_{device['id']}"
    assert mqtt["password_is_api_key"] is True
    status = api.get("/api/v1/devices/status", headers=h).json()["device"]
    assert status["telemetry_count"] == 0 and status["is_online"] is False
    hb = api.post("/api/v1/devices/heartbeat", headers=h)
    assert (
        hb.status_code == 200 and hb.json()["status"] == "online" and hb.json()["device_id"] == device["id"]
    )
    assert api.get("/api/v1/devices/status", headers=h).json()["device"]["is_online"] is True
    one = api.get(f"/api/v1/devices/{device['id']}/status", headers=h).json()["device"]
    assert (
        one["status"] == "online"
        and one["registration_status"] == "active"
        and one["last_seen"].endswith("Z")
    )
    for path in ("/api/v1/devices/credentials", "/api/v1/devices/mqtt-credentials", "/api/v1/devices/status"):
        assert api.get(path).status_code == 401
        assert api.get(path, headers={"X-API-Key": "nope"}).json()["error"] == "Invalid API key"


def test_device_updates_itself(api: httpx.Client, device: dict[str, Any]) -> None:
    h = key_headers(device)
    r = api.put(
        "/api/v1/devices/config",
        json={"location": "Roof", "firmware_version": "2.0", "status": "maintenance"},
        headers=h,
    )
    assert r.status_code == 200 and r.json()["message"] == "Device configuration updated successfully"
    assert r.json()["device"]["location"] == "Roof" and r.json()["device"]["status"] == "maintenance"
    assert api.put("/api/v1/devices/config", json={"status": "inactive"}, headers=h).status_code == 403
    assert api.put("/api/v1/devices/config", json={"status": "broken"}, headers=h).status_code == 400
    assert api.put("/api/v1/devices/config", json={"name": "x"}, headers=h).status_code == 400
    assert (
        api.put("/api/v1/devices/config", json={"status": "active"}, headers=h).json()["device"]["status"]
        == "active"
    )


def test_config_values_are_typed(api: httpx.Client, device: dict[str, Any]) -> None:
    h = key_headers(device)
    url = "/api/v1/devices/config"
    for key, value, dtype in (
        ("interval", 30, None),
        ("ratio", "0.5", "float"),
        ("name", "O'Brien <x>", None),
        ("on", True, None),
        ("map", {"a": [1]}, None),
    ):
        body: dict[str, Any] = {"config_key": key, "config_value": value}
        if dtype:
            body["data_type"] = dtype
        r = api.post(url, json=body, headers=h)
        assert r.status_code == 200, r.text
    conf = api.get(url, headers=h).json()["configuration"]
    assert {k: (v["value"], v["data_type"]) for k, v in conf.items()} == {
        "interval": (30, "integer"),
        "ratio": (0.5, "float"),
        "name": ("O'Brien <x>", "string"),
        "on": (True, "boolean"),
        "map": ({"a": [1]}, "json"),
    }
    bad = api.post(url, json={"config_key": "n", "config_value": "abc", "data_type": "integer"}, headers=h)
    assert bad.status_code == 400
    assert (
        api.post(
            url, json={"config_key": "n", "config_value": 1, "data_type": "decimal"}, headers=h
        ).status_code
        == 400
    )
    assert api.post(url, json={"config_value": 1}, headers=h).status_code == 400
    # people manage the same configuration (admin for now)
    r = api.put(
        f"/api/v1/devices/{device['id']}/configuration",
        json={"configuration": {"interval": 60}},
        headers=ADMIN,
    )
    assert r.status_code == 200 and r.json()["configuration"]["interval"]["value"] == 60
    got = api.get(f"/api/v1/devices/{device['id']}/configuration", headers=ADMIN).json()["configuration"]
    assert list(got) == ["interval"]
    assert api.get(f"/api/v1/devices/{device['id']}/configuration", headers=h).status_code == 403


def test_admin_manages_devices(api: httpx.Client) -> None:
    dev = register(api, tags=["roof"])
    url = f"/api/v1/devices/{dev['id']}"
    r = api.put(
        url, json={"description": "new", "tags": ["roof", "north"], "status": "inactive"}, headers=ADMIN
    )
    assert r.status_code == 200 and r.json()["device"]["tags"] == ["roof", "north"]
    # an inactive device can still authenticate and read, but not write telemetry
    h = key_headers(dev)
    assert api.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers=h).status_code == 403
    assert api.get("/api/v1/devices/credentials", headers=h).json()["device"]["status"] == "inactive"
    assert api.put(url, json={"status": "gone"}, headers=ADMIN).status_code == 400
    assert api.put(url, json={}, headers=ADMIN).status_code == 400
    assert api.put(url, json={"description": "x"}).status_code == 401
    assert api.put(url, json={"description": "x"}, headers={"Authorization": "admin nope"}).status_code == 403
    listed = api.get("/api/v1/devices", params={"tag": "north"}, headers=ADMIN).json()
    assert [d["id"] for d in listed["devices"]] == [dev["id"]] and listed["meta"]["total"] == 1
    found = api.get("/api/v1/devices", params={"search": "new", "status": "inactive"}, headers=ADMIN).json()
    assert dev["id"] in [d["id"] for d in found["devices"]]
    statuses = api.get("/api/v1/devices/statuses", params={"limit": 1000}, headers=ADMIN).json()
    assert any(d["id"] == dev["id"] and d["registration_status"] == "inactive" for d in statuses["devices"])
    assert api.get("/api/v1/devices", params={"limit": 0}, headers=ADMIN).status_code == 400


def test_rotate_key(api: httpx.Client, device: dict[str, Any]) -> None:
    old = key_headers(device)
    assert api.get("/api/v1/devices/status", headers=old).status_code == 200  # cached now
    r = api.post(f"/api/v1/devices/{device['id']}/rotate-key", headers=ADMIN)
    assert r.status_code == 200
    new_key = r.json()["api_key"]
    assert len(new_key) == 32 and new_key != device["api_key"]
    assert api.get("/api/v1/devices/status", headers=old).status_code == 401
    assert api.get("/api/v1/devices/status", headers={"X-API-Key": new_key}).status_code == 200
    assert api.post("/api/v1/devices/999999/rotate-key", headers=ADMIN).status_code == 404


def test_delete_removes_device_and_telemetry(api: httpx.Client) -> None:
    dev = register(api)
    h = key_headers(dev)
    assert api.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers=h).status_code == 201
    r = api.delete(f"/api/v1/devices/{dev['id']}", headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["message"] == f"Device {dev['name']} deleted successfully"
    assert api.get(f"/api/v1/devices/{dev['id']}", headers=ADMIN).status_code == 404
    assert api.get(f"/api/v1/telemetry/{dev['id']}/keys", headers=ADMIN).status_code == 404
    assert api.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers=h).status_code == 401
    assert api.delete(f"/api/v1/devices/{dev['id']}", headers=ADMIN).status_code == 404
    # the name is free again, and the id is never given to another device
    again = api.post("/api/v1/devices/register", json={"name": dev["name"], "device_type": "x"})
    assert again.status_code == 201 and again.json()["device"]["id"] > dev["id"]
