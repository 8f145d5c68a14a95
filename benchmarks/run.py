"""IoTFlow benchmarks: every row of the performance targets (docs/performance.md).

P1 (one reading per POST), P2 (batched POSTs), P9 (latency), MQTT (P3, P4), growth, disk and memory at
10 million points (P5, P7, P8), reads under a mixed load (P6), memory per idle MQTT connection (P8_mqtt).

    python -m benchmarks.run [--quick] [--duration S] [--generator auto|wrk|python]

Prints one JSON object to stdout (progress goes to stderr). See benchmarks/README.md for what each
row means. The exit code is 0 when every benchmark ran (whatever the pass flags say) and 1 when one
could not run.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import big_store, mqtt_bench, mqtt_idle, pyload, reads, wrk
from benchmarks.alerts_overhead import Config as AlertsConfig
from benchmarks.alerts_overhead import measure as alerts_measure
from benchmarks.loadgen import LoadResult, loadavg, progress, ratio_of
from benchmarks.payloads import Workload, base_timestamp_ms
from benchmarks.servers import (
    ServerProcess,
    bare_asgi_server,
    iotflow_server,
    register_device,
    stored_points,
)
from benchmarks.store_write import measure as store_write_measure

P1_WHAT = "HTTP, one reading per POST, 1 worker, stored"
P2_WHAT = "HTTP batched, 500 points per POST"
P9_WHAT = "latency p99 at half the P1 rate"
P1_TARGET = 0.35
P2_TARGET = 0.6
P2_TARGET_ABS = 150_000
P9_TARGET_MS = 25.0
READS_ROWS = ("P6_latest", "P6_history", "P6_buckets")
BIG_STORE_ROWS = ("P5", "P7", "P8")
MQTT_IDLE_ROWS = ("P8_mqtt",)
# A measured run's timestamps start this far (~28 h) after its warm-up's, on the same devices.
MEASURED_OFFSET_MS = 100_000_000


@dataclass(frozen=True, slots=True)
class Config:
    quick: bool
    duration: float
    warmup: float
    tool: str  # "wrk" or "python"
    p1_connections: int = 50
    p1_threads: int = 2
    p1_devices: int = 10
    p2_connections: int = 16
    p2_threads: int = 2
    # Enough devices that one device's batches practically never overtake each other in flight.
    p2_devices: int = 64
    p9_connections: int = 64
    store_points: int = 200_000
    p1_rounds: int = 3  # P1: rounds of the bare app's run then IoTFlow's

    @property
    def p1_duration(self) -> float:
        """Seconds of each measured P1 run: the rounds share what one run of ``duration`` would take."""
        return max(1.0, self.duration / 2) if self.p1_rounds > 1 else self.duration


log = progress("bench")


class Bench:
    """Runs the load and keeps every run's figures for the generator and stored-point accounting."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.runs: dict[str, dict[str, Any]] = {}
        self.generator_cpu = 0.0
        self.acknowledged_requests = 0
        self.acknowledged_points = 0

    def _record(self, name: str, result: LoadResult, server: ServerProcess, cpu0: float | None) -> None:
        cpu1 = server.cpu_seconds()
        summary = result.summary()
        if cpu0 is not None and cpu1 is not None:
            summary["server_cpu_seconds"] = round(cpu1 - cpu0, 3)
        self.runs[name] = summary
        self.generator_cpu += result.cpu_seconds
        if server.name == "iotflow":
            acknowledged = result.ok + result.unmeasured_ok
            self.acknowledged_requests += acknowledged
            self.acknowledged_points += acknowledged * result.points_per_request
        log(
            f"{name}: {result.ok_per_s:,.0f} 2xx/s ({result.points_per_s:,.0f} points/s), "
            f"non-2xx {result.non_2xx}, socket errors {result.socket_errors}, "
            f"p99 {result.latency_ms.get('p99', 0):.1f} ms"
        )

    def closed(
        self,
        name: str,
        server: ServerProcess,
        workload: Workload,
        *,
        connections: int,
        threads: int,
        duration: float | None = None,
    ) -> LoadResult:
        """A warm-up, then the measured closed-loop run (same devices, later timestamps)."""
        cfg = self.config
        for run_name, seconds, load in (
            (f"{name}_warmup", cfg.warmup, workload),
            (name, cfg.duration if duration is None else duration, workload.shifted(MEASURED_OFFSET_MS)),
        ):
            cpu0 = server.cpu_seconds()
            if cfg.tool == "wrk":
                result = wrk.run_wrk(
                    server.url, load, connections=connections, threads=threads, duration=seconds
                )
            else:
                result = pyload.closed_loop(server.url, load, connections=connections, duration=seconds)
            self._record(run_name, result, server, cpu0)
        return result

    def open(self, name: str, server: ServerProcess, workload: Workload, *, rate: float) -> LoadResult:
        """Open loop at ``rate``: a warm-up at that rate, then the measured window."""
        cpu0 = server.cpu_seconds()
        result = pyload.open_loop(
            server.url,
            workload,
            rate=rate,
            duration=self.config.duration,
            connections=self.config.p9_connections,
            warmup=self.config.warmup,
        )
        self._record(name, result, server, cpu0)
        return result


