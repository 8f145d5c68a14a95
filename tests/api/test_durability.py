"""Acknowledged data survives a restart and a kill -9 in the middle of a load."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN
from tests.server import Server

T0_MS = 1751466600000


def _register(client: httpx.Client, name: str) -> dict[str, Any]:
    r = client.post("/api/v1/devices/register", json={"name": name, "device_type": "sensor"})
    assert r.status_code == 201
    return r.json()["device"]  # type: ignore[no-any-return]


def _stored_timestamps(client: httpx.Client, device_id: int) -> set[str]:
    r = client.get(
        f"/api/v1/telemetry/{device_id}",
        headers=ADMIN,
        params={"start_time": "2025-07-01T00:00:00Z", "end_time": "2025-07-10T00:00:00Z", "limit": 10000},
    )
    assert r.status_code == 200
    return {rec["timestamp"] for rec in r.json()["data"]}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def test_restart_keeps_everything(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        with srv.client() as c:
            dev = _register(c, "keeper")
            h = {"X-API-Key": dev["api_key"]}
            batch = [{"data": {"v": i, "s": f"O'Brien {i}"}, "timestamp": T0_MS + i} for i in range(500)]
            assert c.post("/api/v1/devices/telemetry", json={"batch": batch}, headers=h).status_code == 201
            c.post("/api/v1/devices/config", json={"config_key": "k", "config_value": 1}, headers=h)
            c.post("/api/v1/devices/heartbeat", headers=h)
        srv.stop()
        srv.start()
        with srv.client() as c:
            assert len(_stored_timestamps(c, dev["id"])) == 500
            assert c.get("/api/v1/devices/config", headers=h).json()["configuration"]["k"]["value"] == 1
            status = c.get("/api/v1/devices/status", headers=h).json()["device"]
            assert status["telemetry_count"] == 1000 and status["last_seen"] is not None
            latest = c.get(f"/api/v1/telemetry/{dev['id']}/latest", headers=h).json()["data"]
            assert latest["v"] == 499 and latest["s"] == "O'Brien 499"
    finally:
        srv.stop()


def test_shutdown_lets_flushes_waiting_on_a_locked_database_finish(tmp_path: Path) -> None:
    """last_seen and the event log are written a second at a time; a flush still waiting for the
    database when SIGTERM comes ends first (it is not cancelled, losing what it was writing)."""
    srv = Server(tmp_path / "data").start()
    assert srv.proc is not None
    with srv.client() as c:
        dev = _register(c, "seen-at-shutdown")
        time.sleep(1.5)  # the registration's event is written
        db = sqlite3.connect(tmp_path / "data" / "iotflow.db", isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")  # the server's writes now wait for this transaction
            assert (
                c.post("/api/v1/devices/heartbeat", headers={"X-API-Key": dev["api_key"]}).status_code == 200
            )
            time.sleep(1.5)  # the flushes of the heartbeat's last_seen and device.online event wait
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
        finally:
            db.execute("COMMIT")
            db.close()
    srv.proc.wait(15)  # ends by its own SIGTERM once shut down
    log = srv.log()
    srv.start()
    try:
        with srv.client() as c:
            status = c.get("/api/v1/devices/status", headers={"X-API-Key": dev["api_key"]}).json()["device"]
            assert status["last_seen"] is not None
            r = c.get(
                "/api/v1/events", params={"device_id": dev["id"], "type": "device.online"}, headers=ADMIN
            )
            assert r.status_code == 200 and r.json()["meta"]["total"] == 1, r.text
    finally:
        srv.stop()
    assert "Traceback" not in log, log


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_point(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    with srv.client() as c:
        devices = [_register(c, f"crash-{i}") for i in range(8)]
    acked: dict[int, list[int]] = {d["id"]: [] for d in devices}
    stop = threading.Event()

    def worker(dev: dict[str, Any], offset: int) -> None:
        h = {"X-API-Key": dev["api_key"]}
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            i = 0
            while not stop.is_set():
                ts = T0_MS + offset + i * 1000
                i += 1
                try:
                    r = client.post(
                        "/api/v1/devices/telemetry", json={"data": {"v": i}, "timestamp": ts}, headers=h
                    )
                except httpx.TransportError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 201:
                    acked[dev["id"]].append(ts)

    threads = [threading.Thread(target=worker, args=(d, k)) for d in devices for k in range(3)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(15)
    total = sum(len(v) for v in acked.values())
    print(f"acknowledged before kill -9: {total}")
    assert total > 200, f"the load produced too few acknowledged posts ({total}) to mean anything"
    srv.start()
    try:
        with srv.client() as c:
            for device_id, stamps in acked.items():
                stored = _stored_timestamps(c, device_id)
                missing = {_iso(ts) for ts in stamps} - stored
                assert not missing, f"device {device_id}: {len(missing)} acknowledged points lost"
    finally:
        srv.stop()


def test_overload_is_503_with_retry_after_and_stores_nothing_of_it(tmp_path: Path) -> None:
    """A tiny ingest queue: concurrent batches overflow it; refused ones leave no trace."""
    srv = Server(tmp_path / "data", IOTFLOW_INGEST_QUEUE_POINTS="1", IOTFLOW_RATE_LIMITS="false").start()
    try:
        with srv.client() as c:
            dev = _register(c, "overloaded")
        h = {"X-API-Key": dev["api_key"]}
        results: list[tuple[int, int, dict[str, Any], dict[str, str]]] = []

        def post(n: int) -> None:
            batch = [{"data": {"v": n}, "timestamp": T0_MS + n * 1000 + i} for i in range(200)]
            with httpx.Client(base_url=srv.url, timeout=30) as client:
                r = client.post("/api/v1/devices/telemetry", json={"batch": batch}, headers=h)
                results.append((n, r.status_code, r.json(), dict(r.headers)))

        threads = [threading.Thread(target=post, args=(n,)) for n in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        refused = [r for r in results if r[1] == 503]
        accepted = {r[0] for r in results if r[1] == 201}
        assert len(results) == 40 and len(accepted) + len(refused) == 40
        assert refused, "40 concurrent batches never overflowed a one-point queue"
        assert all(r[2]["error"] == "Service unavailable" and r[3]["retry-after"] for r in refused)
        with srv.client() as c:
            stored = _stored_timestamps(c, dev["id"])
        assert len(stored) == 200 * len(accepted)  # all of every accepted batch, nothing of the refused
    finally:
        srv.stop()


def test_points_of_a_device_deleted_just_before_a_crash_go_at_the_next_start(tmp_path: Path) -> None:
    """Deleting a device deletes its row first, then its points. A server killed in between left the
    points for ever; the next start now deletes them, and leaves every other device's alone."""
    data = tmp_path / "data"
    srv = Server(data).start()
    try:
        with srv.client() as client:
            gone, kept = _register(client, "gone"), _register(client, "kept")
            for dev in (gone, kept):
                batch = [{"timestamp": T0_MS + i, "data": {"t": i, "h": 1}} for i in range(50)]
                r = client.post("/api/v1/telemetry", json=batch, headers={"X-API-Key": dev["api_key"]})
                assert r.status_code == 201, r.text
    finally:
        srv.kill9()
    # What a kill between the two steps leaves: the row gone, the points still there.
    with sqlite3.connect(data / "iotflow.db") as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM devices WHERE id = ?", (gone["id"],))
    srv = Server(data).start()
    try:
        with srv.client() as client:

            def total() -> int:
                return int(client.get("/api/v1/telemetry/status", headers=ADMIN).json()["total_points"])

            deadline = time.monotonic() + 15
            while total() != 100 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert total() == 100  # the kept device's 2 x 50
            assert len(_stored_timestamps(client, kept["id"])) == 50
    finally:
        srv.stop()
    assert "which no longer exists" in srv.log()
