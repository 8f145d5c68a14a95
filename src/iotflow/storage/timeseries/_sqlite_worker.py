"""A read process of the SQLite time-series store (see ``_sqlite_procs``).

    python -m iotflow.storage.timeseries._sqlite_worker PATH CHUNK_MS

Reads requests from stdin and answers each, in order, on stdout. A frame is a 4-byte big-endian
length and a msgpack array: a request ``[op, args]``, an answer ``[true, result]`` or
``[false, "ErrorType: message"]``. ``op`` is ``query_json`` or ``aggregate`` with the arguments of
the reader functions of the same names (after ``conn`` and ``layout``). The process ends at the end
of stdin, so it never outlives the server, even one killed with ``kill -9``.

It has its own interpreter, so it steps SQLite row by row (``packed=False``): the text formatting
that packed reads need to avoid waiting for the server's interpreter lock costs more than stepping.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from iotflow.storage.timeseries import _sqlite_reader as reader
from iotflow.storage.timeseries._sqlite_writer import connect

CACHE_KIB = 16384  # KiB of SQLite page cache per read process (its RSS is about 20 MB without)

OPS: dict[str, Callable[..., Any]] = {
    "query_json": reader.query_json,
    "aggregate": lambda *args: [tuple(b) for b in reader.aggregate(*args)],
}


def serve(path: str, chunk_ms: int, requests: BinaryIO, answers: BinaryIO) -> None:
    conn = connect(path, synchronous="NORMAL", cache_kib=CACHE_KIB, readonly=True)
    cache = reader.LayoutCache()
    decode = msgspec.msgpack.Decoder().decode
    encode = msgspec.msgpack.Encoder().encode
    try:
        while True:
            head = requests.read(4)
            if len(head) < 4:
                return
            body = requests.read(int.from_bytes(head, "big"))
            try:
                op, args = decode(body)
                result = reader.run_read(conn, cache, chunk_ms, False, OPS[op], tuple(args), True)
                frame = encode([True, result])
            except Exception as exc:  # answered to the server, which raises it there
                frame = encode([False, f"{type(exc).__name__}: {exc}"])
            answers.write(len(frame).to_bytes(4, "big") + frame)
            answers.flush()
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    path, chunk_ms = argv[0], int(argv[1])
    # Answers go to a copy of stdout; fd 1 then points at stderr, so that nothing printed by
    # accident can corrupt the frames.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with answers:
        serve(path, chunk_ms, sys.stdin.buffer, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