def devices(server: ServerProcess, prefix: str, count: int) -> tuple[str, ...]:
    return tuple(register_device(server, f"bench-{prefix}-{i}") for i in range(count))


def _error_row(what: str, exc: BaseException) -> dict[str, Any]:
    return {"what": what, "error": f"{type(exc).__name__}: {exc}"}


def run(config: Config) -> tuple[dict[str, Any], bool]:
    """All benchmarks; returns the report and whether every benchmark ran."""
    cfg = config
    out: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "loadavg_before": loadavg(), "loadavg_after": []},
        "generator": {},
    }
    if cfg.quick:
        out["quick"] = True
    bench = Bench(cfg)
    errors: dict[str, str] = {}

    # Baseline of P2: the store's own write rate, in-process.
    store_rate: float | None = None
    try:
        log(f"store write_batch baseline: {cfg.store_points:,} points")
        with tempfile.TemporaryDirectory(prefix="iotflow-bench-store-") as tmp:
            store_rate = asyncio.run(store_write_measure(str(Path(tmp) / "telemetry.db"), cfg.store_points))
        log(f"store write_batch: {store_rate:,.0f} points/s")
    except Exception as exc:
        errors["P2"] = f"store baseline failed: {type(exc).__name__}: {exc}"
        log(errors["P2"])

    try:
        with iotflow_server() as server:
            log(f"IoTFlow on {server.url}")
            _iotflow_runs(bench, server, out, store_rate)
    except Exception as exc:
        out["stored_check"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"IoTFlow runs failed: {exc}")

    # Alert rules must not slow ingest: batched ingest with 100 active rules vs none.
    try:
        log("alert-rule overhead: batched ingest with 0 and 100 rules")
        alerts_cfg = AlertsConfig(
            duration=cfg.duration,
            warmup=cfg.warmup,
            burn_in=1.0 if cfg.quick else 8.0,
            tool=cfg.tool,
            runs=2 if cfg.quick else 7,
        )
        overhead = alerts_measure(alerts_cfg)
        out["alerts_overhead"] = {"what": "batched ingest with 100 active alert rules vs none", **overhead}
    except Exception as exc:
        out["alerts_overhead"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"alert-rule overhead failed: {exc}")

    # MQTT: embedded and external broker, QoS 0 and 1, against the brokers' own pass-through rates.
    mqtt_cfg = mqtt_bench.config(cfg.quick, None if cfg.quick else min(cfg.duration, 8.0))
    try:
        log("MQTT: Mosquitto and amqtt pass-through, then IoTFlow embedded and external")
        mqtt_rows, mqtt_runs, mqtt_cpu = mqtt_bench.run(mqtt_cfg)
        out.update(mqtt_rows)
        bench.runs.update(mqtt_runs)
        bench.generator_cpu += mqtt_cpu
    except Exception as exc:
        log(f"MQTT benchmarks failed: {exc}")
        for key, what in mqtt_bench.ROWS:
            out[key] = _error_row(what, exc)

    # Reads under a mixed load (P6), then 10 million points (P5, P7, P8), then idle MQTT connections.
    for name, rows_of, body in (
        ("reads", READS_ROWS, lambda: reads.measure(cfg.quick)),
        ("big store", BIG_STORE_ROWS, lambda: big_store.measure(cfg.quick, cfg.tool)),
        ("idle MQTT connections", MQTT_IDLE_ROWS, lambda: mqtt_idle.measure(cfg.quick)),
    ):
        try:
            log(f"{name}: {', '.join(rows_of)}")
            rows, details, generator_cpu = body()
            out.update(rows)
            bench.runs[name.replace(" ", "_")] = details
            bench.generator_cpu += generator_cpu
        except Exception as exc:
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            for key in rows_of:
                out[key] = {"error": f"{type(exc).__name__}: {exc}"}

    for key, what in (("P1", P1_WHAT), ("P2", P2_WHAT), ("P9", P9_WHAT)):
        if key in errors:
            out[key] = {"what": what, "error": errors[key], **out.get(key, {})}
        out.setdefault(key, {"what": what, "error": "not run"})
    out.setdefault("stored_check", {"error": "not run"})
    out["machine"]["loadavg_after"] = loadavg()
    out["generator"] = {
        "tool": cfg.tool,
        "cpu_seconds": round(bench.generator_cpu, 3),
        "note": f"{_generator_note(cfg)}; MQTT rows: {mqtt_bench.generator_note(mqtt_cfg)}",
        "cpu_seconds_by_run": {
            name: r["generator_cpu_seconds"] for name, r in bench.runs.items() if "generator_cpu_seconds" in r
        },
    }
    out["runs"] = bench.runs
    checked = (
        "P1",
        "P2",
        "P9",
        "stored_check",
        "alerts_overhead",
        *(key for key, _ in mqtt_bench.ROWS),
        *READS_ROWS,
        *BIG_STORE_ROWS,
        *MQTT_IDLE_ROWS,
    )
    ran_all = not any("error" in out.get(key, {"error": "not run"}) for key in checked)
    return out, ran_all


