"""A read process of the SQLite time-series store (see ``_sqlite_procs``).

    python -m iotflow.storage.timeseries._sqlite_worker PATH CHUNK_MS packed|rows

Frames (see ``_sqlite_frames``) hold a msgpack array: a request ``[op, args]``, an answer
``[true, result]`` or ``[false, "ErrorType: message"]``. ``op`` is ``query_json`` or ``aggregate``
with the arguments of the reader functions of the same names (after ``conn`` and ``layout``).

It has its own interpreter, so it steps SQLite row by row (``packed=False``): the text formatting
that packed reads need to avoid waiting for the server's interpreter lock costs more than stepping.

It runs at a lower CPU priority than the server (``NICENESS``): a long aggregate (a 30-day overview
takes tens of milliseconds of CPU) then waits when the server's event loop and the write process want
the CPUs, instead of delaying every request and acknowledgement behind it. On two cores under a mixed
load at 1,000 req/s (``benchmarks.reads``, six runs of each, alternating), the latest-values p99 went
from 4.4-8.1 ms (mean 5.9) to 4.1-5.1 ms (mean 4.6), and the history and aggregate p99 did not rise.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from iotflow.storage.timeseries import _sqlite_partials as partials
from iotflow.storage.timeseries import _sqlite_reader as reader
from iotflow.storage.timeseries._sqlite_frames import child_streams, read_frame, write_frame
from iotflow.storage.timeseries._sqlite_writer import connect

NICENESS = 5  # added to the read processes' nice value (lower priority); see above
CACHE_KIB = 16384  # KiB of SQLite page cache per read process (its RSS is about 20 MB without)


def serve(path: str, chunk_ms: int, packed: bool, requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until ``requests`` ends. ``packed``: aggregates may read their segments in
    packed statements (this SQLite prints REALs exactly); histories are read row by row."""
    conn = connect(path, synchronous="NORMAL", cache_kib=CACHE_KIB, readonly=True)
    minutes = partials.PartialCache()

    def aggregate(conn: sqlite3.Connection, layout: reader.Layout, *args: Any) -> list[tuple[Any, ...]]:
        return [_bucket(*b) for b in partials.aggregate(conn, layout, minutes, *args)]

    def query_json(conn: sqlite3.Connection, layout: reader.Layout, *args: Any) -> tuple[bytes, int]:
        return reader.query_json(conn, layout, *args, rows_text=False)

    ops: dict[str, tuple[Callable[..., Any], bool, reader.LayoutCache]] = {
        "query_json": (query_json, False, reader.LayoutCache()),
        "aggregate": (aggregate, packed, reader.LayoutCache()),
    }
    decode = msgspec.msgpack.Decoder().decode
    encode = msgspec.msgpack.Encoder().encode
    try:
        while (body := read_frame(requests)) is not None:
            try:
                op, args = decode(body)
                fn, packed_op, layouts = ops[op]
                result = reader.run_read(conn, layouts, chunk_ms, packed_op, fn, tuple(args), True)
                frame = encode([True, result])
            except Exception as exc:  # answered to the server, which raises it there
                frame = encode([False, f"{type(exc).__name__}: {exc}"])
            write_frame(answers, frame)
    finally:
        conn.close()


def _bucket(start: int, value: Any, count: int) -> tuple[Any, ...]:
    """A bucket as it travels: ``(start, value, count, big)``; an int value beyond msgpack's 64 bits
    (an exact ``sum``) as its decimal text with ``big`` set."""
    if type(value) is int and not -(2**63) <= value < 2**64:
        return (start, str(value), count, True)
    return (start, value, count, False)


def main(argv: list[str]) -> int:
    path, chunk_ms, packed = argv[0], int(argv[1]), argv[2] == "packed"
    requests, answers = child_streams()
    with contextlib.suppress(OSError):  # a system that refuses it: same priority as the server
        os.nice(NICENESS)
    with answers:
        serve(path, chunk_ms, packed, requests, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
