"""Commands to devices (spec §5), against a real server.

MQTT is disabled on the test server, so no device is ever connected: every command stays ``pending``
until the device reports progress over HTTP. Delivery over MQTT (``deliver_pending``, ``handle_ack``) is
covered by the MQTT tests.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from typing import Any

import httpx

from tests.conftest import ADMIN, key_headers, new_user
from tests.server import Server

COMMAND_FIELDS = {
    "id",
    "device_id",
    "command",
    "command_type",
    "parameters",
    "status",
    "result",
    "created_at",
    "updated_at",
    "expires_at",
    "created_by",
}
_seq = itertools.count(1)


def own_device(api: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    body = {"name": f"cmd-device-{next(_seq)}", "device_type": "actuator"}
    r = api.post("/api/v1/devices/register", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["device"]  # type: ignore[no-any-return]


def setup(api: httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """A user and a device of theirs."""
    user = new_user(api)
    return user, own_device(api, user["headers"])


def send(api: httpx.Client, device: dict[str, Any], headers: dict[str, str], **body: Any) -> httpx.Response:
    return api.post(
        f"/api/v1/devices/{device['id']}/control", json={"command": "reboot", **body}, headers=headers
    )


def create(api: httpx.Client, device: dict[str, Any], headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = send(api, device, headers, **body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def set_status(
    api: httpx.Client, device: dict[str, Any], cid: int, headers: dict[str, str], **body: Any
) -> httpx.Response:
    return api.post(f"/api/v1/devices/{device['id']}/control/{cid}/status", json=body, headers=headers)


def pending(api: httpx.Client, device: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/devices/{device['id']}/control/pending", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def history(
    api: httpx.Client, device: dict[str, Any], headers: dict[str, str], **params: Any
) -> httpx.Response:
    return api.get(f"/api/v1/devices/{device['id']}/commands", params=params, headers=headers)


def test_create_as_owner_device_and_admin(api: httpx.Client) -> None:
    user, dev = setup(api)
    text = "set 'mode'; DROP TABLE commands -- <b>&</b> Küche"
    c = create(api, dev, user["headers"], command=text, parameters={"level": 3, "on": True, "x": [1]})
    assert set(c) == COMMAND_FIELDS
    assert c["command"] == text and c["parameters"] == {"level": 3, "on": True, "x": [1]}
    assert c["device_id"] == dev["id"] and c["command_type"] == "control" and c["status"] == "pending"
    assert c["result"] is None and c["created_by"] == f"user:{user['user']['user_id']}"
    assert c["created_at"].endswith("Z") and c["created_at"] == c["updated_at"]
    created = time.mktime(time.strptime(c["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    expires = time.mktime(time.strptime(c["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert expires - created == 3600

    by_device = create(api, dev, key_headers(dev), command_type="firmware", expires_in=86_400)
    assert by_device["created_by"] == f"device:{dev['id']}" and by_device["command_type"] == "firmware"
    assert by_device["parameters"] == {} and by_device["id"] > c["id"]
    by_admin = create(api, dev, ADMIN, command_type="config", parameters={"interval": 5})
    assert by_admin["created_by"] == "admin" and by_admin["command_type"] == "config"
    admin_user = new_user(api, admin=True)
    assert create(api, dev, admin_user["headers"])["created_by"] == f"user:{admin_user['user']['user_id']}"


def test_access(api: httpx.Client) -> None:
    user, dev = setup(api)
    other, other_dev = setup(api)
    r = send(api, dev, other["headers"])
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    r = send(api, dev, key_headers(other_dev))
    assert r.status_code == 403 and r.json()["error"] == "Forbidden: device mismatch"
    r = send(api, dev, {})
    assert r.status_code == 401 and r.json()["error"] == "Authentication required"
    r = send(api, dev, {"X-API-Key": "not-a-key"})
    assert r.status_code == 401 and r.json()["error"] == "Invalid API key"
    r = send(api, dev, {"Authorization": "Bearer nonsense"})
    assert r.status_code == 401
    r = api.post("/api/v1/devices/999999999/control", json={"command": "x"}, headers=ADMIN)
    assert r.status_code == 404

    c = create(api, dev, user["headers"])
    for headers in (other["headers"], key_headers(other_dev)):
        assert api.get(f"/api/v1/devices/{dev['id']}/control/pending", headers=headers).status_code == 403
        assert set_status(api, dev, c["id"], headers, status="completed").status_code == 403
        assert history(api, dev, headers).status_code == 403
    assert api.get(f"/api/v1/devices/{dev['id']}/control/pending").status_code == 401
    # the history is for people: the device's own key is refused
    assert history(api, dev, key_headers(dev)).status_code == 403
    # another device cannot touch the command through its own path either
    r = set_status(api, other_dev, c["id"], key_headers(other_dev), status="completed")
    assert r.status_code == 404 and r.json()["error"] == "Command not found"
    assert pending(api, dev, user["headers"])[0]["status"] == "pending"


def test_validation(api: httpx.Client) -> None:
    user, dev = setup(api)
    url = f"/api/v1/devices/{dev['id']}/control"
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "command"),
        ({"command": ""}, "command"),
        ({"command": "x" * 101}, "command"),
        ({"command": 5}, "command"),
        ({"command": "x", "parameters": [1, 2]}, "parameters"),
        ({"command": "x", "parameters": "on"}, "parameters"),
        ({"command": "x", "command_type": "reboot"}, "command_type"),
        ({"command": "x", "expires_in": 0}, "expires_in"),
        ({"command": "x", "expires_in": 30 * 86_400 + 1}, "expires_in"),
        ({"command": "x", "expires_in": True}, "expires_in"),
        ({"command": "x", "expires_in": "60"}, "expires_in"),
    ]
    for body, field in cases:
        r = api.post(url, json=body, headers=user["headers"])
        assert r.status_code == 400, (body, r.text)
        assert r.json()["details"][0]["field"] == field, (body, r.text)
    assert api.post(url, json={"command": "x" * 100}, headers=user["headers"]).status_code == 201
    r = api.post(url, json={"command": "x", "expires_in": 30 * 86_400}, headers=user["headers"])
    assert r.status_code == 201
    r = api.post(url, content=b"{not json", headers={**user["headers"], "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "Invalid JSON"
    assert api.post(url, json=["reboot"], headers=user["headers"]).status_code == 400
    assert api.post(url, headers=user["headers"]).status_code == 400


def test_pending_list(api: httpx.Client) -> None:
    user, dev = setup(api)
    first = create(api, dev, user["headers"], command="one")
    second = create(api, dev, key_headers(dev), command="two", command_type="config")
    third = create(api, dev, ADMIN, command="three", parameters={"a": 1})
    assert set_status(api, dev, second["id"], key_headers(dev), status="completed").status_code == 200
    assert set_status(api, dev, third["id"], key_headers(dev), status="delivered").status_code == 200
    for headers in (key_headers(dev), user["headers"], ADMIN):
        got = pending(api, dev, headers)
        assert [c["id"] for c in got] == [first["id"], third["id"]]  # oldest first, not the completed one
        assert got[0] == first and got[1]["status"] == "delivered" and got[1]["parameters"] == {"a": 1}
        assert all(set(c) == COMMAND_FIELDS for c in got)
    # polling marks nothing
    assert pending(api, dev, key_headers(dev))[0]["status"] == "pending"
    got = api.get(f"/api/v1/devices/{dev['id']}/control/pending", params={"limit": 1}, headers=ADMIN).json()
    assert [c["id"] for c in got] == [first["id"]]
    _, empty = setup(api)
    assert pending(api, empty, key_headers(empty)) == []


def test_status_moves_forward_only(api: httpx.Client) -> None:
    user, dev = setup(api)
    key = key_headers(dev)
    c = create(api, dev, user["headers"])
    steps = [("delivered", key), ("acknowledged", user["headers"]), ("completed", ADMIN)]
    for status, headers in steps:
        r = set_status(api, dev, c["id"], headers, status=status)
        assert r.status_code == 200, r.text
        out = r.json()
        assert set(out) == COMMAND_FIELDS and out["status"] == status and out["id"] == c["id"]
    assert out["updated_at"] >= out["created_at"]
    # from a final state nothing moves
    r = set_status(api, dev, c["id"], key, status="failed")
    assert r.status_code == 400
    err = r.json()
    assert err["error"] == "Invalid status transition" and "completed" in err["message"]
    assert err["current_status"] == "completed" and err["requested_status"] == "failed"

    # a jump forward is fine, with a result of any JSON shape; backwards or sideways is not
    c2 = create(api, dev, user["headers"])
    r = set_status(api, dev, c2["id"], key, status="acknowledged", result={"progress": 10})
    assert r.status_code == 200 and r.json()["result"] == {"progress": 10}
    for back in ("delivered", "acknowledged"):
        r = set_status(api, dev, c2["id"], key, status=back)
        assert r.status_code == 400, r.text
        msg = r.json()["message"]
        assert f"from acknowledged to {back}" in msg and "pending → delivered → acknowledged" in msg
    r = set_status(api, dev, c2["id"], key, status="failed", result="motor stalled")
    assert r.status_code == 200 and r.json()["status"] == "failed" and r.json()["result"] == "motor stalled"
    c3 = create(api, dev, user["headers"])
    r = set_status(api, dev, c3["id"], key, status="completed")
    assert r.status_code == 200 and r.json()["status"] == "completed" and r.json()["result"] is None

    # statuses a caller may not set, and bad bodies
    c4 = create(api, dev, user["headers"])
    for body in ({"status": "pending"}, {"status": "expired"}, {"status": "done"}, {}, {"status": 1}):
        r = set_status(api, dev, c4["id"], key, **body)
        assert r.status_code == 400 and r.json()["details"][0]["field"] == "status", (body, r.text)
    assert "only by IoTFlow" in set_status(api, dev, c4["id"], key, status="expired").json()["message"]
    r = set_status(api, dev, 987654321, key, status="completed")
    assert r.status_code == 404 and r.json()["error"] == "Command not found"
    r = set_status(api, dev, 2**64, key, status="completed")
    assert r.status_code in (400, 404)
    assert pending(api, dev, key)[0]["id"] == c4["id"]


def test_history_filters_and_paging(api: httpx.Client) -> None:
    user, dev = setup(api)
    ids = [create(api, dev, user["headers"], command=f"c{i}")["id"] for i in range(5)]
    assert set_status(api, dev, ids[1], ADMIN, status="completed").status_code == 200
    assert set_status(api, dev, ids[3], ADMIN, status="failed").status_code == 200

    r = history(api, dev, user["headers"])
    assert r.status_code == 200
    out = r.json()
    assert out["status"] == "success" and out["meta"] == {"total": 5, "limit": 100, "offset": 0}
    assert [c["id"] for c in out["commands"]] == ids[::-1]  # newest first
    assert all(set(c) == COMMAND_FIELDS for c in out["commands"])

    page = history(api, dev, ADMIN, limit=2, offset=1).json()
    assert [c["id"] for c in page["commands"]] == [ids[3], ids[2]]
    assert page["meta"] == {"total": 5, "limit": 2, "offset": 1}
    done = history(api, dev, user["headers"], status="completed").json()
    assert [c["id"] for c in done["commands"]] == [ids[1]] and done["meta"]["total"] == 1
    ended = history(api, dev, user["headers"], status="completed,failed").json()
    assert [c["id"] for c in ended["commands"]] == [ids[3], ids[1]]
    waiting = history(api, dev, user["headers"], status="pending").json()
    assert [c["id"] for c in waiting["commands"]] == [ids[4], ids[2], ids[0]]
    assert history(api, dev, user["headers"], status="expired").json()["commands"] == []

    for params in ({"status": "done"}, {"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"offset": -1}):
        r = history(api, dev, user["headers"], **params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["details"][0]["field"] == next(iter(params))


def test_expiry(api: httpx.Client) -> None:
    user, dev = setup(api)
    short = create(api, dev, user["headers"], command="soon gone", expires_in=1)
    delivered = create(api, dev, user["headers"], command="also gone", expires_in=1)
    assert set_status(api, dev, delivered["id"], key_headers(dev), status="delivered").status_code == 200
    keep = create(api, dev, user["headers"], command="stays")
    assert {c["id"] for c in pending(api, dev, key_headers(dev))} == {
        short["id"],
        delivered["id"],
        keep["id"],
    }
    time.sleep(2.5)
    assert [c["id"] for c in pending(api, dev, key_headers(dev))] == [keep["id"]]
    gone = history(api, dev, user["headers"], status="expired").json()["commands"]
    assert [c["id"] for c in gone] == [delivered["id"], short["id"]]
    assert all(c["status"] == "expired" for c in gone)
    assert history(api, dev, user["headers"], status="pending,delivered").json()["meta"]["total"] == 1
    r = set_status(api, dev, short["id"], key_headers(dev), status="acknowledged")
    assert r.status_code == 400 and "expired" in r.json()["message"]
    # the expiry task writes it, and records an event
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        events = api.get(
            "/api/v1/events",
            params={"type": "command.expired", "device_id": dev["id"]},
            headers=user["headers"],
        ).json()["events"]
        if len(events) == 2:
            break
        time.sleep(0.3)
    assert {e["details"]["command_id"] for e in events} == {short["id"], delivered["id"]}


def test_command_events(api: httpx.Client) -> None:
    user, dev = setup(api)
    c = create(api, dev, user["headers"])
    assert set_status(api, dev, c["id"], key_headers(dev), status="acknowledged").status_code == 200
    assert set_status(api, dev, c["id"], key_headers(dev), status="completed").status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = api.get(
            "/api/v1/events", params={"type": "command.*", "device_id": dev["id"]}, headers=user["headers"]
        )
        types = [e["type"] for e in r.json()["events"]]
        if len(types) == 3:
            break
        time.sleep(0.2)
    assert types == ["command.completed", "command.acknowledged", "command.created"]


def test_admin_mqtt_device_command(api: httpx.Client) -> None:
    user, dev = setup(api)
    url = f"/api/v1/mqtt/device/{dev['id']}/command"
    r = api.post(
        url, json={"command_type": "config", "command": "set_interval", "parameters": {"s": 5}}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success" and out["device_id"] == dev["id"] and out["command_type"] == "config"
    assert out["topic"] == f"iotflow/devices/{dev['id']}/commands/config" and out["qos"] == 1
    assert out["message"] == "Command queued until the device connects" and out["command_status"] == "pending"
    got = pending(api, dev, key_headers(dev))
    assert [c["id"] for c in got] == [out["command_id"]]
    assert got[0]["parameters"] == {"s": 5} and got[0]["command"] == "set_interval"
    assert got[0]["created_by"] == "admin"
    r = api.post(url, json={"command_type": "firmware", "command": "update", "qos": 0}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["qos"] == 0

    for body, field in (
        ({"command": "x"}, "command_type"),
        ({"command_type": "reboot", "command": "x"}, "command_type"),
        ({"command_type": "control"}, "command"),
        ({"command_type": "control", "command": "x", "qos": 2}, "qos"),
    ):
        r = api.post(url, json=body, headers=ADMIN)
        assert r.status_code == 400 and r.json()["details"][0]["field"] == field, (body, r.text)
    body = {"command_type": "control", "command": "x"}
    assert api.post(url, json=body, headers=user["headers"]).status_code == 403
    assert api.post(url, json=body, headers=key_headers(dev)).status_code == 401
    assert api.post(url, json=body).status_code == 401
    assert api.post(url, json=body, headers={"Authorization": "admin wrong"}).status_code == 403
    assert api.post("/api/v1/mqtt/device/999999999/command", json=body, headers=ADMIN).status_code == 404


def test_fleet_command(api: httpx.Client) -> None:
    user, dev1 = setup(api)
    dev2 = own_device(api, user["headers"])
    r = api.post("/api/v1/groups", json={"name": f"fleet-{next(_seq)}"}, headers=user["headers"])
    assert r.status_code == 201, r.text
    group = r.json()["group"]
    r = api.post(
        f"/api/v1/groups/{group['id']}/devices",
        json={"device_ids": [dev1["id"], dev2["id"]]},
        headers=user["headers"],
    )
    assert r.status_code == 200, r.text
    url = f"/api/v1/mqtt/fleet/{group['id']}/command"
    body = {"command_type": "control", "command": "all_off", "parameters": {"why": "night"}}
    r = api.post(url, json=body, headers=user["headers"])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success" and out["group_id"] == group["id"]
    assert len(out["command_ids"]) == 2 and out["delivered"] == 0 and out["pending"] == 2
    seen = []
    for dev in (dev1, dev2):
        [c] = pending(api, dev, key_headers(dev))
        assert c["command"] == "all_off" and c["parameters"] == {"why": "night"}
        assert c["created_by"] == f"user:{user['user']['user_id']}"
        seen.append(c["id"])
    assert sorted(seen) == sorted(out["command_ids"])

    assert api.post(url, json=body, headers=ADMIN).json()["pending"] == 2
    other = new_user(api)
    assert api.post(url, json=body, headers=other["headers"]).status_code == 403
    assert api.post(url, json=body, headers=key_headers(dev1)).status_code == 401
    assert api.post(url, json={"command": "x"}, headers=user["headers"]).status_code == 400
    assert api.post("/api/v1/mqtt/fleet/999999999/command", json=body, headers=ADMIN).status_code == 404
    r = api.post("/api/v1/groups", json={"name": f"empty-{next(_seq)}"}, headers=user["headers"])
    empty = api.post(
        f"/api/v1/mqtt/fleet/{r.json()['group']['id']}/command", json=body, headers=user["headers"]
    )
    assert empty.status_code == 200 and empty.json()["command_ids"] == [] and empty.json()["pending"] == 0


def test_device_deletion_removes_commands(api: httpx.Client, server: Server) -> None:
    user, dev = setup(api)
    for _ in range(3):
        create(api, dev, user["headers"])

    def count() -> int:
        with sqlite3.connect(server.data_dir / "iotflow.db") as db:
            row = db.execute("SELECT count(*) FROM commands WHERE device_id = ?", (dev["id"],)).fetchone()
        return int(row[0])

    assert count() == 3
    assert api.delete(f"/api/v1/devices/{dev['id']}", headers=user["headers"]).status_code == 200
    assert count() == 0
    assert history(api, dev, ADMIN).status_code == 404
