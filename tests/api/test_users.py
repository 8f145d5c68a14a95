"""Users and sessions (spec §1), and device ownership at registration (spec §2)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN, key_headers, new_user, register
from tests.server import Server

USER_FIELDS = {"id", "user_id", "username", "email", "is_active", "is_admin", "created_at", "last_login"}


def test_register_login_me(api: httpx.Client) -> None:
    r = api.post(
        "/api/v1/auth/register",
        json={"username": "ann.o-b_1", "email": "Ann@Example.com", "password": "s3cret-enough"},
    )
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "success" and body["message"] == "Registration successful" and body["token"]
    user = body["user"]
    assert set(user) == USER_FIELDS and len(user["user_id"]) == 32 and int(user["user_id"], 16) >= 0
    assert user["is_admin"] is False and user["is_active"] is True and user["last_login"] is None
    for login in ("ann.o-b_1", "ann@example.com", "ANN.O-B_1"):
        r = api.post("/api/v1/auth/login", json={"username": login, "password": "s3cret-enough"})
        assert r.status_code == 200, login
        out = r.json()
        assert (
            out["token_type"] == "bearer"
            and out["expires_in"] == 86400
            and out["message"] == "Login successful"
        )
        assert out["user"]["last_login"] is not None
    me = api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {out['token']}"}).json()
    assert me["user"]["username"] == "ann.o-b_1" and "password" not in str(me) and "hash" not in str(me)


def test_register_validation_and_conflicts(api: httpx.Client) -> None:
    u = new_user(api)["user"]
    url = "/api/v1/auth/register"
    for body, field in (
        ({"username": "ab", "email": "x@y.io", "password": "longenough"}, "username"),
        ({"username": "has space", "email": "x@y.io", "password": "longenough"}, "username"),
        ({"username": "okname", "email": "not-an-email", "password": "longenough"}, "email"),
        ({"username": "okname", "email": "x@y.io", "password": "short"}, "password"),
        ({"username": "okname", "email": "x@y.io"}, "password"),
    ):
        r = api.post(url, json=body)
        assert r.status_code == 400 and r.json()["details"][0]["field"] == field, body
    r = api.post(url, json={"username": u["username"].upper(), "email": "new@x.io", "password": "longenough"})
    assert r.status_code == 409 and r.json()["error"] == "Username already exists"
    r = api.post(url, json={"username": "brandnew", "email": u["email"].upper(), "password": "longenough"})
    assert r.status_code == 409 and r.json()["error"] == "Email already exists"


def test_wrong_credentials(api: httpx.Client) -> None:
    u = new_user(api)
    for body in (
        {"username": u["user"]["username"], "password": "wrong password"},
        {"username": "nobody-at-all", "password": "whatever123"},
    ):
        r = api.post("/api/v1/auth/login", json=body)
        assert r.status_code == 401 and r.json()["error"] == "Authentication failed"
    assert api.post("/api/v1/auth/login", json={"username": "x"}).status_code == 400
    for header in ("Bearer nonsense", "Bearer", "Bearer a.b.c"):
        r = api.get("/api/v1/users/me", headers={"Authorization": header})
        assert r.status_code == 401 and r.json()["error"] in ("Invalid token", "Authentication required"), (
            header
        )
    assert api.get("/api/v1/users/me").status_code == 401


def test_logout_revokes_the_token(api: httpx.Client) -> None:
    u = new_user(api)
    assert api.get("/api/v1/users/me", headers=u["headers"]).status_code == 200
    assert api.post("/api/v1/auth/logout", headers=u["headers"]).status_code == 200
    r = api.get("/api/v1/users/me", headers=u["headers"])
    assert r.status_code == 401 and r.json()["error"] == "Invalid token"
    # a fresh login works
    r = api.post("/api/v1/auth/login", json={"username": u["user"]["username"], "password": u["password"]})
    assert (
        api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {r.json()['token']}"}).status_code
        == 200
    )


def test_update_me_and_preferences(api: httpx.Client) -> None:
    u = new_user(api)
    h = u["headers"]
    r = api.put("/api/v1/users/me", json={"email": "changed@example.org"}, headers=h)
    assert r.status_code == 200 and r.json()["user"]["email"] == "changed@example.org"
    assert api.put("/api/v1/users/me", json={"password": "new password 1"}, headers=h).status_code == 400
    r = api.put(
        "/api/v1/users/me", json={"password": "new password 1", "current_password": u["password"]}, headers=h
    )
    assert r.status_code == 200
    login = {"username": u["user"]["username"], "password": "new password 1"}
    assert api.post("/api/v1/auth/login", json=login).status_code == 200
    assert api.put("/api/v1/users/me", json={"is_admin": True}, headers=h).status_code == 403
    assert api.put("/api/v1/users/me", json={}, headers=h).status_code == 400
    assert api.get("/api/v1/users/me/preferences", headers=h).json() == {"preferences": {}}
    prefs = {"theme": "dark", "units": {"temp": "C"}, "note": "<b>O'Brien</b>"}
    assert api.put("/api/v1/users/me/preferences", json=prefs, headers=h).json() == {"preferences": prefs}
    assert api.get("/api/v1/users/me/preferences", headers=h).json() == {"preferences": prefs}
    assert api.put("/api/v1/users/me/preferences", json=[1], headers=h).status_code == 400
    big = {"x": "y" * (65 * 1024)}
    assert api.put("/api/v1/users/me/preferences", json=big, headers=h).status_code == 400


def test_admin_user_management(api: httpx.Client) -> None:
    u = new_user(api)
    other = new_user(api)
    uid = u["user"]["user_id"]
    assert api.get("/api/v1/users", headers=u["headers"]).status_code == 403
    listed = api.get("/api/v1/users", params={"limit": 1000}, headers=ADMIN).json()
    assert uid in [x["user_id"] for x in listed["users"]] and listed["meta"]["total"] >= 2
    assert api.get(f"/api/v1/users/{uid}", headers=u["headers"]).status_code == 200
    assert api.get(f"/api/v1/users/{uid}", headers=other["headers"]).status_code == 403
    assert api.get("/api/v1/users/" + "0" * 32, headers=ADMIN).status_code == 404
    # deactivation: login refused, existing tokens refused
    r = api.patch(f"/api/v1/users/{uid}/deactivate", headers=ADMIN)
    assert r.status_code == 200 and r.json()["user"]["is_active"] is False
    assert api.patch(f"/api/v1/users/{uid}/deactivate", headers=u["headers"]).status_code in (401, 403)
    r = api.post("/api/v1/auth/login", json={"username": u["user"]["username"], "password": u["password"]})
    assert r.status_code == 403 and r.json()["error"] == "Account inactive"
    time.sleep(5.1)  # the per-process user cache trusts a user for at most 5 s
    assert api.get("/api/v1/users/me", headers=u["headers"]).status_code == 403
    assert api.patch(f"/api/v1/users/{uid}/activate", headers=ADMIN).status_code == 200
    r = api.post("/api/v1/auth/login", json={"username": u["user"]["username"], "password": u["password"]})
    assert r.status_code == 200
    # an admin user can manage others
    boss = new_user(api, admin=True)
    assert boss["user"]["is_admin"] is True
    assert api.get("/api/v1/users", headers=boss["headers"]).status_code == 200
    r = api.put(
        f"/api/v1/users/{other['user']['user_id']}",
        json={"username": "renamed_by_boss"},
        headers=boss["headers"],
    )
    assert r.status_code == 200 and r.json()["user"]["username"] == "renamed_by_boss"


def test_delete_user_removes_their_devices(api: httpx.Client) -> None:
    u = new_user(api)
    r = api.post("/api/v1/devices/register", json={"name": "mine", "device_type": "x"}, headers=u["headers"])
    dev = r.json()["device"]
    assert (
        api.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers=key_headers(dev)).status_code
        == 201
    )
    r = api.delete(f"/api/v1/users/{u['user']['user_id']}", headers=u["headers"])
    assert r.status_code == 200 and r.json()["devices_deleted"] == 1
    assert api.get(f"/api/v1/devices/{dev['id']}", headers=ADMIN).status_code == 404
    assert api.get("/api/v1/devices/status", headers=key_headers(dev)).status_code == 401
    assert api.get("/api/v1/users/me", headers=u["headers"]).status_code == 401


def test_registration_ownership(api: httpx.Client) -> None:
    u = new_user(api)
    r = api.post(
        "/api/v1/devices/register", json={"name": "by-token", "device_type": "x"}, headers=u["headers"]
    )
    assert r.status_code == 201
    dev = r.json()["device"]
    assert dev["user_id"] == u["user"]["id"]
    assert dev["owner"] == {"username": u["user"]["username"], "email": u["user"]["email"]}
    r = api.post(
        "/api/v1/devices/register",
        json={"name": "by-body", "device_type": "x", "user_id": u["user"]["user_id"]},
    )
    assert r.status_code == 201 and r.json()["device"]["user_id"] == u["user"]["id"]
    r = api.post("/api/v1/devices/register", json={"name": "bad", "device_type": "x", "user_id": "f" * 32})
    assert r.status_code == 401
    assert r.json() == {"error": "Authentication failed", "message": "Invalid user_id or user is not active"}
    # the same name is fine for another owner, not for the same one
    other = new_user(api)
    assert (
        api.post(
            "/api/v1/devices/register",
            json={"name": "by-token", "device_type": "x"},
            headers=other["headers"],
        ).status_code
        == 201
    )
    assert (
        api.post(
            "/api/v1/devices/register", json={"name": "by-token", "device_type": "x"}, headers=u["headers"]
        ).status_code
        == 409
    )
    creds = api.get("/api/v1/devices/credentials", headers=key_headers(dev)).json()["device"]
    assert creds["owner"] == {"username": u["user"]["username"], "user_id": u["user"]["user_id"]}
    mine = api.get(f"/api/v1/devices/user/{u['user']['user_id']}", headers=u["headers"]).json()
    assert mine["total_devices"] == 2 and {d["name"] for d in mine["devices"]} == {"by-token", "by-body"}
    assert (
        api.get(f"/api/v1/devices/user/{u['user']['user_id']}", headers=other["headers"]).status_code == 403
    )
    listed = api.get("/api/v1/devices", headers=u["headers"]).json()
    assert {d["name"] for d in listed["devices"]} == {"by-token", "by-body"}


def test_bulk_registration(api: httpx.Client) -> None:
    u = new_user(api)
    body = {
        "devices": [
            {"name": "b1", "device_type": "x"},
            {"name": "b1", "device_type": "x"},
            {"device_type": "x"},
            "nope",
            {"name": "b2", "device_type": "y"},
        ]
    }
    r = api.post("/api/v1/devices/bulk", json=body, headers=u["headers"])
    assert r.status_code == 201
    out = r.json()
    assert [d["name"] for d in out["created"]] == ["b1", "b2"]
    assert all(len(d["api_key"]) == 32 and d["user_id"] == u["user"]["id"] for d in out["created"])
    assert [e["index"] for e in out["errors"]] == [1, 2, 3]
    assert out["errors"][0]["error"] == "Device name already exists"
    assert api.post("/api/v1/devices/bulk", json=body).status_code == 401
    assert api.post("/api/v1/devices/bulk", json={"devices": []}, headers=u["headers"]).status_code == 400


def test_user_telemetry(api: httpx.Client) -> None:
    u = new_user(api)
    devs = [
        api.post(
            "/api/v1/devices/register", json={"name": f"ut{i}", "device_type": "x"}, headers=u["headers"]
        ).json()["device"]
        for i in range(2)
    ]
    now = int(time.time() * 1000)
    for i, d in enumerate(devs):
        api.post(
            "/api/v1/devices/telemetry",
            json={"data": {"v": i}, "timestamp": now - i * 1000},
            headers=key_headers(d),
        )
    url = f"/api/v1/telemetry/user/{u['user']['user_id']}"
    body = api.get(url, headers=u["headers"]).json()
    assert body["count"] == 2 and body["total_count"] == 2
    assert [(r["device_id"], r["v"]) for r in body["telemetry"]] == [(devs[0]["id"], 0), (devs[1]["id"], 1)]
    assert api.get(url, headers=key_headers(devs[1])).status_code == 200
    stranger = register(api)
    assert api.get(url, headers=key_headers(stranger)).status_code == 403
    assert api.get(url, headers=new_user(api)["headers"]).status_code == 403
    assert api.get(url, headers=ADMIN).status_code == 200


def test_token_expiry_and_closed_registration(tmp_path: Path) -> None:
    srv = Server(
        tmp_path / "d",
        IOTFLOW_TOKEN_TTL="2",
        IOTFLOW_USER_REGISTRATION="false",
        IOTFLOW_DEVICE_REGISTRATION="authenticated",
    ).start()
    try:
        with srv.client() as c:
            r = c.post(
                "/api/v1/auth/register", json={"username": "zed", "email": "z@x.io", "password": "longenough"}
            )
            assert r.status_code == 403
            assert (
                c.post("/api/v1/devices/register", json={"name": "n", "device_type": "x"}).status_code == 401
            )
            admin = {"Authorization": f"admin {srv.env['IOTFLOW_ADMIN_TOKEN']}"}
            assert (
                c.post(
                    "/api/v1/devices/register", json={"name": "n", "device_type": "x"}, headers=admin
                ).status_code
                == 201
            )
        srv.stop()
        import subprocess
        import sys

        subprocess.run(
            [
                sys.executable,
                "-m",
                "iotflow",
                "users",
                "create",
                "zed",
                "--email",
                "z@x.io",
                "--password-stdin",
            ],
            input="longenough\n",
            text=True,
            env=srv.env,
            check=True,
            capture_output=True,
        )
        srv.start()
        with srv.client() as c:
            r = c.post("/api/v1/auth/login", json={"username": "zed", "password": "longenough"})
            assert r.status_code == 200 and r.json()["expires_in"] == 2
            h = {"Authorization": f"Bearer {r.json()['token']}"}
            assert c.get("/api/v1/users/me", headers=h).status_code == 200
            assert (
                c.post(
                    "/api/v1/devices/register", json={"name": "m", "device_type": "x"}, headers=h
                ).status_code
                == 201
            )
            time.sleep(3.1)
            r = c.get("/api/v1/users/me", headers=h)
            assert r.status_code == 401 and "expired" in r.json()["message"]
    finally:
        srv.stop()
