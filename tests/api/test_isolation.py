"""Isolation: every endpoint against every kind of credential.

Two users, A and B, each own devices, a group, an alert rule and data. Every endpoint that touches
one of A's resources is called with: no credentials, B's token, B's device key, A's device key, A's
token and the admin token. The expected status for each comes from the auth column of the spec:

- device data (telemetry reads, status, summary, delete telemetry): the device, its owner, admin
- owner or admin (device management, configuration, groups, rules, alerts)
- user endpoints take Bearer/admin only: a device key counts as no credential (401)

Lists must not show what is not the caller's. Destructive calls that are allowed run against a fresh
resource, so that one check does not hide another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, key_headers, new_user

CREDS = ("none", "other_user", "other_key", "own_key", "owner", "admin")
T0 = int(time.time() * 1000) - 60_000


@dataclass
class World:
    api: httpx.Client
    a: dict[str, Any]
    b: dict[str, Any]
    dev_a: dict[str, Any]
    dev_a2: dict[str, Any]
    dev_b: dict[str, Any]
    group_a: int
    group_b: int
    rule_a: int

    def headers(self, cred: str) -> dict[str, str]:
        return {
            "none": {},
            "other_user": self.b["headers"],
            "other_key": key_headers(self.dev_b),
            "own_key": key_headers(self.dev_a),
            "owner": self.a["headers"],
            "admin": ADMIN,
        }[cred]

    def fresh_device(self) -> dict[str, Any]:
        r = self.api.post(
            "/api/v1/devices/register",
            json={"name": f"fresh-{time.monotonic_ns()}", "device_type": "x"},
            headers=self.a["headers"],
        )
        assert r.status_code == 201
        return r.json()["device"]  # type: ignore[no-any-return]

    def fresh_rule(self) -> int:
        body = {
            "name": f"r-{time.monotonic_ns()}",
            "device_id": self.dev_a["id"],
            "key": "temperature",
            "operator": ">",
            "threshold": 1000,
        }
        r = self.api.post("/api/v1/alerts/rules", json=body, headers=self.a["headers"])
        assert r.status_code == 201, r.text
        return r.json()["rule"]["id"] if "rule" in r.json() else r.json()["id"]  # type: ignore[no-any-return]

    def fresh_alert(self) -> int:
        """An open alert on A's second device (a rule on a key of its own, then a matching reading)."""
        key = f"k{time.monotonic_ns()}"
        body = {"name": key, "device_id": self.dev_a2["id"], "key": key, "operator": ">", "threshold": 0}
        assert self.api.post("/api/v1/alerts/rules", json=body, headers=self.a["headers"]).status_code == 201
        r = self.api.post(
            "/api/v1/devices/telemetry", json={"data": {key: 1}}, headers=key_headers(self.dev_a2)
        )
        assert r.status_code == 201
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            alerts = self.api.get(
                "/api/v1/alerts", params={"state": "open", "limit": 1000}, headers=self.a["headers"]
            ).json()["alerts"]
            found = [x["id"] for x in alerts if x["key"] == key]
            if found:
                return int(found[0])
            time.sleep(0.05)
        raise AssertionError("the alert did not open")

    def fresh_group(self) -> int:
        r = self.api.post(
            "/api/v1/groups", json={"name": f"g-{time.monotonic_ns()}"}, headers=self.a["headers"]
        )
        assert r.status_code == 201
        return r.json()["group"]["id"]  # type: ignore[no-any-return]


