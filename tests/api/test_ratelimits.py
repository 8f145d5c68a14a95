"""Rate limits (spec §9) on servers of their own, with the spec's defaults or deliberately low limits."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_metrics import scrape, value
from tests.conftest import ADMIN, key_headers
from tests.server import Server

RATE_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@contextmanager
def running(data_dir: Path, **env: str) -> Iterator[httpx.Client]:
    srv = Server(data_dir, **env).start()
    try:
        with srv.client() as client:
            yield client
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture(scope="module")
def low(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Telemetry 5/min and other calls 30/min; heartbeat, login and registration at their defaults."""
    with running(
        tmp_path_factory.mktemp("low"), IOTFLOW_RATE_LIMIT_TELEMETRY="5", IOTFLOW_RATE_LIMIT_PER_MINUTE="30"
    ) as client:
        yield client


def devices(client: httpx.Client, count: int) -> list[dict[str, Any]]:
    """Devices created in one admin bulk call (spends the admin's budget, not the IP's registrations)."""
    names = [f"rl-{time.monotonic_ns()}-{i}" for i in range(count)]
    r = client.post(
        "/api/v1/devices/bulk",
        json={"devices": [{"name": n, "device_type": "sensor"} for n in names]},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    return r.json()["created"]  # type: ignore[no-any-return]


def assert_limited(r: httpx.Response, limit: int, window: int) -> None:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["error"] == "Rate limit exceeded"
    assert body["message"] == f"Maximum {limit} requests per {window} seconds"
    assert body["limit"] == limit and body["window"] == window
    assert isinstance(body["retry_after"], int) and 1 <= body["retry_after"] <= window
    assert r.headers["retry-after"] == str(body["retry_after"])
    assert r.headers["x-ratelimit-limit"] == str(limit)
    assert r.headers["x-ratelimit-remaining"] == "0"
    reset = int(r.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + window + 1


def test_registration_is_limited_to_10_per_5_minutes_per_ip(tmp_path: Path) -> None:
    with running(tmp_path / "data") as client:
        before = time.time()
        for i in range(10):
            r = client.post("/api/v1/devices/register", json={"name": f"r{i}", "device_type": "sensor"})
            assert r.status_code == 201, r.text
            assert r.headers["x-ratelimit-limit"] == "10"
            assert r.headers["x-ratelimit-remaining"] == str(9 - i)
            assert before + 299 <= int(r.headers["x-ratelimit-reset"]) <= time.time() + 301
        r = client.post("/api/v1/devices/register", json={"name": "r10", "device_type": "sensor"})
        assert_limited(r, 10, 300)
        # per client IP: admin credentials do not lift it
        r = client.post("/api/v1/devices/register", json={"name": "r11", "device_type": "s"}, headers=ADMIN)
        assert_limited(r, 10, 300)
        # ...and it is a budget of its own: other calls still work
        r = client.get("/api/v1/devices", headers=ADMIN)
        assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "600"
        # health, status, root, schema and metrics are never limited
        for path in ("/health", "/status", "/", "/schema/openapi.json", "/metrics"):
            r = client.get(path, headers=ADMIN)
            assert r.status_code == 200, path
            assert not any(h in r.headers for h in RATE_HEADERS), path


def test_login_is_limited_per_ip(tmp_path: Path) -> None:
    with running(tmp_path / "data") as client:
        for i in range(10):
            r = client.post("/api/v1/auth/login", json={"username": f"nobody{i}", "password": "wrong-pass"})
            assert r.status_code == 401, r.text
            assert r.headers["x-ratelimit-limit"] == "10"
            assert r.headers["x-ratelimit-remaining"] == str(9 - i)
        r = client.post("/api/v1/auth/login", json={"username": "nobody", "password": "wrong-pass"})
        assert_limited(r, 10, 60)


def test_telemetry_is_limited_per_device(low: httpx.Client) -> None:
    one, two = devices(low, 2)
    paths = ["/api/v1/devices/telemetry", "/api/v1/telemetry", f"/api/v1/mqtt/telemetry/{one['id']}"]
    for i in range(5):  # every telemetry endpoint spends the same budget
        r = low.post(paths[i % 3], json={"data": {"t": i}}, headers=key_headers(one))
        assert r.status_code == 201, r.text
        assert r.headers["x-ratelimit-limit"] == "5"
        assert r.headers["x-ratelimit-remaining"] == str(4 - i)
    for path in paths:
        assert_limited(low.post(path, json={"data": {"t": 9}}, headers=key_headers(one)), 5, 60)
    # another device has a budget of its own
    r = low.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers=key_headers(two))
    assert r.status_code == 201 and r.headers["x-ratelimit-remaining"] == "4"
    # the limited device can still read (the general budget of its key)
    r = low.get("/api/v1/devices/status", headers=key_headers(one))
    assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "30"
    # nothing of the refused messages was stored, and the refusals are counted
    assert r.json()["device"]["telemetry_count"] == 5
    metrics = scrape(low)
    assert value(metrics, "iotflow_rate_limited_total", rule="telemetry") == 3
    assert value(metrics, "iotflow_telemetry_rejected_total", transport="http", reason="rate_limited") == 3


def test_heartbeat_is_limited_to_60_per_minute_per_device(low: httpx.Client) -> None:
    (dev,) = devices(low, 1)
    for i in range(60):
        r = low.post("/api/v1/devices/heartbeat", headers=key_headers(dev))
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-remaining"] == str(59 - i)
    assert_limited(low.post("/api/v1/devices/heartbeat", headers=key_headers(dev)), 60, 60)
    # heartbeats and telemetry are separate budgets
    r = low.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers=key_headers(dev))
    assert r.status_code == 201


