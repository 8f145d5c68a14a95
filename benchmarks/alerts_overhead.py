"""What alert-rule evaluation costs batched HTTP ingest.

    python -m benchmarks.alerts_overhead [--quick] [--duration S] [--generator auto|wrk|python]

One IoTFlow server (rate limits off), 64 devices of one user, batched POSTs of 500 points with
distinct timestamps (the P2 workload of ``benchmarks.run``). After a burn-in, five measured runs on
the same server, each after its own warm-up, alternate: no rules, 100 enabled rules (created just
before), no rules (the rules deleted), and so on, seven runs in all. Each run with rules is compared
with the mean of the runs without rules just before and just after it, so drift of the server over
the runs (a growing store) counts against neither side, and ``ratio`` is the median of those three
ratios, so one run caught in a slow minute of a shared machine does not decide it. Prints
``{"rules_0", "rules_100", "ratio", "target", "pass", ...}`` (points/s; ``rules_0`` and
``rules_100`` are the means of each side).

The 100 rules all watch keys that are in every payload: 85 on single devices, 5 on all of the
user's devices, 3 of the admin token on every device, none of which fire, plus 5 on single devices
that fire at once and stay open, and 2 that match one reading in every request and not the latest
one, so each such batch opens and at once resolves an alert (a busy write path).
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from typing import Any

from benchmarks import pyload, wrk
from benchmarks.loadgen import LoadResult, progress
from benchmarks.payloads import BATCH_KEYS, Workload, base_timestamp_ms
from benchmarks.servers import ADMIN_TOKEN, ServerProcess, http_json, iotflow_server

TARGET = 0.8
DEVICES = 64
RUN_OFFSET_MS = 100_000_000  # each run's timestamps start ~28 h after the previous run's
ADMIN = {"Authorization": f"admin {ADMIN_TOKEN}"}
# Per key: a condition that never holds for the benchmark's values (see benchmarks.payloads).
QUIET = {
    "temperature": (">", 60.0),
    "humidity": (">", 90.0),
    "pressure": ("<", 950.0),
    "battery": ("<", 0.0),
    "rssi": ("<", -120.0),
}
QUIET_WIDE = {
    "temperature": (">=", 70.0),
    "humidity": (">=", 99.0),
    "pressure": (">", 1100.0),
    "battery": (">", 100.0),
    "rssi": (">", -10.0),
}


@dataclass(frozen=True, slots=True)
class Config:
    duration: float
    warmup: float
    burn_in: float
    tool: str
    connections: int = 16
    threads: int = 2
    runs: int = 7  # alternating without / with rules, starting without (quick: 2)


log = progress("alerts-bench")


def _call(server: ServerProcess, method: str, path: str, body: Any = None, **headers: str) -> Any:
    status, out = http_json(method, server.url + path, body, headers)
    if status >= 300:
        raise RuntimeError(f"{method} {path} -> {status}: {out}")
    return out


def _fleet(server: ServerProcess) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """A user and their devices: (bearer headers, [(device id, api key)])."""
    creds = {"username": "alerts-bench", "email": "alerts-bench@example.com", "password": "bench-password"}
    token = _call(server, "POST", "/api/v1/auth/register", creds)["token"]
    user = {"Authorization": f"Bearer {token}"}
    devices = []
    for i in range(DEVICES):
        body = {"name": f"alerts-bench-{i}", "device_type": "sensor"}
        device = _call(server, "POST", "/api/v1/devices/register", body, **user)["device"]
        devices.append((int(device["id"]), str(device["api_key"])))
    return user, devices


def _rules(user: dict[str, str], device_ids: list[int]) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(credentials, rule body) of the 100 rules."""
    rules: list[tuple[dict[str, str], dict[str, Any]]] = []
    for j in range(85):
        key = BATCH_KEYS[j % len(BATCH_KEYS)]
        op, threshold = QUIET[key]
        body = {
            "key": key,
            "operator": op,
            "threshold": threshold,
            "device_id": device_ids[j % len(device_ids)],
        }
        rules.append((user, body))
    for key, (op, threshold) in QUIET_WIDE.items():  # all of the user's devices
        rules.append((user, {"key": key, "operator": op, "threshold": threshold, "severity": "critical"}))
    for key, op, threshold in (("temperature", "<", -40.0), ("humidity", "<", 0.0), ("pressure", "<", 500.0)):
        rules.append((ADMIN, {"key": key, "operator": op, "threshold": threshold, "severity": "info"}))
    for i in range(5):  # fire at once, stay open
        rules.append(
            (user, {"key": "pressure", "operator": ">", "threshold": 1000, "device_id": device_ids[i]})
        )
    for i in range(5, 7):  # 25.0 is one reading of each request, never its latest: open + resolve
        rules.append(
            (user, {"key": "temperature", "operator": "==", "threshold": 25.0, "device_id": device_ids[i]})
        )
    assert len(rules) == 100
    return rules


def _load(server: ServerProcess, cfg: Config, workload: Workload, duration: float) -> LoadResult:
    if cfg.tool == "wrk":
        return wrk.run_wrk(
            server.url, workload, connections=cfg.connections, threads=cfg.threads, duration=duration
        )
    return pyload.closed_loop(server.url, workload, connections=cfg.connections, duration=duration)