def _iotflow_runs(bench: Bench, server: ServerProcess, out: dict[str, Any], store_rate: float | None) -> None:
    cfg = bench.config
    base_ts = base_timestamp_ms()

    def attempt(key: str, what: str, body: Callable[[], dict[str, Any]]) -> None:
        try:
            out[key] = {"what": what, **body()}
        except Exception as exc:
            out[key] = _error_row(what, exc)
            log(f"{key} failed: {exc}")

    p1_rate: float | None = None

    def p1() -> dict[str, Any]:
        """Rounds of the bare app's run then IoTFlow's, back to back (both servers up): each ratio
        compares the two under the machine of that minute; the row gives the median ratio."""
        nonlocal p1_rate
        workload = Workload("single", devices(server, "p1", cfg.p1_devices), base_ts)
        bare_load = Workload("single", ("bare-asgi-key",), base_ts)
        rounds: list[tuple[float, float]] = []  # (IoTFlow, bare) req/s

        def p1_run(name: str, target: ServerProcess, load: Workload) -> float:
            return bench.closed(
                name,
                target,
                load,
                connections=cfg.p1_connections,
                threads=cfg.p1_threads,
                duration=cfg.p1_duration,
            ).ok_per_s

        with bare_asgi_server() as bare:
            log(f"bare ASGI baseline on {bare.url}")
            for i in range(cfg.p1_rounds):
                shift = 2 * i * MEASURED_OFFSET_MS  # every round's timestamps are new points
                base = p1_run(f"P1_baseline_{i}", bare, bare_load.shifted(shift))
                rounds.append((p1_run(f"P1_{i}", server, workload.shifted(shift)), base))
        p1_rate = statistics.median(rate for rate, _ in rounds)
        bare_rate = statistics.median(rate for _, rate in rounds)
        ratio = round(statistics.median(ratio_of(rate, base) for rate, base in rounds), 4)
        return {
            "value": round(p1_rate, 1),
            "baseline": round(bare_rate, 1),
            "ratio": ratio,
            "target": P1_TARGET,
            "pass": ratio >= P1_TARGET,
            "unit": "req/s",
            "rounds": [
                {
                    "iotflow": round(rate, 1),
                    "bare": round(base, 1),
                    "ratio": round(rate / base, 4) if base else 0,
                }
                for rate, base in rounds
            ],
            "note": f"{cfg.p1_rounds} rounds of the bare app's run then IoTFlow's, back to back; value and "
            "baseline are the medians of their rates, ratio the median of the rounds' ratios",
        }

    def p9() -> dict[str, Any]:
        if not p1_rate:
            raise RuntimeError("needs the P1 rate, which is missing")
        rate = p1_rate / 2
        workload = Workload("single", devices(server, "p9", cfg.p1_devices), base_ts)
        result = bench.open("P9", server, workload, rate=rate)
        achieved = result.ok_per_s + result.non_2xx / result.seconds if result.seconds > 0 else 0.0
        p99 = result.latency_ms["p99"]
        note = (
            f"open-loop Python client (asyncio, up to {cfg.p9_connections} requests in flight, "
            f"{cfg.warmup:g} s warm-up at the same rate not measured); latency runs from each request's "
            f"release on a 1 ms tick (release lag behind the exact schedule, ms: "
            f"{result.extra.get('dispatch_lag_ms')})"
        )
        if achieved < 0.95 * rate:
            note += f"; the client could not sustain {rate:,.0f} req/s, it achieved {achieved:,.0f} req/s"
        return {
            "value": round(p99, 2),
            "target": P9_TARGET_MS,
            "pass": p99 <= P9_TARGET_MS,
            "unit": "ms",
            "rate": round(rate, 1),
            "achieved_rate": round(achieved, 1),
            "p50_ms": round(result.latency_ms["p50"], 2),
            "note": note,
        }

    def p2() -> dict[str, Any]:
        workload = Workload("batch", devices(server, "p2", cfg.p2_devices), base_ts)
        result = bench.closed("P2", server, workload, connections=cfg.p2_connections, threads=cfg.p2_threads)
        if store_rate is None:
            raise RuntimeError("no baseline: the store write_batch run failed")
        ratio = ratio_of(result.points_per_s, store_rate)
        return {
            "value": round(result.points_per_s, 1),
            "baseline": round(store_rate, 1),
            "ratio": ratio,
            "target": P2_TARGET,
            "target_abs": P2_TARGET_ABS,
            "pass": ratio >= P2_TARGET and result.points_per_s >= P2_TARGET_ABS,
            "pass_ratio": ratio >= P2_TARGET,
            "pass_abs": result.points_per_s >= P2_TARGET_ABS,
            "unit": "points/s",
        }

    attempt("P1", P1_WHAT, p1)
    attempt("P9", P9_WHAT, p9)
    attempt("P2", P2_WHAT, p2)

    try:
        stored = stored_points(server)
        out["stored_check"] = {
            "sent_2xx": bench.acknowledged_requests,
            "acknowledged_points": bench.acknowledged_points,
            "stored_points": stored,
            "ok": stored >= bench.acknowledged_points,
            "note": "all IoTFlow runs incl. warm-ups; stored may exceed acknowledged by the requests "
            "still in flight when a run's time was up",
        }
        log(f"stored check: acknowledged {bench.acknowledged_points:,} points, stored {stored:,}")
    except Exception as exc:
        out["stored_check"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"stored check failed: {exc}")


