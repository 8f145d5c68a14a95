"""The write process of the SQLite time-series store (see ``_sqlite_wproc``).

    python -m iotflow.storage.timeseries._sqlite_write_worker PATH CHUNK_MS SYNCHRONOUS HEAD_ROWS

It owns the store's :class:`~iotflow.storage.timeseries._sqlite_writer.Writer` and the checkpointer,
exactly as the writer thread does in the server process otherwise. Frames (see ``_sqlite_frames``)
start with one byte that names their encoding, ``m`` msgpack or ``j`` JSON (for what msgpack cannot
carry: integers beyond 64 bits nested in a JSON value), then ``[op, args]``; answers are msgpack
``[true, result]`` or ``[false, "ErrorType: message"]``. The first request is ``open``, answered with
the chunk width the file uses; then ``write_batch`` (points as 5-item arrays), ``delete`` and
``delete_device`` with the writer's arguments. At the end of stdin the writer finishes what it was
doing, closes the file and the process ends: a batch is answered only once it is committed, so an
answer that never left still means nothing was acknowledged.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from iotflow.storage.timeseries._sqlite_checkpoint import Checkpointer
from iotflow.storage.timeseries._sqlite_frames import child_streams, read_frame, write_frame
from iotflow.storage.timeseries._sqlite_writer import Writer


def decode_request(body: bytes, decode: Callable[[bytes], Any]) -> tuple[str, list[Any]]:
    kind, payload = body[:1], body[1:]
    op, args = msgspec.json.decode(payload) if kind == b"j" else decode(payload)
    return op, args


def serve(writer: Writer, requests: BinaryIO, answers: BinaryIO) -> None:
    def open_file() -> int:
        writer.open()
        return writer.chunk_ms

    def write_batch(points: list[list[Any]]) -> int:
        return writer.write_batch(points)  # lists of Point's fields: unpacked the same way

    ops: dict[str, Callable[..., Any]] = {
        "open": open_file,
        "write_batch": write_batch,
        "delete": writer.delete,
        "delete_device": writer.delete_device,
    }
    decode = msgspec.msgpack.Decoder().decode
    encode = msgspec.msgpack.Encoder().encode
    checkpointer: Checkpointer | None = None
    try:
        while (body := read_frame(requests)) is not None:
            try:
                op, args = decode_request(body, decode)
                frame = encode([True, ops[op](*args)])
                if op == "open" and checkpointer is None:
                    checkpointer = Checkpointer(writer.path, writer.restart_wal.set)
                    checkpointer.start()
            except Exception as exc:  # answered to the server, which raises it there
                frame = encode([False, f"{type(exc).__name__}: {exc}"])
            try:
                write_frame(answers, frame)
            except BrokenPipeError:  # the server is gone (killed): nobody is left to answer
                os.dup2(os.open(os.devnull, os.O_WRONLY), answers.fileno())  # closing flushes there
                return
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        writer.close()


def main(argv: list[str]) -> int:
    path, chunk_ms, synchronous, head_rows = argv[0], int(argv[1]), argv[2], int(argv[3])
    requests, answers = child_streams()
    with answers:
        serve(Writer(path, chunk_ms, synchronous, head_rows), requests, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
