"""Closed-loop load with ``wrk`` (``apt-get install wrk``), driven by a generated Lua script.

The script builds every request in ``request()`` so each one carries its own sequence number
(``counter * threads + thread index``) and therefore distinct timestamps, exactly as
:meth:`benchmarks.payloads.Workload.body` does, and ``done()`` prints the run's figures as one
JSON line that :func:`run_wrk` parses.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.loadgen import LoadResult
from benchmarks.payloads import BATCH_PAYLOADS, Workload

MARKER = "BENCHJSON "

_SCRIPT = r"""
local keys = {%(keys)s}
local nkeys = #keys
local base = %(base)d
local nthreads = %(threads)d
local path = "%(path)s"
local counter = -1
local tid_ = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  tid_ = tid or 0
end

local function single(seq)
  return string.format('{"data":{"temperature":%%.1f},"timestamp":%%.0f}', 20 + (seq %% 100) / 10, base + seq)
end

local function batch(seq)
  local parts = {}
  local first = seq * %(payloads)d
  for i = 0, %(payloads)d - 1 do
    parts[i + 1] = string.format(
      '{"data":{"temperature":%%.2f,"humidity":%%.2f,"pressure":%%.1f,"battery":%%d,"rssi":%%d},"timestamp":%%.0f}',
      20 + (i %% 100) / 10, 50 + (i %% 50) / 10, 1013 + (i %% 20) / 10, 100 - i %% 100, -60 - i %% 30,
      base + first + i)
  end
  return '{"batch":[' .. table.concat(parts, ",") .. ']}'
end

local make = %(make)s
local headers = {["Content-Type"] = "application/json"}

function request()
  counter = counter + 1
  local seq = counter * nthreads + tid_
  headers["X-API-Key"] = keys[(seq %% nkeys) + 1]
  return wrk.format("POST", path, headers, make(seq))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"duration_us":%%.0f,"requests":%%.0f,"connect":%%.0f,"read":%%.0f,"write":%%.0f,' ..
    '"status":%%.0f,"timeout":%%.0f,"mean_us":%%.1f,"p50_us":%%.0f,"p90_us":%%.0f,"p99_us":%%.0f,"max_us":%%.0f}\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_script(workload: Workload, threads: int) -> str:
    return _SCRIPT % {
        "keys": ", ".join(json.dumps(k) for k in workload.api_keys),
        "base": workload.base_ts,
        "threads": threads,
        "path": workload.path,
        "payloads": BATCH_PAYLOADS,
        "make": "single" if workload.kind == "single" else "batch",
        "marker": MARKER,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(url: str, workload: Workload, *, connections: int, threads: int, duration: float) -> LoadResult:
    """Run wrk against ``url`` (scheme, host and port) for ``duration`` seconds (whole seconds)."""
    seconds = max(1, math.ceil(duration))
    with tempfile.TemporaryDirectory(prefix="iotflow-bench-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(lua_script(workload, threads))
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url + workload.path,
        ]
        cpu_before = _children_cpu()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
        cpu = _children_cpu() - cpu_before
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    figures = json.loads(lines[-1][len(MARKER) :])
    requests = int(figures["requests"])
    non_2xx = int(figures["status"])  # wrk counts statuses > 399; IoTFlow answers 201 or an error
    return LoadResult(
        tool="wrk",
        requests=requests,
        ok=requests - non_2xx,
        non_2xx=non_2xx,
        socket_errors=int(figures["connect"] + figures["read"] + figures["write"]),
        seconds=figures["duration_us"] / 1e6,
        points_per_request=workload.points_per_request,
        cpu_seconds=cpu,
        latency_ms={
            "p50": figures["p50_us"] / 1000,
            "p90": figures["p90_us"] / 1000,
            "p99": figures["p99_us"] / 1000,
            "max": figures["max_us"] / 1000,
            "mean": figures["mean_us"] / 1000,
        },
        extra={"connections": connections, "threads": threads, "timeouts": int(figures["timeout"])},
    )


def parse_run_args(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, float, str]:
    """The options every load benchmark takes: --quick, --duration, --generator.

    Returns the parsed options, the seconds per measured run and the generator to use.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="short runs that only prove each benchmark runs")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10, quick 2)")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator for the closed-loop runs (default: wrk when installed)",
    )
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    if duration <= 0:
        parser.error("--duration must be positive")
    tool = args.generator
    if tool == "auto":
        tool = "wrk" if available() else "python"
    elif tool == "wrk" and not available():
        parser.error("wrk is not installed (apt-get install wrk)")
    return args, duration, tool
