"""The embedded time-series store: SQLite, time-chunked tables, one writer (in its own process or thread).

Layout
    ``series`` maps each (device, key) to a small integer id and carries the catalogue (unit,
    first/last timestamp, exact point count, a bitmask of the value types seen) and the latest value.
    Points live in per-time-chunk tables ``ts_<n>`` (``n = ts_ms // chunk_ms``, ``ts_m<n>`` for
    negative chunks), each a ``WITHOUT ROWID`` table keyed by ``(series, ts)``: every read is a
    primary-key range scan of the series it asks for, and inserts only touch the chunks of recent
    time, so the insert rate stays flat as the store grows. New points first land in ``head``, a
    small table of the same shape that is moved into the chunks in bulk every ``head_rows`` points;
    this keeps the pages a batch dirties few (see ``_sqlite_writer``). Readers see ``head`` as the
    newest chunk of each series. See ``_sqlite_codec`` for how typed values are stored.

Threads and processes
    All writes go through one writer (``_sqlite_writer``) that owns the write connection; each batch
    is one ``BEGIN IMMEDIATE`` transaction. The writer runs in a process of its own with
    ``write_process=True`` (the server's default, see ``_sqlite_wproc``), else on a dedicated
    thread. Reads run on a small pool of reader threads, each with its own connection and each read
    in one read transaction, so they see a consistent snapshot and never wait behind writes (WAL
    mode); with ``read_processes``, history and aggregate reads run in processes of their own (see
    ``_sqlite_procs``). Nothing touches SQLite on the event loop.

Checkpoints
    Off the writer's path, on their own thread beside the writer (see ``_sqlite_checkpoint``).

Durability
    WAL with ``synchronous=NORMAL`` (the default): a committed batch survives a crash of the process
    (including ``kill -9``) but the last transactions may be lost on an OS crash or power loss. Pass
    ``synchronous="FULL"`` to fsync the WAL on every commit and survive those too, at a write cost.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from iotflow.storage.timeseries import _sqlite_reader as reader
from iotflow.storage.timeseries._sqlite_checkpoint import Checkpointer
from iotflow.storage.timeseries._sqlite_procs import ReadProcesses
from iotflow.storage.timeseries._sqlite_wproc import WriteProcess, WriterStopped
from iotflow.storage.timeseries._sqlite_writer import Writer, connect
from iotflow.storage.timeseries.base import (
    AGGREGATE_FUNCS,
    AggregateFunc,
    Bucket,
    LatestValue,
    Order,
    Point,
    Record,
    SeriesInfo,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

_new = tuple.__new__
_READERS = 2
_READER_CACHE_KIB = 32768
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _descending(order: str) -> bool:
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    return order == "desc"


class SqliteTimeseriesStore:
    """:class:`~iotflow.storage.timeseries.base.TimeseriesStore` on a single SQLite file."""

    backend = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        chunk_ms: int = 86_400_000,
        synchronous: str = "NORMAL",
        head_rows: int = 20_000,
        packed_reads: bool | None = None,
        read_processes: int = 0,
        write_process: bool = False,
    ) -> None:
        if chunk_ms <= 0 or head_rows <= 0:
            raise ValueError("chunk_ms and head_rows must be positive")
        if read_processes < 0:
            raise ValueError("read_processes must not be negative")
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = path
        self._writer = Writer(path, chunk_ms, synchronous.upper(), head_rows)
        self._checkpointer = Checkpointer(path, self._writer.restart_wal.set)
        self._write_pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._state = "new"  # new → open → closed
        # Reads answer in one packed row when this SQLite prints REALs exactly (None: find out at open)
        self._packed = packed_reads
        # History and aggregate reads in their own processes (see ``_sqlite_procs``); 0: threads
        self._read_processes = read_processes
        self._procs: ReadProcesses | None = None
        # Writes in a process of their own (see ``_sqlite_wproc``); None: the writer thread
        self._wproc = WriteProcess(path, chunk_ms, synchronous.upper(), head_rows) if write_process else None
        self._to_thread: asyncio.Lock | None = None

    @property
    def chunk_ms(self) -> int:
        """The chunk width in use (an existing file keeps the width it was created with)."""
        return self._writer.chunk_ms if self._wproc is None else self._wproc.chunk_ms

    @property
    def write_pid(self) -> int | None:
        """The write process's pid, or None when the writer is a thread of this process."""
        return None if self._wproc is None else self._wproc.pid

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._state == "open":
            return
        if self._state == "closed":
            raise RuntimeError("time-series store is closed")
        if self._packed is None:
            self._packed = await asyncio.to_thread(reader.reals_round_trip)
            if not self._packed:
                log.warning("this SQLite does not print REALs exactly: time-series reads go row by row")
        self._write_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ts-writer")
        self._read_pool = ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="ts-reader")
        try:
            if self._wproc is not None:
                try:
                    await self._wproc.start()
                except (OSError, WriterStopped) as exc:
                    log.error("the telemetry write process cannot start (%s): writes go to a thread", exc)
                    await self._wproc.close()
                    self._wproc = None
            if self._wproc is None:
                await self._open_thread_writer()
        except BaseException:
            await asyncio.to_thread(self._shutdown)
            raise
        if self._read_processes:
            self._procs = ReadProcesses(
                self.path, self.chunk_ms, self._read_processes, packed=bool(self._packed)
            )
        self._state = "open"

    async def _open_thread_writer(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._write_pool, self._writer.open)
        self._checkpointer.start()

    async def close(self) -> None:
        if self._state == "closed":
            return
        was_open = self._state == "open"
        self._state = "closed"
        if self._procs is not None:
            await self._procs.close()
        if self._wproc is not None:
            await self._wproc.close()  # after every write sent before close(): they all finish first
        elif was_open and self._write_pool is not None:
            # Queued behind every write submitted before close(): they all finish first.
            await asyncio.get_running_loop().run_in_executor(self._write_pool, self._writer.close)
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._checkpointer.stop()
        for pool in (self._write_pool, self._read_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._write_pool = self._read_pool = None
        self._writer.close()
        with self._lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()

    def _check_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"time-series store is {'closed' if self._state == 'closed' else 'not open'}")

    # -- plumbing ----------------------------------------------------------------------------

    async def _write(self, op: str, *args: Any) -> Any:
        """The writer's method ``op`` with ``args``, in the write process or on the writer thread."""
        self._check_open()
        wproc = self._wproc
        if wproc is not None:
            # A batch whose process died before answering is sent once more, to a new process (or to
            # the thread, once processes keep dying). It may have been committed already: its points
            # are then upserts that change nothing, and the count of new points it returns is low
            # (nothing uses it). A delete is not sent again: the count of deleted points it answers
            # would be wrong, so it fails with the 503 and the client decides.
            attempts = 2 if op == "write_batch" else 1
            for attempt in range(attempts):
                if not wproc.usable or self._wproc is not wproc:
                    break
                try:
                    return await wproc.call(op, *args)
                except WriterStopped:
                    if self._wproc is wproc and wproc.usable and attempt == attempts - 1:
                        raise  # 503
            await self._writer_to_thread()
            self._check_open()  # close() may have run meanwhile
        assert self._write_pool is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._write_pool, getattr(self._writer, op), *args
        )

    async def _writer_to_thread(self) -> None:
        """After write processes kept dying before opening the file: the writer thread takes over."""
        if self._to_thread is None:
            self._to_thread = asyncio.Lock()
        async with self._to_thread:
            self._check_open()  # not after close()
            if self._wproc is not None:
                await self._wproc.close()
                self._check_open()
                await self._open_thread_writer()
                self._wproc = None

    async def _read(self, fn: Callable[..., T], *args: Any, chunks: bool = False) -> T:
        """``fn(conn, *args)`` (``fn(conn, layout, *args)`` with ``chunks``) on a reader thread."""
        self._check_open()
        assert self._read_pool is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._run_read, fn, args, chunks)

    def _read_procs(self) -> ReadProcesses | None:
        """The read processes for history and aggregate reads, or None: the reader threads."""
        self._check_open()
        return self._procs if self._procs is not None and self._procs.usable else None

    def _run_read(self, fn: Callable[..., T], args: tuple[Any, ...], chunks: bool) -> T:
        """Run one read in one read transaction (a consistent snapshot) on this thread's connection."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = connect(self.path, synchronous="NORMAL", cache_kib=_READER_CACHE_KIB, readonly=True)
            local.conn, local.layout = conn, reader.LayoutCache()
            with self._lock:
                self._reader_conns.append(conn)
        return reader.run_read(conn, local.layout, self.chunk_ms, bool(self._packed), fn, args, chunks)

    # -- API ---------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def write_batch(self, points: Sequence[Point]) -> int:
        if not points:
            self._check_open()
            return 0
        return int(await self._write("write_batch", points))

    async def query(
        self,
        device_id: int,
        *,
        keys: Sequence[str] | None = None,
        start_ms: int,
        end_ms: int,
        limit: int,
        offset: int = 0,
        order: Order = "desc",
    ) -> list[Record]:
        desc = _descending(order)
        return await self._read(
            reader.query, device_id, keys, start_ms, end_ms, limit, offset, desc, chunks=True
        )

    async def query_json(
        self,
        device_id: int,
        *,
        keys: Sequence[str] | None = None,
        start_ms: int,
        end_ms: int,
        limit: int,
        offset: int = 0,
        order: Order = "desc",
    ) -> tuple[bytes, int]:
        args = (
            device_id,
            list(keys) if keys is not None else None,
            start_ms,
            end_ms,
            limit,
            offset,
            _descending(order),
        )
        procs = self._read_procs()
        if procs is not None:
            text, count = await procs.call("query_json", *args)
            return bytes(text), int(count)
        return await self._read(reader.query_json, *args, chunks=True)

    async def count_records(
        self, device_id: int, *, keys: Sequence[str] | None = None, start_ms: int, end_ms: int
    ) -> int:
        return await self._read(reader.count_records, device_id, keys, start_ms, end_ms, chunks=True)

    async def latest(self, device_id: int, keys: Sequence[str] | None = None) -> dict[str, LatestValue]:
        return await self._read(reader.latest, device_id, keys)

    async def aggregate(
        self,
        device_id: int,
        key: str,
        func: AggregateFunc,
        *,
        start_ms: int,
        end_ms: int,
        window_ms: int | None,
    ) -> list[Bucket]:
        if func not in AGGREGATE_FUNCS:
            raise ValueError(f"unknown aggregate function: {func!r}")
        args = (device_id, key, func, start_ms, end_ms, window_ms)
        procs = self._read_procs()
        if procs is not None:
            # An int beyond 64 bits (an exact sum) travels as text: msgpack has no such integers.
            rows = await procs.call("aggregate", *args)
            return [_new(Bucket, (t, int(v) if big else v, n)) for t, v, n, big in rows]
        return await self._read(reader.aggregate, *args, chunks=True)

    async def keys(self, device_id: int) -> list[SeriesInfo]:
        return await self._read(reader.keys, device_id)

    async def delete(
        self,
        device_id: int,
        *,
        keys: Sequence[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> int:
        return int(await self._write("delete", device_id, keys, start_ms, end_ms))

    async def delete_device(self, device_id: int) -> int:
        return int(await self._write("delete_device", device_id))

    async def count_points(self, device_id: int | None = None, since_ms: int | None = None) -> int:
        return await self._read(reader.count_points, device_id, since_ms, chunks=True)

    async def device_ids(self) -> list[int]:
        return await self._read(reader.device_ids)
