"""The ingest pipeline: the one road every reading travels.

Transports (HTTP, MQTT, CLI import) call :meth:`IngestPipeline.submit` with parsed points and wait.
A single batcher task takes everything queued while the store was busy and writes it in one
transaction (group commit), so throughput comes from batching, not from more connections. A
submitter's future resolves only after its points are committed, so an acknowledgement (HTTP 201,
MQTT PUBACK) always means "stored". The queue is bounded in points: when full, :meth:`submit` raises
:class:`~iotflow.errors.ServiceUnavailable` at once and nothing is stored.

After a commit the latest-value cache is updated *before* the submitters are released (a client
that reads right after its 201 sees its values); then the other listeners (live streams, alerts)
run without holding up the acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from iotflow.cache.base import Cache
from iotflow.errors import ServiceUnavailable
from iotflow.storage.timeseries.base import LatestValue, Point, TimeseriesStore

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[Point]], Awaitable[None]]
CommitObserver = Callable[[int, float], None]


@dataclass(slots=True)
class _Item:
    points: Sequence[Point]
    future: asyncio.Future[None]


@dataclass(slots=True)
class IngestStats:
    points_committed: int = 0
    messages_committed: int = 0
    batches_committed: int = 0
    batches_failed: int = 0
    rejected_overload: int = 0
    last_batch_points: int = 0
    last_batch_ms: float = 0.0
    # (monotonic second, points) for a short moving rate
    _recent: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=16))

    def record(self, points: int, messages: int, seconds: float) -> None:
        self.points_committed += points
        self.messages_committed += messages
        self.batches_committed += 1
        self.last_batch_points = points
        self.last_batch_ms = seconds * 1000
        now = int(time.monotonic())
        if self._recent and self._recent[-1][0] == now:
            self._recent[-1] = (now, self._recent[-1][1] + points)
        else:
            self._recent.append((now, points))

    def points_per_second(self) -> float:
        now = int(time.monotonic())
        window = [(s, p) for s, p in self._recent if now - 10 <= s < now]
        return round(sum(p for _, p in window) / 10, 1) if window else 0.0


class IngestPipeline:
    def __init__(
        self,
        store: TimeseriesStore,
        cache: Cache,
        *,
        max_queue_points: int,
        max_batch_points: int,
    ) -> None:
        self._store = store
        self._cache = cache
        self._max_queue = max_queue_points
        self._max_batch = max_batch_points
        self._queue: deque[_Item] = deque()
        self._queued_points = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, kept: asking costs a getpid()
        self._closing = False
        self._listeners: list[Listener] = []
        self._commit_observers: list[CommitObserver] = []
        self._background: set[asyncio.Task[None]] = set()
        self.stats = IngestStats()

    # ----- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="iotflow-ingest-batcher")

    async def stop(self) -> None:
        """Stop accepting, commit everything already queued, wait for listeners."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def add_listener(self, listener: Listener) -> None:
        """Called with every committed batch, after the submitters were released."""
        self._listeners.append(listener)

    def add_commit_observer(self, observer: CommitObserver) -> None:
        """Called (synchronously) with (points, seconds spent writing) after every committed batch."""
        self._commit_observers.append(observer)

    @property
    def queue_depth(self) -> int:
        return self._queued_points

    # ----- the entry point -------------------------------------------------------------------------

    async def submit(self, points: Sequence[Point]) -> None:
        """Queue points and return once they are committed. Raises ServiceUnavailable when full."""
        if not points:
            return
        if self._closing:
            raise ServiceUnavailable("IoTFlow is shutting down; retry shortly", retry_after=5)
        n = len(points)
        if self._queued_points and self._queued_points + n > self._max_queue:
            self.stats.rejected_overload += 1
            raise ServiceUnavailable("Ingest queue is full; retry shortly", retry_after=1)
        future: asyncio.Future[None] = (self._loop or asyncio.get_running_loop()).create_future()
        self._queue.append(_Item(points, future))
        self._queued_points += n
        self._wakeup.set()
        # A submitter cancelled meanwhile cancels only its wait: its points stay queued, are written
        # with their batch, and the batcher skips the cancelled future.
        await future

    # ----- the batcher -----------------------------------------------------------------------------

    def _take_batch(self) -> list[_Item]:
        items: list[_Item] = []
        count = 0
        while self._queue and (not items or count + len(self._queue[0].points) <= self._max_batch):
            item = self._queue.popleft()
            items.append(item)
            count += len(item.points)
        self._queued_points -= count
        return items

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._queued_points < self._max_batch and not self._closing:
                # One turn of the event loop lets every submitter that is already runnable join
                # this batch. No timed linger: while a commit runs, the next batch fills by itself.
                await asyncio.sleep(0)
            items = self._take_batch()
            await self._commit(items)

    async def _commit(self, items: list[_Item]) -> None:
        points: list[Point] = [p for item in items for p in item.points]
        started = time.perf_counter()
        try:
            await self._store.write_batch(points)
        except Exception as exc:
            self.stats.batches_failed += 1
            if len(items) > 1:
                # Do not let one submitter's failure fail the others: retry each on its own.
                for item in items:
                    await self._commit([item])
                return
            log.error("telemetry write failed: %s", exc, exc_info=exc)
            if not items[0].future.done():
                items[0].future.set_exception(
                    ServiceUnavailable("Telemetry store is unavailable; retry shortly", retry_after=2)
                )
            return
        elapsed = time.perf_counter() - started
        self.stats.record(len(points), len(items), elapsed)
        for observe in self._commit_observers:
            observe(len(points), elapsed)
        await self._update_latest(points)
        for item in items:
            if not item.future.done():
                item.future.set_result(None)
        if self._listeners:
            task = asyncio.create_task(self._notify(points))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _update_latest(self, points: Sequence[Point]) -> None:
        newest: dict[tuple[int, str], Point] = {}
        for p in points:  # one dict probe per point; LatestValue objects only for the winners
            k = (p.device_id, p.key)
            old = newest.get(k)
            if old is None or p.ts_ms >= old.ts_ms:
                newest[k] = p
        latest: dict[int, dict[str, LatestValue]] = {}
        for (device_id, key), p in newest.items():
            per_device = latest.get(device_id)
            if per_device is None:
                per_device = latest[device_id] = {}
            per_device[key] = LatestValue(p.value, p.ts_ms, p.unit)
        try:
            await self._cache.merge_latest(latest)
        except Exception as exc:  # the cache is an optimisation: the store stays the truth
            log.warning("latest-value cache update failed: %s", exc)
            with contextlib.suppress(Exception):
                for device_id in latest:
                    await self._cache.forget_device(device_id)

    async def _notify(self, points: Sequence[Point]) -> None:
        for listener in self._listeners:
            try:
                await listener(points)
            except Exception as exc:
                log.exception("ingest listener %r failed: %s", listener, exc)
