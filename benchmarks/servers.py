"""Server processes for the benchmarks: IoTFlow itself and the bare ASGI baseline.

Each server listens on a free loopback port, keeps its data (and its log) in a fresh temporary
directory, and is stopped with SIGTERM (then SIGKILL) and cleaned up by :meth:`ServerProcess.stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """One plain HTTP request (set-up and checks only, never load)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def process_cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """User + system CPU time of a live process (Linux ``/proc``), or None when unavailable.

    ``children``: with the CPU time of the processes it started, live ones (IoTFlow's write and
    read processes) and ended ones it waited for."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for child in child_pids(pid):
            try:
                child_fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / _CLK_TCK


def child_pids(pid: int) -> list[int]:
    """The processes started by any thread of ``pid``."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(out))


class ServerProcess:
    """A server subprocess with its own temporary directory."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"iotflow-bench-{name}-"))
        self.args = [a.replace("{port}", str(self.port)).replace("{tmp}", str(self.tmp)) for a in args]
        self.env = {**os.environ, **{k: v.replace("{port}", str(self.port)) for k, v in (env or {}).items()}}
        self.env = {k: v.replace("{tmp}", str(self.tmp)) for k, v in self.env.items()}
        self.log_path = self.tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float | None:
        """The server's CPU time, its helper processes' included."""
        return process_cpu_seconds(self.pid, children=True) if self.proc is not None else None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log_text = self.log()
                self.stop()
                raise RuntimeError(
                    f"{self.name} exited with {self.proc and self.proc.returncode}:\n{log_text}"
                )
            try:
                status, _ = http_json("GET", self.url + "/health", timeout=1)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        log_text = self.log()
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready in {timeout}s:\n{log_text}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s, then remove the temporary directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def iotflow_server() -> ServerProcess:
    return ServerProcess(
        "iotflow",
        [sys.executable, "-m", "iotflow", "serve"],
        env={
            "IOTFLOW_DATA_DIR": "{tmp}/data",
            "IOTFLOW_HOST": "127.0.0.1",
            "IOTFLOW_PORT": "{port}",
            "IOTFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "IOTFLOW_MQTT_ENABLED": "false",
            "IOTFLOW_LOG_LEVEL": "WARNING",
            "IOTFLOW_RATE_LIMITS": "false",  # benchmarks measure ingest, not the limiter (spec §9)
        },
    )


def bare_asgi_server() -> ServerProcess:
    return ServerProcess("bare-asgi", [sys.executable, "-m", "benchmarks.bare_asgi", "--port", "{port}"])


def register_device(server: ServerProcess, name: str) -> str:
    """Register a sensor and return its API key."""
    status, body = http_json(
        "POST", server.url + "/api/v1/devices/register", {"name": name, "device_type": "sensor"}
    )
    if status != 201:
        raise RuntimeError(f"registering {name!r} failed with {status}: {body}")
    return str(body["device"]["api_key"])


BULK_MAX = 1000  # POST /api/v1/devices/bulk takes at most this many devices


def register_bulk(server: ServerProcess, prefix: str, count: int) -> list[tuple[int, str]]:
    """``count`` sensors named ``<prefix>-<n>`` through the bulk endpoint: their (id, API key)."""
    out: list[tuple[int, str]] = []
    headers = {"Authorization": f"admin {ADMIN_TOKEN}"}
    while len(out) < count:
        n = min(BULK_MAX, count - len(out))
        body = {"devices": [{"name": f"{prefix}-{len(out) + i}", "device_type": "sensor"} for i in range(n)]}
        status, answer = http_json("POST", server.url + "/api/v1/devices/bulk", body, headers, timeout=300)
        if status != 201 or answer.get("errors"):
            raise RuntimeError(f"bulk registration failed with {status}: {str(answer)[:500]}")
        out.extend((int(d["id"]), str(d["api_key"])) for d in answer["created"])
    return out


def stored_points(server: ServerProcess) -> int:
    status, body = http_json("GET", server.url + "/api/v1/telemetry/status")
    if status != 200:
        raise RuntimeError(f"/api/v1/telemetry/status returned {status}: {body}")
    return int(body["total_points"])
