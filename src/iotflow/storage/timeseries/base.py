"""The time-series store contract.

Every telemetry backend (SQLite, PostgreSQL) implements :class:`TimeseriesStore`. The contract test
suite in ``tests/contract/test_timeseries.py`` runs against each implementation, so they all agree.

A :class:`Point` is one reading: ``(device_id, key, ts_ms, value, unit)``. Values keep their type:
``float``, ``int`` (64-bit), ``bool``, ``str`` or a JSON object/array (``dict`` / ``list``). The same
key may change type from one point to the next; nothing is rejected for that. Writing the same
``(device_id, key, ts_ms)`` again replaces the value (idempotent retries).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias

import msgspec

from iotflow.timeutil import format_ts

JsonValue: TypeAlias = dict[str, Any] | list[Any]
Value: TypeAlias = float | int | bool | str | JsonValue

AggregateFunc = Literal["mean", "sum", "count", "min", "max", "first", "last", "median", "stddev"]
AGGREGATE_FUNCS: tuple[str, ...] = ("mean", "sum", "count", "min", "max", "first", "last", "median", "stddev")
Order = Literal["asc", "desc"]


class Point(NamedTuple):
    """One reading of one key of one device at one millisecond."""

    device_id: int
    key: str
    ts_ms: int
    value: Value
    unit: str | None = None


class Record(NamedTuple):
    """All keys of one device at one timestamp (the flattened form of the API)."""

    ts_ms: int
    values: dict[str, Value]
    # ``ts_ms`` already in the API's ISO 8601 form, when the store formatted it while reading
    # (the SQLite store does, off the event loop); None otherwise.
    timestamp: str | None = None


_encode = msgspec.json.Encoder().encode


def record_dict(record: Record) -> dict[str, Any]:
    """A record in the API's form: ``{"timestamp": ISO 8601, key: value, ...}``."""
    return {"timestamp": record.timestamp or format_ts(record.ts_ms), **record.values}


def record_dicts(records: Sequence[Record]) -> list[dict[str, Any]]:
    """``record_dict`` of each record, in one comprehension (a history has up to 10,000 of them)."""
    return [{"timestamp": r.timestamp or format_ts(r.ts_ms), **r.values} for r in records]


def records_json(records: Sequence[Record]) -> bytes:
    """``record_dicts`` as a JSON array."""
    return _encode(record_dicts(records))


class LatestValue(NamedTuple):
    value: Value
    ts_ms: int
    unit: str | None


class Bucket(NamedTuple):
    """One aggregation window: ``start_ms`` is the bucket start; ``count`` the numeric values in it."""

    start_ms: int
    value: float | int | None
    count: int  # type: ignore[assignment]  # (shadows tuple.count on purpose: the API field name)


class SeriesInfo(NamedTuple):
    """One entry of a device's measurement catalogue."""

    key: str
    unit: str | None
    first_ts_ms: int | None
    last_ts_ms: int | None
    count: int  # type: ignore[assignment]  # (shadows tuple.count on purpose: the API field name)
    value_types: list[str]  # sorted subset of "float", "int", "bool", "string", "json"


class TimeseriesStore(Protocol):
    """Telemetry storage. All methods are safe to call concurrently from the event loop.

    Implementations never block the event loop: writes go through their own writer (thread or pool).
    """

    backend: str  # "sqlite" | "postgresql"

    async def open(self) -> None:
        """Create files/tables as needed and start background resources."""

    async def close(self) -> None:
        """Flush and release every resource. Idempotent."""

    async def ping(self) -> None:
        """Raise if the store cannot answer a trivial query."""

    async def write_batch(self, points: Sequence[Point]) -> int:
        """Store all points in one transaction: all or nothing. Returns when durably committed.

        Returns the number of points that were new (not replacing an existing (device, key, ts)).
        """

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
        """Records (one per distinct timestamp) with ``start_ms <= ts <= end_ms``.

        ``limit``/``offset`` count records, not points. Only the given keys if ``keys`` is set.
        """

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
        """:meth:`query`'s records as the API's JSON array (:func:`records_json`), and their number.

        The history endpoints answer with it as it is, so a store may build it wherever is cheapest
        (the SQLite store does in its reader, off the event loop)."""

    async def count_records(
        self, device_id: int, *, keys: Sequence[str] | None = None, start_ms: int, end_ms: int
    ) -> int:
        """How many distinct timestamps :meth:`query` would return without a limit."""

    async def latest(self, device_id: int, keys: Sequence[str] | None = None) -> dict[str, LatestValue]:
        """The newest value (by timestamp) of every key of the device (or of the given keys)."""

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
        """Aggregate the numeric (int/float, not bool) values of one key.

        With ``window_ms`` the range is cut into buckets aligned on ``start_ms``; only buckets that
        hold at least one numeric value are returned, ordered by start. Without ``window_ms`` one
        bucket covers the whole range (returned even when empty: value None, count 0, except
        ``count`` whose value is 0). ``median`` is the middle value (mean of the two middle ones);
        ``stddev`` is the population standard deviation.
        """

    async def keys(self, device_id: int) -> list[SeriesInfo]:
        """The measurement catalogue of a device, sorted by key."""

    async def delete(
        self,
        device_id: int,
        *,
        keys: Sequence[str] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> int:
        """Delete points (inclusive range; None = unbounded). Returns how many were deleted."""

    async def delete_device(self, device_id: int) -> int:
        """Delete every point of the device and its catalogue. Returns how many points were deleted."""

    async def count_points(self, device_id: int | None = None, since_ms: int | None = None) -> int:
        """Number of stored points (of one device, or all), optionally only those with ts >= since_ms."""

    async def device_ids(self) -> list[int]:
        """The devices that have any series (points, or a catalogue entry), ascending."""
