"""Memory per idle MQTT connection on IoTFlow's embedded broker (row ``P8_mqtt``).

    python -m benchmarks.mqtt_idle [--quick] [--connections N] [--no-subscribe]

Prints one JSON object to stdout (progress goes to stderr).

What it does, for IoTFlow and then for amqtt alone (the baseline):

1. starts the server: IoTFlow with its embedded broker (``IOTFLOW_MQTT_ENABLED=true``, a free
   ``IOTFLOW_MQTT_PORT``), or amqtt 0.12 alone in its own process (anonymous access, the same empty
   message hook as the ``P4`` baseline, on the same event loop as IoTFlow: uvloop when installed);
2. IoTFlow only: registers ``N`` devices (plus a few for the warm-up) with ``POST /api/v1/devices/bulk``,
   so that every connection authenticates as a real device (username = device id, password = API key);
3. warm-up: opens and cleanly closes a few connections, so that lazy imports and first-use caches are
   not counted; waits for the server to settle and reads its RSS (``VmRSS`` of ``/proc/<pid>/status``);
4. opens ``N`` MQTT 3.1.1 connections from one light generator process (raw non-blocking sockets on
   an asyncio loop, no MQTT library): a hand-built CONNECT (clean session, keep-alive 600 s, username and
   password), CONNACK with return code 0, then - like a real device - one SUBSCRIBE to the device's
   ``iotflow/devices/<id>/commands/#`` at QoS 1 and its SUBACK (``--no-subscribe`` leaves it out);
5. leaves them idle, waits for the RSS to settle and reads it again; ``value`` = (RSS after - RSS
   before) / N in KB; finally checks that every connection is still open (the generator's sockets, and
   for IoTFlow ``clients_connected`` of ``GET /api/v1/mqtt/status``).

The generator and both servers need an open file per connection: the generator raises its soft
``RLIMIT_NOFILE`` up to the hard limit before starting the servers, which inherit it (checked in
``/proc/<pid>/limits``). When the hard limit is too low, fewer connections are opened and the output
says so (``fd_limit``).

Nothing asks the servers to collect garbage: "settled" means two RSS samples 0.5 s apart within 0.5 %
after a fixed wait (1 s quick, 3 s full). The JSON also shows each server's CPU seconds while the
connections were being set up. For amqtt alone that cost grows with the number of connections already
open (it walks every existing subscription on each CONNECT and formats every subscription for a debug
message on each SUBSCRIBE; IoTFlow's broker does neither), so its 5,000 subscribed connections take
close to a minute on two cores; ``--no-subscribe`` is much faster. Quick mode (500 connections) takes
about 20 s.

The amqtt baseline broker is ``benchmarks.mqtt_bench``'s (``amqtt_broker``), on uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loadgen import progress
from benchmarks.mqtt_bench import amqtt_broker, iotflow
from benchmarks.servers import (
    ServerProcess,
    free_port,
    http_json,
    process_cpu_seconds,
    register_bulk,
)

WHAT = "memory per idle MQTT connection, embedded broker, 5,000 authenticated device connections"
WHAT_SUBSCRIBED = ", each subscribed to its commands"
TARGET_KB = 30.0
FULL_CONNECTIONS = 5_000
QUICK_CONNECTIONS = 500
WARMUP_CONNECTIONS = 50
KEEPALIVE_S = 600
COMMANDS_TOPIC = "iotflow/devices/{}/commands/#"
CONCURRENCY = 64  # connections being set up at once (below the listen backlog of 100)
FD_SPARE = 256  # files a process needs besides its connections


log = progress("mqtt-idle")


# ----- /proc and limits ---------------------------------------------------------------------------


def _status_kb(pid: int, name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb(pid: int) -> int:
    value = _status_kb(pid, "VmRSS")
    if value is None:
        raise RuntimeError(f"cannot read VmRSS of process {pid}")
    return value


def open_files_limit(pid: int) -> int | None:
    """The soft "Max open files" of a live process (``/proc/<pid>/limits``)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return None if soft == "unlimited" else int(soft)
    except OSError:
        return None
    return None


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def raise_fd_limit(wanted: int) -> dict[str, Any]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (to ``wanted`` when unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else hard
    new_soft = soft
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        new_soft = target
    return {
        "soft_before": soft,
        "soft": new_soft,
        "hard": None if hard == resource.RLIM_INFINITY else hard,
        "wanted": wanted,
    }


def settle_rss(pid: int, seconds: float, interval: float = 0.5) -> tuple[int, list[int]]:
    """Wait ``seconds``, then until two samples ``interval`` apart differ by < 0.5 %; the last RSS."""
    samples = [rss_kb(pid)]
    end = time.monotonic() + seconds
    hard_end = end + max(5.0, seconds * 2)
    while True:
        time.sleep(interval)
        samples.append(rss_kb(pid))
        now = time.monotonic()
        if now >= end and abs(samples[-1] - samples[-2]) <= samples[-1] * 0.005:
            break
        if now >= hard_end:
            break
    return samples[-1], samples


# ----- MQTT 3.1.1 packets -------------------------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive: int) -> bytes:
    flags = 0x02  # clean session
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _utf8(password)
    variable = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return bytes([0x10]) + _remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topic: str, qos: int) -> bytes:
    body = struct.pack("!H", packet_id) + _utf8(topic) + bytes([qos])
    return bytes([0x82]) + _remaining_length(len(body)) + body


