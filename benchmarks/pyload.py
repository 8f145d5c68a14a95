"""A small asyncio HTTP/1.1 load generator over raw keep-alive sockets.

* :func:`closed_loop` — N connections each sending the next request as soon as the previous answer
  arrived (the fallback when ``wrk`` is not installed; its figures are then generator-bound).
* :func:`open_loop` — requests released at a fixed rate regardless of answers (P9). Latency runs
  from the moment a request is released, so time spent waiting for a free connection counts
  (no coordinated omission). Releases happen on a 1 ms timer tick; how late they were against the
  exact schedule is reported apart (``dispatch_lag_ms``), as it is the client's own delay.

Both run in a private event loop (uvloop when importable) and report the CPU time this process
spent, which is the generator's CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from benchmarks.loadgen import LoadResult, percentile
from benchmarks.payloads import Workload

T = TypeVar("T")


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self.reader, self.writer

    async def request(self, data: bytes) -> int:
        """Send one request and read its answer; returns the status code."""
        reader, writer = await self._open()
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        start = lower.find(b"\r\ncontent-length:")
        if start < 0:
            raise RuntimeError("response without Content-Length")
        end = lower.index(b"\r\n", start + 2)
        await reader.readexactly(int(lower[start + 17 : end]))
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class _Tally:
    def __init__(self) -> None:
        self.ok = self.non_2xx = self.errors = 0
        self.latencies: list[float] = []

    def record(self, status: int | None, latency: float) -> None:
        if status is None:
            self.errors += 1
            return
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.non_2xx += 1
        self.latencies.append(latency)

    def result(self, workload: Workload, seconds: float, cpu: float, **extra: object) -> LoadResult:
        lat = sorted(x * 1000 for x in self.latencies)
        return LoadResult(
            tool="python",
            requests=self.ok + self.non_2xx,
            ok=self.ok,
            non_2xx=self.non_2xx,
            socket_errors=self.errors,
            seconds=seconds,
            points_per_request=workload.points_per_request,
            cpu_seconds=cpu,
            latency_ms={
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "max": lat[-1] if lat else 0.0,
                "mean": sum(lat) / len(lat) if lat else 0.0,
            },
            extra=dict(extra),
        )


def _run(coro: Coroutine[Any, Any, T]) -> T:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _split(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _closed_loop(url: str, workload: Workload, connections: int, duration: float) -> LoadResult:
    host, port = _split(url)
    hostport = f"{host}:{port}"
    tally = _Tally()
    seq = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    stop_at = t0 + duration

    async def worker() -> None:
        nonlocal seq
        conn = _Connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                data = workload.request(seq, hostport)
                seq += 1
                started = time.perf_counter()
                try:
                    status: int | None = await conn.request(data)
                except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError):
                    status = None
                    await conn.close()
                tally.record(status, time.perf_counter() - started)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.perf_counter() - t0
    return tally.result(workload, seconds, time.process_time() - cpu0, connections=connections)


async def _open_loop(
    url: str, workload: Workload, rate: float, duration: float, connections: int, warmup: float
) -> LoadResult:
    host, port = _split(url)
    hostport = f"{host}:{port}"
    tally, warm = _Tally(), _Tally()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    warm_n = int(rate * warmup)
    total = warm_n + max(1, int(rate * duration))
    cpu0, t0 = time.process_time(), time.perf_counter()
    max_backlog = 0
    lags: list[float] = []

    async def dispatcher() -> None:
        nonlocal max_backlog
        sent = 0
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - t0) * rate) + 1)
            while sent < due:
                queue.put_nowait((sent, now))
                if sent >= warm_n:
                    lags.append(now - (t0 + sent / rate))
                sent += 1
            max_backlog = max(max_backlog, queue.qsize())
            # Sleep until the next send is due, but at least 1 ms: shorter sleeps spin the loop.
            await asyncio.sleep(max(0.001, t0 + sent / rate - time.perf_counter()))
        for _ in range(connections):
            queue.put_nowait(None)

    async def worker() -> None:
        conn = _Connection(host, port)
        try:
            while (item := await queue.get()) is not None:
                seq, released = item
                try:
                    status: int | None = await conn.request(workload.request(seq, hostport))
                except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError):
                    status = None
                    await conn.close()
                (tally if seq >= warm_n else warm).record(status, time.perf_counter() - released)
        finally:
            await conn.close()

    await asyncio.gather(dispatcher(), *(worker() for _ in range(connections)))
    seconds = time.perf_counter() - t0 - warm_n / rate
    result = tally.result(
        workload,
        seconds,
        time.process_time() - cpu0,
        connections=connections,
        warmup_seconds=warmup,
        target_rate=round(rate, 1),
        achieved_rate=round((tally.ok + tally.non_2xx) / seconds, 1) if seconds > 0 else 0.0,
        max_client_backlog=max_backlog,
        dispatch_lag_ms={
            "mean": round(sum(lags) / len(lags) * 1000, 3) if lags else 0.0,
            "p99": round(percentile(sorted(lags), 99) * 1000, 3),
        },
    )
    result.unmeasured_ok = warm.ok
    return result


def closed_loop(url: str, workload: Workload, *, connections: int, duration: float) -> LoadResult:
    return _run(_closed_loop(url, workload, connections, duration))


def open_loop(
    url: str, workload: Workload, *, rate: float, duration: float, connections: int = 64, warmup: float = 0.0
) -> LoadResult:
    """``warmup`` seconds at the same rate first, on the same connections, not measured."""
    return _run(_open_loop(url, workload, rate, duration, connections, warmup))
