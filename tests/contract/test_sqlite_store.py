"""What only the SQLite time-series store does: its write-ahead log stays bounded under a steady
stream of small commits, and head compaction in steps keeps every point readable and counted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from iotflow.errors import ServiceUnavailable
from iotflow.storage.timeseries import _sqlite_procs, _sqlite_worker, _sqlite_wproc
from iotflow.storage.timeseries.base import Point
from iotflow.storage.timeseries.sqlite import SqliteTimeseriesStore

T0 = 1_700_000_000_000
MB = 1 << 20


def _stored(path: str, devices: Iterable[int]) -> int:
    """The points a store at ``path`` holds for ``devices`` (opened on its own, after the test's)."""

    async def count() -> int:
        store = SqliteTimeseriesStore(path)
        await store.open()
        try:
            total = 0
            for device in devices:
                total += sum(info.count for info in await store.keys(device))
            return total
        finally:
            await store.close()

    return asyncio.run(count())


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

    assert _stored(path, range(1, 11)) == written


# -- read processes ---------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _wait_until(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_a_killed_read_process_is_replaced_and_close_ends_them(tmp_path: Path) -> None:
    """A read process killed with SIGKILL costs at most the requests it held (a clear 503, no hang);
    the next read starts another. ``close`` ends every read process."""
    path = str(tmp_path / "telemetry.db")
    points = [Point(1, "t", T0 + i * 1000, float(i), None) for i in range(500)]

    async def run() -> list[int]:
        store = SqliteTimeseriesStore(path, read_processes=1)
        await store.open()
        try:
            await store.write_batch(points)
            want = await store.query_json(1, start_ms=T0, end_ms=T0 + 10**6, limit=1000)
            assert want[1] == 500
            procs = store._procs
            assert procs is not None
            (first,) = procs.pids()
            os.kill(first, signal.SIGKILL)
            try:  # in flight while the process dies, or sent after: an answer or a 503, in time
                got = await asyncio.wait_for(
                    store.query_json(1, start_ms=T0, end_ms=T0 + 10**6, limit=1000), 10
                )
                assert got == want
            except ServiceUnavailable:
                pass
            got = await asyncio.wait_for(store.query_json(1, start_ms=T0, end_ms=T0 + 10**6, limit=1000), 10)
            assert got == want
            (second,) = procs.pids()
            assert second != first
            return [first, second]
        finally:
            await store.close()

    first, second = asyncio.run(run())
    assert not _alive(first)
    assert _wait_until(lambda: not _alive(second)), "close() left a read process running"


_SERVER = """
import asyncio, sys
from iotflow.storage.timeseries.base import Point
from iotflow.storage.timeseries.sqlite import SqliteTimeseriesStore

async def main():
    store = SqliteTimeseriesStore(sys.argv[1], read_processes=2)
    await store.open()
    await store.write_batch([Point(1, "t", 1_700_000_000_000, 1.5, None)])
    for _ in range(4):  # both processes started
        await store.aggregate(1, "t", "mean", start_ms=0, end_ms=2 * 10**12, window_ms=None)
    print(*store._procs.pids(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_read_processes_run_at_a_lower_priority_than_the_server_and_the_write_process(tmp_path: Path) -> None:
    """A long aggregate in a read process must not take the CPUs from the event loop and the write
    process: the read processes are niced, the write process keeps the server's priority."""
    path = str(tmp_path / "telemetry.db")

    async def run() -> tuple[list[int], int]:
        store = SqliteTimeseriesStore(path, read_processes=2, write_process=True)
        await store.open()
        try:
            await store.write_batch([Point(1, "t", T0 + i * 1000, float(i), None) for i in range(50)])
            await asyncio.gather(
                *(store.query_json(1, start_ms=T0, end_ms=T0 + 10**6, limit=100) for _ in range(8))
            )
            procs, writer = store._procs, store.write_pid
            assert procs is not None and writer is not None
            readers = [os.getpriority(os.PRIO_PROCESS, pid) for pid in procs.pids()]
            return readers, os.getpriority(os.PRIO_PROCESS, writer)
        finally:
            await store.close()

    own = os.getpriority(os.PRIO_PROCESS, 0)
    readers, writer = asyncio.run(run())
    assert len(readers) == 2 and all(n == min(own + _sqlite_worker.NICENESS, 19) for n in readers), readers
    assert writer == own


def test_read_processes_end_with_a_server_killed_with_sigkill(tmp_path: Path) -> None:
    """The read processes never outlive the process that started them, even one killed with -9."""
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(tmp_path / "telemetry.db")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        pids = [int(x) for x in server.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    finally:
        server.kill()
        server.wait()
    assert _wait_until(lambda: not any(_alive(pid) for pid in pids)), "a read process outlived its server"


def test_reads_go_to_threads_when_read_processes_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read process that dies before its first answer (here: it cannot import its module) costs that
    request a 503; after three such processes in a row the store reads in its threads, and answers."""
    monkeypatch.setattr(_sqlite_procs, "_MODULE", "iotflow.no_such_module")
    path = str(tmp_path / "telemetry.db")

    async def run() -> int:
        store = SqliteTimeseriesStore(path, read_processes=1)
        await store.open()
        try:
            await store.write_batch([Point(1, "t", T0 + i, float(i), None) for i in range(10)])
            refused = 0
            for _ in range(10):
                try:
                    text, count = await asyncio.wait_for(
                        store.query_json(1, start_ms=T0, end_ms=T0 + 100, limit=100), 30
                    )
                except ServiceUnavailable:
                    refused += 1
                    continue
                assert count == 10 and text.startswith(b'[{"timestamp":')
            return refused
        finally:
            await store.close()

    refused = asyncio.run(run())
    assert 1 <= refused <= _sqlite_procs.MAX_FAILED_STARTS


# -- the write process -------------------------------------------------------------------------------


def test_a_killed_write_process_loses_nothing_acknowledged_and_is_replaced(tmp_path: Path) -> None:
    """A write process killed with SIGKILL costs no batch (the one it held is sent to a new process)
    and no hang; every batch that was answered is stored."""
    path = str(tmp_path / "telemetry.db")

    def batch(n: int) -> list[Point]:
        return [Point(1 + i % 4, "t", T0 + n * 100 + i, float(n), None) for i in range(100)]

    async def run() -> tuple[int, int, int]:
        store = SqliteTimeseriesStore(path, write_process=True)
        await store.open()
        try:
            first = store.write_pid
            assert first is not None and first != os.getpid()
            acknowledged = 0
            for n in range(20):
                if n == 10:
                    os.kill(first, signal.SIGKILL)
                acknowledged += await asyncio.wait_for(store.write_batch(batch(n)), 30)
            second = store.write_pid
            assert second is not None and second != first
            stored = 0
            for device in range(1, 5):
                stored += sum(info.count for info in await store.keys(device))
            return acknowledged, stored, second
        finally:
            await store.close()

    acknowledged, stored, second = asyncio.run(run())
    assert acknowledged == stored == 2000
    assert _wait_until(lambda: not _alive(second)), "close() left the write process running"


_WRITING_SERVER = """
import asyncio, sys
from iotflow.storage.timeseries.base import Point
from iotflow.storage.timeseries.sqlite import SqliteTimeseriesStore

async def main():
    store = SqliteTimeseriesStore(sys.argv[1], write_process=True)
    await store.open()
    print(store.write_pid, flush=True)
    n = 0
    while True:
        await store.write_batch([Point(1, "t", 1_700_000_000_000 + n * 10 + i, 1.5, None) for i in range(10)])
        n += 1
        print(n * 10, flush=True)  # acknowledged so far

asyncio.run(main())
"""


def test_the_write_process_ends_with_a_server_killed_with_sigkill_and_keeps_what_it_answered(
    tmp_path: Path,
) -> None:
    """Killed with -9 mid-stream, the server's write process ends too; every point it answered for is
    in the file afterwards."""
    path = str(tmp_path / "telemetry.db")
    server = subprocess.Popen(
        [sys.executable, "-c", _WRITING_SERVER, path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        pid = int(server.stdout.readline())
        acknowledged = 0
        while acknowledged < 3000:
            acknowledged = int(server.stdout.readline())
        assert _alive(pid)
    finally:
        server.kill()
        server.wait()
    assert _wait_until(lambda: not _alive(pid)), "the write process outlived its server"

    assert _stored(path, [1]) >= acknowledged


def test_writes_go_to_a_thread_when_the_write_process_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write process that cannot start (here: it cannot import its module) does not stop the store:
    it writes in its own thread, and says so in the log."""
    monkeypatch.setattr(_sqlite_wproc, "_MODULE", "iotflow.no_such_module")

    async def run() -> tuple[int | None, int]:
        store = SqliteTimeseriesStore(str(tmp_path / "telemetry.db"), write_process=True)
        await store.open()
        try:
            written = await store.write_batch([Point(1, "t", T0 + i, float(i), None) for i in range(10)])
            return store.write_pid, written
        finally:
            await store.close()

    assert asyncio.run(run()) == (None, 10)


def test_a_writer_picks_up_what_another_writer_committed(tmp_path: Path) -> None:
    """Two writers on one file — a one-shot CLI command beside the server, or a write process that
    outlived a killed server and finished its batch: each writer's next batch sees what the other
    committed (new series, deleted series), so nothing fails and nothing is written under a series
    that no longer exists."""
    path = str(tmp_path / "telemetry.db")

    async def run() -> tuple[list[Any], list[Any]]:
        a, b = SqliteTimeseriesStore(path), SqliteTimeseriesStore(path)
        await a.open()
        await b.open()
        try:
            await a.write_batch([Point(1, "t", T0, 1.0, None)])
            # b opened before a created series (1, "t")
            await b.write_batch([Point(1, "t", T0 + 1, 2.0, None), Point(2, "u", T0, 3.0, None)])
            assert await b.delete_device(1) == 2
            # a still knew series (1, "t") from its own first batch
            await a.write_batch([Point(1, "t", T0 + 2, 4.0, None), Point(2, "u", T0 + 1, 5.0, None)])
            records = await b.query(1, start_ms=T0 - 1, end_ms=T0 + 10, limit=10, order="asc")
            infos = [(i.key, i.count) for d in (1, 2) for i in await a.keys(d)]
            return [(r.ts_ms, r.values) for r in records], infos
        finally:
            await a.close()
            await b.close()

    records, infos = asyncio.run(run())
    assert records == [(T0 + 2, {"t": 4.0})]
    assert infos == [("t", 1), ("u", 2)]


def test_writes_move_to_a_thread_when_write_processes_keep_dying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write process dies and no other can start (here: its module is gone): each write meanwhile
    is refused with a 503, at most one per failed start, then the store's own thread writes, and every
    acknowledged batch is stored."""
    path = str(tmp_path / "telemetry.db")

    async def run() -> tuple[int, int, int]:
        store = SqliteTimeseriesStore(path, write_process=True)
        await store.open()
        try:
            await store.write_batch([Point(1, "t", T0, 0.0, None)])
            pid = store.write_pid
            assert pid is not None
            monkeypatch.setattr(_sqlite_wproc, "_MODULE", "iotflow.no_such_module")
            os.kill(pid, signal.SIGKILL)
            acknowledged, refused = 1, 0
            for n in range(1, 11):
                batch = [Point(1, "t", T0 + n * 10 + i, float(n), None) for i in range(10)]
                try:
                    acknowledged += await asyncio.wait_for(store.write_batch(batch), 30)
                except ServiceUnavailable:
                    refused += 1
            assert store.write_pid is None  # the thread writes now
            stored = sum(info.count for info in await store.keys(1))
            return acknowledged, refused, stored
        finally:
            await store.close()

    acknowledged, refused, stored = asyncio.run(run())
    assert 1 <= refused <= _sqlite_procs.MAX_FAILED_STARTS + 1
    assert acknowledged == 1 + (10 - refused) * 10
    assert stored >= acknowledged


def test_a_write_process_whose_server_is_gone_finishes_its_batch_and_exits_quietly(tmp_path: Path) -> None:
    """What a write process sees when its server was killed: nobody reads its answers any more. It
    commits the batch it has, exits with 0, and prints no traceback into the server's log."""
    import msgspec

    path = str(tmp_path / "telemetry.db")

    def frame(op: str, *args: Any) -> bytes:
        body = b"m" + msgspec.msgpack.encode([op, args])
        return len(body).to_bytes(4, "big") + body

    worker = subprocess.Popen(
        [sys.executable, "-m", _sqlite_wproc._MODULE, path, str(24 * 3_600_000), "NORMAL", "20000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert worker.stdin is not None and worker.stdout is not None and worker.stderr is not None
    worker.stdin.write(frame("open"))
    worker.stdin.flush()
    head = worker.stdout.read(4)
    assert msgspec.msgpack.decode(worker.stdout.read(int.from_bytes(head, "big")))[0] is True
    worker.stdout.close()  # the server is gone
    worker.stdin.write(frame("write_batch", [[1, "t", T0 + i, float(i), None] for i in range(10)]))
    worker.stdin.close()
    assert worker.wait(30) == 0
    assert b"Traceback" not in worker.stderr.read()

    assert _stored(path, [1]) == 10
