"""The child side of the SQLite store's helper processes (``_sqlite_worker``, ``_sqlite_write_worker``).

A frame is a 4-byte big-endian length and its bytes. A process reads its requests from stdin and
answers each, in order, on a copy of stdout; it ends at the end of stdin, so it never outlives the
server, even one killed with ``kill -9``.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import BinaryIO


def child_streams() -> tuple[BinaryIO, BinaryIO]:
    """(requests, answers) for a helper process, which Ctrl-C and SIGTERM do not stop.

    Ctrl-C in a terminal, and a service manager's SIGTERM, reach the whole process group: the server
    stops its helpers itself (they end with their stdin), after its in-flight requests. Answers go
    to a copy of stdout; fd 1 then points at stderr, so that nothing printed by accident can corrupt
    the frames."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return sys.stdin.buffer, answers


def read_frame(requests: BinaryIO) -> bytes | None:
    """The next request, or None at the end of the input."""
    head = requests.read(4)
    if len(head) < 4:
        return None
    return requests.read(int.from_bytes(head, "big"))


def write_frame(answers: BinaryIO, frame: bytes) -> None:
    answers.write(len(frame).to_bytes(4, "big") + frame)
    answers.flush()
