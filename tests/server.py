"""Run a real IoTFlow server process on a free loopback port for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``iotflow serve`` in a subprocess with its own data directory and settings."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "IOTFLOW_DATA_DIR": str(data_dir),
            "IOTFLOW_HOST": "127.0.0.1",
            "IOTFLOW_PORT": str(self.port),
            "IOTFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "IOTFLOW_MQTT_ENABLED": "false",
            "IOTFLOW_LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iotflow", "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


@contextlib.contextmanager
def fast_and_framework(make_dir: Callable[[str], Path], **env: str) -> Iterator[tuple[Server, Server]]:
    """Two servers with the same settings, one with the HTTP fast paths (the default) and one
    without, for tests that compare their answers; neither may log a traceback."""
    fast = Server(make_dir("fast"), **env).start()
    framework = Server(make_dir("framework"), IOTFLOW_HTTP_FASTPATH="false", **env).start()
    try:
        yield fast, framework
    finally:
        fast.stop()
        framework.stop()
    for srv in (fast, framework):
        assert "Traceback" not in srv.log(), srv.log()


def rate_limit_headers(r: httpx.Response) -> dict[str, str]:
    """A response's X-RateLimit headers but the reset time, which may differ by a second between two
    servers answering the same requests."""
    return {k: v for k, v in r.headers.items() if k.startswith("x-ratelimit") and k != "x-ratelimit-reset"}


def device_pair(
    srv: Server, names: tuple[str, str], readings: tuple[dict[str, Any], ...], t0_ms: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register two sensors and post ``readings`` for the first, one a second from ``t0_ms``; the
    same calls on two fresh servers give the same ids."""
    with srv.client() as api:
        a, b = (
            api.post("/api/v1/devices/register", json={"name": name, "device_type": "sensor"}).json()[
                "device"
            ]
            for name in names
        )
        for i, data in enumerate(readings):
            r = api.post(
                "/api/v1/devices/telemetry",
                json={"data": data, "timestamp": t0_ms + i * 1000},
                headers={"X-API-Key": a["api_key"]},
            )
            assert r.status_code == 201, r.text
    return a, b
