"""In-process write rate of the time-series store.

    python -m benchmarks.store_write --points 1000000

Writes ``--points`` points in batches (default 500) from a fleet of 100 devices x 5 keys reporting
once per second, with increasing realistic timestamps, and prints
``{"points": N, "seconds": s, "points_per_s": r}``. Only the time spent inside ``write_batch`` is
measured (building the points is not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from iotflow.storage.timeseries.base import Point, Value
from iotflow.storage.timeseries.sqlite import SqliteTimeseriesStore

DEVICES = 100
KEYS = ("temperature", "humidity", "pressure", "battery", "rssi")
UNITS = ("°C", "%", "hPa", "%", "dBm")
START_MS = 1_700_000_000_000
PERIOD_MS = 1_000


def _points(total: int, seed: int = 1) -> Iterator[Point]:
    """Every device reports every key once per second (with a little jitter), in time order."""
    rnd = random.Random(seed)
    state = [[20.0, 50.0, 1013.0, 100.0, -60.0] for _ in range(DEVICES)]
    produced = 0
    tick = 0
    while produced < total:
        base = START_MS + tick * PERIOD_MS
        for device in range(1, DEVICES + 1):
            ts = base + rnd.randrange(50)
            values = state[device - 1]
            for k, key in enumerate(KEYS):
                if produced == total:
                    return
                values[k] += rnd.uniform(-0.05, 0.05)
                value: Value = round(values[k], 2) if k != 4 else int(values[k])
                yield Point(device, key, ts, value, UNITS[k] if tick == 0 else None)
                produced += 1
        tick += 1


async def measure(path: str, points: int, batch: int = 500, *, write_process: bool = False) -> float:
    """Write ``points`` points into a store at ``path`` and return the rate in points per second.

    Each batch is built, then awaited; only the time inside ``write_batch`` counts. The store writes
    on its writer thread by default: called one batch at a time, that is its fastest (200,000 points:
    257-278k points/s against 242-248k through the write process, which the server uses), so P2's
    baseline is the stricter one.
    """
    store = SqliteTimeseriesStore(path, write_process=write_process)
    await store.open()
    written, elapsed = 0, 0.0
    try:
        for pending in _batches(points, batch):
            t0 = time.perf_counter()
            written += await store.write_batch(pending)
            elapsed += time.perf_counter() - t0
    finally:
        await store.close()
    if written != points:
        raise RuntimeError(f"expected {points} new points, the store reported {written}")
    return points / elapsed if elapsed > 0 else float("inf")


def _batches(points: int, batch: int) -> Iterator[list[Point]]:
    pending: list[Point] = []
    for point in _points(points):
        pending.append(point)
        if len(pending) == batch:
            yield pending
            pending = []
    if pending:
        yield pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--path", help="store file (default: a temporary directory, removed afterwards)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iotflow-bench-") as tmp:
        path = args.path or str(Path(tmp) / "telemetry.db")
        rate = asyncio.run(measure(path, args.points, args.batch))
    seconds = args.points / rate
    print(json.dumps({"points": args.points, "seconds": round(seconds, 3), "points_per_s": round(rate)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
