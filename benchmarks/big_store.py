"""A large store on one IoTFlow server: P5 (ingest rate with 10 million points stored vs an empty
store), P7 (bytes on disk per stored point) and P8 (the server's resident memory).

    python -m benchmarks.big_store [--quick] [--points N] [--generator auto|wrk|python]

One server (MQTT off, rate limits off) gets 1,000 devices through ``POST /api/v1/devices/bulk``.

* P5: batched ingest (500-point POSTs on 64 of the devices, the P2 load). The store is filled through
  the HTTP API up to ``--points`` points (default 10 million). The fill sends every device's readings
  (5 keys, one reading every 10 s, devices staggered within the interval) round by round, 100
  readings per POST, so the store grows the way a fleet's data does: fleet-wide, in time order. Then
  ``rounds`` times (5): the load on the full store (a warm-up, then a measured run), and right after it
  the same load on an empty store: a new server with as many devices, its own warm-up and run. Both
  sides of a round see the machine as it is in that minute (on a shared machine the same work was
  seen to take 20-50% more CPU from one minute to the next); the ratio is the median of the rounds'
  full/empty ratios. The timestamps start at midnight UTC three days back (10 million points take
  about 11 hours of them, so everything stays within one daily chunk: the full-store runs write into
  the chunk the fill filled), laid out as: empty-store warm-up and run, fill, then each round's
  full-store warm-up and run; every region is later than the one before, so every write appends to
  its series (nothing is a backfill or an upsert). Server CPU per point is reported beside the rates.
* P7: the telemetry store's files in the data directory (the database, its ``-wal`` and ``-shm``)
  divided by ``total_points`` of ``/api/v1/telemetry/status``, with the server running, and again
  after a clean stop (SIGTERM).
* P8: ``VmRSS`` of the server process after the fill, the full-store run and a round of reads
  (the latest values of every device, history and hourly aggregates of some), so its caches are warm.

``--quick`` fills 400,000 points with 1 s runs: it only proves the benchmark runs.

Prints one JSON object to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import pyload, wrk
from benchmarks.loadgen import LoadResult, loadavg, progress
from benchmarks.payloads import BATCH_ITEM_FORMAT, BATCH_KEYS, BATCH_PAYLOADS, TELEMETRY_PATH, Workload
from benchmarks.servers import (
    ADMIN_TOKEN,
    ServerProcess,
    child_pids,
    http_json,
    iotflow_server,
    register_bulk,
    stored_points,
)

P5_WHAT = "HTTP batched ingest (500 points per POST) with the store full vs empty"
P7_WHAT = "telemetry store bytes on disk per stored point"
P8_WHAT = "server RSS with the store full and 1,000 devices"
P5_TARGET = 0.8
P7_TARGET = 40.0
P8_TARGET_MB = 300.0

DAY_MS = 86_400_000
KEYS = len(BATCH_KEYS)
ADMIN = {"Authorization": f"admin {ADMIN_TOKEN}"}
# A closed-loop run can never send more than this many requests per second: it sizes the span of
# time a run's timestamps may use (each request uses BATCH_PAYLOADS ms of it).
MAX_REQUESTS_PER_S = 5_000


log = progress("big-store")


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    points: int  # stored points to fill up to before the full-store run
    tool: str  # "wrk" or "python"
    devices: int = 1000
    window: float = 6.0  # seconds per measured ingest run
    warmup: float = 2.0
    rounds: int = 5  # full-store runs, each followed by an empty-store run on a new server
    rate_devices: int = 64
    connections: int = 16  # of the measured runs (the P2 load)
    threads: int = 2
    fill_connections: int = 16
    fill_per_post: int = BATCH_PAYLOADS  # readings (of 5 keys) per POST in the fill
    interval_ms: int = 10_000  # one reading per device every 10 s in the fill

    @property
    def slot_ms(self) -> int:
        """The span of timestamps reserved for one closed-loop run."""
        return math.ceil(max(self.window, self.warmup)) * MAX_REQUESTS_PER_S * BATCH_PAYLOADS


def config(quick: bool, tool: str, points: int | None = None) -> Config:
    if quick:
        return Config(quick=True, points=points or 400_000, tool=tool, window=1.0, warmup=1.0, rounds=1)
    return Config(quick=False, points=points or 10_000_000, tool=tool)


# -- devices and payloads ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fill:
    """The fill: ``jobs`` are (device index, first reading, readings), in the order they are sent."""

    base_ts: int
    interval_ms: int
    devices: int
    jobs: tuple[tuple[int, int, int], ...]
    readings_max: int  # readings of the device with the most

    @classmethod
    def plan(cls, base_ts: int, interval_ms: int, devices: int, points: int, per_post: int) -> Fill:
        readings = math.ceil(points / KEYS)
        each, extra = divmod(readings, devices)
        counts = [each + (1 if d < extra else 0) for d in range(devices)]
        rounds = math.ceil(max(counts) / per_post)
        jobs = tuple(
            (d, r * per_post, min(per_post, counts[d] - r * per_post))
            for r in range(rounds)
            for d in range(devices)
            if counts[d] > r * per_post
        )
        return cls(base_ts, interval_ms, devices, jobs, max(counts))

    @property
    def points(self) -> int:
        return sum(n for _, _, n in self.jobs) * KEYS

    @property
    def end_ts(self) -> int:
        return self.base_ts + self.readings_max * self.interval_ms

    def body(self, device: int, first: int, count: int) -> bytes:
        """``count`` readings of ``device`` from its reading number ``first`` on."""
        offset = self.base_ts + device * self.interval_ms // self.devices  # devices staggered
        items = ",".join(
            BATCH_ITEM_FORMAT.format(
                t=18 + device % 7 + j % 97 / 20,
                h=40 + device % 13 + j % 89 / 10,
                p=1000 + device % 17 + j % 50 / 10,
                b=100 - j // 50 % 100,
                r=-50 - (device + j) % 40,
                ts=offset + j * self.interval_ms,
            )
            for j in range(first, first + count)
        )
        return b'{"batch":[' + items.encode() + b"]}"


@dataclass(frozen=True, slots=True)
class Timeline:
    """Where each phase's timestamps go: consecutive regions of one UTC day in the past."""

    empty_warmup: int  # the empty-store runs (each on a new server, so they all use these)
    empty_run: int
    fill: int
    full: tuple[tuple[int, int], ...]  # (warm-up, run) of each round on the full store
    end: int

    @classmethod
    def plan(cls, cfg: Config, fill_span_ms: int) -> Timeline:
        slot = cfg.slot_ms
        fill_slots = (fill_span_ms + 999) // 1000 * 1000
        span = 2 * slot + fill_slots + 2 * cfg.rounds * slot
        if span > DAY_MS:
            raise ValueError(
                f"the fill and the runs need {span / 3_600_000:.1f} h of timestamps: more than a day"
            )
        now_ms = int(time.time() * 1000)
        start = (now_ms // DAY_MS - 3) * DAY_MS  # midnight three days back: the runs stay within that day
        fill = start + 2 * slot
        first = fill + fill_slots
        full = tuple((first + 2 * i * slot, first + (2 * i + 1) * slot) for i in range(cfg.rounds))
        return cls(start, start + slot, fill, full, first + 2 * cfg.rounds * slot)


# -- load --------------------------------------------------------------------------------------


@dataclass(slots=True)
class FillResult:
    requests: int = 0
    ok: int = 0
    ok_points: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


async def _fill(url: str, fill: Fill, keys: list[str], connections: int) -> FillResult:
    """Send every job of ``fill`` over ``connections`` keep-alive connections, in order.

    A job is taken only when a connection is free, so a device's next batch (a whole round of the
    fleet later) is never sent before its previous one was answered.
    """
    host, port = pyload._split(url)
    hostport = f"{host}:{port}"
    result = FillResult()
    jobs = iter(fill.jobs)
    total = len(fill.jobs)
    cpu0, t0 = time.process_time(), time.perf_counter()
    next_report = t0 + 10.0

    async def worker() -> None:
        nonlocal next_report
        conn = pyload._Connection(host, port)
        try:
            for device, first, count in jobs:
                data = fill.body(device, first, count)
                head = (
                    f"POST {TELEMETRY_PATH} HTTP/1.1\r\nHost: {hostport}\r\nX-API-Key: {keys[device]}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                )
                try:
                    status = await conn.request(head.encode() + data)
                except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError):
                    result.socket_errors += 1
                    await conn.close()
                    continue
                result.requests += 1
                if 200 <= status < 300:
                    result.ok += 1
                    result.ok_points += count * KEYS
                else:
                    result.non_2xx += 1
                now = time.perf_counter()
                if now >= next_report:
                    next_report = now + 10.0
                    log(f"fill: {result.requests:,}/{total:,} requests, {result.ok / (now - t0):,.0f} 2xx/s")
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.perf_counter() - t0
    result.cpu_seconds = time.process_time() - cpu0
    return result


def run_fill(url: str, fill: Fill, keys: list[str], connections: int) -> FillResult:
    return pyload._run(_fill(url, fill, keys, connections))


def closed_run(cfg: Config, server: ServerProcess, workload: Workload, duration: float) -> LoadResult:
    if cfg.tool == "wrk":
        return wrk.run_wrk(
            server.url, workload, connections=cfg.connections, threads=cfg.threads, duration=duration
        )
    return pyload.closed_loop(server.url, workload, connections=cfg.connections, duration=duration)


# -- process and disk figures ------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """The memory lines of ``/proc/<pid>/status`` (kB, i.e. KiB)."""
    fields = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSize")
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            out[name] = int(rest.split()[0])
    return out


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def mb(kib: int) -> float:
    return round(kib * 1024 / 1e6, 1)


def data_files(data_dir: Path) -> dict[str, dict[str, int]]:
    """Every file of the data directory: apparent size and allocated bytes."""
    out: dict[str, dict[str, int]] = {}
    for path in sorted(data_dir.iterdir()):
        if path.is_file():
            st = path.stat()
            out[path.name] = {"bytes": st.st_size, "allocated": st.st_blocks * 512}
    return out


def telemetry_bytes(files: dict[str, dict[str, int]]) -> tuple[int, int, list[str]]:
    """Apparent and allocated bytes of the telemetry store's files (database, -wal, -shm)."""
    names = [n for n in files if "telemetry" in n]
    return sum(files[n]["bytes"] for n in names), sum(files[n]["allocated"] for n in names), names


def disk_figures(data_dir: Path, points: int) -> dict[str, Any]:
    files = data_files(data_dir)
    size, allocated, names = telemetry_bytes(files)
    return {
        "bytes_per_point": round(size / points, 2) if points else None,
        "allocated_bytes_per_point": round(allocated / points, 2) if points else None,
        "telemetry_bytes": size,
        "telemetry_files": names,
        "files": files,
    }


# -- reads -------------------------------------------------------------------------------------


def warm_reads(server: ServerProcess, fleet: list[tuple[int, str]], fill: Fill) -> dict[str, Any]:
    """Latest values of every device, then history and hourly aggregates of a few, with timings."""

    def timed(path: str) -> tuple[int, Any, float]:
        t0 = time.perf_counter()
        status, body = http_json("GET", server.url + path, headers=ADMIN, timeout=60)
        return status, body, (time.perf_counter() - t0) * 1000

    def summary(ms: list[float], bad: int, **extra: Any) -> dict[str, Any]:
        return {
            "requests": len(ms),
            "non_200": bad,
            "ms_median": round(statistics.median(ms), 2),
            "ms_max": round(max(ms), 2),
            **extra,
        }

    out: dict[str, Any] = {}
    ms, bad = [], 0
    for device_id, _ in fleet:
        status, _, elapsed = timed(f"/api/v1/telemetry/{device_id}/latest")
        ms.append(elapsed)
        bad += status != 200
    out["latest_all_devices"] = summary(ms, bad)
    sample = fleet[:: max(1, len(fleet) // 20)]
    start, end = fill.base_ts, fill.end_ts
    ms, bad, returned = [], 0, []
    for device_id, _ in sample:
        status, body, elapsed = timed(
            f"/api/v1/telemetry/{device_id}?start_time={start}&end_time={end}&limit=1000"
        )
        ms.append(elapsed)
        bad += status != 200
        returned.append(int(body.get("count", 0)) if status == 200 else 0)
    out["history_1000"] = summary(ms, bad, records_returned_min=min(returned))
    ms, bad = [], 0
    for device_id, _ in sample:
        status, _, elapsed = timed(
            f"/api/v1/telemetry/{device_id}/aggregated?field=temperature&aggregation=mean&window=1h"
            f"&start_time={start}&end_time={end}"
        )
        ms.append(elapsed)
        bad += status != 200
    out["aggregated_1h_over_fill"] = summary(ms, bad)
    return out


# -- the benchmark -----------------------------------------------------------------------------


class _Runs:
    """The closed-loop runs: warm-up then measured, with generator CPU and acknowledged points."""

    def __init__(self, cfg: Config, server: ServerProcess) -> None:
        self.cfg, self.server = cfg, server
        self.details: dict[str, dict[str, Any]] = {}
        self.generator_cpu = 0.0
        self.acknowledged_points = 0

    def measure(self, name: str, keys: tuple[str, ...], warmup_base: int, run_base: int) -> LoadResult:
        cfg = self.cfg
        result: LoadResult | None = None
        for run_name, duration, base in (
            (f"{name}_warmup", cfg.warmup, warmup_base),
            (name, cfg.window, run_base),
        ):
            stored0 = stored_points(self.server)
            cpu0 = self.server.cpu_seconds()
            result = closed_run(cfg, self.server, Workload("batch", keys, base), duration)
            cpu1 = self.server.cpu_seconds()
            summary = result.summary()
            summary["points_per_s"] = round(result.points_per_s, 1)
            summary["stored_points_before"] = stored0
            if cpu0 is not None and cpu1 is not None:
                summary["server_cpu_seconds"] = round(cpu1 - cpu0, 3)
                if result.ok:
                    points = result.ok * result.points_per_request
                    summary["server_cpu_us_per_point"] = round((cpu1 - cpu0) * 1e6 / points, 2)
            # Every request of a run takes BATCH_PAYLOADS ms of its slot; more would run into the next.
            used_ms = (result.requests + cfg.connections) * BATCH_PAYLOADS
            if used_ms > cfg.slot_ms:
                raise RuntimeError(f"{run_name}: {result.requests} requests overran its timestamp slot")
            self.details[run_name] = summary
            self.generator_cpu += result.cpu_seconds
            self.acknowledged_points += result.ok * result.points_per_request
            log(
                f"{run_name}: {result.points_per_s:,.0f} points/s ({result.ok_per_s:,.0f} 2xx/s) with "
                f"{stored0:,} points stored, non-2xx {result.non_2xx}, socket errors {result.socket_errors}, "
                f"p99 {result.latency_ms.get('p99', 0):.1f} ms"
            )
        assert result is not None
        return result


def _empty_run(cfg: Config, timeline: Timeline, runs: _Runs, i: int) -> LoadResult:
    """The load on an empty store: a new server with as many devices as the full one, a warm-up, a run."""
    with iotflow_server() as server:
        fleet = register_bulk(server, f"empty{i}", cfg.devices)
        empty = _Runs(cfg, server)
        keys = tuple(k for _, k in fleet[: cfg.rate_devices])
        result = empty.measure(f"P5_empty_{i}", keys, timeline.empty_warmup, timeline.empty_run)
        stored = stored_points(server)
        if stored < empty.acknowledged_points:
            raise RuntimeError(
                f"P5_empty_{i}: {empty.acknowledged_points} points acknowledged, {stored} stored"
            )
    runs.details.update(empty.details)
    runs.generator_cpu += empty.generator_cpu
    return result


def measure(
    quick: bool, tool: str, *, points: int | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], float]:
    """Rows P5, P7 and P8, the run's details, and the CPU seconds the load generators used."""
    cfg = config(quick, tool, points)
    with iotflow_server() as server:
        log(f"IoTFlow on {server.url}; registering {cfg.devices:,} devices")
        return _measure(cfg, server)


def _measure(cfg: Config, server: ServerProcess) -> tuple[dict[str, dict[str, Any]], dict[str, Any], float]:
    details: dict[str, Any] = {"config": {"points": cfg.points, "devices": cfg.devices, "tool": cfg.tool}}
    mem_start = memory_kib(server.pid)
    t0 = time.perf_counter()
    fleet = register_bulk(server, "fleet", cfg.devices)
    details["registration_seconds"] = round(time.perf_counter() - t0, 2)
    log(f"{len(fleet):,} devices registered in {details['registration_seconds']} s")
    keys = [key for _, key in fleet]
    runs = _Runs(cfg, server)
    # The timeline needs the fill's span, which needs the fill's size: size it for the whole target.
    span = Fill.plan(0, cfg.interval_ms, cfg.devices, cfg.points, cfg.fill_per_post).end_ts
    timeline = Timeline.plan(cfg, span)
    rate_keys = tuple(keys[: cfg.rate_devices])

    stored = stored_points(server)
    # Fill up to the target; at least a fifth of it, so the fill always runs (quick mode).
    fill_points = max(cfg.points - stored, cfg.points // 5)
    fill = Fill.plan(timeline.fill, cfg.interval_ms, cfg.devices, fill_points, cfg.fill_per_post)
    log(
        f"fill: {fill.points:,} points ({len(fill.jobs):,} POSTs, {fill.readings_max:,} readings per device "
        f"every {cfg.interval_ms / 1000:g} s) on top of {stored:,}"
    )
    mem_before = memory_kib(server.pid)
    cpu0 = server.cpu_seconds()
    filled = run_fill(server.url, fill, keys, cfg.fill_connections)
    cpu1 = server.cpu_seconds()
    stored_after_fill = stored_points(server)
    mem_after_fill = memory_kib(server.pid)
    details["fill"] = {
        "points": fill.points,
        "requests": filled.requests,
        "ok_2xx": filled.ok,
        "non_2xx": filled.non_2xx,
        "socket_errors": filled.socket_errors,
        "seconds": round(filled.seconds, 2),
        "points_per_s": round(filled.ok_points / filled.seconds, 1),
        "connections": cfg.fill_connections,
        "generator": "python asyncio client in this process",
        "generator_cpu_seconds": round(filled.cpu_seconds, 3),
        **({"server_cpu_seconds": round(cpu1 - cpu0, 3)} if cpu0 is not None and cpu1 is not None else {}),
        "stored_points_after": stored_after_fill,
        "timestamps": {"first_ms": fill.base_ts, "last_ms": fill.end_ts - 1, "interval_ms": cfg.interval_ms},
    }
    log(
        f"fill: {filled.ok:,} 2xx of {len(fill.jobs):,} in {filled.seconds:.1f} s "
        f"({details['fill']['points_per_s']:,.0f} points/s); {stored_after_fill:,} points stored"
    )
    if filled.ok != len(fill.jobs):
        raise RuntimeError(f"fill: {len(fill.jobs) - filled.ok} POSTs failed ({details['fill']})")

    # Each round: the load on the full store, then on an empty store (a new server), back to back,
    # so that both see the machine as it is in that minute.
    pairs: list[tuple[LoadResult, LoadResult]] = []
    for i, (warmup_ts, run_ts) in enumerate(timeline.full):
        full = runs.measure(f"P5_full_{i}", rate_keys, warmup_ts, run_ts)
        time.sleep(1.0)  # the full server's checkpoint of that run's pages ends
        pairs.append((full, _empty_run(cfg, timeline, runs, i)))
    details["runs"] = runs.details

    log("reads: latest of every device, history and hourly aggregates of some")
    details["reads"] = warm_reads(server, fleet, fill)
    points_now = stored_points(server)
    acknowledged = runs.acknowledged_points + filled.ok_points
    details["stored_check"] = {
        "acknowledged_points": acknowledged,
        "stored_points": points_now,
        "ok": points_now >= acknowledged,
    }
    mem = memory_kib(server.pid)
    # The store's write process and read processes count too; RSS counts their shared library pages
    # once per process, so the sum errs on the high side.
    children = {pid: memory_kib(pid).get("VmRSS", 0) for pid in child_pids(server.pid)}
    total_kib = mem["VmRSS"] + sum(children.values())
    details["memory"] = {
        "kib_at_start": mem_start,
        "kib_at_start_of_fill": mem_before,
        "kib_after_fill": mem_after_fill,
        "kib_after_reads": mem,
        "threads": thread_count(server.pid),
        "child_processes_vmrss_kib": children,
    }
    log(
        f"memory: VmRSS {mb(mem['VmRSS'])} MB (with {len(children)} helper processes: {mb(total_kib)} MB), "
        f"VmHWM {mb(mem['VmHWM'])} MB at {points_now:,} points"
    )

    data_dir = server.tmp / "data"
    live = disk_figures(data_dir, points_now)
    log(f"disk (running): {live['bytes_per_point']} bytes/point, files {live['files']}")
    assert server.proc is not None
    t1 = time.perf_counter()
    server.proc.send_signal(signal.SIGTERM)
    stopped: dict[str, Any] | None = None
    try:
        server.proc.wait(120)
    except subprocess.TimeoutExpired:
        log("the server did not stop within 120 s after SIGTERM")
    else:
        stopped = disk_figures(data_dir, points_now)
        stopped["stop_seconds"] = round(time.perf_counter() - t1, 2)
        stopped["exit_code"] = server.proc.returncode
        log(f"disk (stopped): {stopped['bytes_per_point']} bytes/point, files {stopped['files']}")
    details["disk"] = {"running": live, "after_clean_stop": stopped}

    ratios = [f.points_per_s / e.points_per_s if e.points_per_s > 0 else 0.0 for f, e in pairs]
    ratio = round(statistics.median(ratios), 4)
    cpu_pairs = [
        (
            runs.details[f"P5_empty_{i}"].get("server_cpu_us_per_point"),
            runs.details[f"P5_full_{i}"].get("server_cpu_us_per_point"),
        )
        for i in range(len(pairs))
    ]
    cpu_ratios = [e / f for e, f in cpu_pairs if e and f]
    rows: dict[str, dict[str, Any]] = {
        "P5": {
            "what": P5_WHAT,
            "value": round(statistics.median(f.points_per_s for f, _ in pairs), 1),
            "baseline": round(statistics.median(e.points_per_s for _, e in pairs), 1),
            "ratio": ratio,
            "target": P5_TARGET,
            "pass": ratio >= P5_TARGET,
            "unit": "points/s",
            "rounds": [
                {"full": round(f.points_per_s, 1), "empty": round(e.points_per_s, 1), "ratio": round(r, 4)}
                for (f, e), r in zip(pairs, ratios, strict=True)
            ],
            "stored_points_full": [
                runs.details[f"P5_full_{i}"]["stored_points_before"] for i in range(len(pairs))
            ],
            "server_cpu_us_per_point": [{"empty": e, "full": f} for e, f in cpu_pairs],
            "cpu_ratio": round(statistics.median(cpu_ratios), 4) if cpu_ratios else None,
            "note": "each round runs the same load (64 devices, 16 connections) on the full store, then "
            "on an empty store (a new server), back to back; ratio is the median of the rounds' "
            "full/empty ratios, value and baseline the medians of their rates; cpu_ratio (server CPU "
            "per point, empty over full, median) is the same comparison without the time the server "
            "waited for a CPU",
        },
        "P7": {
            "what": P7_WHAT,
            "value": live["bytes_per_point"],
            "target": P7_TARGET,
            "pass": live["bytes_per_point"] <= P7_TARGET,
            "unit": "bytes/point",
            "stored_points": points_now,
            "telemetry_bytes": live["telemetry_bytes"],
            "after_clean_stop": None if stopped is None else stopped["bytes_per_point"],
            "note": "database + -wal + -shm of the telemetry store, server running; after_clean_stop: "
            "the same files once the server exited on SIGTERM",
        },
        "P8": {
            "what": P8_WHAT,
            "value": mb(total_kib),
            "target": P8_TARGET_MB,
            "pass": mb(total_kib) <= P8_TARGET_MB,
            "unit": "MB",
            "server_mb": mb(mem["VmRSS"]),
            "helper_processes_mb": [mb(kib) for kib in children.values()],
            "peak_mb": mb(mem["VmHWM"]),
            "anon_mb": mb(mem.get("RssAnon", 0)),
            "file_mb": mb(mem.get("RssFile", 0)),
            "stored_points": points_now,
            "devices": len(fleet),
            "note": "VmRSS of the server process plus that of its helper processes (the store's writer "
            "and readers; MB = 10^6 bytes) "
            "after the fill, the full-store run and reads of every device's latest values, history and "
            "aggregates; peak_mb is the server's VmHWM; file_mb (the server's) counts pages of "
            "memory-mapped files (the interpreter's libraries; the store does not map the database)",
        },
    }
    if cfg.quick:
        for row in rows.values():
            row["quick"] = True
    return rows, details, runs.generator_cpu + filled.cpu_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="P5, P7 and P8 on a large store (JSON on stdout).")
    parser.add_argument("--quick", action="store_true", help="a small store that only proves the run works")
    parser.add_argument("--points", type=int, help="points to fill the store with (default 10,000,000)")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator for the measured ingest runs (default: wrk when installed)",
    )
    args = parser.parse_args(argv)
    if args.points is not None and args.points <= 0:
        parser.error("--points must be positive")
    tool = args.generator
    if tool == "auto":
        tool = "wrk" if wrk.available() else "python"
    elif tool == "wrk" and not wrk.available():
        parser.error("wrk is not installed (apt-get install wrk)")
    started = time.perf_counter()
    report: dict[str, Any] = {"quick": True} if args.quick else {}
    report["machine"] = {"cpus": os.cpu_count(), "loadavg_before": loadavg()}
    try:
        rows, details, generator_cpu = measure(args.quick, tool, points=args.points)
    except Exception as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(report, indent=2))
        return 1
    report.update(rows)
    report["machine"]["loadavg_after"] = loadavg()
    report["generator"] = {
        "tool": tool,
        "cpu_seconds": round(generator_cpu, 3),
        "note": "measured runs: "
        + ("wrk" if tool == "wrk" else "Python asyncio client")
        + " on the same machine as the server; the fill: a Python asyncio client; cpu_seconds sums both",
    }
    report["details"] = details
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
