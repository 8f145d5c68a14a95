"""Shared fixtures: a real IoTFlow server on a free port with a temporary data directory."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import ADMIN_TOKEN, Server

ADMIN = {"Authorization": f"admin {ADMIN_TOKEN}"}
# Rate limits stay on in the shared server, set high enough that the suite never meets them (the real
# limits are tested on servers of their own in tests/api/test_ratelimits.py).
HIGH_RATE_LIMITS = {
    f"IOTFLOW_RATE_LIMIT_{name}": "1000000"
    for name in ("PER_MINUTE", "TELEMETRY", "HEARTBEAT", "LOGIN", "REGISTRATION")
}
_names = itertools.count(1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("iotflow"), **HIGH_RATE_LIMITS).start()
    yield srv
    srv.stop()
    # No request in the whole session may have produced a 500.
    assert "Internal server error" not in srv.log() and "Traceback" not in srv.log(), srv.log()


@pytest.fixture()
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def register(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    """Register a device with a unique name; returns the device object (with api_key)."""
    body = {"name": f"device-{next(_names)}", "device_type": "sensor", **fields}
    r = api.post("/api/v1/devices/register", json=body)
    assert r.status_code == 201, r.text
    return r.json()["device"]  # type: ignore[no-any-return]


@pytest.fixture()
def device(api: httpx.Client) -> dict[str, Any]:
    return register(api)


def key_headers(device: dict[str, Any]) -> dict[str, str]:
    return {"X-API-Key": device["api_key"]}


@pytest.fixture()
def tmp_data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def new_user(
    api: httpx.Client, *, admin: bool = False, password: str = "correct horse battery"
) -> dict[str, Any]:
    """Register a user with a unique name: {"user": User, "token", "headers", "password"}."""
    n = next(_names)
    r = api.post(
        "/api/v1/auth/register",
        json={"username": f"user{n}", "email": f"user{n}@example.com", "password": password},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    if admin:
        up = api.put(f"/api/v1/users/{body['user']['user_id']}", json={"is_admin": True}, headers=ADMIN)
        assert up.status_code == 200, up.text
        body["user"] = up.json()["user"]
    return {
        "user": body["user"],
        "token": body["token"],
        "headers": {"Authorization": f"Bearer {body['token']}"},
        "password": password,
    }
