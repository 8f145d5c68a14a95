"""The event log API (spec §7): filters, pagination, and who sees what."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, key_headers

EVENT_FIELDS = {"id", "type", "device_id", "user_id", "timestamp", "details"}
_ids = itertools.count(1)


def new_user(api: httpx.Client) -> tuple[dict[str, str], dict[str, Any]]:
    n = f"{next(_ids)}-{time.time_ns()}"
    body = {"username": f"events-user-{n}", "email": f"ev{n}@example.com", "password": "password-123"}
    r = api.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}, r.json()["user"]


def owned_device(api: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    body = {"name": f"events-dev-{next(_ids)}-{time.time_ns()}", "device_type": "sensor"}
    r = api.post("/api/v1/devices/register", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["device"]  # type: ignore[no-any-return]


def events(api: httpx.Client, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = api.get("/api/v1/events", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def all_events(api: httpx.Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = events(api, headers, limit=1000, offset=len(out), **params)
        out += page["events"]
        if len(out) >= page["meta"]["total"] or not page["events"]:
            return out


def test_shape_filters_and_pagination(api: httpx.Client) -> None:
    alice, alice_user = new_user(api)
    dev = owned_device(api, alice)
    rotated = api.post(f"/api/v1/devices/{dev['id']}/rotate-key", headers=alice)
    out = events(api, alice, device_id=dev["id"])
    assert out["meta"]["limit"] == 100 and out["meta"]["offset"] == 0
    assert out["meta"]["total"] == len(out["events"]) >= 1
    for e in out["events"]:
        assert set(e) == EVENT_FIELDS and e["device_id"] == dev["id"] and e["timestamp"].endswith("Z")
    registered = [e for e in out["events"] if e["type"] == "device.registered"]
    assert len(registered) == 1 and registered[0]["user_id"] == alice_user["id"]
    assert registered[0]["details"]["name"] == dev["name"]

    # exact type, a comma list and a prefix match
    exact = events(api, alice, type="device.registered", device_id=dev["id"])["events"]
    assert [e["type"] for e in exact] == ["device.registered"]
    mine = events(api, alice, type="user.registered")["events"]
    assert [(e["type"], e["user_id"]) for e in mine] == [("user.registered", alice_user["id"])]
    both = events(api, alice, type="user.registered,device.registered")["events"]
    assert {e["type"] for e in both} == {"user.registered", "device.registered"}
    prefixed = events(api, alice, type="device.*", device_id=dev["id"])["events"]
    assert prefixed and all(e["type"].startswith("device.") for e in prefixed)
    if rotated.status_code == 200:
        assert "device.key_rotated" in {e["type"] for e in prefixed}
    assert events(api, alice, type="nothing.like.this")["events"] == []

    # newest first, limit and offset
    everything = events(api, alice)["events"]
    stamps = [(e["timestamp"], e["id"]) for e in everything]
    assert stamps == sorted(stamps, reverse=True)
    page = events(api, alice, limit=1, offset=1)
    assert page["meta"] == {"total": len(everything), "limit": 1, "offset": 1}
    assert page["events"] == everything[1:2]

    # time range (default: the last 24 hours)
    assert events(api, alice, start_time="-1h")["meta"]["total"] == len(everything)
    assert events(api, alice, end_time="-1h")["events"] == []
    assert events(api, alice, start_time="2001-01-01", end_time="2001-01-02")["events"] == []
    now_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))
    assert events(api, alice, end_time=now_iso)["meta"]["total"] == len(everything)


def test_isolation(api: httpx.Client) -> None:
    alice, alice_user = new_user(api)
    bob, bob_user = new_user(api)
    a_dev, b_dev = owned_device(api, alice), owned_device(api, bob)
    r = api.post("/api/v1/devices/telemetry", json={"data": {"x": 1}}, headers=key_headers(a_dev))
    assert r.status_code == 201

    seen_by_bob = all_events(api, bob)
    assert seen_by_bob
    assert all(e["device_id"] in (None, b_dev["id"]) for e in seen_by_bob)
    assert all(e["user_id"] in (None, bob_user["id"]) for e in seen_by_bob)
    assert all(e["device_id"] == b_dev["id"] or e["user_id"] == bob_user["id"] for e in seen_by_bob)
    assert events(api, bob, device_id=a_dev["id"])["events"] == []
    assert events(api, alice, device_id=a_dev["id"])["events"]

    # the admin sees both users' events
    admin = {(e["device_id"], e["type"]) for e in all_events(api, ADMIN, type="device.registered")}
    assert {(a_dev["id"], "device.registered"), (b_dev["id"], "device.registered")} <= admin
    admin_users = {e["user_id"] for e in all_events(api, ADMIN, type="user.registered")}
    assert {alice_user["id"], bob_user["id"]} <= admin_users


def test_alert_events_are_recorded(api: httpx.Client) -> None:
    alice, _ = new_user(api)
    dev = owned_device(api, alice)
    key = f"pressure_{time.time_ns()}"
    r = api.post(
        "/api/v1/alerts/rules",
        json={"key": key, "operator": "<", "threshold": 900, "device_id": dev["id"]},
        headers=alice,
    )
    assert r.status_code == 201
    for value in (850, 1000):
        r = api.post("/api/v1/devices/telemetry", json={"data": {key: value}}, headers=key_headers(dev))
        assert r.status_code == 201
    deadline = time.monotonic() + 2
    while True:
        found = events(api, alice, type="alert.*", device_id=dev["id"])["events"]
        if len(found) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [e["type"] for e in found] == ["alert.resolved", "alert.opened"]
    opened = found[1]
    assert opened["details"]["key"] == key and opened["details"]["value"] == 850
    assert opened["details"]["operator"] == "<" and opened["details"]["threshold"] == 900


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"offset": "-1"},
        {"device_id": "x"},
        {"device_id": "0"},
        {"start_time": "yesterday"},
        {"end_time": "-0h"},
        {"start_time": "now", "end_time": "-1h"},
    ],
)
def test_bad_parameters(api: httpx.Client, params: dict[str, str]) -> None:
    r = api.get("/api/v1/events", params=params, headers=ADMIN)
    assert r.status_code == 400, (params, r.text)
    assert r.json()["error"] and r.json()["message"]


def test_credentials(api: httpx.Client, device: dict[str, Any]) -> None:
    assert api.get("/api/v1/events").status_code == 401
    assert api.get("/api/v1/events", headers=key_headers(device)).status_code == 401
    assert api.get("/api/v1/events", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/api/v1/events", headers={"Authorization": "admin nope"}).status_code == 403