def _device(api: httpx.Client, owner: dict[str, Any], name: str) -> dict[str, Any]:
    r = api.post(
        "/api/v1/devices/register", json={"name": name, "device_type": "sensor"}, headers=owner["headers"]
    )
    assert r.status_code == 201
    dev = r.json()["device"]
    batch = [
        {"data": {"temperature": 20 + i, "secret": f"{name}-{i}"}, "timestamp": T0 + i * 1000}
        for i in range(5)
    ]
    assert (
        api.post("/api/v1/devices/telemetry", json={"batch": batch}, headers=key_headers(dev)).status_code
        == 201
    )
    assert (
        api.post(
            "/api/v1/devices/config", json={"config_key": "k", "config_value": name}, headers=key_headers(dev)
        ).status_code
        == 200
    )
    return dev  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(server: Any) -> Iterator[World]:
    api = server.client()
    a, b = new_user(api), new_user(api)
    dev_a, dev_a2, dev_b = _device(api, a, "iso-a"), _device(api, a, "iso-a2"), _device(api, b, "iso-b")
    groups = []
    for owner, dev in ((a, dev_a), (b, dev_b)):
        r = api.post("/api/v1/groups", json={"name": "iso"}, headers=owner["headers"])
        gid = r.json()["group"]["id"]
        api.post(f"/api/v1/groups/{gid}/devices", json={"device_id": dev["id"]}, headers=owner["headers"])
        groups.append(gid)
    rules = []
    for owner, dev in ((a, dev_a), (b, dev_b)):
        body = {
            "name": "iso-rule",
            "device_id": dev["id"],
            "key": "temperature",
            "operator": ">",
            "threshold": 1000,
        }
        r = api.post("/api/v1/alerts/rules", json=body, headers=owner["headers"])
        assert r.status_code == 201, r.text
        rules.append(r.json()["rule"]["id"] if "rule" in r.json() else r.json()["id"])
    yield World(api, a, b, dev_a, dev_a2, dev_b, groups[0], groups[1], rules[0])
    api.close()


Expect = dict[str, int]
DEVICE_DATA: Expect = {
    "none": 401,
    "other_user": 403,
    "other_key": 403,
    "own_key": 200,
    "owner": 200,
    "admin": 200,
}
OWNER_ONLY: Expect = {
    "none": 401,
    "other_user": 403,
    "other_key": 403,
    "own_key": 403,
    "owner": 200,
    "admin": 200,
}
USER_ONLY: Expect = {
    "none": 401,
    "other_user": 403,
    "other_key": 401,
    "own_key": 401,
    "owner": 200,
    "admin": 200,
}
ADMIN_ONLY: Expect = {
    "none": 401,
    "other_user": 403,
    "other_key": 401,
    "own_key": 401,
    "owner": 403,
    "admin": 200,
}


@dataclass
class Case:
    name: str
    method: str
    path: Callable[[World], str]
    expect: Expect
    body: Callable[[World], Any] | None = None
    fresh: bool = False  # allowed calls destroy/alter the target: run them on a fresh device/group


def _dev(w: World) -> int:
    return int(w.dev_a["id"])


