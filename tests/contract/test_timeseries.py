"""Contract tests every :class:`TimeseriesStore` backend must pass.

Each backend comes from a factory in ``FACTORIES``; the fixture ``store`` is parametrised over them.
Backends are built with one-hour chunks (where they have chunks) so that data spanning days crosses
many chunk boundaries. Every test opens the store in its own event loop (``run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sqlite3
import statistics
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from iotflow.storage.timeseries import _sqlite_reader as sqlite_reader
from iotflow.storage.timeseries.base import (
    AGGREGATE_FUNCS,
    AggregateFunc,
    Bucket,
    LatestValue,
    Order,
    Point,
    Record,
    TimeseriesStore,
    Value,
    records_json,
)
from iotflow.storage.timeseries.sqlite import SqliteTimeseriesStore
from iotflow.timeutil import format_ts

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = 1_700_000_000_000  # a realistic epoch-milliseconds timestamp
FAR_PAST = -(2**62)
FAR_FUTURE = 2**62
FUNCS = cast("tuple[AggregateFunc, ...]", AGGREGATE_FUNCS)
ORDERS: tuple[Order, ...] = ("asc", "desc")

FACTORIES: dict[str, Callable[[Path], TimeseriesStore]] = {
    # One-hour chunks and a small write head, so that tests cross many chunks and hold both
    # compacted points and points still in the head.
    "sqlite": lambda tmp: SqliteTimeseriesStore(str(tmp / "telemetry.db"), chunk_ms=HOUR, head_rows=64),
    # The same store reading row by row, as it does where SQLite cannot print REALs exactly.
    "sqlite-rows": lambda tmp: SqliteTimeseriesStore(
        str(tmp / "telemetry.db"), chunk_ms=HOUR, head_rows=64, packed_reads=False
    ),
    # Writes, history and aggregates in processes of their own (the server's default).
    "sqlite-processes": lambda tmp: SqliteTimeseriesStore(
        str(tmp / "telemetry.db"), chunk_ms=HOUR, head_rows=64, read_processes=2, write_process=True
    ),
}

Body = Callable[[TimeseriesStore], Awaitable[Any]]


@pytest.fixture(params=list(FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TimeseriesStore:
    """A fresh, unopened store of each backend."""
    return FACTORIES[request.param](tmp_path)


@pytest.fixture
def reopen(
    request: pytest.FixtureRequest, tmp_path: Path, store: TimeseriesStore
) -> Callable[[], TimeseriesStore]:
    """Builds another instance of the same backend on the same storage as ``store``."""
    backend: str = request.node.callspec.params["store"]
    return lambda: FACTORIES[backend](tmp_path)


def run(store: TimeseriesStore, body: Body) -> Any:
    """Open the store, run ``body(store)`` and close the store, all in one event loop."""

    async def main() -> Any:
        await store.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def typed(value: Any) -> Any:
    """A comparable form that also tells 50 from 50.0 from True (``==`` does not)."""
    if isinstance(value, dict):
        return ("dict", {k: typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


def typed_records(records: Iterable[Record]) -> list[tuple[int, dict[str, Any]]]:
    records = list(records)
    for r in records:  # a store may hand over the timestamp already formatted: exactly as the API does
        assert r.timestamp is None or r.timestamp == format_ts(r.ts_ms), r
    return [(r.ts_ms, {k: typed(v) for k, v in r.values.items()}) for r in records]


def expected_records(
    points: Sequence[Point],
    device_id: int,
    *,
    keys: Sequence[str] | None,
    start_ms: int,
    end_ms: int,
    limit: int,
    offset: int,
    order: str,
) -> list[tuple[int, dict[str, Any]]]:
    """The reference model of ``query``: last write wins, one record per distinct timestamp."""
    by_ts: dict[int, dict[str, Any]] = {}
    for p in points:
        if p.device_id == device_id and start_ms <= p.ts_ms <= end_ms and (keys is None or p.key in keys):
            by_ts.setdefault(p.ts_ms, {})[p.key] = typed(p.value)
    ordered = sorted(by_ts.items(), reverse=order == "desc")
    return ordered[offset : offset + limit]


Model = dict[tuple[int, str, int], Value]  # (device, key, ts) → value: what a store must hold


def apply_to_model(model: Model, units: dict[tuple[int, str], str], batch: Sequence[Point]) -> int:
    """Apply a batch to the reference model (last write wins, a unit sticks to its key); returns the
    number of points it adds, which ``write_batch`` must return."""
    new = len({(p.device_id, p.key, p.ts_ms) for p in batch} - set(model))
    for p in batch:
        model[(p.device_id, p.key, p.ts_ms)] = p.value
        if p.unit is not None:
            units[(p.device_id, p.key)] = p.unit
    return new


async def assert_matches_model(
    s: TimeseriesStore, model: Model, units: dict[tuple[int, str], str], *, order: Order
) -> None:
    """The store holds exactly the model: its point count, every record of each device (in
    ``order``), and each key's catalogue entry (count, first and last timestamp, unit) and latest value."""
    assert await s.count_points() == len(model)
    for d in sorted({d for (d, _, _) in model}):
        points = [Point(dd, k, ts, v) for (dd, k, ts), v in model.items() if dd == d]
        everything = {"keys": None, "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "offset": 0}
        got = await s.query(d, limit=10**6, order=order, **everything)
        assert typed_records(got) == expected_records(points, d, limit=10**6, order=order, **everything)
        infos = {i.key: i for i in await s.keys(d)}
        latest = await s.latest(d)
        for k in sorted({k for (dd, k, _) in model if dd == d}):
            stamps = sorted(ts for (dd, kk, ts) in model if (dd, kk) == (d, k))
            info = infos[k]
            assert (info.count, info.first_ts_ms, info.last_ts_ms) == (len(stamps), stamps[0], stamps[-1])
            assert info.unit == units.get((d, k))
            assert typed(latest[k].value) == typed(model[(d, k, stamps[-1])])
            assert (latest[k].ts_ms, latest[k].unit) == (stamps[-1], units.get((d, k)))


async def assert_json_matches(s: TimeseriesStore, device_id: int, **query: Any) -> None:
    """``query_json`` answers exactly the JSON of ``query``'s records, and their number."""
    records = await s.query(device_id, **query)
    assert await s.query_json(device_id, **query) == (records_json(records), len(records)), query


def grid(
    device_id: int, key: str, start: int, step: int, n: int, value: Callable[[int], Value]
) -> list[Point]:
    return [Point(device_id, key, start + i * step, value(i)) for i in range(n)]


def reference_aggregate(func: str, values: list[float | int]) -> float | int:
    """The reference model of one aggregate over the numeric values of one bucket, oldest first."""
    has_float = any(isinstance(v, float) for v in values)
    keep = float if has_float else int
    results: dict[str, Callable[[], float | int]] = {
        "mean": lambda: statistics.fmean(values),
        "sum": lambda: keep(sum(values)),
        "count": lambda: len(values),
        "min": lambda: keep(min(values)),
        "max": lambda: keep(max(values)),
        "first": lambda: keep(values[0]),
        "last": lambda: keep(values[-1]),
        "median": lambda: float(statistics.median(values)),
        "stddev": lambda: statistics.pstdev(values),
    }
    return results[func]()


def expected_buckets(
    values: Sequence[tuple[int, float | int]], func: str, lo: int, hi: int, window: int | None
) -> list[Bucket]:
    """The reference model of ``aggregate`` over the (ts, value) pairs of one series (ts order)."""
    groups: dict[int, list[float | int]] = {}
    for ts, v in values:
        if lo <= ts <= hi:
            b = lo if window is None else lo + (ts - lo) // window * window
            groups.setdefault(b, []).append(v)
    return [Bucket(b, reference_aggregate(func, vs), len(vs)) for b, vs in sorted(groups.items())]


def same_buckets(got: list[Bucket], want: list[Bucket]) -> bool:
    """Same starts, counts and value types; values equal up to float rounding."""
    if [(b.start_ms, b.count, type(b.value)) for b in got] != [
        (b.start_ms, b.count, type(b.value)) for b in want
    ]:
        return False
    return all(g.value == pytest.approx(w.value, rel=1e-9, abs=1e-9) for g, w in zip(got, want, strict=True))


class TestTimeseriesStoreContract:
    # -- values ------------------------------------------------------------------------------

    def test_every_value_type_round_trips_with_its_type(self, store: TimeseriesStore) -> None:
        values: dict[str, Value] = {
            "float": 50.0,
            "float_frac": -12.375,
            "float_zero": 0.0,
            "int": 50,
            "int_neg": -7,
            "int_big": 2**62,
            "int_min": -(2**63),
            "bool_t": True,
            "bool_f": False,
            "str_sql": "O'Brien; DROP TABLE devices; --",
            "str_xml": "<&>\"'",
            "str_unicode": "température ✓ 日本語 🚀",
            "str_empty": "",
            "str_numeric": "12",
            "dict": {"a": 1, "b": [1.5, "x", None, True], "c": {"d": "é"}},
            "list": [1, 2.0, "three", {"four": 4}, []],
            "dict_empty": {},
        }

        async def body(s: TimeseriesStore) -> None:
            new = await s.write_batch([Point(1, k, T0, v, None) for k, v in values.items()])
            assert new == len(values)
            records = await s.query(1, start_ms=T0, end_ms=T0, limit=10)
            assert typed_records(records) == [(T0, {k: typed(v) for k, v in values.items()})]
            await assert_json_matches(s, 1, start_ms=T0, end_ms=T0, limit=10)
            for key in values:  # one key: a different path
                await assert_json_matches(s, 1, keys=[key], start_ms=T0, end_ms=T0, limit=10)
            latest = await s.latest(1)
            assert {k: typed(lv.value) for k, lv in latest.items()} == {
                k: typed(v) for k, v in values.items()
            }
            assert all(lv.ts_ms == T0 for lv in latest.values())

        run(store, body)

    def test_numbers_read_back_bit_for_bit(self, store: TimeseriesStore) -> None:
        """Doubles whose shortest text SQLite gets wrong, extremes and 64-bit ints, through every read.

        Reads of numeric series take their values through text (one statement per answer); the
        nearest double of that text must be the stored one. -0.0 is stored as 0.0."""
        floats = [
            0.1 + 0.2,
            6.946799136492109e-301,  # SQLite's quote() prints 6.94679913649211e-301 for it
            -1.6200062819588099e-295,
            5e-324,
            2.2250738585072014e-308,
            1.7976931348623157e308,
            -1.7976931348623157e308,
            23.0,
            1e22,
            123456789.12345679,
            -0.0,
        ]
        ints = [2**63 - 1, -(2**63), 2**53 + 1, 0, -1]
        n = len(floats)
        points = [Point(1, "f", T0 + i * 20 * MINUTE, v) for i, v in enumerate(floats)]
        points += [Point(1, "i", T0 + i * 20 * MINUTE, v) for i, v in enumerate(ints)]
        want_f = [v + 0.0 for v in floats]

        def bits(values: Iterable[Any]) -> list[Any]:
            return [(type(v).__name__, repr(v)) for v in values]

        async def body(s: TimeseriesStore) -> None:
            await s.write_batch(points)
            end = T0 + n * 20 * MINUTE
            for order in ORDERS:
                records = await s.query(1, keys=["f"], start_ms=T0, end_ms=end, limit=100, order=order)
                got = [r.values["f"] for r in records]
                assert bits(got) == bits(want_f if order == "asc" else want_f[::-1])
                records = await s.query(1, keys=["i"], start_ms=T0, end_ms=end, limit=100, order=order)
                assert bits(r.values["i"] for r in records) == bits(ints if order == "asc" else ints[::-1])
            for func in ("min", "max", "first", "last", "sum", "mean"):
                buckets = await s.aggregate(1, "f", func, start_ms=T0, end_ms=end, window_ms=20 * MINUTE)
                assert bits(b.value for b in buckets) == bits(want_f), func
            for func in ("min", "max", "first", "last", "sum"):
                buckets = await s.aggregate(1, "i", func, start_ms=T0, end_ms=end, window_ms=20 * MINUTE)
                assert bits(b.value for b in buckets) == bits(ints), func

        run(store, body)

    def test_sums_beyond_the_largest_double_are_infinite(self, store: TimeseriesStore) -> None:
        """Finite values can add up to infinity (the API shows it as null): no error."""
        points = [Point(1, "big", T0 + i * MINUTE, v) for i, v in enumerate([1e308, 1e308, -1e308, -1e308])]

        async def body(s: TimeseriesStore) -> None:
            await s.write_batch(points)
            end = T0 + 4 * MINUTE
            for func, want in (("sum", [math.inf, -math.inf]), ("mean", [math.inf, -math.inf])):
                buckets = await s.aggregate(1, "big", func, start_ms=T0, end_ms=end, window_ms=2 * MINUTE)
                assert [b.value for b in buckets] == want, func
            (whole,) = await s.aggregate(1, "big", "max", start_ms=T0, end_ms=end, window_ms=None)
            assert whole.value == 1e308 and whole.count == 4

        run(store, body)

    def test_a_key_may_change_type_between_points(self, store: TimeseriesStore) -> None:
        seq: list[Value] = [50, 50.0, "n/a", True, {"v": 50}, 51]

        async def body(s: TimeseriesStore) -> None:
            for i, v in enumerate(seq):
                assert await s.write_batch([Point(3, "x", T0 + i * MINUTE, v)]) == 1
            records = await s.query(3, start_ms=T0, end_ms=T0 + HOUR, limit=100, order="asc")
            assert [typed(r.values["x"]) for r in records] == [typed(v) for v in seq]
            (info,) = await s.keys(3)
            assert info.value_types == ["bool", "float", "int", "json", "string"]
            assert info.count == len(seq)
            assert typed((await s.latest(3))["x"].value) == typed(51)

        run(store, body)

    def test_rewriting_a_point_replaces_it_and_is_not_counted_as_new(self, store: TimeseriesStore) -> None:
        async def body(s: TimeseriesStore) -> None:
            assert await s.write_batch([Point(1, "t", T0, 1.0), Point(1, "t", T0 + 1, 2.0)]) == 2
            assert await s.write_batch([Point(1, "t", T0, 10.0)]) == 0
            # One replacement and one new point in the same batch.
            assert await s.write_batch([Point(1, "t", T0 + 1, "twenty"), Point(1, "t", T0 + 2, 3)]) == 1
            # The same point twice in one batch: the last one wins and it counts once.
            assert await s.write_batch([Point(1, "t", T0 + 3, 1), Point(1, "t", T0 + 3, 4)]) == 1
            records = await s.query(1, start_ms=T0, end_ms=T0 + 10, limit=10, order="asc")
            assert typed_records(records) == [
                (T0, {"t": typed(10.0)}),
                (T0 + 1, {"t": typed("twenty")}),
                (T0 + 2, {"t": typed(3)}),
                (T0 + 3, {"t": typed(4)}),
            ]
            assert await s.count_points(1) == 4
            (info,) = await s.keys(1)
            assert (info.count, info.first_ts_ms, info.last_ts_ms) == (4, T0, T0 + 3)
            # Rewriting the newest point updates the latest value.
            assert await s.write_batch([Point(1, "t", T0 + 3, 5.5)]) == 0
            assert (await s.latest(1))["t"] == LatestValue(5.5, T0 + 3, None)

        run(store, body)

    def test_large_mixed_batches_match_a_reference_model(self, store: TimeseriesStore) -> None:
        """Big batches mixing new points, rewrites of old ones, backfill and in-batch duplicates."""
        rnd = random.Random(7)
        model: Model = {}  # what the store must hold
        units: dict[tuple[int, str], str] = {}
        values: list[Callable[[], Value]] = [
            lambda: rnd.uniform(-100, 100),
            lambda: rnd.randrange(-1000, 1000),
            lambda: rnd.random() < 0.5,
            lambda: rnd.choice(["on", "off", ""]),
            lambda: {"n": rnd.randrange(10)},
        ]

        def history(batch_no: int) -> list[Point]:  # devices 1 and 2, keys a/b/c, one point a minute
            return [
                Point(d, k, T0 + (batch_no * 50 + i) * MINUTE, float(i), "u" if i == 0 else None)
                for i in range(50)
                for d in (1, 2)
                for k in "abc"
            ]

        def mixed() -> list[Point]:
            batch = []
            known = sorted(model)
            for _ in range(400):
                kind = rnd.random()
                if kind < 0.4:  # rewrite an existing point, maybe with another type
                    d, k, ts = rnd.choice(known)
                elif kind < 0.6:  # backfill before the history
                    d, k, ts = rnd.choice((1, 2)), rnd.choice("abc"), T0 - rnd.randrange(1, 3 * DAY)
                elif kind < 0.7:  # newer than everything
                    d, k, ts = rnd.choice((1, 2)), rnd.choice("abcd"), T0 + rnd.randrange(DAY, 2 * DAY)
                elif kind < 0.8:  # a new key at the timestamp of an existing point of another key
                    d, _, ts = rnd.choice(known)
                    k = rnd.choice("ef")
                else:  # a duplicate of a point earlier in this batch
                    d, k, ts = batch[-1][:3] if batch else (1, "a", T0)
                unit = rnd.choice(["u", "v"]) if rnd.random() < 0.05 else None
                batch.append(Point(d, k, ts, rnd.choice(values)(), unit))
            return batch

        async def check(s: TimeseriesStore) -> None:
            await assert_matches_model(s, model, units, order="asc")
            for d in (1, 2):
                points = [Point(dd, k, ts, v) for (dd, k, ts), v in model.items() if dd == d]
                page = {"keys": ["a", "d"], "start_ms": T0 - DAY, "end_ms": T0 + 3 * DAY, "offset": 7}
                got = await s.query(d, limit=25, order="desc", **page)
                assert typed_records(got) == expected_records(points, d, limit=25, order="desc", **page)
                for window in (
                    {"keys": ["b", "c"], "start_ms": T0 - 2 * DAY, "end_ms": T0 + DAY + HOUR},
                    {"keys": None, "start_ms": FAR_PAST, "end_ms": FAR_FUTURE},
                    {"keys": ["a", "e", "f"], "start_ms": T0, "end_ms": T0 + 2 * DAY},
                ):
                    want = expected_records(points, d, limit=10**6, offset=0, order="asc", **window)
                    assert await s.count_records(d, **window) == len(want), window

        async def body(s: TimeseriesStore) -> None:
            for batch_no in range(4):
                batch = history(batch_no)
                assert await s.write_batch(batch) == apply_to_model(model, units, batch)
            await check(s)
            for _ in range(4):
                batch = mixed()
                assert await s.write_batch(batch) == apply_to_model(model, units, batch)
                await check(s)

        run(store, body)

    def test_runs_of_one_series_in_a_batch_match_a_reference_model(self, store: TimeseriesStore) -> None:
        """A device sending many readings of a key at once (a run), with repeated timestamps, across
        a chunk boundary, after and before single readings of the same key."""
        model: Model = {}
        units: dict[tuple[int, str], str] = {}  # stays empty: no point carries a unit

        def run_of(d: int, k: str, first_ts: int, n: int, step: int = MINUTE) -> list[Point]:
            return [Point(d, k, first_ts + i * step, float(i) + d / 10) for i in range(n)]

        batches = [
            # a run with a timestamp twice (the later value wins, counted once)
            [*run_of(1, "a", T0, 40), Point(1, "a", T0 + 10 * MINUTE, "again"), *run_of(2, "z", T0, 5)],
            run_of(1, "a", T0 + 40 * MINUTE, 3),  # a few single readings
            # runs of a key with readings just written, of a new key, and across an hour boundary
            [*run_of(1, "a", T0 + 43 * MINUTE, 40), *run_of(1, "b", T0, 40), *run_of(2, "c", T0, 100)],
            # an older run among newer ones (a backfill), then a run newer than everything
            [*run_of(1, "b", T0 - 50 * MINUTE, 40), *run_of(1, "b", T0 + 40 * MINUTE, 40)],
            [*run_of(2, "c", T0 + 100 * MINUTE, 33, step=1), Point(2, "c", T0 + 100 * MINUTE, 7)],
        ]

        async def body(s: TimeseriesStore) -> None:
            for batch in batches:
                assert await s.write_batch(batch) == apply_to_model(model, units, batch)
                await assert_matches_model(s, model, units, order="desc")
                for d in (1, 2):
                    buckets = await s.aggregate(
                        d, "c", "count", start_ms=T0 - DAY, end_ms=T0 + DAY, window_ms=HOUR
                    )
                    counted = sum(b.value or 0 for b in buckets)
                    assert counted == sum(1 for (dd, k, _) in model if (dd, k) == (d, "c"))

        run(store, body)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**63, -(2**63) - 1])
    def test_a_batch_with_an_invalid_value_stores_nothing(self, store: TimeseriesStore, bad: Value) -> None:
        async def body(s: TimeseriesStore) -> None:
            await s.write_batch([Point(1, "old", T0, 1.0)])
            batch = [
                Point(1, "old", T0 + 1, 2.0),
                Point(1, "new", T0 + 1, 3.0, "V"),
                Point(2, "other", T0 + 5 * DAY, 4.0),
                Point(1, "bad", T0 + 2, bad),
            ]
            with pytest.raises(ValueError):
                await s.write_batch(batch)
            assert await s.count_points() == 1
            assert [i.key for i in await s.keys(1)] == ["old"]
            assert await s.keys(2) == []
            assert await s.latest(1) == {"old": LatestValue(1.0, T0, None)}
            # The store is still consistent and usable afterwards.
            assert await s.write_batch(batch[:3]) == 3
            assert await s.count_points() == 4
            assert [i.key for i in await s.keys(1)] == ["new", "old"]

        run(store, body)

    # -- query / count_records ---------------------------------------------------------------

    def test_query_groups_keys_into_records_across_chunks(self, store: TimeseriesStore) -> None:
        start = T0 - 7 * MINUTE  # not aligned on a chunk
        points = (
            grid(1, "a", start, 30 * MINUTE, 150, lambda i: float(i))  # ~3 days, every 30 min
            + grid(1, "b", start, HOUR, 75, lambda i: i)  # every hour: shares a's full hours
            + grid(1, "c", start + 5 * MINUTE, 90 * MINUTE, 50, lambda i: f"s{i}")  # its own timestamps
            + grid(2, "a", start, 30 * MINUTE, 150, lambda i: -1.0)  # another device, same keys
        )
        cases: list[dict[str, Any]] = [
            {"keys": None, "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 1000, "offset": 0},
            {"keys": None, "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 7, "offset": 0},
            {"keys": None, "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 9, "offset": 13},
            {"keys": ["b"], "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 10, "offset": 3},
            # Pages ending on a timestamp that both keys share (in both orders).
            {"keys": ["a", "b"], "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 9, "offset": 13},
            {"keys": ["a", "b"], "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 9, "offset": 12},
            {
                "keys": ["a", "c"],
                "start_ms": start + DAY,
                "end_ms": start + 2 * DAY,
                "limit": 40,
                "offset": 5,
            },
            {
                "keys": ["b", "missing"],
                "start_ms": start,
                "end_ms": start + 5 * HOUR,
                "limit": 100,
                "offset": 0,
            },
            {"keys": ["missing"], "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 10, "offset": 0},
            {"keys": [], "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 10, "offset": 0},
            {"keys": None, "start_ms": start + HOUR, "end_ms": start + HOUR, "limit": 10, "offset": 0},
            {"keys": None, "start_ms": start + 1, "end_ms": start + 29 * MINUTE, "limit": 10, "offset": 0},
            {"keys": None, "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 10, "offset": 10_000},
            {"keys": None, "start_ms": FAR_PAST, "end_ms": FAR_FUTURE, "limit": 0, "offset": 0},
            {"keys": None, "start_ms": start + DAY, "end_ms": start, "limit": 10, "offset": 0},
        ]

        async def body(s: TimeseriesStore) -> None:
            assert await s.write_batch(points) == len(points)
            for case in cases:
                for order in ORDERS:
                    got = await s.query(1, order=order, **case)
                    want = expected_records(points, 1, order=order, **case)
                    assert typed_records(got) == want, (case, order)
                    await assert_json_matches(s, 1, order=order, **case)
                window = {k: case[k] for k in ("keys", "start_ms", "end_ms")}
                full = expected_records(points, 1, order="asc", limit=10**9, offset=0, **window)
                assert await s.count_records(1, **window) == len(full), case
            # Spot checks on the shape of the result.
            newest = await s.query(1, start_ms=FAR_PAST, end_ms=FAR_FUTURE, limit=1)
            assert newest[0].ts_ms == max(p.ts_ms for p in points if p.device_id == 1)
            both = await s.query(1, start_ms=start, end_ms=start, limit=5)
            assert [(r.ts_ms, r.values) for r in both] == [(start, {"a": 0.0, "b": 0})]

        run(store, body)

    def test_negative_and_zero_timestamps(self, store: TimeseriesStore) -> None:
        stamps = [-3 * HOUR - 1, -HOUR, -HOUR + 1, -1, 0, 1, HOUR - 1, HOUR, 2 * DAY]
        points = [Point(4, "k", ts, i) for i, ts in enumerate(stamps)]

        async def body(s: TimeseriesStore) -> None:
            assert await s.write_batch(points) == len(stamps)
            asc = await s.query(4, start_ms=FAR_PAST, end_ms=FAR_FUTURE, limit=100, order="asc")
            assert [(r.ts_ms, r.values["k"]) for r in asc] == [(ts, i) for i, ts in enumerate(stamps)]
            around = await s.query(4, start_ms=-HOUR, end_ms=0, limit=100, order="desc")
            assert [r.ts_ms for r in around] == [0, -1, -HOUR + 1, -HOUR]
            assert await s.count_records(4, start_ms=-HOUR, end_ms=HOUR) == 7
            assert await s.count_points(4, since_ms=0) == 5
            assert await s.latest(4) == {"k": LatestValue(len(stamps) - 1, 2 * DAY, None)}
            (info,) = await s.keys(4)
            assert (info.first_ts_ms, info.last_ts_ms, info.count) == (-3 * HOUR - 1, 2 * DAY, len(stamps))
            buckets = await s.aggregate(4, "k", "count", start_ms=-4 * HOUR, end_ms=HOUR, window_ms=2 * HOUR)
            assert buckets == [Bucket(-4 * HOUR, 1, 1), Bucket(-2 * HOUR, 3, 3), Bucket(0, 4, 4)]
            assert await s.delete(4, start_ms=-HOUR, end_ms=-1) == 3
            left = await s.query(4, start_ms=FAR_PAST, end_ms=FAR_FUTURE, limit=100, order="asc")
            assert [r.ts_ms for r in left] == [-3 * HOUR - 1, 0, 1, HOUR - 1, HOUR, 2 * DAY]

        run(store, body)

    # -- latest / catalogue ------------------------------------------------------------------

    def test_latest_is_the_newest_by_timestamp_not_by_arrival(self, store: TimeseriesStore) -> None:
        async def body(s: TimeseriesStore) -> None:
            assert await s.latest(1) == {}
            await s.write_batch([Point(1, "t", T0 + 100, 1.0, "°C"), Point(1, "h", T0 + 100, 40)])
            await s.write_batch([Point(1, "t", T0 + 200, 2.0)])
            await s.write_batch([Point(1, "t", T0 + 150, 9.0), Point(1, "t", T0 - DAY, 8.0)])  # backfill
            latest = await s.latest(1)
            assert latest == {"t": LatestValue(2.0, T0 + 200, "°C"), "h": LatestValue(40, T0 + 100, None)}
            # Within one batch the order does not matter either.
            await s.write_batch([Point(1, "h", T0 + 300, 42), Point(1, "h", T0 + 250, 41)])
            assert await s.latest(1, ["h"]) == {"h": LatestValue(42, T0 + 300, None)}
            assert await s.latest(1, ["t", "nope"]) == {"t": LatestValue(2.0, T0 + 200, "°C")}
            assert await s.latest(1, []) == {}
            assert await s.latest(2) == {}

        run(store, body)

    def test_keys_catalogue(self, store: TimeseriesStore) -> None:
        async def body(s: TimeseriesStore) -> None:
            assert await s.keys(1) == []
            await s.write_batch(
                [
                    Point(1, "temp", T0, 21.5, "°C"),
                    Point(1, "temp", T0 + 2 * DAY, 22, None),
                    Point(1, "state", T0 + MINUTE, "on"),
                    Point(1, "state", T0 + 2 * MINUTE, False),
                    Point(1, "cfg", T0 - HOUR, {"a": [1]}),
                    Point(2, "temp", T0, 1.0, "K"),
                ]
            )
            await s.write_batch([Point(1, "temp", T0 + DAY, 23.0)])  # unit None keeps the unit
            infos = await s.keys(1)
            assert [(i.key, i.unit, i.first_ts_ms, i.last_ts_ms, i.count, i.value_types) for i in infos] == [
                ("cfg", None, T0 - HOUR, T0 - HOUR, 1, ["json"]),
                ("state", None, T0 + MINUTE, T0 + 2 * MINUTE, 2, ["bool", "string"]),
                ("temp", "°C", T0, T0 + 2 * DAY, 3, ["float", "int"]),
            ]
            await s.write_batch([Point(1, "temp", T0 + 3 * DAY, 24.0, "K")])  # a unit replaces it
            assert [i.unit for i in await s.keys(1)] == [None, None, "K"]
            assert (await s.latest(1, ["temp"]))["temp"].unit == "K"
            assert [(i.key, i.unit, i.count) for i in await s.keys(2)] == [("temp", "K", 1)]

        run(store, body)

    # -- aggregate ---------------------------------------------------------------------------

    def test_aggregate_every_function_over_windows(self, store: TimeseriesStore) -> None:
        # Values every 7 minutes over 9 hours (so across 9 one-hour chunks) of three keys: "v" mixes
        # ints and floats with non-numeric noise, "f" holds only floats and "n" only ints.
        start = T0 - 13 * MINUTE
        stamps = [start + i * 7 * MINUTE for i in range(78)]
        series: dict[str, list[tuple[int, float | int]]] = {
            "v": [(ts, (i * 37 % 23) - 5 if i % 3 else (i * 1.25 - 3.5)) for i, ts in enumerate(stamps)],
            "f": [(ts, math.sin(i) * 100) for i, ts in enumerate(stamps)],
            "n": [(ts, (i * 7919) % 101 - 50) for i, ts in enumerate(stamps)],
        }
        noise = [
            Point(1, "v", start + 3 * MINUTE, True),
            Point(1, "v", start + 4 * MINUTE, "12"),
            Point(1, "v", start + 5 * MINUTE, {"n": 1}),
            Point(1, "v", start + 6 * MINUTE, [3]),
            Point(1, "v", start + 2 * HOUR + MINUTE, False),
        ]
        points = [Point(1, key, ts, v) for key, values in series.items() for ts, v in values]
        points += [*noise, Point(2, "v", start, 1000.0), Point(2, "f", start + 7 * MINUTE, 1000.0)]

        async def body(s: TimeseriesStore) -> None:
            await s.write_batch(points)
            ranges = [(start, start + 9 * HOUR), (start + 40 * MINUTE, start + 5 * HOUR + 1)]
            for key in series:
                for func in FUNCS:
                    for lo, hi in ranges:
                        # Few wide buckets, many narrow (mostly empty) ones, and the whole range.
                        for w in (2 * HOUR, 25 * MINUTE, MINUTE, None):
                            got = await s.aggregate(1, key, func, start_ms=lo, end_ms=hi, window_ms=w)
                            want = expected_buckets(series[key], func, lo, hi, w)
                            assert same_buckets(got, want), (key, func, lo - start, hi - start, w, got)
            # Buckets are aligned on start_ms (not on the epoch) and empty ones are left out.
            sparse = await s.aggregate(
                1, "v", "count", start_ms=start + 1, end_ms=start + 9 * HOUR, window_ms=DAY
            )
            assert sparse == [Bucket(start + 1, 77, 77)]

        run(store, body)

    @pytest.mark.parametrize("plan", ["chosen", "query_per_bucket", "grouped_in_sql"])
    def test_aggregate_across_chunks_and_head(
        self, store: TimeseriesStore, plan: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A reading a minute for almost 8 hours, sent in batches of 20 minutes as a device would:
        # with the fixture's one-hour chunks and small head, the first 7 h 20 min end up in the
        # chunks and the last batch stays in the head, so buckets straddle chunk boundaries and the
        # boundary between the chunks and the head. "f" holds only floats, "n" ints among noise.
        if plan != "chosen":
            if not isinstance(store, SqliteTimeseriesStore):
                pytest.skip("the two query plans of the SQLite store")
            # Force one plan or the other whatever the density of the buckets.
            cost = 0 if plan == "query_per_bucket" else 10**12
            monkeypatch.setattr(sqlite_reader, "_QUERY_COST_IN_SORTED_ROWS", cost)
        start = T0 - T0 % HOUR - 7 * MINUTE  # so that chunks start on a reading
        n, per_batch = 460, 20
        series: dict[str, list[tuple[int, float | int]]] = {
            "f": [(start + i * MINUTE, math.sin(i) * 100 + 20) for i in range(n)],
            "n": [(start + i * MINUTE, (i * 7919) % 101 - 50) for i in range(n)],
        }
        noise = {  # minute → a non-numeric value of "n" 1 ms after that minute's reading
            3: "text",
            95: True,
            n - 4: {"x": 1},  # in the head
        }
        batches: list[list[Point]] = []
        for first in range(0, n, per_batch):
            batch: list[Point] = []
            for i in range(first, min(n, first + per_batch)):
                batch += [Point(1, key, *values[i]) for key, values in series.items()]
                batch.append(Point(2, "f", start + i * MINUTE, -1.0))  # another device, same key
                if i in noise:
                    batch.append(Point(1, "n", start + i * MINUTE + 1, noise[i]))
            batches.append(batch)
        end = start + (n - 1) * MINUTE
        ranges = [
            (start, end),  # everything
            (start + 1, end),  # readings on the last millisecond of buckets
            (FAR_PAST, FAR_FUTURE),  # buckets aligned far from the data
            (start + 37 * MINUTE + 5, start + 451 * MINUTE),  # from inside a chunk into the head
            (start + 445 * MINUTE, end + HOUR),  # the head only
        ]
        windows = (2 * MINUTE, 25 * MINUTE, 45 * MINUTE, None)  # ~2 points a bucket up to all of them

        async def body(s: TimeseriesStore) -> None:
            for batch in batches:
                await s.write_batch(batch)
            if isinstance(s, SqliteTimeseriesStore):  # the layout this test is about
                with contextlib.closing(sqlite3.connect(s.path)) as conn:
                    assert conn.execute("SELECT count(*) FROM head").fetchone()[0] > 0
                    tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'ts%'")
                    assert tables.fetchone()[0] >= 7
            for key, values in series.items():
                for func in FUNCS:
                    for lo, hi in ranges:
                        for w in windows:
                            got = await s.aggregate(1, key, func, start_ms=lo, end_ms=hi, window_ms=w)
                            want = expected_buckets(values, func, lo, hi, w)
                            assert same_buckets(got, want), (key, func, lo - start, hi - start, w, got)
                    # Over the whole 64-bit range, ``ts - start_ms`` does not fit in 64 bits.
                    lo, hi, w = -(2**63), 2**63 - 1, 2**62
                    got = await s.aggregate(1, key, func, start_ms=lo, end_ms=hi, window_ms=w)
                    assert same_buckets(got, expected_buckets(values, func, lo, hi, w)), (key, func, got)

        run(store, body)

    def test_aggregates_follow_changes_to_old_data(self, store: TimeseriesStore) -> None:
        """Aggregates read again after old data changed (a value rewritten, a point backfilled, a range
        deleted, a non-numeric value and an int among floats added) answer from the data as it is now,
        whatever a backend remembers of the earlier reads."""
        start = T0 - T0 % HOUR
        model: dict[int, Value] = {}
        # Several readings a minute for 4 hours (every 7 s): chunks of an hour, the newest in the head.
        for batch_start in range(0, 4 * HOUR, 20 * MINUTE):
            model.update(
                {
                    start + t: math.cos(t / 1e5) * 50
                    for t in range(batch_start, batch_start + 20 * MINUTE, 7000)
                }
            )
        numeric_points = lambda: [  # noqa: E731
            (ts, v) for ts, v in sorted(model.items()) if type(v) in (int, float)
        ]
        queries = [(start + 12_345, start + 4 * HOUR, w) for w in (7 * MINUTE, HOUR, 25 * MINUTE + 1)] + [
            (start + HOUR - 1, start + 2 * HOUR + 30 * MINUTE, 10 * MINUTE)
        ]
        changes: list[tuple[str, list[Point], tuple[int, int] | None]] = [
            ("rewrite", [Point(1, "x", start + 5 * MINUTE + 7000 * 3, 1e6)], None),
            ("backfill", [Point(1, "x", start + 17 * MINUTE + 3, -1e6)], None),
            ("delete", [], (start + HOUR + 10 * MINUTE + 1, start + HOUR + 40 * MINUTE + 5)),
            ("text", [Point(1, "x", start + 2 * HOUR + 1, "not a number")], None),
            ("int", [Point(1, "x", start + 2 * HOUR + 2 * MINUTE + 9, 10**9)], None),
        ]

        async def check(s: TimeseriesStore, when: str) -> None:
            for func in ("mean", "min", "max", "count", "sum"):
                for lo, hi, w in queries:
                    got = await s.aggregate(
                        1, "x", cast("AggregateFunc", func), start_ms=lo, end_ms=hi, window_ms=w
                    )
                    want = expected_buckets(numeric_points(), func, lo, hi, w)
                    assert same_buckets(got, want), (when, func, lo - start, hi - start, w)

        async def body(s: TimeseriesStore) -> None:
            points = [Point(1, "x", ts, v) for ts, v in sorted(model.items())]
            for i in range(0, len(points), 300):
                await s.write_batch(points[i : i + 300])
            await check(s, "written")
            await check(s, "read again")
            for what, batch, deleted in changes:
                if batch:
                    await s.write_batch(batch)
                    model.update({p.ts_ms: p.value for p in batch})
                if deleted is not None:
                    assert await s.delete(1, keys=["x"], start_ms=deleted[0], end_ms=deleted[1]) > 0
                    for ts in [ts for ts in model if deleted[0] <= ts <= deleted[1]]:
                        del model[ts]
                await check(s, what)

        run(store, body)

    def test_aggregate_edge_cases(self, store: TimeseriesStore) -> None:
        async def body(s: TimeseriesStore) -> None:
            await s.write_batch(
                [
                    Point(1, "i", T0, 3),
                    Point(1, "i", T0 + 1, 4),
                    Point(1, "i", T0 + 2, 2**62),
                    Point(1, "i", T0 + 3, 2**62),  # the exact int sum exceeds 64 bits
                    Point(1, "s", T0, "text"),
                    Point(1, "s", T0 + 1, True),
                ]
            )
            for func in FUNCS:
                empty = await s.aggregate(1, "i", func, start_ms=T0 + 10, end_ms=T0 + 20, window_ms=None)
                assert empty == [Bucket(T0 + 10, 0 if func == "count" else None, 0)], func
                assert await s.aggregate(1, "i", func, start_ms=T0 + 10, end_ms=T0 + 20, window_ms=5) == []
                none = await s.aggregate(1, "s", func, start_ms=T0, end_ms=T0 + 5, window_ms=None)
                assert none == [Bucket(T0, 0 if func == "count" else None, 0)], func
                missing = await s.aggregate(9, "x", func, start_ms=T0, end_ms=T0 + 5, window_ms=None)
                assert missing == [Bucket(T0, 0 if func == "count" else None, 0)], func

            async def agg(func: AggregateFunc, end: int = T0 + 1) -> Bucket:
                (bucket,) = await s.aggregate(1, "i", func, start_ms=T0, end_ms=end, window_ms=None)
                return bucket

            assert typed((await agg("sum")).value) == typed(7)
            assert typed((await agg("min")).value) == typed(3)
            assert typed((await agg("max")).value) == typed(4)
            assert typed((await agg("first")).value) == typed(3)
            assert typed((await agg("last")).value) == typed(4)
            assert typed((await agg("mean")).value) == typed(3.5)
            assert typed((await agg("median")).value) == typed(3.5)
            assert typed((await agg("stddev")).value) == typed(0.5)
            assert typed((await agg("count")).value) == typed(2)
            assert await agg("sum", T0 + 3) == Bucket(T0, 2**63 + 7, 4)
            # Beyond what 64 unsigned bits hold, too (a backend may pass answers in such a format).
            await s.write_batch([Point(1, "big", T0 + i, 2**63 - 1) for i in range(3)])
            (big,) = await s.aggregate(1, "big", "sum", start_ms=T0, end_ms=T0 + 5, window_ms=None)
            assert big == Bucket(T0, 3 * (2**63 - 1), 3)
            windowed = await s.aggregate(1, "big", "sum", start_ms=T0, end_ms=T0 + 5, window_ms=2)
            assert windowed == [Bucket(T0, 2 * (2**63 - 1), 2), Bucket(T0 + 2, 2**63 - 1, 1)]

        run(store, body)

    # -- delete ------------------------------------------------------------------------------

    def test_delete_by_range_and_keys(self, store: TimeseriesStore) -> None:
        points = (
            grid(1, "a", T0, HOUR, 48, lambda i: float(i))
            + grid(1, "b", T0, HOUR, 48, lambda i: i)
            + grid(2, "a", T0, HOUR, 48, lambda i: -1.0)
        )

        async def body(s: TimeseriesStore) -> None:
            await s.write_batch(points)
            # Range, one key: hours 10..19 of "a".
            assert await s.delete(1, keys=["a"], start_ms=T0 + 10 * HOUR, end_ms=T0 + 19 * HOUR) == 10
            assert await s.delete(1, keys=["a"], start_ms=T0 + 10 * HOUR, end_ms=T0 + 19 * HOUR) == 0
            infos = {i.key: i for i in await s.keys(1)}
            assert (infos["a"].count, infos["b"].count) == (38, 48)
            assert await s.count_records(1, keys=["a"], start_ms=FAR_PAST, end_ms=FAR_FUTURE) == 38
            # The newest points of every key (open end), then the oldest (open start).
            assert await s.delete(1, start_ms=T0 + 40 * HOUR) == 16
            assert await s.delete(1, end_ms=T0 + 1 * HOUR) == 4
            infos = {i.key: i for i in await s.keys(1)}
            assert (infos["a"].first_ts_ms, infos["a"].last_ts_ms, infos["a"].count) == (
                T0 + 2 * HOUR,
                T0 + 39 * HOUR,
                28,
            )
            assert (infos["b"].first_ts_ms, infos["b"].last_ts_ms, infos["b"].count) == (
                T0 + 2 * HOUR,
                T0 + 39 * HOUR,
                38,
            )
            assert await s.latest(1) == {
                "a": LatestValue(39.0, T0 + 39 * HOUR, None),
                "b": LatestValue(39, T0 + 39 * HOUR, None),
            }
            # Deleting every point of a key removes it from the catalogue.
            assert await s.delete(1, keys=["b"]) == 38
            assert [i.key for i in await s.keys(1)] == ["a"]
            assert set(await s.latest(1)) == {"a"}
            assert await s.delete(1, keys=["missing"]) == 0
            assert await s.count_points(1) == 28
            # The other device was not touched.
            assert await s.count_points(2) == 48
            # The key can be written again from scratch.
            assert await s.write_batch([Point(1, "b", T0, 5)]) == 1
            assert [(i.key, i.count, i.value_types) for i in await s.keys(1)] == [
                ("a", 28, ["float"]),
                ("b", 1, ["int"]),
            ]

        run(store, body)

    def test_delete_device(self, store: TimeseriesStore) -> None:
        async def body(s: TimeseriesStore) -> None:
            await s.write_batch(
                grid(1, "a", T0, HOUR, 30, float) + grid(1, "b", T0 - DAY, 7 * MINUTE, 20, str)
            )
            await s.write_batch(grid(2, "a", T0, HOUR, 30, float))
            assert await s.device_ids() == [1, 2]
            assert await s.delete_device(1) == 50
            assert await s.device_ids() == [2]
            assert await s.keys(1) == []
            assert await s.latest(1) == {}
            assert await s.query(1, start_ms=FAR_PAST, end_ms=FAR_FUTURE, limit=10) == []
            assert await s.count_points() == 30
            assert await s.delete_device(1) == 0
            assert await s.delete_device(42) == 0
            assert await s.count_points(2) == 30
            assert await s.write_batch([Point(1, "a", T0, 1.0)]) == 1
            assert [(i.key, i.count) for i in await s.keys(1)] == [("a", 1)]
            assert await s.device_ids() == [1, 2]

        run(store, body)

    # -- counting ----------------------------------------------------------------------------

    def test_count_points(self, store: TimeseriesStore) -> None:
        points = (
            grid(1, "a", T0, 10 * MINUTE, 300, float)  # ~2 days
            + grid(1, "b", T0 + DAY, HOUR, 10, int)
            + grid(2, "a", T0 - DAY, 30 * MINUTE, 100, float)
        )

        async def body(s: TimeseriesStore) -> None:
            assert await s.count_points() == 0
            await s.write_batch(points)
            assert await s.count_points() == 410
            assert await s.count_points(1) == 310
            assert await s.count_points(2) == 100
            assert await s.count_points(3) == 0
            for since in (FAR_PAST, T0 - DAY + 1, T0, T0 + 7 * MINUTE, T0 + DAY + 30 * MINUTE, T0 + 3 * DAY):
                for device in (None, 1, 2):
                    want = sum(
                        1 for p in points if p.ts_ms >= since and (device is None or p.device_id == device)
                    )
                    assert await s.count_points(device, since_ms=since) == want, (device, since)

        run(store, body)

    # -- lifecycle / concurrency / isolation ---------------------------------------------------

    def test_data_survives_close_and_reopen(
        self, store: TimeseriesStore, reopen: Callable[[], TimeseriesStore]
    ) -> None:
        points = [*grid(1, "a", T0, 17 * MINUTE, 200, float), Point(1, "u", T0, "x", "unit")]

        async def write(s: TimeseriesStore) -> None:
            assert await s.write_batch(points) == 201

        async def check(s: TimeseriesStore) -> None:
            assert await s.count_points() == 201
            got = await s.query(1, start_ms=FAR_PAST, end_ms=FAR_FUTURE, limit=1000, order="asc")
            want = expected_records(
                points, 1, keys=None, start_ms=FAR_PAST, end_ms=FAR_FUTURE, limit=1000, offset=0, order="asc"
            )
            assert typed_records(got) == want
            assert (await s.latest(1))["u"] == LatestValue("x", T0, "unit")
            # Existing series and chunks are picked up: new points extend them.
            assert await s.write_batch([Point(1, "a", T0, -1.0), Point(1, "a", T0 - 1, 0.5)]) == 1
            assert [(i.key, i.count) for i in await s.keys(1)] == [("a", 201), ("u", 1)]

        run(store, write)
        run(reopen(), check)

    def test_concurrent_writes_all_land(self, store: TimeseriesStore) -> None:
        async def body(s: TimeseriesStore) -> None:
            async def writer(task: int) -> int:
                total = 0
                for batch in range(5):
                    points = [
                        Point(task % 7, f"k{task}", T0 + (batch * 20 + i) * MINUTE, float(i))
                        for i in range(20)
                    ]
                    total += await s.write_batch(points)
                    await s.latest(task % 7)  # reads interleaved with the writes
                return total

            results = await asyncio.gather(*(writer(task) for task in range(40)))
            assert results == [100] * 40
            assert await s.count_points() == 4000
            assert sum([len(await s.keys(d)) for d in range(7)]) == 40

        run(store, body)

    def test_devices_are_isolated(self, store: TimeseriesStore) -> None:
        async def body(s: TimeseriesStore) -> None:
            await s.write_batch(
                [Point(d, k, T0 + i, d * 100 + i) for d in (1, 2) for k in ("x", "y") for i in range(5)]
            )
            await s.write_batch([Point(2, "z", T0 + 10, 1)])
            records = await s.query(1, start_ms=FAR_PAST, end_ms=FAR_FUTURE, limit=100)
            assert len(records) == 5
            assert all(set(r.values) == {"x", "y"} and r.values["x"] < 200 for r in records)
            assert await s.count_records(1, start_ms=FAR_PAST, end_ms=FAR_FUTURE) == 5
            assert await s.count_records(2, start_ms=FAR_PAST, end_ms=FAR_FUTURE) == 6
            assert {k: v.value for k, v in (await s.latest(1)).items()} == {"x": 104, "y": 104}
            assert [i.key for i in await s.keys(1)] == ["x", "y"]
            (bucket,) = await s.aggregate(1, "x", "sum", start_ms=FAR_PAST, end_ms=FAR_FUTURE, window_ms=None)
            assert bucket.value == sum(100 + i for i in range(5))
            assert await s.aggregate(
                1, "z", "count", start_ms=FAR_PAST, end_ms=FAR_FUTURE, window_ms=None
            ) == [Bucket(FAR_PAST, 0, 0)]
            assert await s.delete(1, keys=["z"]) == 0
            assert await s.delete_device(1) == 10
            assert await s.count_points(2) == 11

        run(store, body)

    def test_lifecycle(self, store: TimeseriesStore) -> None:
        async def body() -> None:
            await store.open()
            await store.ping()
            await store.write_batch([Point(1, "a", T0, 1.0)])
            await store.close()
            await store.close()  # idempotent
            with pytest.raises(RuntimeError):
                await store.write_batch([Point(1, "a", T0 + 1, 1.0)])
            with pytest.raises(RuntimeError):
                await store.query(1, start_ms=0, end_ms=T0, limit=1)
            with pytest.raises(RuntimeError):
                await store.ping()

        asyncio.run(body())
