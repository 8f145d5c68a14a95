"""Device groups (spec §6) and GET /devices/{id}/groups (spec §2), against a real server."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, key_headers

GROUP_FIELDS = {"id", "name", "description", "color", "user_id", "created_at", "updated_at", "device_count"}
_seq = itertools.count(1)


def new_user(api: httpx.Client) -> tuple[dict[str, str], dict[str, Any]]:
    """Register a user → (Bearer headers, User object)."""
    n = next(_seq)
    body = {"username": f"grp_user_{n}", "email": f"grp{n}@example.com", "password": "correct horse"}
    r = api.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}, r.json()["user"]


def own_device(api: httpx.Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": f"grp-device-{next(_seq)}", "device_type": "sensor", **fields}
    r = api.post("/api/v1/devices/register", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["device"]  # type: ignore[no-any-return]


def make_group(api: httpx.Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    r = api.post("/api/v1/groups", json={"name": f"group-{next(_seq)}", **fields}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["group"]  # type: ignore[no-any-return]


def add(api: httpx.Client, headers: dict[str, str], group_id: int, body: dict[str, Any]) -> httpx.Response:
    return api.post(f"/api/v1/groups/{group_id}/devices", json=body, headers=headers)


def test_create_list_get_update_delete(api: httpx.Client) -> None:
    me, user = new_user(api)
    name = "Floor 1 <east> & 'lab'; DROP TABLE device_groups"
    r = api.post("/api/v1/groups", json={"name": name, "description": "Küche"}, headers=me)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["status"] == "success" and out["message"] == "Group created successfully"
    group = out["group"]
    assert set(group) == GROUP_FIELDS | {"devices"} and group["devices"] == []
    assert group["name"] == name and group["description"] == "Küche"  # strings are data
    assert group["color"] == "#3B82F6" and group["user_id"] == user["id"] and group["device_count"] == 0
    assert group["created_at"].endswith("Z") and group["updated_at"].endswith("Z")
    second = make_group(api, me, color="#ff00AA")
    assert second["color"] == "#ff00AA"

    r = api.get("/api/v1/groups", headers=me)
    assert r.status_code == 200
    listed = r.json()
    assert listed["status"] == "success"
    assert [g["id"] for g in listed["groups"]] == [group["id"], second["id"]]
    assert listed["meta"] == {"total": 2, "limit": 100, "offset": 0}
    assert all("devices" not in g for g in listed["groups"])
    page = api.get("/api/v1/groups", params={"limit": 1, "offset": 1}, headers=me).json()
    assert [g["id"] for g in page["groups"]] == [second["id"]]
    assert page["meta"] == {"total": 2, "limit": 1, "offset": 1}

    dev = own_device(api, me)
    assert add(api, me, group["id"], {"device_id": dev["id"]}).status_code == 200
    with_devices = api.get("/api/v1/groups", params={"include_devices": "true"}, headers=me).json()
    first = with_devices["groups"][0]
    assert first["device_count"] == 1 and [d["id"] for d in first["devices"]] == [dev["id"]]
    assert first["devices"][0]["name"] == dev["name"] and first["devices"][0]["added_at"].endswith("Z")
    assert with_devices["groups"][1]["devices"] == []
    assert api.get("/api/v1/groups", headers=me).json()["groups"][0]["device_count"] == 1

    r = api.get(f"/api/v1/groups/{group['id']}", headers=me)
    assert r.status_code == 200
    got = r.json()["group"]
    assert got["device_count"] == 1 and [d["id"] for d in got["devices"]] == [dev["id"]]

    r = api.put(
        f"/api/v1/groups/{group['id']}",
        json={"name": "Renamed", "color": "#000000", "description": None},
        headers=me,
    )
    assert r.status_code == 200, r.text
    updated = r.json()["group"]
    assert (updated["name"], updated["color"], updated["description"]) == ("Renamed", "#000000", None)
    assert updated["device_count"] == 1 and updated["created_at"] == group["created_at"]

    r = api.delete(f"/api/v1/groups/{group['id']}", headers=me)
    assert r.status_code == 200 and r.json()["status"] == "success"
    assert api.get(f"/api/v1/groups/{group['id']}", headers=me).status_code == 404
    # deleting a group never deletes its devices
    assert api.get(f"/api/v1/devices/{dev['id']}", headers=me).status_code == 200
    assert api.get(f"/api/v1/devices/{dev['id']}/groups", headers=me).json()["groups"] == []


def test_membership_add_remove_already_members(api: httpx.Client) -> None:
    me, _ = new_user(api)
    group = make_group(api, me)
    d1, d2, d3 = (own_device(api, me) for _ in range(3))
    gid = group["id"]

    r = add(api, me, gid, {"device_id": d1["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "success"
    assert (r.json()["added"], r.json()["already_members"]) == ([d1["id"]], [])

    r = add(api, me, gid, {"device_ids": [d2["id"], d1["id"], d3["id"], d2["id"]]})
    assert r.status_code == 200, r.text
    assert r.json()["added"] == [d2["id"], d3["id"]] and r.json()["already_members"] == [d1["id"]]
    assert api.get(f"/api/v1/groups/{gid}", headers=me).json()["group"]["device_count"] == 3

    r = api.delete(f"/api/v1/groups/{gid}/devices/{d2['id']}", headers=me)
    assert r.status_code == 200 and r.json()["status"] == "success"
    devices = api.get(f"/api/v1/groups/{gid}", headers=me).json()["group"]["devices"]
    assert [d["id"] for d in devices] == [d1["id"], d3["id"]]
    # removing a device that is not (or no longer) a member
    assert api.delete(f"/api/v1/groups/{gid}/devices/{d2['id']}", headers=me).status_code == 404
    assert api.delete(f"/api/v1/groups/{gid}/devices/999999999", headers=me).status_code == 404
    # the device itself is untouched
    assert api.get(f"/api/v1/devices/{d2['id']}", headers=me).status_code == 200


def test_only_devices_of_the_groups_owner_can_join(api: httpx.Client) -> None:
    me, _ = new_user(api)
    other, _ = new_user(api)
    group = make_group(api, me)
    mine = own_device(api, me)
    theirs = own_device(api, other)
    ownerless = own_device(api, {})
    body = {"device_ids": [mine["id"], theirs["id"], ownerless["id"], 987654321]}
    for headers in (me, ADMIN):  # an admin cannot mix owners either
        r = add(api, headers, group["id"], body)
        assert r.status_code == 400, r.text
        err = r.json()
        assert err["error"] == "Invalid devices"
        assert err["invalid_device_ids"] == [theirs["id"], ownerless["id"], 987654321]
        assert str(theirs["id"]) in err["message"]
    # nothing was added, not even the valid one
    assert api.get(f"/api/v1/groups/{group['id']}", headers=me).json()["group"]["devices"] == []
    # the admin may add the owner's devices
    r = add(api, ADMIN, group["id"], {"device_id": mine["id"]})
    assert r.status_code == 200 and r.json()["added"] == [mine["id"]]


def test_another_users_group_is_403_on_every_endpoint(api: httpx.Client) -> None:
    owner, _ = new_user(api)
    stranger, _ = new_user(api)
    group = make_group(api, owner)
    dev = own_device(api, owner)
    assert add(api, owner, group["id"], {"device_id": dev["id"]}).status_code == 200
    gid, did = group["id"], dev["id"]
    calls = [
        ("GET", f"/api/v1/groups/{gid}", None),
        ("PUT", f"/api/v1/groups/{gid}", {"name": "mine now"}),
        ("DELETE", f"/api/v1/groups/{gid}", None),
        ("POST", f"/api/v1/groups/{gid}/devices", {"device_id": did}),
        ("DELETE", f"/api/v1/groups/{gid}/devices/{did}", None),
        ("GET", f"/api/v1/groups/{gid}/telemetry/latest", None),
        ("GET", f"/api/v1/devices/{did}/groups", None),
    ]
    for method, path, body in calls:
        r = api.request(method, path, json=body, headers=stranger)
        assert r.status_code == 403, (method, path, r.text)
        assert set(r.json()) >= {"error", "message"}
    # the stranger's list does not show it; the admin's does
    assert api.get("/api/v1/groups", headers=stranger).json()["groups"] == []
    admin_list = api.get("/api/v1/groups", params={"limit": 1000}, headers=ADMIN).json()
    assert gid in [g["id"] for g in admin_list["groups"]]
    assert admin_list["meta"]["total"] >= 1
    # nothing changed
    got = api.get(f"/api/v1/groups/{gid}", headers=owner).json()["group"]
    assert got["name"] == group["name"] and got["device_count"] == 1
    # unknown groups are 404 (also for ids beyond 64 bits)
    for path in ("/api/v1/groups/999999999", "/api/v1/groups/99999999999999999999999"):
        assert api.get(path, headers=owner).status_code == 404
    assert (
        api.post("/api/v1/groups/999999999/devices", json={"device_id": did}, headers=owner).status_code
        == 404
    )


def test_admin_manages_any_group(api: httpx.Client) -> None:
    owner, user = new_user(api)
    group = make_group(api, owner)
    r = api.put(f"/api/v1/groups/{group['id']}", json={"description": "by admin"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["group"]["description"] == "by admin"
    assert api.get(f"/api/v1/groups/{group['id']}/telemetry/latest", headers=ADMIN).status_code == 200
    assert api.delete(f"/api/v1/groups/{group['id']}", headers=ADMIN).status_code == 200

    # the admin token is not a user: it names the owner with user_id (32-hex public id)
    r = api.post("/api/v1/groups", json={"name": "no owner"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "user_id"
    r = api.post("/api/v1/groups", json={"name": "for user", "user_id": user["user_id"]}, headers=ADMIN)
    assert r.status_code == 201 and r.json()["group"]["user_id"] == user["id"]
    assert "for user" in [g["name"] for g in api.get("/api/v1/groups", headers=owner).json()["groups"]]
    r = api.post("/api/v1/groups", json={"name": "x", "user_id": "0" * 32}, headers=ADMIN)
    assert r.status_code == 400
    # a user cannot create groups for someone else
    other, _ = new_user(api)
    r = api.post("/api/v1/groups", json={"name": "sneaky", "user_id": user["user_id"]}, headers=other)
    assert r.status_code == 403

    # an admin *user* owns the groups they create
    admin_headers, admin_user = new_user(api)
    r = api.put(f"/api/v1/users/{admin_user['user_id']}", json={"is_admin": True}, headers=ADMIN)
    assert r.status_code == 200, r.text
    mine = make_group(api, admin_headers)
    assert mine["user_id"] == admin_user["id"]
    assert api.get(f"/api/v1/groups/{mine['id']}", headers=owner).status_code == 403


def test_credentials_are_required(api: httpx.Client) -> None:
    me, _ = new_user(api)
    group = make_group(api, me)
    dev = own_device(api, me)
    gid, did = group["id"], dev["id"]
    calls = [
        ("POST", "/api/v1/groups", {"name": "x"}),
        ("GET", "/api/v1/groups", None),
        ("GET", f"/api/v1/groups/{gid}", None),
        ("PUT", f"/api/v1/groups/{gid}", {"name": "y"}),
        ("DELETE", f"/api/v1/groups/{gid}", None),
        ("POST", f"/api/v1/groups/{gid}/devices", {"device_id": did}),
        ("DELETE", f"/api/v1/groups/{gid}/devices/{did}", None),
        ("GET", f"/api/v1/groups/{gid}/telemetry/latest", None),
    ]
    for method, path, body in calls:
        for headers in ({}, key_headers(dev)):  # a device key is not a user credential
            r = api.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
        r = api.request(method, path, json=body, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and r.json()["error"] == "Invalid token"
        r = api.request(method, path, json=body, headers={"Authorization": "admin wrong"})
        assert r.status_code == 403 and r.json()["error"] == "Invalid admin token"
    assert api.get(f"/api/v1/devices/{did}/groups").status_code == 401
    # the device's own key may not list its groups (owner or admin only)
    assert api.get(f"/api/v1/devices/{did}/groups", headers=key_headers(dev)).status_code == 403
    # nothing happened
    assert api.get(f"/api/v1/groups/{gid}", headers=me).json()["group"]["name"] == group["name"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "color": "blue"}, "color"),
        ({"name": "ok", "color": "#12345"}, "color"),
        ({"name": "ok", "color": "#12345G"}, "color"),
        ({"name": "ok", "color": 3}, "color"),
        ({"name": "ok", "description": ["a"]}, "description"),
        ({"name": "ok", "description": "d" * 1001}, "description"),
    ],
)
def test_create_validation(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    me, _ = new_user(api)
    r = api.post("/api/v1/groups", json=body, headers=me)
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["field"] == field


def test_update_and_membership_validation(api: httpx.Client) -> None:
    me, _ = new_user(api)
    group = make_group(api, me)
    gid = group["id"]
    for body in ({"name": None}, {"name": "x" * 101}, {"color": "#GGGGGG"}, {"color": None}, {}):
        r = api.put(f"/api/v1/groups/{gid}", json=body, headers=me)
        assert r.status_code == 400, (body, r.text)
    bad_members: list[Any] = [
        {},
        {"device_id": "1"},
        {"device_id": True},
        {"device_id": 0},
        {"device_id": -3},
        {"device_id": 2**70},
        {"device_ids": []},
        {"device_ids": "1,2"},
        {"device_ids": [1, "2"]},
        {"device_ids": [1.5]},
        {"device_ids": list(range(1, 1002))},
        {"device_id": 1, "device_ids": [2]},
    ]
    for body in bad_members:
        r = add(api, me, gid, body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["details"][0]["field"] in ("device_id", "device_ids")
    for raw in (b"not json", b"[1, 2]"):
        r = api.post(
            f"/api/v1/groups/{gid}/devices", content=raw, headers={**me, "Content-Type": "application/json"}
        )
        assert r.status_code == 400
    r = api.post("/api/v1/groups", content=b"{", headers={**me, "Content-Type": "application/json"})
    assert r.status_code == 400
    for params in ({"limit": "0"}, {"limit": "abc"}, {"offset": "-1"}, {"include_devices": "maybe"}):
        assert api.get("/api/v1/groups", params=params, headers=me).status_code == 400, params


def test_duplicate_name_is_409_per_user(api: httpx.Client) -> None:
    me, _ = new_user(api)
    other, _ = new_user(api)
    make_group(api, me, name="Greenhouse")
    r = api.post("/api/v1/groups", json={"name": "Greenhouse"}, headers=me)
    assert r.status_code == 409 and r.json()["error"] == "Group name already exists"
    make_group(api, other, name="Greenhouse")  # names are unique per user only
    second = make_group(api, me, name="Barn")
    r = api.put(f"/api/v1/groups/{second['id']}", json={"name": "Greenhouse"}, headers=me)
    assert r.status_code == 409 and r.json()["error"] == "Group name already exists"
    # renaming to its own name is fine
    assert api.put(f"/api/v1/groups/{second['id']}", json={"name": "Barn"}, headers=me).status_code == 200


def test_group_latest_telemetry(api: httpx.Client) -> None:
    me, _ = new_user(api)
    group = make_group(api, me)
    d1, d2, quiet = (own_device(api, me) for _ in range(3))
    r = add(api, me, group["id"], {"device_ids": [d1["id"], d2["id"], quiet["id"]]})
    assert r.status_code == 200
    for dev, temp in ((d1, 20.5), (d2, 30)):
        for payload in (
            {"data": {"temperature": temp - 1, "humidity": 40}, "timestamp": "2025-07-02T14:00:00Z"},
            {"data": {"temperature": temp, "status": "ok"}, "timestamp": "2025-07-02T14:30:00Z"},
        ):
            sent = api.post("/api/v1/devices/telemetry", json=payload, headers=key_headers(dev))
            assert sent.status_code == 201, sent.text

    r = api.get(f"/api/v1/groups/{group['id']}/telemetry/latest", headers=me)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (
        out["status"] == "success" and out["group_id"] == group["id"] and out["group_name"] == group["name"]
    )
    assert out["device_count"] == 3 and out["devices_with_data"] == 2
    by_id = {d["device_id"]: d for d in out["devices"]}
    assert set(by_id) == {d1["id"], d2["id"], quiet["id"]}
    assert by_id[d1["id"]]["latest_data"] == {
        "timestamp": "2025-07-02T14:30:00.000Z",
        "temperature": 20.5,
        "humidity": 40,
        "status": "ok",
    }
    assert by_id[d2["id"]]["latest_data"]["temperature"] == 30
    assert by_id[d2["id"]]["keys"]["humidity"] == {"value": 40, "timestamp": "2025-07-02T14:00:00.000Z"}
    assert by_id[d2["id"]]["device_name"] == d2["name"] and by_id[d2["id"]]["device_type"] == "sensor"
    assert by_id[quiet["id"]]["latest_data"] is None and by_id[quiet["id"]]["keys"] == {}

    narrowed = api.get(
        f"/api/v1/groups/{group['id']}/telemetry/latest", params={"keys": "humidity"}, headers=me
    ).json()
    first = next(d for d in narrowed["devices"] if d["device_id"] == d1["id"])
    assert set(first["latest_data"]) == {"timestamp", "humidity"}

    empty = make_group(api, me)
    r = api.get(f"/api/v1/groups/{empty['id']}/telemetry/latest", headers=me)
    assert r.status_code == 200 and r.json()["devices"] == [] and r.json()["device_count"] == 0


def test_deleting_a_device_removes_its_memberships(api: httpx.Client) -> None:
    me, _ = new_user(api)
    g1, g2 = make_group(api, me), make_group(api, me)
    dev, keep = own_device(api, me), own_device(api, me)
    for g in (g1, g2):
        assert add(api, me, g["id"], {"device_ids": [dev["id"], keep["id"]]}).status_code == 200
    assert api.delete(f"/api/v1/devices/{dev['id']}", headers=me).status_code == 200
    for g in (g1, g2):
        got = api.get(f"/api/v1/groups/{g['id']}", headers=me).json()["group"]
        assert got["device_count"] == 1 and [d["id"] for d in got["devices"]] == [keep["id"]]
    listed = api.get("/api/v1/groups", headers=me).json()["groups"]
    assert [g["device_count"] for g in listed] == [1, 1]


def test_deleting_a_user_removes_their_groups(api: httpx.Client) -> None:
    me, user = new_user(api)
    group = make_group(api, me)
    assert api.delete(f"/api/v1/users/{user['user_id']}", headers=ADMIN).status_code == 200
    assert api.get(f"/api/v1/groups/{group['id']}", headers=ADMIN).status_code == 404


def test_groups_of_a_device(api: httpx.Client) -> None:
    me, _ = new_user(api)
    dev = own_device(api, me)
    r = api.get(f"/api/v1/devices/{dev['id']}/groups", headers=me)
    assert r.status_code == 200
    assert r.json() == {
        "status": "success",
        "device_id": dev["id"],
        "device_name": dev["name"],
        "groups": [],
        "total_groups": 0,
    }
    b = make_group(api, me, name="B group", color="#00FF00")
    a = make_group(api, me, name="A group")
    make_group(api, me, name="C unrelated")
    for g in (b, a):
        assert add(api, me, g["id"], {"device_id": dev["id"]}).status_code == 200
    for headers in (me, ADMIN):
        out = api.get(f"/api/v1/devices/{dev['id']}/groups", headers=headers).json()
        assert out["total_groups"] == 2
        assert [(g["id"], g["name"], g["color"]) for g in out["groups"]] == [
            (a["id"], "A group", "#3B82F6"),
            (b["id"], "B group", "#00FF00"),
        ]
        assert all(set(g) == {"id", "name", "color", "added_at"} for g in out["groups"])
        assert all(g["added_at"].endswith("Z") for g in out["groups"])
    assert api.get("/api/v1/devices/999999999/groups", headers=me).status_code == 404