def _run(server: ServerProcess, cfg: Config, workload: Workload, name: str) -> dict[str, Any]:
    """A short warm-up, then the measured run (later timestamps, same devices)."""
    _load(server, cfg, workload, cfg.warmup)
    cpu0 = server.cpu_seconds()
    result = _load(server, cfg, workload.shifted(RUN_OFFSET_MS // 2), cfg.duration)
    cpu1 = server.cpu_seconds()
    row: dict[str, Any] = {
        "points_per_s": round(result.points_per_s, 1),
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,
        "p99_ms": round(result.latency_ms.get("p99", 0.0), 2),
    }
    if cpu0 is not None and cpu1 is not None and result.ok:
        points = result.ok * result.points_per_request
        row["server_cpu_us_per_point"] = round((cpu1 - cpu0) / points * 1e6, 3)
    log(f"{name}: {result.points_per_s:,.0f} points/s, non-2xx {result.non_2xx}, p99 {row['p99_ms']} ms")
    return row


def _mean(rows: list[dict[str, Any]], field: str) -> float:
    values = [float(r[field]) for r in rows if field in r]
    return sum(values) / len(values) if values else 0.0


def _neighbour_ratios(order: list[tuple[bool, dict[str, Any]]]) -> list[float]:
    """Each run with rules against the mean of the runs without rules just before and after it."""
    ratios = []
    for j, (rules_on, row) in enumerate(order):
        if not rules_on:
            continue
        around = [
            order[k][1]["points_per_s"] for k in (j - 1, j + 1) if 0 <= k < len(order) and not order[k][0]
        ]
        if around and sum(around) > 0:
            ratios.append(row["points_per_s"] / (sum(around) / len(around)))
    return ratios


def measure(cfg: Config) -> dict[str, Any]:
    """Runs without rules and with 100 rules, alternating (A B A B A B A; quick: A B) after a burn-in."""
    server = iotflow_server()
    server.env["IOTFLOW_RATE_LIMITS"] = "false"
    with server:
        log(f"IoTFlow on {server.url}; {cfg.tool}, {cfg.duration:g} s per run")
        user, devices = _fleet(server)
        base = Workload("batch", tuple(key for _, key in devices), base_timestamp_ms())
        # A fresh server is slower for its first seconds (page cache, first chunk tables): not measured.
        _load(server, cfg, base.shifted(-RUN_OFFSET_MS), cfg.burn_in)
        bodies = _rules(user, [device_id for device_id, _ in devices])
        without: list[dict[str, Any]] = []
        with_rules: list[dict[str, Any]] = []
        order: list[tuple[bool, dict[str, Any]]] = []  # every run, in turn: (with rules, its figures)
        for i in range(cfg.runs):
            rules_on = i % 2 == 1
            workload = base.shifted(i * RUN_OFFSET_MS)
            if not rules_on:
                without.append(_run(server, cfg, workload, "0 rules"))
                order.append((False, without[-1]))
                continue
            created = [
                (creds, int(_call(server, "POST", "/api/v1/alerts/rules", body, **creds)["rule"]["id"]))
                for creds, body in bodies
            ]
            row = _run(server, cfg, workload, "100 rules")
            row["alerts_open"] = _call(server, "GET", "/api/v1/alerts?state=open&limit=1", **ADMIN)["meta"][
                "total"
            ]
            row["alerts_total"] = _call(server, "GET", "/api/v1/alerts?limit=1", **ADMIN)["meta"]["total"]
            with_rules.append(row)
            order.append((True, row))
            for creds, rule_id in created:  # (deleting a rule deletes its alerts)
                _call(server, "DELETE", f"/api/v1/alerts/rules/{rule_id}", **creds)

    rules_0, rules_100 = _mean(without, "points_per_s"), _mean(with_rules, "points_per_s")
    ratios = _neighbour_ratios(order)
    ratio = round(statistics.median(ratios), 4) if ratios else 0.0
    fired = all(r["alerts_open"] >= 5 for r in with_rules)
    return {
        "rules_0": round(rules_0, 1),
        "rules_100": round(rules_100, 1),
        "ratio": ratio,
        "target": TARGET,
        "pass": ratio >= TARGET and fired,
        "unit": "points/s",
        "what": "batched HTTP ingest (500 points per POST, 64 devices) with 100 enabled alert rules "
        "vs none; runs alternate without and with rules; ratio: the median over the runs with rules of "
        "each one against the mean of the runs without rules next to it",
        "ratios": [round(r, 4) for r in ratios],
        "server_cpu_us_per_point": {
            "rules_0": round(_mean(without, "server_cpu_us_per_point"), 3),
            "rules_100": round(_mean(with_rules, "server_cpu_us_per_point"), 3),
        },
        "rules_fired": fired,
        "generator": cfg.tool,
        "runs": {"rules_0": without, "rules_100": with_rules},
    }


def parse_args(argv: list[str] | None) -> Config:
    args, duration, tool = wrk.parse_run_args("Alert-rule overhead on batched ingest (JSON on stdout).", argv)
    return Config(
        duration=duration,
        warmup=1.0 if args.quick else 2.0,
        burn_in=1.0 if args.quick else 8.0,
        tool=tool,
        runs=2 if args.quick else 7,
    )


def main(argv: list[str] | None = None) -> int:
    report = measure(parse_args(argv))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
