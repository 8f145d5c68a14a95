"""Alert rules, alerts and the alert stream (spec §7)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import ADMIN, key_headers, register
from tests.server import Server

T = TypeVar("T")
_ids = itertools.count(1)

RULE_FIELDS = {
    "id",
    "name",
    "user_id",
    "device_id",
    "group_id",
    "key",
    "operator",
    "threshold",
    "severity",
    "for_seconds",
    "enabled",
    "created_at",
    "updated_at",
}
ALERT_FIELDS = {
    "id",
    "rule_id",
    "device_id",
    "key",
    "value",
    "threshold",
    "operator",
    "severity",
    "state",
    "message",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
}


# ----- helpers ----------------------------------------------------------------------------------------


def new_user(api: httpx.Client) -> dict[str, str]:
    n = next(_ids)
    body = {"username": f"alerts-user-{n}-{time.time_ns()}", "email": f"al{n}-{time.time_ns()}@example.com"}
    r = api.post("/api/v1/auth/register", json={**body, "password": "password-123"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def user_pk(api: httpx.Client, headers: dict[str, str]) -> int:
    return int(api.get("/api/v1/users/me", headers=headers).json()["user"]["id"])


def owned_device(api: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    r = api.post(
        "/api/v1/devices/register",
        json={"name": f"alert-dev-{next(_ids)}-{time.time_ns()}", "device_type": "sensor"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return r.json()["device"]  # type: ignore[no-any-return]


def unique_key(base: str = "temperature") -> str:
    """A telemetry key of this test only: fleet-wide rules of other tests never see it."""
    return f"{base}_{next(_ids)}_{time.time_ns() % 1_000_000}"


def send(api: httpx.Client, device: dict[str, Any], **data: Any) -> None:
    r = api.post("/api/v1/devices/telemetry", json={"data": data}, headers=key_headers(device))
    assert r.status_code == 201, r.text


def make_rule(api: httpx.Client, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"operator": ">", "threshold": 30, **fields}
    r = api.post("/api/v1/alerts/rules", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["rule"]  # type: ignore[no-any-return]


def alerts(api: httpx.Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = api.get("/api/v1/alerts", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["alerts"]  # type: ignore[no-any-return]


def wait_for(fn: Callable[[], T | None], timeout: float = 1.0, step: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        time.sleep(step)


def alert_in(
    api: httpx.Client, headers: dict[str, str], rule: dict[str, Any], state: str, **params: Any
) -> Callable[[], dict[str, Any] | None]:
    """A probe for :func:`wait_for`: the caller's alert of ``rule`` in ``state``, or None."""

    def find() -> dict[str, Any] | None:
        found = [
            a for a in alerts(api, headers, **params) if a["rule_id"] == rule["id"] and a["state"] == state
        ]
        return found[0] if found else None

    return find


class SSE:
    """An open alert stream, read line by line (a read timeout fails the test instead of hanging)."""

    def __init__(self, server: Server, headers: dict[str, str], read_timeout: float = 5.0) -> None:
        self.client = httpx.Client(base_url=server.url, timeout=httpx.Timeout(10.0, read=read_timeout))
        self.cm = self.client.stream("GET", "/api/v1/alerts/stream", headers=headers)
        self.response = self.cm.__enter__()
        self.lines: Iterator[str] = self.response.iter_lines()

    def __enter__(self) -> SSE:
        assert self.response.status_code == 200
        assert self.response.headers["content-type"].startswith("text/event-stream")
        assert next(self.lines) == ": connected"  # subscribed from here on
        return self

    def __exit__(self, *exc: object) -> None:
        self.cm.__exit__(None, None, None)
        self.client.close()

    def next_event(self) -> tuple[str, dict[str, Any]]:
        event = None
        for line in self.lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event is not None:
                return event, json.loads(line[6:])
        raise AssertionError("stream ended")


# ----- rules: CRUD and validation ---------------------------------------------------------------------


