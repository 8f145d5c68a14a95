"""The write process: the SQLite store's writer in an interpreter of its own.

The writer thread shares the server's interpreter lock with the event loop. It takes the lock back
after every SQLite step and for the Python work of each batch, and each hand-over costs both threads
a wake-up: with one reading per HTTP POST the server's event loop spent about a fifth more CPU per
request with the writer thread running than with writes switched off. In a process of its own
(``_sqlite_write_worker``) the writer runs beside the event loop instead of taking turns with it, and
the server's part of a batch is one msgpack encoding and a pipe write.

Nothing else changes: one writer owns the file, batches are written one at a time in the order they
were sent, and a batch is answered only after its commit, so an acknowledgement still means
"stored". The process is started by :meth:`WriteProcess.start` and again on the next write after it
died; a write it held when it died fails here with :class:`WriterStopped` (a 503), and the store
sends a batch once more (points are upserts). After three processes in a row die before opening the file,
the store writes in its thread instead (see ``SqliteTimeseriesStore._write``).
The process ends when its stdin closes: at :meth:`WriteProcess.close`, or when the server dies, even
with ``kill -9``, after finishing the transaction it was in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import msgspec

from iotflow.errors import ServiceUnavailable
from iotflow.storage.timeseries._sqlite_procs import ENDED, MAX_FAILED_STARTS, answers, end, outcome, spawn

log = logging.getLogger(__name__)

_MODULE = "iotflow.storage.timeseries._sqlite_write_worker"
_CLOSE_S = 30.0  # what the process gets to finish its transaction and close the file


class WriterStopped(ServiceUnavailable):
    """The write process ended before it answered."""


class _Run:
    """One write process and the requests it has yet to answer, in order."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.alive = True  # until its answers end
        self.opened = False  # it has opened the file
        self.task: asyncio.Task[None] | None = None


class WriteProcess:
    def __init__(self, path: str, chunk_ms: int, synchronous: str, head_rows: int) -> None:
        self.args = (path, str(chunk_ms), synchronous, str(head_rows))
        self.chunk_ms = chunk_ms  # the width the file uses, once a process has opened it
        self._run: _Run | None = None
        self._starting: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._failed_starts = 0  # processes in a row that ended before opening the file
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode

    @property
    def usable(self) -> bool:
        """False once processes kept ending before they opened the file."""
        return self._failed_starts < MAX_FAILED_STARTS

    @property
    def pid(self) -> int | None:
        run = self._run
        return run.proc.pid if run is not None and run.alive else None

    async def start(self) -> _Run:
        """The running process, started (and the file opened in it) if need be; raises what opening
        raised, or :class:`WriterStopped` when the process ended first."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:  # the pipes and the task belong to the first loop
            raise RuntimeError("the write process serves the event loop that started it only")
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._closed:  # the store closed, or its writer moved to a thread: not this one's to do
                raise WriterStopped("The telemetry writer has stopped")
            run = self._run
            if run is not None and run.alive and run.opened:
                return run
            if run is not None:
                await self._stop(run)
            if not self.usable:
                raise WriterStopped("The telemetry writer cannot start; see the server log")
            try:
                process = await spawn(_MODULE, *self.args)
            except OSError as exc:  # no process to be had (out of file descriptors, say)
                self._failed_starts += 1
                log.warning("cannot start a telemetry write process: %s", exc)
                raise WriterStopped("The telemetry writer cannot start; see the server log") from exc
            run = self._run = _Run(process)
            run.task = asyncio.create_task(self._answers(run), name="ts-write-process")
            try:
                self.chunk_ms = await self._send(run, "open", ())
            except BaseException:
                await self._stop(run)
                raise
            run.opened = True
            self._failed_starts = 0
            return run

    async def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` in the write process; raises ServiceUnavailable when the process ends meanwhile."""
        if self._closed:
            raise WriterStopped("The telemetry writer has stopped")
        run = self._run
        if run is None or not (run.alive and run.opened):
            run = await self.start()
        return await self._send(run, op, args)

    async def _send(self, run: _Run, op: str, args: tuple[Any, ...]) -> Any:
        # No await from checking that the process is alive to queuing on it: a process that ends
        # afterwards fails every request queued on it.
        if not run.alive:
            raise WriterStopped("The telemetry writer stopped; send it again", retry_after=1)
        stdin = run.proc.stdin
        assert stdin is not None and self._loop is not None
        try:
            body = b"m" + self._encode([op, args])
        except OverflowError:  # an int beyond 64 bits inside a JSON value: JSON carries any int
            body = b"j" + msgspec.json.encode([op, args])
        future: asyncio.Future[Any] = self._loop.create_future()
        run.waiting.append(future)
        stdin.write(len(body).to_bytes(4, "big") + body)
        return outcome(await future, "telemetry write process")

    async def _answers(self, run: _Run) -> None:
        stdout = run.proc.stdout
        assert stdout is not None
        try:
            async for answer in answers(stdout, self._decode):
                future = run.waiting.popleft()
                if not future.done():  # not cancelled meanwhile
                    future.set_result(answer)
        except ENDED as exc:
            if not self._closed:
                if not run.opened:
                    self._failed_starts += 1
                log.warning("telemetry write process %s stopped (%s)", run.proc.pid, exc)
                if not self.usable:
                    log.error(
                        "%d telemetry write processes in a row stopped before opening the store: "
                        "writes go to a writer thread from now on",
                        self._failed_starts,
                    )
        finally:
            run.alive = False
            while run.waiting:
                future = run.waiting.popleft()
                if not future.done():
                    future.set_exception(
                        WriterStopped(
                            "The telemetry writer stopped during this write; nothing of it was "
                            "acknowledged: send it again",
                            retry_after=1,
                        )
                    )
            if not self._closed:  # it died: at close it is still closing the file
                with contextlib.suppress(ProcessLookupError):
                    run.proc.kill()
            await run.proc.wait()

    @staticmethod
    async def _stop(run: _Run) -> None:
        if run.proc.stdin is not None:
            run.proc.stdin.close()
        await end(run.proc, _CLOSE_S)
        if run.task is not None:
            await run.task

    async def close(self) -> None:
        """End the process: stdin closes, it finishes its transaction, closes the file and exits."""
        self._closed = True
        if self._starting is not None:
            async with self._starting:  # a process being started is known once this returns
                pass
        if self._run is not None:
            await self._stop(self._run)
