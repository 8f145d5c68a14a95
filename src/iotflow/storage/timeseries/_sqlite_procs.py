"""Read processes: the history and aggregate reads of the SQLite store, in their own interpreters.

A reader thread shares the server's interpreter lock with the event loop. Under load it waits for
the loop at every SQLite step, which is why in-process reads pack their answer into one row with
SQLite's (slow) text formatting, and the records it returns are then turned into the API's JSON
on the loop. A read process steps freely, builds the JSON itself, and hands the server finished
bytes: a 1,000-point history costs the server's interpreter a pipe read instead of milliseconds.

The processes (``_sqlite_worker``) start on the first read that needs one and are started again
when one has died (after three in a row died before answering anything, the store reads in its
threads instead); each takes one request at a time, and a request goes to the process with the
least work queued. They read the same file through WAL, so a read sees every batch committed before
it began, as a reader thread does. Each ends when its stdin closes: at :meth:`ReadProcesses.close`,
or when the server itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

from iotflow.errors import ServiceUnavailable

log = logging.getLogger(__name__)

_MODULE = "iotflow.storage.timeseries._sqlite_worker"
_SRC = str(Path(__file__).resolve().parents[3])  # the directory that holds the iotflow package
_FRAME_LIMIT = 1 << 30


# What a request costs its process, roughly, in units of a 1,000-point history: a request goes to the
# process with the least work waiting, so that a history does not queue behind a 30-day aggregate
# when the other process is free.
COSTS = {"query_json": 1, "aggregate": 15}
MAX_FAILED_STARTS = 3


class _Proc:
    """One read process and the requests it has yet to answer, in the order it answers them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: deque[tuple[asyncio.Future[Any], int]] = deque()
        self.load = 0  # the costs of the waiting requests
        self.alive = True
        self.answered = 0
        self.task: asyncio.Task[None] | None = None


class ReadProcesses:
    def __init__(self, path: str, chunk_ms: int, count: int, *, packed: bool) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.path = path
        self.chunk_ms = chunk_ms
        self.packed = packed  # whether this SQLite prints REALs exactly (see _sqlite_reader)
        self.count = count
        self._procs: list[_Proc] = []
        self._starting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._failed_starts = 0  # processes in a row that died before answering anything
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode

    @property
    def usable(self) -> bool:
        """False once processes kept dying before their first answer (the store then reads in threads)."""
        return self._failed_starts < MAX_FAILED_STARTS

    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs if p.alive]

    async def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` in a read process; raises ServiceUnavailable when the process dies meanwhile."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:  # pipes, tasks and the lock belong to the first loop
            raise RuntimeError("the read processes serve the event loop that started them only")
        while True:
            if self._closed:
                raise RuntimeError("time-series store is closed")
            alive = [p for p in self._procs if p.alive]
            if len(alive) == self.count:
                break
            if not self.usable:
                raise ServiceUnavailable("The telemetry readers cannot start; see the server log")
            await self._start()
        # No await from choosing a live process to queuing on it: a process that dies afterwards
        # fails every request queued on it.
        proc = min(alive, key=lambda p: p.load)
        body = self._encode([op, args])
        future: asyncio.Future[Any] = loop.create_future()
        cost = COSTS.get(op, 1)
        proc.waiting.append((future, cost))
        proc.load += cost
        stdin = proc.proc.stdin
        assert stdin is not None
        stdin.write(len(body).to_bytes(4, "big") + body)
        return outcome(await future, "telemetry read process")

    async def _start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            self._procs = [p for p in self._procs if p.alive]
            while len(self._procs) < self.count and not self._closed:
                self._procs.append(await self._spawn())

    async def _spawn(self) -> _Proc:
        process = await spawn(_MODULE, self.path, str(self.chunk_ms), "packed" if self.packed else "rows")
        proc = _Proc(process)
        proc.task = asyncio.create_task(self._answers(proc), name=f"ts-read-process-{process.pid}")
        return proc

    async def _answers(self, proc: _Proc) -> None:
        stdout = proc.proc.stdout
        assert stdout is not None
        try:
            async for answer in answers(stdout, self._decode):
                future, cost = proc.waiting.popleft()
                proc.load -= cost
                proc.answered += 1
                self._failed_starts = 0
                if not future.done():  # not cancelled meanwhile
                    future.set_result(answer)
        except ENDED as exc:
            if not self._closed:
                if not proc.answered:
                    self._failed_starts += 1
                log.warning("telemetry read process %s stopped (%s)", proc.proc.pid, exc)
                if not self.usable:
                    log.error(
                        "%d telemetry read processes in a row stopped before answering: history and "
                        "aggregate reads go to reader threads from now on",
                        self._failed_starts,
                    )
        finally:
            proc.alive = False
            while proc.waiting:
                future, _ = proc.waiting.popleft()
                if not future.done():
                    future.set_exception(
                        ServiceUnavailable("The telemetry reader stopped during this request; try again")
                    )
            with contextlib.suppress(ProcessLookupError):
                proc.proc.kill()
            await proc.proc.wait()

    async def close(self) -> None:
        """End every process: stdin closes, each finishes its request and exits (killed after 5 s)."""
        self._closed = True
        if self._starting is not None:
            async with self._starting:  # a process being started is in the list once this returns
                pass
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.proc.stdin is not None:
                proc.proc.stdin.close()
        await asyncio.gather(*(self._end(proc) for proc in procs))

    @staticmethod
    async def _end(proc: _Proc) -> None:
        await end(proc.proc, 5)
        if proc.task is not None:
            await proc.task


# How reading a helper process's answers ends when the process ends (or answers nonsense).
ENDED = (asyncio.IncompleteReadError, ConnectionError, IndexError, msgspec.DecodeError)


async def answers(stdout: asyncio.StreamReader, decode: Callable[[bytes], Any]) -> AsyncIterator[Any]:
    """The frames a helper process answers, decoded, until its stdout ends (raises one of ``ENDED``)."""
    while True:
        head = await stdout.readexactly(4)
        yield decode(await stdout.readexactly(int.from_bytes(head, "big")))


def outcome(answer: Any, what: str) -> Any:
    """The result of an answer ``[ok, result]``; a failure raised here with its kind (ValueError)
    or as a RuntimeError naming ``what``."""
    ok, result = answer
    if ok:
        return result
    kind, _, message = str(result).partition(": ")
    if kind == "ValueError":
        raise ValueError(message)
    raise RuntimeError(f"{what}: {result}")


async def spawn(module: str, *args: str) -> asyncio.subprocess.Process:
    """``python -m module args...`` with pipes for stdin and stdout, importing this very iotflow."""
    env = dict(os.environ)
    if Path(_SRC).name not in ("site-packages", "dist-packages"):  # a source checkout
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (_SRC, env.get("PYTHONPATH"))))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",  # not the server's working directory on the import path
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        limit=_FRAME_LIMIT,
    )


async def end(process: asyncio.subprocess.Process, seconds: float) -> None:
    """Wait for a process whose stdin was closed to end; kill it after ``seconds``."""
    try:
        await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