def test_rule_crud(api: httpx.Client) -> None:
    user = new_user(api)
    dev = owned_device(api, user)
    r = api.post(
        "/api/v1/alerts/rules",
        json={
            "name": "Too hot <kitchen> & 'co'",
            "device_id": dev["id"],
            "key": "temperature",
            "operator": ">=",
            "threshold": 30.5,
            "severity": "critical",
            "for_seconds": 60,
        },
        headers=user,
    )
    assert r.status_code == 201, r.text
    rule = r.json()["rule"]
    assert set(rule) == RULE_FIELDS
    assert rule["name"] == "Too hot <kitchen> & 'co'" and rule["device_id"] == dev["id"]
    assert rule["group_id"] is None and rule["threshold"] == 30.5 and rule["severity"] == "critical"
    assert rule["for_seconds"] == 60 and rule["enabled"] is True and rule["created_at"].endswith("Z")
    assert rule["user_id"] == user_pk(api, user)

    got = api.get(f"/api/v1/alerts/rules/{rule['id']}", headers=user)
    assert got.status_code == 200 and got.json()["rule"] == rule

    # defaults: severity warning, for_seconds 0, enabled, a generated name; no device = all devices
    other = make_rule(api, user, key="humidity", operator="<", threshold=10)
    assert other["severity"] == "warning" and other["for_seconds"] == 0 and other["enabled"] is True
    assert other["name"] == "humidity < 10" and other["device_id"] is None

    listed = api.get("/api/v1/alerts/rules", headers=user).json()
    assert [x["id"] for x in listed["rules"]] == [rule["id"], other["id"]]
    assert listed["meta"] == {"total": 2, "limit": 100, "offset": 0}
    page = api.get("/api/v1/alerts/rules", params={"limit": 1, "offset": 1}, headers=user).json()
    assert [x["id"] for x in page["rules"]] == [other["id"]] and page["meta"]["total"] == 2
    by_device = api.get("/api/v1/alerts/rules", params={"device_id": dev["id"]}, headers=user).json()
    assert [x["id"] for x in by_device["rules"]] == [rule["id"]]

    # PUT changes what it names, keeps the rest
    r = api.put(f"/api/v1/alerts/rules/{rule['id']}", json={"threshold": 40, "enabled": False}, headers=user)
    assert r.status_code == 200, r.text
    updated = r.json()["rule"]
    assert updated["threshold"] == 40 and updated["enabled"] is False
    assert (
        updated["name"] == rule["name"] and updated["operator"] == ">=" and updated["device_id"] == dev["id"]
    )
    assert api.get(f"/api/v1/alerts/rules/{rule['id']}", headers=user).json()["rule"] == updated

    r = api.delete(f"/api/v1/alerts/rules/{rule['id']}", headers=user)
    assert r.status_code == 200
    assert api.get(f"/api/v1/alerts/rules/{rule['id']}", headers=user).status_code == 404
    assert api.delete(f"/api/v1/alerts/rules/{rule['id']}", headers=user).status_code == 404
    assert api.get("/api/v1/alerts/rules", headers=user).json()["meta"]["total"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"operator": ">", "threshold": 1}, "key"),
        ({"key": "", "operator": ">", "threshold": 1}, "key"),
        ({"key": "t", "operator": "=>", "threshold": 1}, "operator"),
        ({"key": "t", "threshold": 1}, "operator"),
        ({"key": "t", "operator": ">"}, "threshold"),
        ({"key": "t", "operator": ">", "threshold": "30"}, "threshold"),
        ({"key": "t", "operator": ">", "threshold": True}, "threshold"),
        ({"key": "t", "operator": ">", "threshold": 1, "severity": "fatal"}, "severity"),
        ({"key": "t", "operator": ">", "threshold": 1, "for_seconds": -1}, "for_seconds"),
        ({"key": "t", "operator": ">", "threshold": 1, "for_seconds": 1.5}, "for_seconds"),
        ({"key": "t", "operator": ">", "threshold": 1, "enabled": "yes"}, "enabled"),
        ({"key": "t", "operator": ">", "threshold": 1, "device_id": "1"}, "device_id"),
        ({"key": "t", "operator": ">", "threshold": 1, "name": ""}, "name"),
        ({"key": "t", "operator": ">", "threshold": 1, "name": "x" * 101}, "name"),
    ],
)
def test_rule_validation(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    r = api.post("/api/v1/alerts/rules", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["field"] == field


def test_rule_bad_requests_and_credentials(api: httpx.Client, device: dict[str, Any]) -> None:
    user = new_user(api)
    assert api.post("/api/v1/alerts/rules", content=b"{nope", headers=user).status_code == 400
    assert api.post("/api/v1/alerts/rules", json=[1], headers=user).status_code == 400
    # device_id and group_id together are ambiguous
    dev = owned_device(api, user)
    r = api.post(
        "/api/v1/alerts/rules",
        json={"key": "t", "operator": ">", "threshold": 1, "device_id": dev["id"], "group_id": 1},
        headers=user,
    )
    assert r.status_code == 400
    assert api.get("/api/v1/alerts/rules").status_code == 401
    assert api.get("/api/v1/alerts/rules", headers=key_headers(device)).status_code == 401
    assert api.get("/api/v1/alerts", headers=key_headers(device)).status_code == 401
    assert api.get("/api/v1/alerts/rules", headers={"Authorization": "Bearer nope"}).status_code == 401
    bad = {"key": "t", "operator": ">", "threshold": 1}
    r = api.put("/api/v1/alerts/rules/1", json=bad, headers={"Authorization": "admin wrong"})
    assert r.status_code == 403
    assert api.get("/api/v1/alerts/rules/999999999", headers=user).status_code == 404
    assert api.get("/api/v1/alerts/rules/99999999999999999999", headers=user).status_code in (400, 404)


def test_a_deleted_users_rules_and_alerts_go_with_them(api: httpx.Client) -> None:
    """Deleting a user deletes their devices, and now also their rules (fleet-wide ones included) and
    the alerts those raised: nothing of theirs stays in the admin's lists or keeps being evaluated."""
    user = new_user(api)
    dev = owned_device(api, user)
    key = unique_key()
    device_rule = make_rule(api, user, key=key, device_id=dev["id"])
    fleet_rule = make_rule(api, user, key=key)
    send(api, dev, **{key: 99})
    both = {device_rule["id"], fleet_rule["id"]}
    wait_for(lambda: {a["rule_id"] for a in alerts(api, ADMIN, device_id=dev["id"])} == both, timeout=5)
    public_id = api.get("/api/v1/users/me", headers=user).json()["user"]["user_id"]
    r = api.delete(f"/api/v1/users/{public_id}", headers=ADMIN)
    assert r.status_code == 200, r.text
    for rule in (device_rule, fleet_rule):
        assert api.get(f"/api/v1/alerts/rules/{rule['id']}", headers=ADMIN).status_code == 404
    listed = api.get("/api/v1/alerts/rules", params={"limit": 1000}, headers=ADMIN).json()["rules"]
    assert not {device_rule["id"], fleet_rule["id"]} & {r["id"] for r in listed}
    assert not [
        a for a in alerts(api, ADMIN, limit=1000) if a["rule_id"] in (device_rule["id"], fleet_rule["id"])
    ]


def test_rule_ownership(api: httpx.Client) -> None:
    alice, bob = new_user(api), new_user(api)
    alice_dev = owned_device(api, alice)
    unowned = register(api)
    rule = make_rule(api, alice, key="temperature", device_id=alice_dev["id"])

    # a rule over someone else's device, an ownerless one, or one that does not exist: 400
    for device_id in (alice_dev["id"], unowned["id"], 987654321):
        r = api.post(
            "/api/v1/alerts/rules",
            json={"key": "t", "operator": ">", "threshold": 1, "device_id": device_id},
            headers=bob,
        )
        assert r.status_code == 400, r.text
        assert r.json()["details"][0]["field"] == "device_id"
    # moving one's own rule onto someone else's device is refused the same way
    bob_rule = make_rule(api, bob, key="t")
    r = api.put(f"/api/v1/alerts/rules/{bob_rule['id']}", json={"device_id": alice_dev["id"]}, headers=bob)
    assert r.status_code == 400
    # someone else's group
    g = api.post("/api/v1/groups", json={"name": f"g-{time.time_ns()}"}, headers=alice)
    assert g.status_code == 201, g.text
    r = api.post(
        "/api/v1/alerts/rules",
        json={"key": "t", "operator": ">", "threshold": 1, "group_id": g.json()["group"]["id"]},
        headers=bob,
    )
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "group_id"

    # someone else's rule: 403 on every verb; own list never shows it
    path = f"/api/v1/alerts/rules/{rule['id']}"
    assert api.get(path, headers=bob).status_code == 403
    assert api.put(path, json={"threshold": 1}, headers=bob).status_code == 403
    assert api.delete(path, headers=bob).status_code == 403
    assert [x["id"] for x in api.get("/api/v1/alerts/rules", headers=bob).json()["rules"]] == [bob_rule["id"]]

    # admin: sees and changes everything; may watch any existing device, not a missing one
    assert api.get(path, headers=ADMIN).status_code == 200
    all_ids = set()
    offset = 0
    while True:
        page = api.get("/api/v1/alerts/rules", params={"limit": 1000, "offset": offset}, headers=ADMIN).json()
        all_ids |= {x["id"] for x in page["rules"]}
        offset += 1000
        if offset >= page["meta"]["total"]:
            break
    assert {rule["id"], bob_rule["id"]} <= all_ids
    admin_rule = make_rule(api, ADMIN, key="t", device_id=unowned["id"])
    assert admin_rule["user_id"] is None
    r = api.post(
        "/api/v1/alerts/rules",
        json={"key": "t", "operator": ">", "threshold": 1, "device_id": 987654321},
        headers=ADMIN,
    )
    assert r.status_code == 400
    # a rule of the admin token is nobody's: users get 403
    assert api.get(f"/api/v1/alerts/rules/{admin_rule['id']}", headers=alice).status_code == 403
    assert api.delete(f"/api/v1/alerts/rules/{admin_rule['id']}", headers=ADMIN).status_code == 200


# ----- evaluation ---------------------------------------------------------------------------------------


def test_alert_opens_streams_and_resolves(api: httpx.Client, server: Server) -> None:
    user = new_user(api)
    dev = owned_device(api, user)
    key = unique_key()
    rule = make_rule(api, user, name="Too hot", key=key, device_id=dev["id"], severity="critical")
    with SSE(server, user) as stream:
        send(api, dev, **{key: 25})  # below: nothing
        send(api, dev, **{key: 35.5, "other": 99})
        opened = wait_for(alert_in(api, user, rule, "open"), timeout=1.0)
        assert set(opened) == ALERT_FIELDS
        assert opened["device_id"] == dev["id"] and opened["key"] == key and opened["value"] == 35.5
        assert opened["threshold"] == 30 and opened["operator"] == ">" and opened["severity"] == "critical"
        assert opened["acknowledged_at"] is None and opened["resolved_at"] is None
        assert "Too hot" in opened["message"] and opened["opened_at"].endswith("Z")

        event, data = stream.next_event()
        assert event == "alert" and data["change"] == "opened"
        assert {k: v for k, v in data.items() if k != "change"} == opened

        send(api, dev, **{key: 36})  # still above: the same alert, no second one
        send(api, dev, **{key: 20})
        resolved = wait_for(alert_in(api, user, rule, "resolved"), timeout=1.0)
        assert resolved["id"] == opened["id"] and resolved["value"] == 35.5
        assert resolved["resolved_at"] is not None
        event, data = stream.next_event()
        assert event == "alert" and data["change"] == "resolved" and data["id"] == opened["id"]
        assert data["state"] == "resolved"
    assert len(alerts(api, user, device_id=dev["id"])) == 1

    events = api.get(
        "/api/v1/events", params={"type": "alert.*", "device_id": dev["id"]}, headers=user
    ).json()
    types = [e["type"] for e in events["events"]]
    assert types == ["alert.resolved", "alert.opened"]
    assert events["events"][1]["details"]["alert_id"] == opened["id"]
    assert events["events"][0]["details"]["resolved_value"] == 20


def test_equality_and_non_numeric_values(api: httpx.Client) -> None:
    user = new_user(api)
    dev = owned_device(api, user)
    key = unique_key("mode")
    rule = make_rule(api, user, key=key, operator="==", threshold=1, device_id=dev["id"])
    send(api, dev, **{key: True})  # a bool is not a number
    send(api, dev, **{key: "1"})  # nor is a string
    send(api, dev, **{key: {"a": 1}})
    time.sleep(0.3)
    assert alerts(api, user, device_id=dev["id"]) == []
    send(api, dev, **{key: 1})  # an int equal to the float threshold
    wait_for(alert_in(api, user, rule, "open"))
    send(api, dev, **{key: "off"})  # a non-number does not resolve either
    time.sleep(0.3)
    assert [a["state"] for a in alerts(api, user, device_id=dev["id"])] == ["open"]
    send(api, dev, **{key: 2.0})
    wait_for(alert_in(api, user, rule, "resolved"))


def test_for_seconds(api: httpx.Client) -> None:
    user = new_user(api)
    dev = owned_device(api, user)
    key = unique_key()
    rule = make_rule(api, user, key=key, device_id=dev["id"], for_seconds=1)

    # a value that stops holding before the time is up never opens an alert
    send(api, dev, **{key: 40})
    time.sleep(0.5)
    send(api, dev, **{key: 10})
    time.sleep(0.9)
    assert alerts(api, user, device_id=dev["id"]) == []

    # held for the whole second: opens, also without a further reading
    started = time.monotonic()
    send(api, dev, **{key: 40})
    time.sleep(0.5)
    send(api, dev, **{key: 41})
    assert alerts(api, user, device_id=dev["id"]) == []
    opened = wait_for(alert_in(api, user, rule, "open"), timeout=2.0)
    assert time.monotonic() - started >= 1.0
    assert opened["value"] == 41
    send(api, dev, **{key: 0})
    wait_for(alert_in(api, user, rule, "resolved"))


def test_spike_inside_one_batch(api: httpx.Client) -> None:
    """A batch counts as one instant: its latest reading decides the state, but a spike is kept."""
    user = new_user(api)
    dev = owned_device(api, user)
    key = unique_key()
    rule = make_rule(api, user, key=key, device_id=dev["id"])
    now = int(time.time() * 1000)

    def batch(*values: tuple[float, int]) -> None:
        body = {"batch": [{"data": {key: v}, "timestamp": now + dt} for v, dt in values]}
        r = api.post("/api/v1/devices/telemetry", json=body, headers=key_headers(dev))
        assert r.status_code == 201, r.text

    batch((35, -3000), (20, -2000))  # spike then back to normal: opened and resolved at once
    spike = wait_for(alert_in(api, user, rule, "resolved"))
    assert spike["value"] == 35
    batch((20, -1500), (50, -1000), (45, -500))  # latest above: open, with the latest matching value
    opened = wait_for(alert_in(api, user, rule, "open"))
    assert opened["value"] == 45
    batch((10, -100), (60, -200))  # out of order: the latest timestamp (10) wins -> resolved
    wait_for(lambda: all(a["state"] == "resolved" for a in alerts(api, user, device_id=dev["id"])))
    assert len(alerts(api, user, device_id=dev["id"])) == 2


def test_acknowledge_and_resolve(api: httpx.Client, server: Server) -> None:
    user, other = new_user(api), new_user(api)
    dev = owned_device(api, user)
    key = unique_key()
    rule = make_rule(api, user, key=key, device_id=dev["id"])
    send(api, dev, **{key: 31})
    alert = wait_for(alert_in(api, user, rule, "open"))
    base = f"/api/v1/alerts/{alert['id']}"

    assert api.post(base + "/acknowledge", headers=other).status_code == 403
    assert api.post(base + "/resolve", headers=other).status_code == 403
    assert api.post("/api/v1/alerts/999999999/acknowledge", headers=user).status_code == 404
    with SSE(server, user) as stream:
        r = api.post(base + "/acknowledge", headers=user)
        assert r.status_code == 200, r.text
        acked = r.json()["alert"]
        assert acked["state"] == "acknowledged" and acked["acknowledged_at"] is not None
        _, data = stream.next_event()
        assert data["change"] == "acknowledged" and data["id"] == alert["id"]
    again = api.post(base + "/acknowledge", headers=user)
    assert again.status_code == 409 and again.json()["error"] == "Alert already acknowledged"

    # an acknowledged alert still resolves itself
    send(api, dev, **{key: 5})
    wait_for(alert_in(api, user, rule, "resolved"))
    r = api.post(base + "/resolve", headers=user)
    assert r.status_code == 409 and r.json()["error"] == "Alert already resolved"
    assert api.post(base + "/acknowledge", headers=user).status_code == 409

    # resolving by hand (admin may too); a later matching value opens a new alert
    send(api, dev, **{key: 32})
    second = wait_for(alert_in(api, user, rule, "open"))
    assert second["id"] != alert["id"]
    r = api.post(f"/api/v1/alerts/{second['id']}/resolve", headers=ADMIN)
    assert r.status_code == 200 and r.json()["alert"]["state"] == "resolved"
    send(api, dev, **{key: 33})
    third = wait_for(alert_in(api, user, rule, "open"))
    assert third["id"] not in (alert["id"], second["id"])

    types = [
        e["type"]
        for e in api.get(
            "/api/v1/events", params={"type": "alert.*", "device_id": dev["id"]}, headers=user
        ).json()["events"]
    ]
    assert types.count("alert.acknowledged") == 1 and types.count("alert.opened") == 3
    assert types.count("alert.resolved") == 2


def test_group_rules(api: httpx.Client) -> None:
    user = new_user(api)
    inside, outside = owned_device(api, user), owned_device(api, user)
    g = api.post("/api/v1/groups", json={"name": f"grp-{time.time_ns()}"}, headers=user)
    assert g.status_code == 201, g.text
    group_id = g.json()["group"]["id"]
    r = api.post(f"/api/v1/groups/{group_id}/devices", json={"device_id": inside["id"]}, headers=user)
    assert r.status_code == 200, r.text
    key = unique_key()
    rule = make_rule(api, user, key=key, group_id=group_id)
    assert rule["group_id"] == group_id and rule["device_id"] is None
    send(api, outside, **{key: 99})
    send(api, inside, **{key: 99})
    opened = wait_for(alert_in(api, user, rule, "open"))
    assert opened["device_id"] == inside["id"]
    time.sleep(0.2)
    assert [a["device_id"] for a in alerts(api, user) if a["rule_id"] == rule["id"]] == [inside["id"]]


def test_all_devices_rules(api: httpx.Client) -> None:
    alice, bob = new_user(api), new_user(api)
    a1, a2, b1 = owned_device(api, alice), owned_device(api, alice), owned_device(api, bob)
    unowned = register(api)
    key = unique_key()
    rule = make_rule(api, alice, key=key)  # all of alice's devices
    for dev in (a1, a2, b1, unowned):
        send(api, dev, **{key: 50})
    wait_for(
        lambda: (
            {a["device_id"] for a in alerts(api, alice) if a["rule_id"] == rule["id"]} == {a1["id"], a2["id"]}
        )
    )
    time.sleep(0.2)
    assert alerts(api, bob) == []
    assert len([a for a in alerts(api, alice) if a["rule_id"] == rule["id"]]) == 2

    # the admin token's unscoped rule watches every device, owned or not
    fleet = make_rule(api, ADMIN, key=key, threshold=45, severity="info")
    for dev in (a1, b1, unowned):
        send(api, dev, **{key: 51})

    def fleet_devices() -> set[int]:
        return {
            a["device_id"]
            for a in alerts(api, ADMIN, severity="info", limit=1000)
            if a["rule_id"] == fleet["id"]
        }

    wait_for(lambda: fleet_devices() == {a1["id"], b1["id"], unowned["id"]})
    # alerts belong to the device's owner: bob sees the fleet rule's alert on his device, not others
    assert [(a["device_id"], a["rule_id"]) for a in alerts(api, bob)] == [(b1["id"], fleet["id"])]
    assert api.delete(f"/api/v1/alerts/rules/{fleet['id']}", headers=ADMIN).status_code == 200
    assert alerts(api, bob) == []  # deleted with their rule


def test_alert_visibility_and_filters(api: httpx.Client, server: Server) -> None:
    alice, bob = new_user(api), new_user(api)
    a_dev, a_dev2 = owned_device(api, alice), owned_device(api, alice)
    key = unique_key()
    warn = make_rule(api, alice, key=key, device_id=a_dev["id"], severity="warning")
    crit = make_rule(api, alice, key=key, device_id=a_dev2["id"], threshold=10, severity="critical")
    with SSE(server, bob) as bob_stream, SSE(server, ADMIN) as admin_stream:
        send(api, a_dev, **{key: 40})
        send(api, a_dev2, **{key: 40})
        wait_for(alert_in(api, alice, warn, "open"))
        wait_for(alert_in(api, alice, crit, "open"))
        seen: set[int] = set()
        while seen != {warn["id"], crit["id"]}:  # (the admin sees every alert of the server)
            seen.add(admin_stream.next_event()[1]["rule_id"])
        # bob's stream stays silent about alice's alerts: the next thing he gets is his own alert
        bob_dev = owned_device(api, bob)
        bob_rule = make_rule(api, bob, key=key, device_id=bob_dev["id"])
        send(api, bob_dev, **{key: 99})
        assert bob_stream.next_event()[1]["rule_id"] == bob_rule["id"]

    assert [a["rule_id"] for a in alerts(api, bob)] == [bob_rule["id"]]
    assert alerts(api, bob, device_id=a_dev["id"]) == []
    assert (
        api.post(
            f"/api/v1/alerts/{alerts(api, alice, device_id=a_dev['id'])[0]['id']}/acknowledge", headers=bob
        ).status_code
        == 403
    )
    admin_ids = {a["id"] for a in alerts(api, ADMIN, limit=1000)}
    assert {a["id"] for a in alerts(api, alice)} <= admin_ids

    # filters
    assert [a["rule_id"] for a in alerts(api, alice, severity="critical")] == [crit["id"]]
    assert len(alerts(api, alice, severity="critical,warning")) == 2
    assert [a["rule_id"] for a in alerts(api, alice, device_id=a_dev["id"])] == [warn["id"]]
    assert alerts(api, alice, state="resolved") == []
    send(api, a_dev, **{key: 0})
    wait_for(alert_in(api, alice, warn, "resolved"))
    assert [a["rule_id"] for a in alerts(api, alice, state="open")] == [crit["id"]]
    assert len(alerts(api, alice, state="open,resolved")) == 2
    assert len(alerts(api, alice, start_time="-1h")) == 2
    assert alerts(api, alice, end_time="-1h") == []
    assert alerts(api, alice, start_time="2000-01-01T00:00:00Z", end_time="2000-01-02T00:00:00Z") == []
    page = api.get("/api/v1/alerts", params={"limit": 1, "offset": 1}, headers=alice).json()
    assert len(page["alerts"]) == 1 and page["meta"] == {"total": 2, "limit": 1, "offset": 1}
    newest_first = alerts(api, alice)
    assert newest_first[0]["opened_at"] >= newest_first[1]["opened_at"]
    for params in (
        {"state": "closed"},
        {"severity": "fatal"},
        {"device_id": "x"},
        {"limit": "0"},
        {"limit": "1001"},
        {"offset": "-1"},
        {"start_time": "yesterday"},
        {"start_time": "now", "end_time": "-1h"},
    ):
        assert api.get("/api/v1/alerts", params=params, headers=alice).status_code == 400, params


def test_rule_changes_resolve_open_alerts(api: httpx.Client) -> None:
    user = new_user(api)
    dev = owned_device(api, user)
    key = unique_key()
    rule = make_rule(api, user, key=key, device_id=dev["id"])
    send(api, dev, **{key: 35})
    first = wait_for(alert_in(api, user, rule, "open"))
    # renaming keeps the alert open
    api.put(
        f"/api/v1/alerts/rules/{rule['id']}", json={"name": "renamed", "severity": "critical"}, headers=user
    )
    time.sleep(0.1)
    assert alerts(api, user, device_id=dev["id"])[0]["state"] == "open"
    # a new threshold resolves it; the next reading is judged by the new condition
    api.put(f"/api/v1/alerts/rules/{rule['id']}", json={"threshold": 34}, headers=user)
    assert wait_for(alert_in(api, user, rule, "resolved"))["id"] == first["id"]
    send(api, dev, **{key: 35})
    second = wait_for(alert_in(api, user, rule, "open"))
    assert second["severity"] == "critical" and second["threshold"] == 34
    # disabling resolves too, and a disabled rule fires no more
    api.put(f"/api/v1/alerts/rules/{rule['id']}", json={"enabled": False}, headers=user)
    wait_for(lambda: all(a["state"] == "resolved" for a in alerts(api, user, device_id=dev["id"])))
    send(api, dev, **{key: 99})
    time.sleep(0.3)
    assert len(alerts(api, user, device_id=dev["id"])) == 2
    reasons = [
        e["details"].get("reason")
        for e in api.get(
            "/api/v1/events", params={"type": "alert.resolved", "device_id": dev["id"]}, headers=user
        ).json()["events"]
    ]
    assert reasons == ["rule disabled or deleted", "rule changed"]


def test_open_alerts_survive_a_restart(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", IOTFLOW_RATE_LIMITS="false").start()
    try:
        with srv.client() as api:
            user = new_user(api)
            dev = owned_device(api, user)
            rule = make_rule(api, user, key="temperature", device_id=dev["id"])
            send(api, dev, temperature=35)
            opened = wait_for(alert_in(api, user, rule, "open"))
        srv.stop()
        srv.start()
        with srv.client() as api:
            send(api, dev, temperature=36)  # still the same alert, not a second one
            time.sleep(0.3)
            assert [a["id"] for a in alerts(api, user)] == [opened["id"]]
            send(api, dev, temperature=10)  # and it resolves: its state came back
            resolved = wait_for(alert_in(api, user, rule, "resolved"))
            assert resolved["id"] == opened["id"]
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_deleting_a_device_removes_its_alerts_and_rules(api: httpx.Client) -> None:
    owner = new_user(api)
    dev = api.post(
        "/api/v1/devices/register", json={"name": "doomed", "device_type": "x"}, headers=owner
    ).json()["device"]
    rule = {"name": "hot", "device_id": dev["id"], "key": "t", "operator": ">", "threshold": 1}
    r = api.post("/api/v1/alerts/rules", json=rule, headers=owner)
    assert r.status_code == 201
    assert (
        api.post("/api/v1/devices/telemetry", json={"data": {"t": 5}}, headers=key_headers(dev)).status_code
        == 201
    )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        alerts = api.get("/api/v1/alerts", headers=owner).json()["alerts"]
        if alerts:
            break
        time.sleep(0.05)
    assert [a["device_id"] for a in alerts] == [dev["id"]]
    assert api.delete(f"/api/v1/devices/{dev['id']}", headers=owner).status_code == 200
    assert api.get("/api/v1/alerts", headers=owner).json()["alerts"] == []
    rules = api.get("/api/v1/alerts/rules", headers=owner).json()
    assert rules.get("rules", rules) == []
