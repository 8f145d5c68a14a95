"""Aggregates from per-minute partials: a read process's memory of the chunks it has read.

A 30-day aggregate of 10 s data reads 259,200 rows every time. Most of them sit in chunks that no
longer change. For ``count``, ``mean``, ``min`` and ``max`` a read process keeps, per (series, chunk),
the count, sum, minimum, maximum and number of REALs of the series' numeric points in each minute
(one ``GROUP BY`` over the chunk), tagged with the chunk's change count (the writer counts every
transaction that writes to a chunk table in ``changes``). Another aggregate then reads the minutes
that lie wholly inside its buckets from memory, and only the rest from the chunk: the part of a
bucket before its first whole minute and after its last (a range query each), and ``head``.
A chunk whose count moved is read again. The memory is bounded (least recently used chunks go).

Results are those of :func:`_sqlite_reader.aggregate`, up to the order in which a bucket's floats are
added up.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from array import array
from collections import OrderedDict
from typing import Any, NamedTuple

from iotflow.storage.timeseries import _sqlite_reader as reader
from iotflow.storage.timeseries._sqlite_codec import parse_table, table
from iotflow.storage.timeseries.base import Bucket

MINUTE = 60_000
FUNCS = ("count", "mean", "min", "max")
SEEN_MAX = 10_000


class Minutes(NamedTuple):
    """The numeric points of one series in one chunk, minute by minute (minutes with points only)."""

    minute: array[int]  # ts // MINUTE, ascending
    n: array[int]
    total: array[float]
    lo: list[Any]
    hi: list[Any]
    reals: array[int]


class PartialCache:
    """Per (series, chunk): (change count, :class:`Minutes`), at most ``budget`` minutes in all.

    A chunk's minutes are built only when a read finds the same change count that an earlier read
    saw: the chunk now being written changes between most reads, and building all its minutes for a
    read of its last hour would read far more than the read itself."""

    def __init__(self, budget: int = 100_000) -> None:
        self.budget = budget
        self._entries: OrderedDict[tuple[int, int], tuple[int, Minutes]] = OrderedDict()
        self._size = 0
        self._seen: dict[tuple[int, int], int] = {}  # change count at the last miss

    def minutes(self, conn: sqlite3.Connection, sid: int, chunk: int, version: int) -> Minutes | None:
        """The chunk's minutes, or None: read the chunk itself this time."""
        key = (sid, chunk)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == version:
            self._entries.move_to_end(key)
            return hit[1]
        if hit is not None:
            self._size -= len(hit[1].minute)
            del self._entries[key]
        if self._seen.get(key) != version:
            if len(self._seen) >= SEEN_MAX:
                self._seen.clear()
            self._seen[key] = version
            return None
        del self._seen[key]
        got = _read_minutes(conn, sid, chunk)
        if len(got.minute) <= self.budget:
            self._entries[key] = (version, got)
            self._size += len(got.minute)
            while self._size > self.budget:
                _, (_, old) = self._entries.popitem(last=False)
                self._size -= len(old.minute)
        return got


def _read_minutes(conn: sqlite3.Connection, sid: int, chunk: int) -> Minutes:
    sql = (
        f"SELECT ts / {MINUTE}, count(*), total(v), min(v), max(v), sum(typeof(v) = 'real') "
        f"FROM {table(chunk)} WHERE s = ? AND {reader._NUMERIC} GROUP BY 1"
    )
    out = Minutes(array("q"), array("q"), array("d"), [], [], array("q"))
    for m, n, total, lo, hi, reals in conn.execute(sql, (sid,)):
        out.minute.append(m)
        out.n.append(n)
        out.total.append(total)
        out.lo.append(lo)
        out.hi.append(hi)
        out.reals.append(reals)
    return out


