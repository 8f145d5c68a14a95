"""What only the SQLite time-series store does: its write-ahead log stays bounded under a steady
stream of small commits, and head compaction in steps keeps every point readable and counted."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from iotflow.storage.timeseries.base import Point
from iotflow.storage.timeseries.sqlite import SqliteTimeseriesStore

T0 = 1_700_000_000_000
MB = 1 << 20


def test_wal_starts_over_under_a_steady_stream_of_commits(tmp_path: Path) -> None:
    """Each small commit appends several pages to the WAL (about 100 MB here). The writer's own
    automatic checkpoint is off; the checkpointer thread and the writer's finishing checkpoint must
    still let the WAL start over, so the file stays within its size limit."""
    path = str(tmp_path / "telemetry.db")

    async def run() -> tuple[int, int]:  # (points written, WAL bytes at the end)
        store = SqliteTimeseriesStore(path)
        await store.open()
        try:
            n = 0
            deadline = time.monotonic() + 60
            while n < 24_000 and time.monotonic() < deadline:
                await store.write_batch(
                    [Point(1 + (n + i) % 10, "temperature", T0 + n + i, 20.5, None) for i in range(8)]
                )
                n += 8
            return n, await asyncio.to_thread(os.path.getsize, path + "-wal")
        finally:
            await store.close()

    written, wal_bytes = asyncio.run(run())
    assert written == 24_000
    assert wal_bytes <= 72 * MB, f"the WAL grew to {wal_bytes / MB:.0f} MB"

    async def count() -> int:
        store = SqliteTimeseriesStore(path)
        await store.open()
        try:
            total = 0
            for device in range(1, 11):
                total += sum(info.count for info in await store.keys(device))
            return total
        finally:
            await store.close()

    assert asyncio.run(count()) == written