CASES = [
    # device data: own key, owner, admin
    Case("history", "GET", lambda w: f"/telemetry/{_dev(w)}?start_time=-1d", DEVICE_DATA),
    Case("latest", "GET", lambda w: f"/telemetry/{_dev(w)}/latest", DEVICE_DATA),
    Case("aggregated", "GET", lambda w: f"/telemetry/{_dev(w)}/aggregated?field=temperature", DEVICE_DATA),
    Case("keys", "GET", lambda w: f"/telemetry/{_dev(w)}/keys", DEVICE_DATA),
    Case("device form", "GET", lambda w: f"/telemetry/device/{_dev(w)}", DEVICE_DATA),
    Case(
        "device form agg",
        "GET",
        lambda w: f"/telemetry/device/{_dev(w)}/aggregated?data_type=temperature&aggregation=avg",
        DEVICE_DATA,
    ),
    Case("status", "GET", lambda w: f"/devices/{_dev(w)}/status", DEVICE_DATA),
    Case("summary", "GET", lambda w: f"/devices/{_dev(w)}/summary", DEVICE_DATA),
    Case("delete telemetry", "DELETE", lambda w: f"/telemetry/{_dev(w)}?keys=nothing-such", DEVICE_DATA),
    Case("user telemetry", "GET", lambda w: f"/telemetry/user/{w.a['user']['user_id']}", DEVICE_DATA),
    # owner or admin
    Case("get device", "GET", lambda w: f"/devices/{_dev(w)}", OWNER_ONLY),
    Case(
        "put device", "PUT", lambda w: f"/devices/{_dev(w)}", OWNER_ONLY, body=lambda w: {"description": "d"}
    ),
    Case("get configuration", "GET", lambda w: f"/devices/{_dev(w)}/configuration", OWNER_ONLY),
    Case(
        "put configuration",
        "PUT",
        lambda w: f"/devices/{_dev(w)}/configuration",
        OWNER_ONLY,
        body=lambda w: {"configuration": {"k": "iso-a"}},
    ),
    Case("device groups", "GET", lambda w: f"/devices/{_dev(w)}/groups", OWNER_ONLY),
    Case(
        "rotate key",
        "POST",
        lambda w: f"/devices/{w.fresh_device()['id']}/rotate-key",
        OWNER_ONLY,
        fresh=True,
    ),
    Case("delete device", "DELETE", lambda w: f"/devices/{w.fresh_device()['id']}", OWNER_ONLY, fresh=True),
    # user endpoints on A's resources
    Case("devices of user", "GET", lambda w: f"/devices/user/{w.a['user']['user_id']}", USER_ONLY),
    Case("get user", "GET", lambda w: f"/users/{w.a['user']['user_id']}", USER_ONLY),
    Case(
        "put user",
        "PUT",
        lambda w: f"/users/{w.a['user']['user_id']}",
        USER_ONLY,
        body=lambda w: {"email": w.a["user"]["email"]},
    ),
    Case("get group", "GET", lambda w: f"/groups/{w.group_a}", USER_ONLY),
    Case(
        "put group", "PUT", lambda w: f"/groups/{w.group_a}", USER_ONLY, body=lambda w: {"description": "x"}
    ),
    Case("group latest", "GET", lambda w: f"/groups/{w.group_a}/telemetry/latest", USER_ONLY),
    Case(
        "group add device",
        "POST",
        lambda w: f"/groups/{w.group_a}/devices",
        USER_ONLY,
        body=lambda w: {"device_id": w.dev_a2["id"]},
    ),
    Case(
        "group remove device", "DELETE", lambda w: f"/groups/{w.group_a}/devices/{w.dev_a2['id']}", USER_ONLY
    ),
    Case("delete group", "DELETE", lambda w: f"/groups/{w.fresh_group()}", USER_ONLY, fresh=True),
    Case("get rule", "GET", lambda w: f"/alerts/rules/{w.rule_a}", USER_ONLY),
    Case(
        "put rule",
        "PUT",
        lambda w: f"/alerts/rules/{w.rule_a}",
        USER_ONLY,
        body=lambda w: {"name": "iso-rule"},
    ),
    Case("delete rule", "DELETE", lambda w: f"/alerts/rules/{w.fresh_rule()}", USER_ONLY, fresh=True),
    Case(
        "acknowledge alert", "POST", lambda w: f"/alerts/{w.fresh_alert()}/acknowledge", USER_ONLY, fresh=True
    ),
    Case("resolve alert", "POST", lambda w: f"/alerts/{w.fresh_alert()}/resolve", USER_ONLY, fresh=True),
    # administration
    Case("admin devices", "GET", lambda w: "/admin/devices", ADMIN_ONLY),
    Case("admin device", "GET", lambda w: f"/admin/devices/{_dev(w)}", ADMIN_ONLY),
    Case("admin stats", "GET", lambda w: "/admin/stats", ADMIN_ONLY),
    Case("admin dashboard", "GET", lambda w: "/admin/dashboard", ADMIN_ONLY),
    Case(
        "admin status",
        "PUT",
        lambda w: f"/admin/devices/{_dev(w)}/status",
        ADMIN_ONLY,
        body=lambda w: {"status": "active"},
    ),
    Case("admin cache", "GET", lambda w: "/admin/cache/device-status", ADMIN_ONLY),
    Case("list users", "GET", lambda w: "/users", ADMIN_ONLY),
    Case("deactivate user", "PATCH", lambda w: f"/users/{w.b['user']['user_id']}/activate", ADMIN_ONLY),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("cred", CREDS)
def test_access_matrix(world: World, case: Case, cred: str) -> None:
    expected = case.expect[cred]
    path = case.path(world)
    body = case.body(world) if case.body else None
    r = world.api.request(case.method, "/api/v1" + path, json=body, headers=world.headers(cred))
    assert r.status_code == expected, f"{case.method} {path} as {cred}: {r.status_code} {r.text}"
    if expected >= 400:
        assert r.json()["error"] and r.json()["message"]


def _names(items: list[dict[str, Any]]) -> set[str]:
    return {str(i.get("name")) for i in items}


def test_lists_show_only_own_things(world: World) -> None:
    api, a = world.api, world.a
    devices = api.get("/api/v1/devices", params={"limit": 1000}, headers=a["headers"]).json()["devices"]
    assert all(d["user_id"] == a["user"]["id"] for d in devices) and "iso-b" not in _names(devices)
    statuses = api.get("/api/v1/devices/statuses", params={"limit": 1000}, headers=a["headers"]).json()
    assert world.dev_b["id"] not in {d["id"] for d in statuses["devices"]}
    groups = api.get("/api/v1/groups", params={"include_devices": "true"}, headers=a["headers"]).json()[
        "groups"
    ]
    assert {g["id"] for g in groups} >= {world.group_a} and world.group_b not in {g["id"] for g in groups}
    everything = api.get("/api/v1/devices", params={"limit": 1000}, headers=ADMIN).json()["devices"]
    assert {"iso-a", "iso-b"} <= _names(everything)


def test_alerts_and_events_show_only_own_things(world: World) -> None:
    api = world.api
    world.fresh_alert()
    b_alerts = api.get("/api/v1/alerts", params={"limit": 1000}, headers=world.b["headers"]).json()["alerts"]
    assert not {x["device_id"] for x in b_alerts} & {world.dev_a["id"], world.dev_a2["id"]}
    b_rules = api.get("/api/v1/alerts/rules", headers=world.b["headers"]).json()
    rules = b_rules.get("rules", b_rules)
    assert world.rule_a not in {r["id"] for r in rules}
    b_events = api.get("/api/v1/events", params={"limit": 1000}, headers=world.b["headers"]).json()["events"]
    assert b_events and not {e["device_id"] for e in b_events} & {world.dev_a["id"], world.dev_a2["id"]}
    a_events = api.get("/api/v1/events", params={"limit": 1000}, headers=world.a["headers"]).json()["events"]
    assert world.dev_a["id"] in {e["device_id"] for e in a_events}
    assert (
        api.get("/api/v1/events", params={"device_id": world.dev_a["id"]}, headers=world.b["headers"]).json()[
            "events"
        ]
        == []
    )


def test_no_foreign_data_in_any_answer(world: World) -> None:
    """B's secret values never appear in anything A can read."""
    api, a = world.api, world.a
    paths = [
        f"/api/v1/telemetry/user/{a['user']['user_id']}?start_time=-1d",
        f"/api/v1/groups/{world.group_a}/telemetry/latest",
        "/api/v1/devices?limit=1000",
        "/api/v1/groups?include_devices=true",
        f"/api/v1/devices/user/{a['user']['user_id']}",
    ]
    for path in paths:
        r = api.get(path, headers=a["headers"])
        assert r.status_code == 200, path
        assert "iso-b" not in r.text, path


def test_group_membership_refuses_foreign_devices(world: World) -> None:
    r = world.api.post(
        f"/api/v1/groups/{world.group_a}/devices",
        json={"device_id": world.dev_b["id"]},
        headers=world.a["headers"],
    )
    assert r.status_code == 400
    members = world.api.get(f"/api/v1/groups/{world.group_a}", headers=world.a["headers"]).json()["group"][
        "devices"
    ]
    assert world.dev_b["id"] not in {d["id"] for d in members}


def test_refused_calls_changed_nothing(world: World) -> None:
    """After the whole matrix, B's attempts left A's device, key, data and group as they were."""
    api = world.api
    r = api.get("/api/v1/devices/status", headers=key_headers(world.dev_a))
    assert r.status_code == 200 and r.json()["device"]["telemetry_count"] >= 10
    conf = api.get("/api/v1/devices/config", headers=key_headers(world.dev_a)).json()["configuration"]
    assert conf["k"]["value"] == "iso-a"
    assert api.get(f"/api/v1/groups/{world.group_a}", headers=world.a["headers"]).status_code == 200