def aggregate(
    conn: sqlite3.Connection,
    layout: reader.Layout,
    cache: PartialCache,
    device_id: int,
    key: str,
    func: str,
    start_ms: int,
    end_ms: int,
    window_ms: int | None,
) -> list[Bucket]:
    """:func:`_sqlite_reader.aggregate`, with the whole minutes of chunks from ``cache``."""
    series = reader._series(conn, device_id, [key])
    if func not in FUNCS or not series or start_ms < 0 or window_ms is None or window_ms <= 0:
        return reader.aggregate(conn, layout, device_id, key, func, start_ms, end_ms, window_ms)
    s, w = series[0], window_ms
    sources = reader._sources(layout, s, start_ms, end_ms)
    chunks = {name: _chunk(name) for name, _, _ in sources if name != "head"}
    versions = dict(
        conn.execute(
            "SELECT chunk, n FROM changes WHERE chunk BETWEEN ? AND ?",
            (min(chunks.values()), max(chunks.values())),
        ).fetchall()
        if chunks
        else ()
    )
    acc: dict[int, list[Any]] = {}  # bucket → [n, value, reals] (see reader._fold)
    raw: list[reader.Segment] = []  # sources read as the plain path reads them
    for name, lo, hi in sources:
        chunk = chunks.get(name)
        minutes = None if chunk is None else cache.minutes(conn, s.sid, chunk, versions.get(chunk, 0))
        if minutes is None:
            raw += reader._segments(s, [(name, lo, hi)], start_ms, w, grouped=True)
            continue
        edges: list[list[int]] = []  # the ranges read from the chunk: what whole minutes do not cover
        for b in range((lo - start_ms) // w, (hi - start_ms) // w + 1):
            a, z = max(lo, start_ms + b * w), min(hi, start_ms + (b + 1) * w - 1)
            m0, m1 = -(-a // MINUTE), (z + 1) // MINUTE - 1  # the whole minutes of [a, z]
            if m0 > m1:
                _add(edges, a, z)
                continue
            if a < m0 * MINUTE:
                _add(edges, a, m0 * MINUTE - 1)
            i, j = bisect.bisect_left(minutes.minute, m0), bisect.bisect_right(minutes.minute, m1)
            if i < j:
                n = sum(minutes.n[i:j])
                reader._fold(acc, b, n, _part(minutes, func, i, j, n), sum(minutes.reals[i:j]), func)
            if (m1 + 1) * MINUTE <= z:
                _add(edges, (m1 + 1) * MINUTE, z)
        if edges:
            # One statement: an index range per edge (json_each drives the join), bucketed in SQL.
            sql = (
                f"SELECT (ts - ?) / ?, count(*), {reader._EXPRS[func]}, sum(typeof(v) = 'real') "
                f"FROM json_each(?) AS r JOIN {name} ON s = ? AND ts BETWEEN json_extract(r.value, '$[0]') "
                f"AND json_extract(r.value, '$[1]') WHERE {reader._NUMERIC} GROUP BY 1"
            )
            for b, n, x, reals in conn.execute(sql, (start_ms, w, json.dumps(edges), s.sid)):
                reader._fold(acc, b, n, x, reals, func)
    if raw:
        scan = reader._Scan(conn, s, start_ms, w, raw, layout.packed)
        for b, n, x, reals in scan.rows("count(*)", reader._EXPRS[func], scan.reals):
            reader._fold(acc, b, n, x, reals, func)
    return [Bucket(start_ms + b * w, value, n) for b, (value, n) in sorted(reader._folded(acc, func).items())]


def _add(ranges: list[list[int]], a: int, z: int) -> None:
    """Append [a, z] to ascending ranges, joined to the last one when they touch."""
    if ranges and ranges[-1][1] + 1 == a:
        ranges[-1][1] = z
    else:
        ranges.append([a, z])


def _chunk(name: str) -> int:
    chunk = parse_table(name)
    assert chunk is not None, name
    return chunk


def _part(minutes: Minutes, func: str, i: int, j: int, n: int) -> Any:
    """``_EXPRS[func]`` over minutes ``i:j``, which hold ``n`` points."""
    if func == "mean":
        return sum(minutes.total[i:j])
    if func == "min":
        return min(minutes.lo[i:j])
    if func == "max":
        return max(minutes.hi[i:j])
    return n  # count
