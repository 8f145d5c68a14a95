"""MQTT ingest benchmarks: messages and points stored per second, embedded and external broker.

    python -m benchmarks.mqtt_bench [--quick] [--duration S]

Prints one JSON object to stdout (progress goes to stderr). Rows:

- ``P3``: external broker (a private Mosquitto), QoS 1, vs the same publishers into the same Mosquitto
  configuration read by one bare paho subscriber (QoS 1, its own process) - no IoTFlow;
- ``P4``: embedded broker, QoS 1, vs amqtt alone (its own process, anonymous access and one empty
  ``on_broker_message_received`` hook), measured as PUBACKs received by the publishers per second;
- ``mqtt_embedded_qos0`` and ``mqtt_external_qos0``: the same at QoS 0 (no baseline).

Publishers are paho-mqtt client processes, each client publishing ``{"data": {temperature, humidity,
pressure}, "timestamp": <distinct epoch ms>}`` on ``iotflow/devices/<id>/telemetry`` with a window of
messages in flight (QoS 1: until PUBACK; QoS 0: until written to the socket). IoTFlow figures are
points *stored*: ``total_points`` of ``/api/v1/telemetry/status`` sampled at the start and the end of
the measured window while the publishers keep publishing (they wait while more than ``Config.backlog``
messages are published but not yet consumed, so no broker queue grows without bound); afterwards the
run waits for everything sent to be stored (``drained``; QoS 1 must lose nothing).

``python -m benchmarks.mqtt_bench --serve-amqtt PORT`` runs the amqtt baseline broker (used internally).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from benchmarks.loadgen import progress, ratio_of
from benchmarks.payloads import base_timestamp_ms
from benchmarks.servers import (
    ADMIN_TOKEN,
    ServerProcess,
    free_port,
    http_json,
    process_cpu_seconds,
    stored_points,
)

P3_WHAT = "MQTT external broker (Mosquitto), QoS 1, 3 readings per message, stored"
P4_WHAT = "MQTT embedded broker, QoS 1, 3 readings per message, stored"
EMBEDDED_QOS0_WHAT = "MQTT embedded broker, QoS 0, 3 readings per message, stored"
EXTERNAL_QOS0_WHAT = "MQTT external broker (Mosquitto), QoS 0, 3 readings per message, stored"
P3_TARGET = 0.6
P3_TARGET_ABS = 10_000
P4_TARGET = 0.8
READINGS = 3
ROWS = (
    ("P3", P3_WHAT),
    ("P4", P4_WHAT),
    ("mqtt_embedded_qos0", EMBEDDED_QOS0_WHAT),
    ("mqtt_external_qos0", EXTERNAL_QOS0_WHAT),
)
TOPIC = "iotflow/devices/{}/telemetry"


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    duration: float
    warmup: float
    processes: int = 2
    clients_per_process: int = 2
    window: int = 100
    backlog: int = 10_000  # messages published but not yet consumed before the publishers pause
    drain_timeout: float = 60.0


log = progress("mqtt-bench")


# ----- publisher and subscriber processes ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    api_key: str
    base_ts: int  # first timestamp (ms); message n carries base_ts + n (devices ~2.8 h apart)


def _publisher(
    port: int,
    qos: int,
    devices: list[Device],
    with_key: bool,
    window: int,
    stop: MpEvent,
    limit: Synchronized,  # type: ignore[type-arg]
    sent: Synchronized,  # type: ignore[type-arg]
    acked: Synchronized,  # type: ignore[type-arg]
    cpu: Synchronized,  # type: ignore[type-arg]
) -> None:
    """One process: a paho client per device, each publishing as fast as its window allows."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    lock = threading.Lock()
    done_count = 0
    sent_count = 0

    def run_client(device: Device) -> None:
        nonlocal done_count, sent_count
        slots = threading.Semaphore(window)
        connected = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{device.id}", protocol=mqtt.MQTTv311
        )
        client.username_pw_set(device.id, device.api_key)
        client.max_inflight_messages_set(window)
        client.max_queued_messages_set(0)

        def on_publish(*_a: Any) -> None:
            nonlocal done_count
            slots.release()
            with lock:
                done_count += 1
                acked.value = done_count

        client.on_publish = on_publish
        client.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if not rc.is_failure else None
        client.connect("127.0.0.1", port, keepalive=60)
        client.loop_start()
        if not connected.wait(15):
            raise RuntimeError(f"publisher for device {device.id} could not connect")
        topic = TOPIC.format(device.id)
        key = {"api_key": device.api_key} if with_key else {}
        n = 0
        while not stop.is_set():
            if sent_count >= limit.value:  # this process's share of what may be in the pipeline
                time.sleep(0.002)
                continue
            if not slots.acquire(timeout=0.2):
                continue
            payload = {
                "data": {
                    "temperature": 20.0 + n % 100 / 10,
                    "humidity": 40 + n % 50,
                    "pressure": 1000 + n % 30,
                },
                "timestamp": device.base_ts + n,
                **key,
            }
            client.publish(topic, json.dumps(payload), qos=qos)
            n += 1
            with lock:
                sent_count += 1
                sent.value = sent_count
        deadline = time.monotonic() + 30  # let the window empty before disconnecting
        for _ in range(window):
            if not slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
        client.disconnect()
        client.loop_stop()

    threads = [threading.Thread(target=run_client, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = os.times()
    cpu.value = times.user + times.system


def _subscriber(port: int, ready: MpEvent, stop: MpEvent, received: Synchronized, cpu: Synchronized) -> None:  # type: ignore[type-arg]
    """A bare paho subscriber (QoS 1) counting every telemetry message it receives."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    count = 0

    def on_message(*_a: Any) -> None:
        nonlocal count
        count += 1
        received.value = count

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv311)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    client.on_connect = lambda c, *_a: c.subscribe(TOPIC.format("+"), qos=1)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()
    times = os.times()
    cpu.value = times.user + times.system


class Publishers:
    """``processes`` publisher processes, ``clients_per_process`` devices each."""

    def __init__(self, cfg: Config, port: int, qos: int, devices: list[Device], *, with_key: bool) -> None:
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        # Messages each process may have published so far; raised by measure() as the consumer
        # takes them (credit-based, so a slow consumer check holds the publishers back too).
        self.limit = ctx.Value("q", 1 << 62, lock=False)
        self.processes = cfg.processes
        self.sent = [ctx.Value("q", 0, lock=False) for _ in range(cfg.processes)]
        self.acked = [ctx.Value("q", 0, lock=False) for _ in range(cfg.processes)]
        self.cpu = [ctx.Value("d", 0.0, lock=False) for _ in range(cfg.processes)]
        per = cfg.clients_per_process
        self.procs = [
            ctx.Process(
                target=_publisher,
                args=(
                    *(
                        port,
                        qos,
                        devices[i * per : (i + 1) * per],
                        with_key,
                        cfg.window,
                        self.stop,
                        self.limit,
                    ),
                    *(self.sent[i], self.acked[i], self.cpu[i]),
                ),
                daemon=True,
            )
            for i in range(cfg.processes)
        ]

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def counts(self) -> tuple[int, int]:
        return sum(v.value for v in self.sent), sum(v.value for v in self.acked)

    def finish(self) -> float:
        """Stop publishing, wait for the in-flight windows; returns the processes' CPU seconds."""
        self.stop.set()
        for p in self.procs:
            p.join(45)
            if p.is_alive():
                p.kill()
                p.join()
        failed = [p.exitcode for p in self.procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"publisher processes exited with {failed}")
        return float(sum(v.value for v in self.cpu))


@dataclass
class Window:
    """What one measured window saw."""

    seconds: float
    sent: int
    acked: int
    generator_cpu: float
    sent_total: int = 0
    acked_total: int = 0


def measure(
    cfg: Config,
    pubs: Publishers,
    sample: Callable[[], int],
    consumed: Callable[[], int] | None = None,
    ready: Callable[[], bool] = lambda: True,
) -> tuple[Window, int, int]:
    """Start the publishers, warm up, then sample ``sample()`` at the window's start and end.

    With ``consumed`` (messages the consumer has taken so far), the publishers wait while more than
    ``cfg.backlog`` messages are published but not consumed: the consumer stays saturated, but the
    backlog left at the end (a broker's queue for IoTFlow, IoTFlow's QoS 0 backlog) stays short.
    """

    def throttle() -> None:
        if consumed is not None:
            pubs.limit.value = (consumed() + cfg.backlog) // pubs.processes

    def pace(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            throttle()
            time.sleep(min(0.05, left))

    throttle()
    pubs.start()
    deadline = time.monotonic() + 30
    while pubs.counts()[1] == 0 or not ready():
        if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in pubs.procs):
            pubs.finish()
            raise RuntimeError("the publishers did not get going")
        throttle()
        time.sleep(0.02)

    pace(cfg.warmup)
    s0, (sent0, acked0), t0 = sample(), pubs.counts(), time.perf_counter()
    pace(cfg.duration)
    s1, (sent1, acked1), t1 = sample(), pubs.counts(), time.perf_counter()
    cpu = pubs.finish()
    sent_total, acked_total = pubs.counts()
    window = Window(t1 - t0, sent1 - sent0, acked1 - acked0, cpu, sent_total, acked_total)
    return window, s0, s1


# ----- brokers and servers ------------------------------------------------------------------------


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port} in {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def mosquitto() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A private Mosquitto on a free loopback port (anonymous, persistence in a temporary directory)."""
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="iotflow-bench-mosquitto-") as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {tmp}/\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 256\n"
            f"log_dest file {tmp}/mosquitto.log\n"
        )
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            _wait_port(port, proc, "mosquitto")
            yield port, proc
        finally:
            _stop(proc)


@contextmanager
def amqtt_broker(*, uvloop: bool = False) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "benchmarks.mqtt_bench", "--serve-amqtt", str(port)),
            *(["--uvloop"] if uvloop else []),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port, proc, "amqtt")
        yield port, proc
    finally:
        _stop(proc)


def iotflow(mqtt_env: dict[str, str]) -> ServerProcess:
    return ServerProcess(
        "iotflow",
        [sys.executable, "-m", "iotflow", "serve"],
        env={
            "IOTFLOW_DATA_DIR": "{tmp}/data",
            "IOTFLOW_HOST": "127.0.0.1",
            "IOTFLOW_PORT": "{port}",
            "IOTFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "IOTFLOW_LOG_LEVEL": "WARNING",
            "IOTFLOW_RATE_LIMITS": "false",
            "IOTFLOW_MQTT_ENABLED": "true",
            **mqtt_env,
        },
    )


def _empty_hook_plugin() -> type:
    """The amqtt baseline's only hook: receives every message and does nothing."""
    from amqtt.plugins.base import BasePlugin

    class EmptyHookPlugin(BasePlugin):  # type: ignore[misc]
        async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
            return None

    return EmptyHookPlugin


def __getattr__(name: str) -> Any:
    """``benchmarks.mqtt_bench.EmptyHookPlugin`` for amqtt, without importing amqtt otherwise."""
    if name == "EmptyHookPlugin":
        return _empty_hook_plugin()
    raise AttributeError(name)


def serve_amqtt(port: int, *, uvloop: bool = False) -> None:
    """amqtt 0.12 with anonymous access and the empty hook; runs until SIGTERM (on uvloop, the loop
    IoTFlow runs on under uvicorn, with ``uvloop``)."""
    import logging
    import signal

    from amqtt.broker import Broker
    from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType

    logging.basicConfig(level=logging.WARNING)
    for name in ("amqtt", "transitions"):  # the port probe's empty connection is logged as an error
        logging.getLogger(name).setLevel(logging.CRITICAL)

    async def main() -> None:
        config = BrokerConfig(
            listeners={"default": ListenerConfig(type=ListenerType.TCP, bind=f"127.0.0.1:{port}")},
            plugins={
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                "benchmarks.mqtt_bench.EmptyHookPlugin": {},
            },
        )
        broker = Broker(config)
        await broker.start()
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        await stopped.wait()
        await broker.shutdown()

    if uvloop:
        import uvloop as uv

        uv.run(main())
    else:
        asyncio.run(main())


# ----- the runs -----------------------------------------------------------------------------------


class Runner:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.runs: dict[str, dict[str, Any]] = {}
        self.base_ts = base_timestamp_ms()
        self.devices_made = 0

    def devices(self, server: ServerProcess | None) -> list[Device]:
        """Fresh devices (registered when there is a server), each with its own timestamp range."""
        n = self.cfg.processes * self.cfg.clients_per_process
        out = []
        for _ in range(n):
            self.devices_made += 1
            i = self.devices_made
            if server is None:
                dev_id, key = str(900_000 + i), "no-key"
            else:
                dev_id, key = _register(server, f"bench-mqtt-{i}")
            out.append(Device(dev_id, key, self.base_ts + i * 10_000_000))
        return out

    def _summary(self, name: str, w: Window, **extra: Any) -> dict[str, Any]:
        run = {
            "seconds": round(w.seconds, 3),
            "published_per_s": round(w.sent / w.seconds, 1),
            "acknowledged_per_s": round(w.acked / w.seconds, 1),
            "published_total": w.sent_total,
            "generator_cpu_seconds": round(w.generator_cpu, 3),
            **extra,
        }
        self.runs[name] = run
        return run

    def baseline_mosquitto(self) -> float:
        cfg = self.cfg
        with mosquitto() as (port, _proc):
            ctx = mp.get_context("spawn")
            ready, stop = ctx.Event(), ctx.Event()
            received, sub_cpu = ctx.Value("q", 0, lock=False), ctx.Value("d", 0.0, lock=False)
            sub = ctx.Process(target=_subscriber, args=(port, ready, stop, received, sub_cpu), daemon=True)
            sub.start()
            try:
                if not ready.wait(20):
                    raise RuntimeError("the baseline subscriber did not subscribe")
                pubs = Publishers(cfg, port, 1, self.devices(None), with_key=True)
                w, r0, r1 = measure(cfg, pubs, lambda: int(received.value), lambda: int(received.value))
                deadline = time.monotonic() + 15
                while received.value < w.acked_total and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                stop.set()
                sub.join(10)
                if sub.is_alive():
                    sub.kill()
        rate = (r1 - r0) / w.seconds
        self._summary(
            "mosquitto_passthrough_qos1",
            w,
            received_per_s=round(rate, 1),
            received_total=int(received.value),
            subscriber_cpu_seconds=round(float(sub_cpu.value), 3),
        )
        log(f"Mosquitto pass-through QoS 1: {rate:,.0f} msg/s received by the bare subscriber")
        return rate

    def baseline_amqtt(self) -> float:
        cfg = self.cfg
        with amqtt_broker() as (port, proc):
            cpu0 = process_cpu_seconds(proc.pid)
            pubs = Publishers(cfg, port, 1, self.devices(None), with_key=False)
            w, _, _ = measure(cfg, pubs, lambda: 0)
            cpu1 = process_cpu_seconds(proc.pid)
        rate = w.acked / w.seconds
        extra = {} if cpu0 is None or cpu1 is None else {"broker_cpu_seconds": round(cpu1 - cpu0, 3)}
        self._summary("amqtt_passthrough_qos1", w, **extra)
        log(f"amqtt pass-through QoS 1 (empty hook): {rate:,.0f} PUBACKs/s")
        return rate

    def iotflow_run(self, name: str, server: ServerProcess, port: int, qos: int, *, external: bool) -> float:
        """One measured run against IoTFlow; returns stored messages per second."""
        cfg = self.cfg
        devices = self.devices(server)
        before = stored_points(server)
        cpu0 = server.cpu_seconds()
        pubs = Publishers(cfg, port, qos, devices, with_key=external)
        w, s0, s1 = measure(
            cfg,
            pubs,
            lambda: stored_points(server),
            lambda: (stored_points(server) - before) // READINGS,
            lambda: stored_points(server) > before,
        )
        cpu1 = server.cpu_seconds()
        expected = before + w.acked_total * READINGS
        drained_at = time.perf_counter()
        deadline = time.monotonic() + cfg.drain_timeout
        stored, still_since = stored_points(server), time.monotonic()
        while stored < expected and time.monotonic() < deadline:
            time.sleep(0.1)
            now, last = stored_points(server), stored
            stored = now
            if now != last:
                still_since = time.monotonic()
            elif qos == 0 and time.monotonic() - still_since > 3:
                break  # QoS 0 may lose messages (IoTFlow's backlog full): nothing more is coming
        points_per_s = (s1 - s0) / w.seconds
        msg_per_s = points_per_s / READINGS
        self._summary(
            name,
            w,
            stored_msg_per_s=round(msg_per_s, 1),
            stored_points_per_s=round(points_per_s, 1),
            server_cpu_seconds=None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 3),
            stored_points_total=stored - before,
            expected_points_total=expected - before,
            drained=stored >= expected,
            lost_points=max(0, expected - stored),
            drain_seconds=round(time.perf_counter() - drained_at, 2),
        )
        log(
            f"{name}: {msg_per_s:,.0f} msg/s stored ({points_per_s:,.0f} points/s); "
            f"published {w.sent / w.seconds:,.0f}/s; drained {stored >= expected}"
        )
        if stored < expected and qos > 0:
            raise RuntimeError(
                f"{name}: {expected - stored} points sent were not stored in {cfg.drain_timeout}s"
            )
        return msg_per_s


def _register(server: ServerProcess, name: str) -> tuple[str, str]:
    """Register a sensor; returns its id and API key."""
    status, body = http_json(
        "POST", server.url + "/api/v1/devices/register", {"name": name, "device_type": "sensor"}
    )
    if status != 201:
        raise RuntimeError(f"registering {name!r} failed with {status}: {body}")
    return str(body["device"]["id"]), str(body["device"]["api_key"])


def _error(what: str, exc: BaseException) -> dict[str, Any]:
    return {"what": what, "error": f"{type(exc).__name__}: {exc}"}


def run(cfg: Config) -> tuple[dict[str, Any], dict[str, dict[str, Any]], float]:
    """All MQTT rows; returns the rows, every run's figures and the generator CPU seconds."""
    runner = Runner(cfg)
    rows: dict[str, dict[str, Any]] = {}
    results: dict[str, float] = {}
    errors: dict[str, str] = {}

    def attempt(key: str, body: Callable[[], float]) -> None:
        try:
            results[key] = body()
        except Exception as exc:
            errors[key] = f"{type(exc).__name__}: {exc}"
            log(f"{key} failed: {errors[key]}")

    attempt("mosquitto", runner.baseline_mosquitto)
    attempt("amqtt", runner.baseline_amqtt)

    mqtt_port = free_port()
    try:
        with iotflow({"IOTFLOW_MQTT_PORT": str(mqtt_port)}) as server:
            log(f"IoTFlow (embedded broker on {mqtt_port}) on {server.url}")
            attempt(
                "embedded_qos1",
                lambda: runner.iotflow_run("mqtt_embedded_qos1", server, mqtt_port, 1, external=False),
            )
            attempt(
                "embedded_qos0",
                lambda: runner.iotflow_run("mqtt_embedded_qos0", server, mqtt_port, 0, external=False),
            )
    except Exception as exc:
        for key in ("embedded_qos1", "embedded_qos0"):
            errors.setdefault(key, f"{type(exc).__name__}: {exc}")

    try:
        with mosquitto() as (port, _proc):
            url = f"mqtt://127.0.0.1:{port}?client_id=iotflow-bench"
            with iotflow({"IOTFLOW_MQTT_BROKER_URL": url}) as server:
                log(f"IoTFlow (external Mosquitto on {port}) on {server.url}")
                attempt(
                    "external_qos1",
                    lambda: runner.iotflow_run("mqtt_external_qos1", server, port, 1, external=True),
                )
                attempt(
                    "external_qos0",
                    lambda: runner.iotflow_run("mqtt_external_qos0", server, port, 0, external=True),
                )
    except Exception as exc:
        for key in ("external_qos1", "external_qos0"):
            errors.setdefault(key, f"{type(exc).__name__}: {exc}")

    def row(
        key: str, what: str, baseline_key: str | None, make: Callable[[float, float], dict[str, Any]]
    ) -> None:
        if key in errors:
            rows[out_key[key]] = {"what": what, "error": errors[key]}
            return
        value = results[key]
        if baseline_key is not None and baseline_key in errors:
            rows[out_key[key]] = {
                "what": what,
                "value": round(value, 1),
                "unit": "msg/s",
                "error": f"no baseline: {errors[baseline_key]}",
            }
            return
        base = results.get(baseline_key, 0.0) if baseline_key else 0.0
        rows[out_key[key]] = {"what": what, **make(value, base)}

    out_key = {
        "external_qos1": "P3",
        "embedded_qos1": "P4",
        "embedded_qos0": "mqtt_embedded_qos0",
        "external_qos0": "mqtt_external_qos0",
    }

    def p3(value: float, base: float) -> dict[str, Any]:
        ratio = ratio_of(value, base)
        return {
            "value": round(value, 1),
            "points_per_s": round(value * READINGS, 1),
            "baseline": round(base, 1),
            "baseline_what": "the same publishers into the same Mosquitto configuration, one bare paho "
            "subscriber (QoS 1, own process): messages received per second",
            "ratio": ratio,
            "target": P3_TARGET,
            "target_abs": P3_TARGET_ABS,
            "pass": ratio >= P3_TARGET and value >= P3_TARGET_ABS,
            "pass_ratio": ratio >= P3_TARGET,
            "pass_abs": value >= P3_TARGET_ABS,
            "unit": "msg/s",
        }

    def p4(value: float, base: float) -> dict[str, Any]:
        ratio = ratio_of(value, base)
        return {
            "value": round(value, 1),
            "points_per_s": round(value * READINGS, 1),
            "baseline": round(base, 1),
            "baseline_what": "amqtt alone (own process, anonymous, one empty message hook), the same "
            "publishers: PUBACKs received per second",
            "ratio": ratio,
            "target": P4_TARGET,
            "pass": ratio >= P4_TARGET,
            "unit": "msg/s",
        }

    def plain(value: float, _base: float) -> dict[str, Any]:
        return {"value": round(value, 1), "points_per_s": round(value * READINGS, 1), "unit": "msg/s"}

    row("external_qos1", P3_WHAT, "mosquitto", p3)
    row("embedded_qos1", P4_WHAT, "amqtt", p4)
    row("embedded_qos0", EMBEDDED_QOS0_WHAT, None, plain)
    row("external_qos0", EXTERNAL_QOS0_WHAT, None, plain)
    generator_cpu = sum(r["generator_cpu_seconds"] for r in runner.runs.values())
    return rows, runner.runs, generator_cpu


def config(quick: bool, duration: float | None = None) -> Config:
    return Config(
        quick=quick,
        duration=duration if duration is not None else (2.0 if quick else 8.0),
        warmup=0.5 if quick else 1.0,
    )


def generator_note(cfg: Config) -> str:
    return (
        f"{cfg.processes} paho-mqtt publisher processes x {cfg.clients_per_process} clients, "
        f"{cfg.window} messages in flight per client, on the same {os.cpu_count()}-CPU machine as the "
        "broker and IoTFlow"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="IoTFlow MQTT ingest benchmarks (JSON on stdout).")
    parser.add_argument("--quick", action="store_true", help="short runs that only prove each one runs")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 8, quick 2)")
    parser.add_argument("--serve-amqtt", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_amqtt:
        serve_amqtt(args.serve_amqtt, uvloop=args.uvloop)
        return 0
    cfg = config(args.quick, args.duration)
    started = time.perf_counter()
    rows, runs, cpu = run(cfg)
    report: dict[str, Any] = {**rows}
    if cfg.quick:
        report["quick"] = True
    report["generator"] = {"tool": "paho-mqtt", "cpu_seconds": round(cpu, 3), "note": generator_note(cfg)}
    report["runs"] = runs
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    return 0 if not any("error" in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
