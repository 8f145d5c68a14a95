"""Telemetry logic: ingest through the pipeline, history, latest values, aggregates, catalogue."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import msgspec

from iotflow.cache.base import Cache, DeviceAuth
from iotflow.config import Settings
from iotflow.devices.service import DeviceService
from iotflow.errors import BadRequest, ValidationFailed
from iotflow.events.service import EventLog
from iotflow.ingest.pipeline import IngestPipeline
from iotflow.storage.timeseries.base import (
    AGGREGATE_FUNCS,
    AggregateFunc,
    Bucket,
    LatestValue,
    Record,
    TimeseriesStore,
)
from iotflow.telemetry.parse import Message, parse_body
from iotflow.timeutil import format_ts, now_ms

AGGREGATION_ALIASES = {"avg": "mean", "average": "mean", "std": "stddev"}
VALID_AGGREGATIONS = sorted({*AGGREGATE_FUNCS, "avg"})
FILL_MODES = ("none", "null", "previous")
MAX_BUCKETS = 100_000
REJECTION_EVENT_EVERY_MS = 60_000


class Ingested(NamedTuple):
    messages: list[Message]
    points: int
    ts_ms: int  # timestamp of the (first) message


def latest_dict(latest: dict[str, LatestValue]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flattened record of the newest values, per-key detail)."""
    record: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    newest = max((v.ts_ms for v in latest.values()), default=None)
    if newest is not None:
        record["timestamp"] = format_ts(newest)
    for key in sorted(latest):
        lv = latest[key]
        record[key] = lv.value
        entry: dict[str, Any] = {"value": lv.value, "timestamp": format_ts(lv.ts_ms)}
        if lv.unit is not None:
            entry["unit"] = lv.unit
        keys[key] = entry
    return record, keys


def latest_answer(
    device_id: int, name: str, device_type: str, latest: dict[str, LatestValue]
) -> dict[str, Any]:
    """The body of GET /telemetry/{id}/latest (``latest`` not empty)."""
    record, keys = latest_dict(latest)
    return {
        "device_id": device_id,
        "device_name": name,
        "device_type": device_type,
        "latest_data": record,
        "data": record,
        "keys": keys,
    }


def normalise_aggregation(name: str) -> AggregateFunc:
    func = AGGREGATION_ALIASES.get(name.lower(), name.lower())
    if func not in AGGREGATE_FUNCS:
        raise ValidationFailed(
            "aggregation",
            f"Unknown aggregation {name!r}; valid functions: {', '.join(VALID_AGGREGATIONS)}",
            title="Invalid aggregation",
            extra={"valid_functions": VALID_AGGREGATIONS},
        )
    return cast(AggregateFunc, func)


def fill_buckets(
    buckets: list[Bucket], *, start_ms: int, end_ms: int, window_ms: int, fill: str
) -> list[Bucket]:
    if fill == "none":
        return buckets
    by_start = {b.start_ms: b for b in buckets}
    out: list[Bucket] = []
    previous: float | int | None = None
    t = start_ms
    while t <= end_ms:
        b = by_start.get(t)
        if b is not None:
            out.append(b)
            previous = b.value
        else:
            out.append(Bucket(t, previous if fill == "previous" else None, 0))
        t += window_ms
    return out