DISCONNECT = b"\xe0\x00"


# ----- the generator ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cred:
    client_id: str
    username: str | None
    password: str | None
    topic: str | None  # subscribed after CONNACK (None: no SUBSCRIBE)


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return buf


async def _open_one(loop: asyncio.AbstractEventLoop, port: int, cred: Cred, seconds: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(seconds):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(
                sock, connect_packet(cred.client_id, cred.username, cred.password, KEEPALIVE_S)
            )
            connack = await _read_exactly(loop, sock, 4)
            if connack[0] != 0x20 or connack[3] != 0:
                raise ConnectionError(f"CONNACK {connack.hex()} for {cred.client_id}")
            if cred.topic is not None:
                await loop.sock_sendall(sock, subscribe_packet(1, cred.topic, 1))
                suback = await _read_exactly(loop, sock, 5)
                if suback[0] != 0x90 or suback[4] == 0x80:
                    raise ConnectionError(f"SUBACK {suback.hex()} for {cred.client_id}")
    except BaseException:
        sock.close()
        raise
    return sock


async def _open_all(port: int, creds: list[Cred], concurrency: int, seconds: float) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    failures: list[str] = []
    queue = iter(creds)

    async def worker() -> None:
        for cred in queue:
            try:
                socks.append(await _open_one(loop, port, cred, seconds))
            except (OSError, TimeoutError) as exc:
                failures.append(f"{cred.client_id}: {type(exc).__name__}: {exc}")
                if len(failures) >= 20:
                    return

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        close_all(socks, clean=False)
        raise RuntimeError(f"{len(failures)}+ connections failed, e.g. {failures[:3]}")
    return socks


def open_connections(port: int, creds: list[Cred], timeout: float = 30.0) -> list[socket.socket]:
    return asyncio.run(_open_all(port, creds, CONCURRENCY, timeout))


def still_open(socks: list[socket.socket]) -> tuple[int, int]:
    """(open, with unread data): a socket is closed when a non-blocking peek reads end-of-file."""
    alive = with_data = 0
    for sock in socks:
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            alive += 1
            continue
        except OSError:
            continue
        if data:
            alive += 1
            with_data += 1
    return alive, with_data


def close_all(socks: list[socket.socket], *, clean: bool) -> None:
    for sock in socks:
        if clean:
            with suppress(OSError):
                sock.send(DISCONNECT)
        sock.close()


# ----- the servers --------------------------------------------------------------------------------


def event_loop_name() -> str:
    """The loop uvicorn (so IoTFlow) runs on: uvloop when it is installed."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# ----- IoTFlow devices ----------------------------------------------------------------------------


def mqtt_status(server: ServerProcess) -> dict[str, Any]:
    status, body = http_json("GET", server.url + "/api/v1/mqtt/status")
    if status != 200:
        raise RuntimeError(f"/api/v1/mqtt/status returned {status}: {body}")
    return dict(body["mqtt_status"])


def server_log_problems(text: str, keep: int = 5) -> dict[str, Any]:
    """How many WARNING/ERROR lines the server logged, with the first few distinct ones (shortened)."""
    lines = [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]
    distinct: list[str] = []
    for line in lines:
        message = line.split(" ", 2)[-1][:200]  # without the date and time
        if message not in distinct:
            distinct.append(message)
    return {"count": len(lines), "first": distinct[:keep]}


# ----- the measurement ----------------------------------------------------------------------------


@dataclass
class Run:
    """One server's figures."""

    name: str
    connections: int
    pid: int
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    samples_after_kb: list[int] = field(default_factory=list)
    connect_seconds: float = 0.0
    generator_cpu_seconds: float = 0.0
    still_open: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kb_per_connection(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / self.connections if self.connections else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "kb_per_connection": round(self.kb_per_connection, 2),
            "rss_before_kb": self.rss_before_kb,
            "rss_after_kb": self.rss_after_kb,
            "rss_samples_after_kb": self.samples_after_kb,
            "connect_seconds": round(self.connect_seconds, 2),
            "connections_per_s": round(self.connections / self.connect_seconds, 1)
            if self.connect_seconds
            else None,
            "generator_cpu_seconds": round(self.generator_cpu_seconds, 3),
            "still_open": self.still_open,
            **self.extra,
        }


def _measure(
    name: str, pid: int, port: int, creds: list[Cred], warmup: list[Cred], settle: float
) -> tuple[Run, list[socket.socket]]:
    """Warm up, RSS before, open ``creds``, settle, RSS after; returns the run and the open sockets."""
    run = Run(name, len(creds), pid)
    run.extra["server_open_files_limit"] = open_files_limit(pid)
    if warmup:
        close_all(open_connections(port, warmup), clean=True)
    run.rss_before_kb, before_samples = settle_rss(pid, settle)
    run.extra["rss_samples_before_kb"] = before_samples
    run.extra["server_open_files_before"] = open_files(pid)
    cpu0, server_cpu0, t0 = time.process_time(), process_cpu_seconds(pid), time.perf_counter()
    socks = open_connections(port, creds)
    run.connect_seconds = time.perf_counter() - t0
    run.generator_cpu_seconds = time.process_time() - cpu0
    server_cpu1 = process_cpu_seconds(pid)
    if server_cpu0 is not None and server_cpu1 is not None:
        run.extra["server_cpu_seconds_connecting"] = round(server_cpu1 - server_cpu0, 2)
    log(f"{name}: {len(socks)} connections open in {run.connect_seconds:.1f}s; letting the server settle")
    run.rss_after_kb, run.samples_after_kb = settle_rss(pid, settle)
    run.extra["server_open_files_after"] = open_files(pid)
    run.still_open, run.extra["sockets_with_unread_data"] = still_open(socks)
    return run, socks


def _finish(socks: list[socket.socket]) -> None:
    """Drop the connections (no DISCONNECT: nothing to mark offline) before the server stops."""
    close_all(socks, clean=False)
    time.sleep(0.5)


def measure_iotflow(n: int, settle: float, subscribe: bool) -> Run:
    mqtt_port = free_port()
    with iotflow({"IOTFLOW_MQTT_PORT": str(mqtt_port)}) as server:
        log(f"IoTFlow on {server.url}, embedded broker on {mqtt_port}; registering {n} devices")
        t0 = time.perf_counter()
        devices = [(str(i), key) for i, key in register_bulk(server, "idle", n + WARMUP_CONNECTIONS)]
        registration_s = time.perf_counter() - t0

        def cred(dev_id: str, key: str) -> Cred:
            topic = COMMANDS_TOPIC.format(dev_id) if subscribe else None
            return Cred(f"idle-{dev_id}", dev_id, key, topic)

        warm = [cred(*d) for d in devices[n:]]
        creds = [cred(*d) for d in devices[:n]]
        log(f"registered in {registration_s:.1f}s; warming up and measuring")
        run, socks = _measure("iotflow", server.pid, mqtt_port, creds, warm, settle)
        try:
            status = mqtt_status(server)
        finally:
            _finish(socks)
        problems = server_log_problems(server.log())
        run.extra.update(
            {
                "server_log_warnings": problems,
                "registration_seconds": round(registration_s, 2),
                "server_clients_connected": status.get("clients_connected"),
                "server_subscriptions": status.get("subscriptions"),
            }
        )
    return run


def measure_amqtt(n: int, settle: float, subscribe: bool) -> Run:
    with amqtt_broker(uvloop=event_loop_name() == "uvloop") as (port, proc):
        log(f"amqtt alone on {port} ({event_loop_name()})")

        def cred(i: int) -> Cred:
            dev_id = str(900_000 + i)
            topic = COMMANDS_TOPIC.format(dev_id) if subscribe else None
            return Cred(f"idle-{dev_id}", dev_id, "not-checked", topic)

        warm = [cred(n + i) for i in range(WARMUP_CONNECTIONS)]
        run, socks = _measure("amqtt", proc.pid, port, [cred(i) for i in range(n)], warm, settle)
        _finish(socks)
    run.extra["event_loop"] = event_loop_name()
    return run


def measure(
    quick: bool, connections: int | None = None, subscribe: bool = True
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], float]:
    """Row ``P8_mqtt``, every run's figures, and the generator's CPU seconds."""
    wanted = connections or (QUICK_CONNECTIONS if quick else FULL_CONNECTIONS)
    settle = 1.0 if quick else 3.0
    fd = raise_fd_limit(wanted + WARMUP_CONNECTIONS + FD_SPARE)
    n = wanted
    if fd["soft"] != resource.RLIM_INFINITY and fd["soft"] < wanted + WARMUP_CONNECTIONS + FD_SPARE:
        n = max(0, fd["soft"] - WARMUP_CONNECTIONS - FD_SPARE)
        fd["note"] = (
            f"the hard open-files limit ({fd['hard']}) allows only {n} of the {wanted} connections: "
            "raise it (ulimit -Hn, or LimitNOFILE) for the full figure"
        )
        log(fd["note"])
    if n <= 0:
        raise RuntimeError(f"the open-files limit ({fd['soft']}) leaves no room for connections")
    log(f"open-files limit {fd['soft_before']} -> {fd['soft']} (hard {fd['hard']}); {n} connections")

    iot = measure_iotflow(n, settle, subscribe)
    log(f"IoTFlow: {iot.kb_per_connection:.1f} KB per connection")
    base = measure_amqtt(n, settle, subscribe)
    log(f"amqtt alone: {base.kb_per_connection:.1f} KB per connection")

    value = iot.kb_per_connection
    ok = (
        iot.still_open == n
        and iot.extra.get("server_clients_connected") == n
        and base.still_open == n
        and (iot.extra.get("server_open_files_limit") or n) >= n
        and (base.extra.get("server_open_files_limit") or n) >= n
    )
    row: dict[str, Any] = {
        "what": (WHAT if n == FULL_CONNECTIONS else WHAT.replace("5,000", f"{n:,}"))
        + (WHAT_SUBSCRIBED if subscribe else ""),
        "value": round(value, 2),
        "baseline": round(base.kb_per_connection, 2),
        "baseline_what": f"amqtt alone (own process, {event_loop_name()}, anonymous, one empty message "
        "hook), the same connections: KB of RSS per connection",
        "ratio": round(value / base.kb_per_connection, 3) if base.kb_per_connection > 0 else None,
        "target": TARGET_KB,
        "pass": value <= TARGET_KB and ok,
        "unit": "KB",
        "connections": n,
        "all_open_at_end": ok,
        "subscribed": subscribe,
    }
    if n != wanted:
        row["fd_limit"] = fd["note"]
    if quick:
        row["quick"] = True
    details = {
        "iotflow": iot.as_dict(),
        "amqtt": base.as_dict(),
        "fd_limit": fd,
        "generator": "one Python process, raw non-blocking sockets on an asyncio loop, "
        f"{CONCURRENCY} connections set up at once; each: CONNECT (MQTT 3.1.1, clean session, "
        f"keep-alive {KEEPALIVE_S} s, username = device id, password = API key), CONNACK 0"
        + (", SUBSCRIBE iotflow/devices/<id>/commands/# QoS 1, SUBACK" if subscribe else "")
        + "; then idle",
    }
    cpu = iot.generator_cpu_seconds + base.generator_cpu_seconds
    return {"P8_mqtt": row}, details, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Memory per idle MQTT connection (JSON on stdout).")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CONNECTIONS} connections")
    parser.add_argument("--connections", type=int, help=f"connections (default {FULL_CONNECTIONS})")
    parser.add_argument("--no-subscribe", action="store_true", help="CONNECT only, no SUBSCRIBE")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        rows, details, cpu = measure(args.quick, args.connections, not args.no_subscribe)
    except Exception as exc:
        rows, details, cpu = {"P8_mqtt": {"what": WHAT, "error": f"{type(exc).__name__}: {exc}"}}, {}, 0.0
    report: dict[str, Any] = {**rows}
    if args.quick:
        report["quick"] = True
    report["generator"] = {"tool": "python raw sockets", "cpu_seconds": round(cpu, 3)}
    report["runs"] = details
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    return 0 if "error" not in rows["P8_mqtt"] else 1


if __name__ == "__main__":
    sys.exit(main())