def _generator_note(cfg: Config) -> str:
    if cfg.tool == "wrk":
        return (
            f"wrk, closed loop (P1 and its baseline: {cfg.p1_threads} threads x {cfg.p1_connections} "
            f"connections; P2: {cfg.p2_threads} x {cfg.p2_connections}), on the same "
            f"{os.cpu_count()}-CPU machine as the server; P9 uses an open-loop Python client in this "
            "process; cpu_seconds sums all runs including warm-ups"
        )
    return (
        "wrk not found (apt-get install wrk): a Python asyncio client generated the load on the same "
        "machine, so P1, its baseline and P2 are generator-bound and understate the server; "
        "cpu_seconds sums all runs including warm-ups"
    )


def parse_args(argv: list[str] | None) -> Config:
    args, duration, tool = wrk.parse_run_args("IoTFlow ingest benchmarks (JSON on stdout).", argv)
    return Config(
        quick=args.quick,
        duration=duration,
        warmup=1.0,
        tool=tool,
        store_points=20_000 if args.quick else 200_000,
        p1_rounds=1 if args.quick else 3,
    )


ROW_ORDER = (
    "P1",
    "P2",
    "P3",
    "P4",
    "P5",
    *READS_ROWS,
    "P7",
    "P8",
    *MQTT_IDLE_ROWS,
    "P9",
    "mqtt_embedded_qos0",
    "mqtt_external_qos0",
    "alerts_overhead",
    "stored_check",
)


def ordered(report: dict[str, Any]) -> dict[str, Any]:
    """The rows in target order, a one-line ``summary`` of their pass flags first, details last."""
    summary = {
        key: ("error" if "error" in report[key] else report[key].get("pass", report[key].get("ok")))
        for key in ROW_ORDER
        if key in report
    }
    head = {"summary": summary, "machine": report.get("machine")}
    rows = {key: report[key] for key in ROW_ORDER if key in report}
    rest = {k: v for k, v in report.items() if k not in rows and k not in head}
    return {**head, **rows, **rest}


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    started = time.perf_counter()
    report, ran_all = run(config)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(ordered(report), indent=2))
    return 0 if ran_all else 1


if __name__ == "__main__":
    sys.exit(main())