class TelemetryService:
    def __init__(
        self,
        settings: Settings,
        store: TimeseriesStore,
        cache: Cache,
        pipeline: IngestPipeline,
        devices: DeviceService,
        events: EventLog,
    ) -> None:
        self._settings = settings
        self.store = store
        self._cache = cache
        self.pipeline = pipeline
        self._devices = devices
        self._max_future_ms = settings.max_future_skew * 1000
        self._last_receive_ts: dict[int, int] = {}
        self._events = events
        self._last_rejection_event: dict[int, int] = {}
        self.rejected = 0

    async def ingest(self, device: DeviceAuth, body: Any) -> Ingested:
        """Parse, store (returns after commit), mark the device seen, keep its reported metadata."""
        now = now_ms()
        try:
            messages = self.parse(device, body, now)
        except BadRequest as exc:
            self._note_rejection(device, exc, now)
            raise
        points = messages[0].points if len(messages) == 1 else [p for m in messages for p in m.points]
        await self.pipeline.submit(points)
        return self.committed(device, messages, now)

    def last_receive_ts(self, device_id: int) -> int:
        """The newest receive-time stamp given to the device's readings in this process (0 if none)."""
        return self._last_receive_ts.get(device_id, 0)

    def parse(self, device: DeviceAuth, body: Any, now: int) -> list[Message]:
        """The body's messages (raises BadRequest, without counting it as a rejection)."""
        device_id = device.id
        last = self._last_receive_ts

        def receive_ts() -> int:
            # Payloads without a timestamp get the receive time, made unique per device: two that
            # arrive in the same millisecond get consecutive milliseconds instead of replacing
            # each other (a (device, key, ts) rewrite replaces the value).
            ts = max(now, last.get(device_id, 0) + 1)
            last[device_id] = ts
            return ts

        return parse_body(
            body, device_id, now_ms=now, max_future_ms=self._max_future_ms, receive_ts=receive_ts
        )

    def committed(self, device: DeviceAuth, messages: list[Message], now: int) -> Ingested:
        """After the messages' points were committed: mark the device seen, keep its metadata."""
        presence = self._devices.presence
        presence.seen(device.id, now)
        if len(messages) == 1:  # the usual case, without the loops
            first = messages[0]
            if first.metadata:
                presence.report(device.id, first.metadata)
            return Ingested(messages, len(first.points), first.ts_ms)
        for m in messages:
            if m.metadata:
                presence.report(device.id, m.metadata)
        return Ingested(messages, sum(len(m.points) for m in messages), messages[0].ts_ms)

    def _note_rejection(self, device: DeviceAuth, exc: BadRequest, now: int) -> None:
        """Count a rejected payload; log it as an event at most once per device per minute."""
        self.rejected += 1
        if (
            now - self._last_rejection_event.get(device.id, -REJECTION_EVENT_EVERY_MS)
            >= REJECTION_EVENT_EVERY_MS
        ):
            self._last_rejection_event[device.id] = now
            self._events.record_nowait(
                "telemetry.rejected",
                device_id=device.id,
                user_id=device.user_id,
                details={"error": exc.title, "message": exc.message[:500]},
            )

    async def history(
        self,
        device_id: int,
        *,
        keys: Sequence[str] | None,
        start_ms: int,
        end_ms: int,
        limit: int,
        offset: int = 0,
        order: str = "desc",
    ) -> list[Record]:
        return await self.store.query(
            device_id,
            keys=keys,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            offset=offset,
            order="asc" if order == "asc" else "desc",
        )

    async def history_json(
        self,
        device_id: int,
        *,
        keys: Sequence[str] | None,
        start_ms: int,
        end_ms: int,
        limit: int,
        order: str = "desc",
    ) -> tuple[msgspec.Raw, int]:
        """:meth:`history` as the JSON array of ``record_dicts``, already encoded, and its length."""
        text, count = await self.store.query_json(
            device_id,
            keys=keys,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=limit,
            order="asc" if order == "asc" else "desc",
        )
        return msgspec.Raw(text), count

    async def latest(self, device_id: int, keys: Sequence[str] | None = None) -> dict[str, LatestValue]:
        """Served from the cache; a miss reads the store and fills the cache."""
        values = await self._cache.get_latest(device_id)
        if values is None:
            values = await self.store.latest(device_id)
            await self._cache.set_latest(device_id, values)
        if keys:
            wanted = set(keys)
            return {k: v for k, v in values.items() if k in wanted}
        return values

    async def aggregate(
        self,
        device_id: int,
        key: str,
        func: AggregateFunc,
        *,
        start_ms: int,
        end_ms: int,
        window_ms: int | None,
        fill: str,
    ) -> list[Bucket]:
        if window_ms is not None and (end_ms - start_ms) // window_ms > MAX_BUCKETS:
            raise ValidationFailed(
                "window",
                f"The range holds more than {MAX_BUCKETS} windows; use a larger window or a shorter range",
            )
        buckets = await self.store.aggregate(
            device_id,
            key,
            func,
            start_ms=start_ms,
            end_ms=end_ms,
            window_ms=window_ms,
        )
        if window_ms is None:
            return buckets
        return fill_buckets(buckets, start_ms=start_ms, end_ms=end_ms, window_ms=window_ms, fill=fill)

    async def status(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await self.store.ping()
            total_points = await self.store.count_points()
            last_hour = await self.store.count_points(since_ms=now_ms() - 3_600_000)
            available = True
        except Exception:
            total_points = last_hour = 0
            available = False
        pipeline = self.pipeline
        return {
            "status": "healthy" if available else "unavailable",
            "backend": self.store.backend,
            "available": available,
            "total_points": total_points,
            "points_last_hour": last_hour,
            "response_time_ms": round((time.perf_counter() - started) * 1000, 2),
            "ingest": {
                "queue_depth": pipeline.queue_depth,
                "points_per_second": pipeline.stats.points_per_second(),
                "batches_committed": pipeline.stats.batches_committed,
                "points_committed": pipeline.stats.points_committed,
                "rejected_overload": pipeline.stats.rejected_overload,
            },
        }
