"""The ``iotflow`` command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server import ADMIN_TOKEN, Server


def iotflow(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IOTFLOW_")}
    full_env.update({"IOTFLOW_DATA_DIR": str(data_dir), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "iotflow", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


def test_config_masks_secrets_and_names_bad_settings(tmp_path: Path) -> None:
    out = iotflow(
        tmp_path,
        "config",
        env={
            "IOTFLOW_ADMIN_TOKEN": "supersecretadmintoken",
            "IOTFLOW_DATABASE_URL": "postgresql://bob:hunter2@db/iot",
        },
    )
    assert out.returncode == 0, out.stderr
    assert "supersecretadmintoken" not in out.stdout and "hunter2" not in out.stdout
    assert "IOTFLOW_PORT=5000" in out.stdout and "IOTFLOW_DEVICE_REGISTRATION=open" in out.stdout
    bad = iotflow(tmp_path, "config", env={"IOTFLOW_PORT": "seventy"})
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "IOTFLOW_PORT" in bad.stderr
    alias = iotflow(tmp_path, "config", env={"PORT": "6001"})
    assert "IOTFLOW_PORT=6001" in alias.stdout
    both = iotflow(tmp_path, "config", env={"PORT": "6001", "IOTFLOW_PORT": "6002"})
    assert "IOTFLOW_PORT=6002" in both.stdout


def test_serve_refuses_bad_settings_in_one_line(tmp_path: Path) -> None:
    out = iotflow(tmp_path, "serve", env={"IOTFLOW_DEVICE_REGISTRATION": "sometimes"})
    assert (
        out.returncode == 1 and "IOTFLOW_DEVICE_REGISTRATION" in out.stderr and "Traceback" not in out.stderr
    )


def test_devices_lifecycle_and_db(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from iotflow.storage.db import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert iotflow(tmp_path, "db", "upgrade").returncode == 0
    assert iotflow(tmp_path, "db", "current").stdout.strip() == head
    assert iotflow(tmp_path, "db", "downgrade", "base").returncode == 0
    assert iotflow(tmp_path, "db", "current").stdout.strip() == "(empty database)"
    assert iotflow(tmp_path, "db", "upgrade").returncode == 0
    created = iotflow(tmp_path, "devices", "create", "Boiler; DROP TABLE devices", "--type", "thermostat")
    assert created.returncode == 0, created.stderr
    key = created.stdout.split("api key:")[1].strip()
    assert len(key) == 32
    listed = json.loads(iotflow(tmp_path, "devices", "list", "--json").stdout)
    assert listed == [
        {
            "id": 1,
            "name": "Boiler; DROP TABLE devices",
            "device_type": "thermostat",
            "status": "active",
            "user_id": None,
        }
    ]
    dup = iotflow(tmp_path, "devices", "create", "Boiler; DROP TABLE devices", "--type", "x")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    rotated = iotflow(tmp_path, "devices", "rotate-key", "1")
    new_key = rotated.stdout.split("api key:")[1].strip()
    assert new_key != key and len(new_key) == 32
    # the new key works against a server on the same data directory; the old one does not
    srv = Server(tmp_path).start()
    try:
        with srv.client() as c:
            assert c.get("/api/v1/devices/status", headers={"X-API-Key": new_key}).status_code == 200
            assert c.get("/api/v1/devices/status", headers={"X-API-Key": key}).status_code == 401
    finally:
        srv.stop()
    assert iotflow(tmp_path, "devices", "rotate-key", "42").returncode == 1
    deleted = iotflow(tmp_path, "devices", "delete", "1", "--yes")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert json.loads(iotflow(tmp_path, "devices", "list", "--json").stdout) == []


def test_first_start_prints_the_generated_admin_token_once(tmp_path: Path) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "IOTFLOW_ADMIN_TOKEN"}
    srv = Server(tmp_path / "d")
    srv.env = {k: v for k, v in srv.env.items() if k != "IOTFLOW_ADMIN_TOKEN"} | {
        k: v for k, v in env_free.items() if k == "PATH"
    }
    srv.start()
    try:
        token = (tmp_path / "d" / "admin_token").read_text().strip()
        assert (tmp_path / "d" / "admin_token").stat().st_mode & 0o777 == 0o600
        assert len(token) >= 32 and token in srv.log()
        with httpx.Client(base_url=srv.url) as c:
            assert (
                c.get("/api/v1/admin/stats", headers={"Authorization": f"admin {token}"}).status_code == 200
            )
        srv.stop()
        before = srv.log().count(token)
        srv.start()
        assert srv.log().count(token) == before  # not printed again
    finally:
        srv.stop()


def test_bench_outside_a_source_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "iotflow", "bench", "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and "benchmarks/" in out.stderr and "--source" in out.stderr


def test_a_device_deleted_by_the_cli_leaves_the_servers_telemetry_reads(tmp_path: Path) -> None:
    """The server keeps each device a read checks for 2 s and then reads it again in the background,
    so a change made by another process (here the CLI) shows within about 2 s and one read."""
    srv = Server(tmp_path).start()
    admin = {"Authorization": f"admin {ADMIN_TOKEN}"}
    try:
        with srv.client() as c:
            r = c.post("/api/v1/devices/register", json={"name": "short-lived", "device_type": "sensor"})
            device = r.json()["device"]
            latest = f"/api/v1/telemetry/{device['id']}/latest"
            r = c.post(
                "/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers={"X-API-Key": device["api_key"]}
            )
            assert r.status_code == 201
            assert c.get(latest, headers=admin).status_code == 200
            out = iotflow(tmp_path, "devices", "delete", str(device["id"]), "--yes")
            assert out.returncode == 0, out.stderr
            deleted_at = time.monotonic()
            statuses = []
            while time.monotonic() - deleted_at < 10:
                statuses.append(c.get(latest, headers=admin).status_code)
                if statuses[-1] == 404:
                    break
                time.sleep(0.1)
            gone_after = time.monotonic() - deleted_at
        assert statuses[-1] == 404, statuses
        assert set(statuses[:-1]) <= {200}  # the copy answered until then, never an error
        assert gone_after < 3.0, gone_after
    finally:
        srv.stop()


def test_a_key_rotated_by_the_cli_stops_working_on_a_running_server(tmp_path: Path) -> None:
    """The server confirms a cached API key with the database every 5 s: a key rotated by another
    process stops working within about 5 s and one request; the new key works at once."""
    srv = Server(tmp_path).start()
    try:
        with srv.client() as c:
            r = c.post("/api/v1/devices/register", json={"name": "rotated", "device_type": "sensor"})
            device = r.json()["device"]

            def post(key: str) -> int:
                r = c.post("/api/v1/devices/telemetry", json={"data": {"t": 1}}, headers={"X-API-Key": key})
                return r.status_code

            assert post(device["api_key"]) == 201
            out = iotflow(tmp_path, "devices", "rotate-key", str(device["id"]))
            assert out.returncode == 0, out.stderr
            new_key = out.stdout.split("api key:")[1].strip()
            rotated_at = time.monotonic()
            assert post(new_key) == 201
            statuses = []
            while time.monotonic() - rotated_at < 15:
                statuses.append(post(device["api_key"]))
                if statuses[-1] == 401:
                    break
                time.sleep(0.2)
            refused_after = time.monotonic() - rotated_at
            assert post(new_key) == 201
        assert statuses[-1] == 401, statuses
        assert set(statuses[:-1]) <= {201}
        assert refused_after < 7.0, refused_after
    finally:
        srv.stop()