def test_other_calls_are_limited_per_credential(low: httpx.Client) -> None:
    r = low.post(
        "/api/v1/auth/register",
        json={
            "username": f"rl{time.monotonic_ns()}",
            "email": f"rl{time.monotonic_ns()}@example.com",
            "password": "long enough",
        },
    )
    assert r.status_code == 201, r.text
    username = r.json()["user"]["username"]
    user = {"Authorization": f"Bearer {r.json()['token']}"}
    for i in range(30):
        r = low.get("/api/v1/devices", headers=user)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit"] == "30"
        assert r.headers["x-ratelimit-remaining"] == str(29 - i)
    assert_limited(low.get("/api/v1/devices", headers=user), 30, 60)
    assert_limited(low.get("/api/v1/users/me", headers=user), 30, 60)  # every endpoint, one budget
    # the budget is the user's, not the token's: a fresh login does not reset it
    r = low.post("/api/v1/auth/login", json={"username": username, "password": "long enough"})
    assert r.status_code == 200, r.text
    assert_limited(
        low.get("/api/v1/devices", headers={"Authorization": f"Bearer {r.json()['token']}"}), 30, 60
    )
    # other credentials are unaffected; error responses carry the headers too
    r = low.get("/api/v1/devices/999999", headers=ADMIN)
    assert r.status_code == 404 and r.headers["x-ratelimit-limit"] == "30"
    r = low.get("/api/v1/devices")  # anonymous: the client IP's budget
    assert r.status_code == 401 and r.headers["x-ratelimit-limit"] == "30"


def test_limits_can_be_turned_off(tmp_path: Path) -> None:
    env = {
        "IOTFLOW_RATE_LIMITS": "false",
        "IOTFLOW_RATE_LIMIT_REGISTRATION": "1",
        "IOTFLOW_RATE_LIMIT_TELEMETRY": "1",
        "IOTFLOW_RATE_LIMIT_PER_MINUTE": "1",
    }
    with running(tmp_path / "data", **env) as client:
        for i in range(3):
            r = client.post("/api/v1/devices/register", json={"name": f"off{i}", "device_type": "sensor"})
            assert r.status_code == 201, r.text
            assert not any(h in r.headers for h in RATE_HEADERS)
        dev = r.json()["device"]
        for _ in range(3):
            r = client.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers=key_headers(dev))
            assert r.status_code == 201 and "x-ratelimit-limit" not in r.headers
            assert client.get("/api/v1/devices", headers=ADMIN).status_code == 200


def test_keyless_telemetry_behind_a_local_proxy_spends_the_named_clients_budget(tmp_path: Path) -> None:
    """Behind a reverse proxy on the same host (X-Forwarded-For from 127.0.0.1, which the server trusts),
    a telemetry POST without a usable key spends the budget of the client the proxy names, not the
    proxy's own."""
    path = "/api/v1/devices/telemetry"
    with running(tmp_path / "data", IOTFLOW_RATE_LIMIT_TELEMETRY="2") as client:
        first = {"X-Forwarded-For": "203.0.113.7"}
        for remaining in ("1", "0"):
            r = client.post(path, json={"data": {"t": 1}}, headers=first)
            assert r.status_code == 401 and r.headers["x-ratelimit-remaining"] == remaining, r.text
        assert_limited(client.post(path, json={"data": {"t": 1}}, headers=first), 2, 60)
        r = client.post(path, json={"data": {"t": 1}}, headers={"X-Forwarded-For": "203.0.113.8"})
        assert r.status_code == 401 and r.headers["x-ratelimit-remaining"] == "1", r.text
