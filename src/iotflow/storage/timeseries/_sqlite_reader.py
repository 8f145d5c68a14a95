"""The read side of the SQLite time-series store: plain functions over a read connection.

Every function runs inside one read transaction (a consistent WAL snapshot) on a reader thread, and
the :class:`Layout` it gets lists the chunk tables of that same snapshot.
A series' points are in its compacted chunks plus ``head``, whose points are all newer (see
``_sqlite_writer``): reads treat ``head`` as the series' newest chunk.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sqlite3
import struct
from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from typing import Any, NamedTuple, TypeVar

import msgspec

from iotflow.storage.timeseries._sqlite_codec import (
    BIT_FLOAT,
    BIT_INT,
    INT_MAX,
    INT_MIN,
    chunks_between,
    decode,
    parse_table,
    table,
    type_names,
)
from iotflow.storage.timeseries.base import Bucket, LatestValue, Record, SeriesInfo, Value, records_json
from iotflow.timeutil import format_ts

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


class Layout(NamedTuple):
    """The chunk tables visible to a read, the chunk width, and whether reads may pack their answer
    into one row (see :func:`reals_round_trip`)."""

    chunks: tuple[int, ...]
    chunk_ms: int
    packed: bool = True


def layout(conn: sqlite3.Connection, chunk_ms: int, *, packed: bool = True) -> Layout:
    """The chunk tables visible in the connection's current read transaction."""
    names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'ts%'")
    chunks = (parse_table(name) for (name,) in names)
    return Layout(tuple(sorted(c for c in chunks if c is not None)), chunk_ms, packed)


class LayoutCache:
    """The layout one reader connection listed last, and the schema version it was listed at."""

    __slots__ = ("layout", "version")

    def __init__(self) -> None:
        self.version: int | None = None
        self.layout: Layout | None = None


def run_read(
    conn: sqlite3.Connection,
    cache: LayoutCache,
    chunk_ms: int,
    packed: bool,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    chunks: bool,
) -> T:
    """``fn(conn, *args)`` (``fn(conn, layout, *args)`` with ``chunks``) in one read transaction (a
    consistent snapshot) of ``conn``. The layout is listed again only when the schema changed."""
    conn.execute("BEGIN")
    try:
        if not chunks:
            return fn(conn, *args)
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        if cache.layout is None or cache.version != version:
            cache.layout, cache.version = layout(conn, chunk_ms, packed=packed), version
        return fn(conn, cache.layout, *args)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def reals_round_trip() -> bool:
    """Whether this SQLite prints a REAL with ``printf('%!.20e')`` so that it parses back to the same
    double. Packed reads depend on it; SQLite before 3.43 builds those digits in ``long double``, exact
    enough where that type is wider than a double (x86-64 Linux) but maybe not elsewhere."""
    rnd = random.Random(20261122)
    values = [struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0] for _ in range(2000)]
    values += [0.1 + 0.2, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 6.946799136492109e-301]
    values = [v for v in values if math.isfinite(v)]
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        rows = ", ".join("(?)" for _ in values)
        (text,) = conn.execute(
            f"SELECT group_concat({_real_text('column1')}) FROM (VALUES {rows})", values
        ).fetchone()
    try:
        return bool(_numbers(f"[{text}]") == values)
    except (ValueError, msgspec.DecodeError):
        return False


class _Series(NamedTuple):
    """A series with the time range of its compacted points (``c*``) and of its points in head."""

    sid: int
    key: str
    types: int  # type bits of every point
    ccount: int  # compacted points
    cfirst: int | None
    clast: int | None
    hcount: int  # points in head
    hfirst: int | None
    hlast: int | None


Source = tuple[str, int, int]  # (table, lo, hi): read the series' points in [lo, hi] of this table
Buckets = dict[int, tuple[float | int | None, int]]  # bucket number → (value, count)


# A value as text for a packed read (see ``_fetch_packed``): an INTEGER prints exactly, a REAL with
# 20 significant digits, which parse back to the very same double (checked over 400,000 random
# doubles; SQLite's shorter default form does not always, and drops the sign of -0.0, which the
# store never keeps).
def _real_text(e: str) -> str:
    """SQL: the REAL ``e`` as JSON text with 20 significant digits; SQLite prints infinities as
    ``Inf``, which JSON does not know: ``1e999`` parses back as one."""
    return f"replace(printf('%!.20e', {e}), 'Inf', '1e999')"


_V_TEXT = f"CASE typeof(v) WHEN 'real' THEN {_real_text('v')} ELSE v END"
_TS_TEXT = "ifnull(strftime('%Y-%m-%dT%H:%M:%fZ', ts / 1000.0, 'unixepoch'), '')"
_NO_TEXT = "''"
_ENCODE = f"WHEN 'real' THEN {_real_text('{0}')} WHEN 'null' THEN 'null' ELSE {{0}}"  # the same, in JSON
_MAX_TERMS = 128  # sources per packed statement (SQLite allows 500 terms in a compound SELECT)

_NUMERIC = "t IS NULL AND typeof(v) IN ('integer', 'real')"
_IN_DEVICE = "s IN (SELECT id FROM series WHERE device_id = ?)"
_IN_JSON = "s IN (SELECT value FROM json_each(?))"


def _series(
    conn: sqlite3.Connection, device_id: int, keys: Sequence[str] | None, *, head_counts: bool = True
) -> list[_Series]:
    """The device's series (of the given keys) that hold at least one point, in one statement.

    Without ``head_counts`` the points in head are not counted (``hcount`` is 0): counting walks every
    head entry of the series (up to ``head_rows``), while its first and last timestamp are two index
    lookups."""
    hcount = "(SELECT count(*) FROM head WHERE s = series.id)" if head_counts else "0"
    sql = (
        f"SELECT id, key, types, count, first_ts, last_ts, {hcount}, "
        "(SELECT min(ts) FROM head WHERE s = series.id), (SELECT max(ts) FROM head WHERE s = series.id) "
        "FROM series WHERE device_id = ?"
    )
    if keys is None:
        rows = conn.execute(sql, (device_id,)).fetchall()
    else:
        sql += " AND key IN (SELECT value FROM json_each(?))"
        rows = conn.execute(sql, (device_id, json.dumps(list(keys)))).fetchall()
    return [_Series(*row) for row in rows if row[4] is not None or row[7] is not None]


def _sources(layout: Layout, s: _Series, lo: int, hi: int) -> list[Source]:
    """Where the points of ``s`` in [lo, hi] are, oldest first: each chunk with its share of the range."""
    out: list[Source] = []
    if s.cfirst is not None and s.clast is not None:
        a, b = max(lo, s.cfirst), min(hi, s.clast)
        width = layout.chunk_ms
        for c in chunks_between(layout.chunks, a, b, width):
            out.append((table(c), max(a, c * width), min(b, (c + 1) * width - 1)))
    if s.hfirst is not None and s.hlast is not None:
        a, b = max(lo, s.hfirst), min(hi, s.hlast)
        if a <= b:
            out.append(("head", a, b))
    return out


# -- query / count_records ---------------------------------------------------------------------


def query(
    conn: sqlite3.Connection,
    layout: Layout,
    device_id: int,
    keys: Sequence[str] | None,
    start_ms: int,
    end_ms: int,
    limit: int,
    offset: int,
    desc: bool,
) -> list[Record]:
    key, got = _query(conn, layout, device_id, keys, start_ms, end_ms, limit, offset, desc)
    if key is None:
        return got
    return [  # tuple.__new__: Record(...) would add a Python call per record
        _new(Record, (ts, {key: v if t is None else decode(t, v)}, text or None)) for ts, t, v, text in got
    ]


def query_json(
    conn: sqlite3.Connection,
    layout: Layout,
    device_id: int,
    keys: Sequence[str] | None,
    start_ms: int,
    end_ms: int,
    limit: int,
    offset: int,
    desc: bool,
    *,
    rows_text: bool = True,
) -> tuple[bytes, int]:
    """:func:`query`'s records as a JSON array (see ``records_json``), and how many there are.

    ``rows_text``: see :func:`_fetch` (a read process passes False)."""
    key, got = _query(conn, layout, device_id, keys, start_ms, end_ms, limit, offset, desc, rows_text)
    if key is None:
        return records_json(got), len(got)
    dicts = [  # the record dicts straight from the rows (no Record in between)
        {"timestamp": text or format_ts(ts), key: v if t is None else decode(t, v)} for ts, t, v, text in got
    ]
    return _encode(dicts), len(dicts)


def _query(
    conn: sqlite3.Connection,
    layout: Layout,
    device_id: int,
    keys: Sequence[str] | None,
    start_ms: int,
    end_ms: int,
    limit: int,
    offset: int,
    desc: bool,
    rows_text: bool = True,
) -> tuple[str | None, list[Any]]:
    """``(key, rows)`` when one series answers (its (ts, t, v, text) rows of the page), else
    ``(None, records)``."""
    if offset < 0:
        raise ValueError("offset must not be negative")
    if limit <= 0 or start_ms > end_ms:
        return None, []
    need = offset + limit  # a series contributes at most one point per record
    series = _series(conn, device_id, keys, head_counts=False)
    if len(series) == 1:  # one point per record, already in order: no merging
        s = series[0]
        return s.key, _fetch(conn, layout, s, start_ms, end_ms, need, desc, rows_text=rows_text)[offset:]
    return None, _merged(conn, layout, series, start_ms, end_ms, need, offset, desc)


def _merged(
    conn: sqlite3.Connection,
    layout: Layout,
    series: list[_Series],
    start_ms: int,
    end_ms: int,
    need: int,
    offset: int,
    desc: bool,
) -> list[Record]:
    """The records of several series: their points merged by timestamp."""
    records: dict[int, dict[str, Value]] = {}
    texts: dict[int, str] = {}
    lo, hi = start_ms, end_ms
    # Densest series first (by compacted points): once a series yields `need` points, no record
    # beyond its last one can make the page, which narrows the range read for the other series.
    for s in sorted(series, key=lambda s: s.ccount, reverse=True):
        rows = _fetch(conn, layout, s, lo, hi, need, desc)
        key = s.key
        for ts, t, v, text in rows:
            values = records.get(ts)
            if values is None:
                records[ts] = values = {}
                texts[ts] = text
            values[key] = v if t is None else decode(t, v)
        if len(rows) == need:
            if desc:
                lo = max(lo, rows[-1][0])
            else:
                hi = min(hi, rows[-1][0])
    return [Record(ts, records[ts], texts[ts] or None) for ts in sorted(records, reverse=desc)[offset:need]]


def _fetch(
    conn: sqlite3.Connection,
    layout: Layout,
    s: _Series,
    lo: int,
    hi: int,
    need: int,
    desc: bool,
    *,
    rows_text: bool = True,
) -> list[Any]:
    """Up to ``need`` (ts, t, v, ts as text) rows of one series in [lo, hi], in ts order.

    The text is the API's ISO 8601 form (SQLite's ``strftime`` gives exactly what ``format_ts``
    does, checked over 600,000 timestamps), or '' outside the years 0-9999. Without ``rows_text``,
    rows read one by one come with '' (``strftime`` costs SQLite about three times what ``format_ts``
    costs Python: worth it only where Python would wait for the interpreter lock)."""
    sources = _sources(layout, s, lo, hi)
    if desc:
        sources.reverse()
    if s.types & ~(BIT_FLOAT | BIT_INT) or not layout.packed:  # type codes needed, or no exact text
        return _fetch_rows(conn, s.sid, sources, need, desc, rows_text)
    out: list[Any] = []
    i, terms = 0, 2
    while i < len(sources) and len(out) < need:
        group = sources[i : i + terms]
        i += len(group)
        terms = min(terms * 4, _MAX_TERMS)
        rows = _fetch_packed(conn, s.sid, group, need - len(out), desc)
        if rows is None:  # not as expected (cannot happen with numbers only): the plain way
            return _fetch_rows(conn, s.sid, sources, need, desc, rows_text)
        out += rows
    return out


def _fetch_packed(
    conn: sqlite3.Connection, sid: int, sources: list[Source], need: int, desc: bool
) -> list[Any] | None:
    """The numeric rows of some sources in one statement that returns a single row.

    The sqlite3 module releases the interpreter lock around every step, and taking it back waits for
    the event loop thread whenever that one is busy (up to the 5 ms switch interval): a read that
    steps once per point waited on the loop a thousand times per 1,000-point answer under load. Here
    SQLite concatenates the whole answer into two texts, so the read steps once.
    """
    order = "DESC" if desc else "ASC"
    union = " UNION ALL ".join(
        f"SELECT * FROM (SELECT ts, v FROM {name} WHERE s = ? AND ts BETWEEN ? AND ? "
        f"ORDER BY ts {order} LIMIT ?)"
        for name, _, _ in sources
    )
    sql = f"SELECT group_concat(ts), group_concat({_V_TEXT}), group_concat({_TS_TEXT}) FROM ({union} LIMIT ?)"
    params = [x for _, a, b in sources for x in (sid, a, b, need)]
    stamps, values, texts = conn.execute(sql, (*params, need)).fetchone()
    if stamps is None:
        return []
    try:
        ts_list = _numbers(f"[{stamps}]")
        v_list = _numbers(f"[{values}]")
    except (ValueError, msgspec.DecodeError):
        return None
    text_list = texts.split(",")
    # group_concat takes the rows in the order of the subquery (checked, not assumed).
    if not len(ts_list) == len(v_list) == len(text_list) or ts_list != sorted(ts_list, reverse=desc):
        return None
    return list(zip(ts_list, repeat(None), v_list, text_list))


def _numbers(text: str) -> list[Any]:
    """A JSON array of numbers (or of arrays of numbers): msgspec's parser (about 3 times json's
    speed), json's for what msgspec refuses (1e999, the text of an infinity)."""
    try:
        return msgspec.json.decode(text, type=list)
    except msgspec.ValidationError:
        return list(json.loads(text))


_new = tuple.__new__


def _fetch_rows(
    conn: sqlite3.Connection, sid: int, sources: list[Source], need: int, desc: bool, text: bool = True
) -> list[Any]:
    """Up to ``need`` (ts, t, v, ts as text or '') rows, source by source (``sources`` already in read
    order)."""
    order = "DESC" if desc else "ASC"
    out: list[Any] = []
    ts_text = _TS_TEXT if text else _NO_TEXT
    for name, a, b in sources:
        sql = (
            f"SELECT ts, t, v, {ts_text} FROM {name} WHERE s = ? AND ts BETWEEN ? AND ? "
            f"ORDER BY ts {order} LIMIT ?"
        )
        out += conn.execute(sql, (sid, a, b, need - len(out))).fetchall()
        if len(out) >= need:
            break
    return out


def count_records(
    conn: sqlite3.Connection,
    layout: Layout,
    device_id: int,
    keys: Sequence[str] | None,
    start_ms: int,
    end_ms: int,
) -> int:
    series = _series(conn, device_id, keys)
    if len(series) == 1:  # one point per record
        return _count_series(conn, layout, series[0], start_ms, end_ms)
    total = 0
    compacted = [s for s in series if s.cfirst is not None]
    ids = json.dumps([s.sid for s in compacted])
    if compacted:
        lo = max(start_ms, min(s.cfirst for s in compacted if s.cfirst is not None))
        hi = min(end_ms, max(s.clast for s in compacted if s.clast is not None))
        for chunk in chunks_between(layout.chunks, lo, hi, layout.chunk_ms):
            # Chunks hold disjoint time ranges, so their distinct counts add up.
            sql = f"SELECT count(DISTINCT ts) FROM {table(chunk)} WHERE {_IN_JSON} AND ts BETWEEN ? AND ?"
            total += conn.execute(sql, (ids, lo, hi)).fetchone()[0]
    in_head = json.dumps([s.sid for s in series if s.hfirst is not None])
    sql = f"SELECT DISTINCT ts FROM head WHERE {_IN_JSON} AND ts BETWEEN ? AND ?"
    stamps = {ts for (ts,) in conn.execute(sql, (in_head, start_ms, end_ms))}
    if stamps and compacted:  # drop the head timestamps already counted in a chunk (for another key)
        by_chunk: dict[int, list[int]] = {}
        for ts in stamps:
            by_chunk.setdefault(ts // layout.chunk_ms, []).append(ts)
        for chunk in chunks_between(layout.chunks, min(stamps), max(stamps), layout.chunk_ms):
            if chunk in by_chunk:
                sql = (
                    f"SELECT DISTINCT ts FROM {table(chunk)} "
                    f"WHERE {_IN_JSON} AND ts IN (SELECT value FROM json_each(?))"
                )
                stamps.difference_update(
                    ts for (ts,) in conn.execute(sql, (ids, json.dumps(by_chunk[chunk])))
                )
    return total + len(stamps)


def _count_series(conn: sqlite3.Connection, layout: Layout, s: _Series, start_ms: int, end_ms: int) -> int:
    """The points of one series in range; the catalogue counts answer when it covers them all."""
    total = 0
    if s.cfirst is not None and s.clast is not None:
        if start_ms <= s.cfirst and s.clast <= end_ms:
            total += s.ccount
        else:
            lo, hi = max(start_ms, s.cfirst), min(end_ms, s.clast)
            for chunk in chunks_between(layout.chunks, lo, hi, layout.chunk_ms):
                sql = f"SELECT count(*) FROM {table(chunk)} WHERE s = ? AND ts BETWEEN ? AND ?"
                total += conn.execute(sql, (s.sid, lo, hi)).fetchone()[0]
    if s.hfirst is not None and s.hlast is not None:
        if start_ms <= s.hfirst and s.hlast <= end_ms:
            total += s.hcount
        else:
            sql = "SELECT count(*) FROM head WHERE s = ? AND ts BETWEEN ? AND ?"
            total += conn.execute(sql, (s.sid, start_ms, end_ms)).fetchone()[0]
    return total


# -- catalogue ---------------------------------------------------------------------------------


def latest(conn: sqlite3.Connection, device_id: int, keys: Sequence[str] | None) -> dict[str, LatestValue]:
    rows = conn.execute(
        "SELECT id, key, last_t, last_v, last_ts, unit FROM series WHERE device_id = ?", (device_id,)
    ).fetchall()
    # SQLite takes the bare columns t, v from the row holding max(ts).
    sql = f"SELECT s, max(ts), t, v FROM head WHERE {_IN_DEVICE} GROUP BY s"
    heads = {s: (ts, t, v) for s, ts, t, v in conn.execute(sql, (device_id,))}
    wanted = None if keys is None else set(keys)
    out: dict[str, LatestValue] = {}
    for sid, key, t, v, ts, unit in rows:
        if wanted is not None and key not in wanted:
            continue
        if sid in heads:  # newer than anything compacted
            ts, t, v = heads[sid]
        if ts is not None:
            out[key] = LatestValue(decode(t, v), ts, unit)
    return out


def keys(conn: sqlite3.Connection, device_id: int) -> list[SeriesInfo]:
    rows = conn.execute(
        "SELECT id, key, unit, first_ts, last_ts, count, types FROM series WHERE device_id = ? ORDER BY key",
        (device_id,),
    ).fetchall()
    sql = f"SELECT s, count(*), min(ts), max(ts) FROM head WHERE {_IN_DEVICE} GROUP BY s"
    heads = {s: rest for s, *rest in conn.execute(sql, (device_id,))}
    out: list[SeriesInfo] = []
    for sid, key, unit, first, last, count, types in rows:
        if sid in heads:
            n, hfirst, hlast = heads[sid]
            count += n
            first = hfirst if first is None else min(first, hfirst)
            last = hlast if last is None else max(last, hlast)
        if count > 0:
            out.append(SeriesInfo(key, unit, first, last, count, type_names(types)))
    return out


def device_ids(conn: sqlite3.Connection) -> list[int]:
    return [d for (d,) in conn.execute("SELECT DISTINCT device_id FROM series ORDER BY device_id")]


def count_points(
    conn: sqlite3.Connection, layout: Layout, device_id: int | None, since_ms: int | None
) -> int:
    args: tuple[int, ...] = ()
    if device_id is None:
        in_series, in_head = "", ""
    else:
        in_series, in_head, args = "device_id = ? AND ", f"{_IN_DEVICE} AND ", (device_id,)
    since = INT_MIN if since_ms is None else since_ms
    head_sql = f"SELECT count(*) FROM head WHERE {in_head}ts >= ?"
    total: int = conn.execute(head_sql, (*args, since)).fetchone()[0]
    if since_ms is None:
        sql = f"SELECT coalesce(sum(count), 0) FROM series WHERE {in_series}count > 0"
        return total + int(conn.execute(sql, args).fetchone()[0])
    sql = f"SELECT id, first_ts, last_ts, count FROM series WHERE {in_series}last_ts >= ?"
    rows = conn.execute(sql, (*args, since_ms)).fetchall()
    total += sum(n for _, first, _, n in rows if first >= since_ms)  # wholly after since: exact count
    straddling = [(sid, last) for sid, first, last, _ in rows if first < since_ms]
    if straddling:  # count only their points from since on, by primary-key range scans
        ids = json.dumps([sid for sid, _ in straddling])
        hi = max(last for _, last in straddling)
        for chunk in chunks_between(layout.chunks, since_ms, hi, layout.chunk_ms):
            sql = f"SELECT count(*) FROM {table(chunk)} WHERE {_IN_JSON} AND ts >= ?"
            total += conn.execute(sql, (ids, since_ms)).fetchone()[0]
    return total


# -- aggregate ---------------------------------------------------------------------------------


def aggregate(
    conn: sqlite3.Connection,
    layout: Layout,
    device_id: int,
    key: str,
    func: str,
    start_ms: int,
    end_ms: int,
    window_ms: int | None,
) -> list[Bucket]:
    if window_ms is not None and window_ms <= 0:
        raise ValueError("window_ms must be positive")
    result: Buckets = {}
    series = _series(conn, device_id, [key])
    if series:
        s = series[0]
        sources = _sources(layout, s, start_ms, end_ms)
        if sources:
            segments = _segments(s, sources, start_ms, window_ms, grouped=func not in _STREAMED)
            result = _aggregate(_Scan(conn, s, start_ms, window_ms, segments, layout.packed), func)
    if window_ms is None:
        value, n = result.get(0, (0 if func == "count" else None, 0))
        return [Bucket(start_ms, value, n)]
    return [Bucket(start_ms + b * window_ms, value, n) for b, (value, n) in sorted(result.items())]


Segment = tuple[int | None, str, int, int]  # (bucket, table, lo, hi); bucket None: bucketed in SQL
_STREAMED = ("median", "stddev")  # computed in Python from the values, not by an SQL aggregate
# One more range query costs about as much as sorting this many more rows in the temporary B-tree
# of a GROUP BY (measured with SQLite 3.40 and CPython 3.11: both plans take the same time at about
# 12 points a bucket; at 360 points a bucket one query per bucket takes a third of the time).
_QUERY_COST_IN_SORTED_ROWS = 12


def _segments(
    s: _Series, sources: list[Source], start_ms: int, window_ms: int | None, *, grouped: bool
) -> list[Segment]:
    """The plan: one range query per bucket and source, or one query per source bucketed in SQL.

    A range query per bucket reads its rows in key order and needs no sorting, but costs a query
    for every bucket. Bucketing a whole source in SQL costs one query; with ``grouped`` (SQL
    aggregates per bucket) it also costs a temporary B-tree to GROUP BY an expression of ``ts``,
    which is cheaper only when buckets hold few points each. Without ``grouped`` (rows streamed to
    Python) one query per source is always the cheaper.
    """
    if window_ms is None:
        return [(0, name, lo, hi) for name, lo, hi in sources]
    w = window_ms
    # ``(ts - start_ms) / w`` in SQL must not overflow 64 bits.
    sql_bucketing = all(hi - start_ms <= INT_MAX for _, _, hi in sources)
    if sql_bucketing and not grouped:
        return [(None, name, lo, hi) for name, lo, hi in sources]
    n_segments = sum((hi - start_ms) // w - (lo - start_ms) // w + 1 for _, lo, hi in sources)
    extra_queries = n_segments - len(sources)
    if sql_bucketing and _estimated_points(s, sources) < extra_queries * _QUERY_COST_IN_SORTED_ROWS:
        return [(None, name, lo, hi) for name, lo, hi in sources]
    out: list[Segment] = []
    for name, lo, hi in sources:
        for b in range((lo - start_ms) // w, (hi - start_ms) // w + 1):
            out.append((b, name, max(lo, start_ms + b * w), min(hi, start_ms + (b + 1) * w - 1)))
    return out


def _estimated_points(s: _Series, sources: list[Source]) -> float:
    """The points of ``s`` in the sources, assuming its compacted points and its points in head are
    each evenly spread over their own time span."""
    total = 0.0
    for name, lo, hi in sources:
        if name == "head":
            n, first, last = s.hcount, s.hfirst, s.hlast
        else:
            n, first, last = s.ccount, s.cfirst, s.clast
        if first is not None and last is not None:
            total += n * (hi - lo + 1) / (last - first + 1)
    return total


def _runs(segments: list[Segment]) -> Iterator[tuple[int | None, str, int, int, int | None]]:
    """``(first bucket, table, lo, hi, last bucket)``: consecutive segments of one source merged.

    Only segments of consecutive buckets that cover one unbroken range merge (the merged run is read
    bucket by bucket over its whole range). A segment bucketed in SQL (bucket None) stays on its own."""
    run: list[Any] | None = None
    for b, name, lo, hi in segments:
        if run is not None and b is not None and run[1] == name and run[4] == b - 1 and run[3] + 1 == lo:
            run[3], run[4] = hi, b
            continue
        if run is not None:
            yield tuple(run)
        run = [b, name, lo, hi, b]
    if run is not None:
        yield tuple(run)


class _Scan(NamedTuple):
    conn: sqlite3.Connection
    series: _Series
    start_ms: int
    window_ms: int | None
    segments: list[Segment]
    packed: bool = True

    @property
    def _numeric_only(self) -> str:
        """The extra condition when the key has held non-numeric values: filter them out."""
        return f" AND {_NUMERIC}" if self.series.types & ~(BIT_FLOAT | BIT_INT) else ""

    @property
    def _where(self) -> str:
        """The condition of a segment's rows (parameters: series, lo, hi)."""
        return f"s = ? AND ts BETWEEN ? AND ?{self._numeric_only}"

    def rows(self, *exprs: str) -> Iterator[Any]:
        """``(bucket, *exprs)`` for every non-empty bucket of every segment, oldest segment first.

        ``exprs`` are SQL aggregates, the first ``count(*)``. Every segment goes into one statement
        (one per ``_MAX_TERMS`` sources) that answers a single text, each bucket a JSON array, so
        the read steps a handful of times instead of once per bucket (see ``_fetch_packed``).
        """
        numeric, sid, start, w = self._numeric_only, self.series.sid, self.start_ms, self.window_ms or 1
        if not self.packed:  # a query per segment (per bucket, or per source bucketed in SQL)
            select, execute, where = ", ".join(exprs), self.conn.execute, self._where
            for b, name, lo, hi in self.segments:
                if b is None:
                    sql = f"SELECT (ts - ?) / ? AS b, {select} FROM {name} WHERE {where} GROUP BY b"
                    yield from execute(sql, (start, w, sid, lo, hi))
                else:
                    row = execute(f"SELECT {select} FROM {name} WHERE {where}", (sid, lo, hi)).fetchone()
                    if row[0]:
                        yield (b, *row)
            return
        packed = " || ',' || ".join(f"CASE typeof({e}) {_ENCODE.format(e)} END" for e in exprs)
        row = f"'[' || {{}} || ',' || {packed} || ']'"  # one bucket's JSON array, {} its number
        terms: list[tuple[str, tuple[Any, ...]]] = []
        for b0, name, lo, hi, b1 in _runs(self.segments):
            if b0 is None:  # the whole source, bucketed in SQL
                sql = (
                    f"SELECT group_concat(r) FROM (SELECT {row.format('((ts - ?) / ?)')} AS r FROM {name} "
                    f"WHERE s = ? AND ts BETWEEN ? AND ?{numeric} GROUP BY (ts - ?) / ?)"
                )
                terms.append((sql, (start, w, sid, lo, hi, start, w)))
            elif b0 == b1:  # one bucket (or no window): the segment's own range
                sql = f"SELECT {row.format('?')} FROM {name} WHERE s = ? AND ts BETWEEN ? AND ?{numeric}"
                terms.append((sql, (b0, sid, lo, hi)))
            else:  # a range query per bucket of [b0, b1], each clipped to [lo, hi]
                sql = (
                    "WITH RECURSIVE k(b) AS (SELECT ? UNION ALL SELECT b + 1 FROM k WHERE b < ?) "
                    f"SELECT group_concat((SELECT {row.format('b')} FROM {name} WHERE s = ? "
                    f"AND ts BETWEEN max(?, ? + b * ?) AND min(?, ? + (b + 1) * ? - 1){numeric})) FROM k"
                )
                terms.append((sql, (b0, b1, sid, lo, start, w, hi, start, w)))
        for first in range(0, len(terms), _MAX_TERMS):
            part = terms[first : first + _MAX_TERMS]
            union = " UNION ALL ".join(f"SELECT ({sql}) AS x" for sql, _ in part)
            params = [p for _, ps in part for p in ps]
            (text,) = self.conn.execute(f"SELECT group_concat(x) FROM ({union})", params).fetchone()
            if text:
                for row in _numbers(f"[{text}]"):
                    if row[1]:  # count(*): empty buckets of a range answer 0
                        yield tuple(row)

    def values(self) -> Iterator[Any]:
        """``(bucket, v)`` for every numeric point of every segment, oldest first (row by row)."""
        where, execute, sid = self._where, self.conn.execute, self.series.sid
        for b, name, lo, hi in self.segments:
            if b is None:
                sql = f"SELECT (ts - ?) / ? AS b, v FROM {name} WHERE {where}"
                yield from execute(sql, (self.start_ms, self.window_ms or 1, sid, lo, hi))
            else:
                for (v,) in execute(f"SELECT v FROM {name} WHERE {where}", (sid, lo, hi)):
                    yield (b, v)

    @property
    def reals(self) -> str:
        """SQL counting the REAL values among the numeric rows, needed only when ints and floats mix.

        ``sum``/``min``/``max``/``first``/``last`` of such a mix are floats even when the chosen value
        is an int; of ints only or floats only SQLite already returns the right type.
        """
        mixed = self.series.types & BIT_FLOAT and self.series.types & BIT_INT
        return "sum(typeof(v) = 'real')" if mixed else "0"


def _aggregate(scan: _Scan, func: str) -> Buckets:
    if func == "count":
        acc: dict[int, int] = {}
        for b, n in scan.rows("count(*)"):
            acc[b] = acc.get(b, 0) + n
        return {b: (n, n) for b, n in acc.items()}
    if func in ("mean", "sum", "min", "max"):
        try:
            return _combined(scan, func)
        except sqlite3.OperationalError as exc:  # sum() of 64-bit ints overflowed
            if "overflow" not in str(exc):
                raise
            return _streamed(scan, func)
    if func in ("first", "last"):
        return _first_last(scan, func == "first")
    if func in ("median", "stddev"):
        return _streamed(scan, func)
    raise ValueError(f"unknown aggregate function: {func!r}")


# The SQL aggregate of each function that adds up per part: a bucket's parts (its segments, or
# remembered minutes, see ``_sqlite_partials``) are folded together with :func:`_fold`.
_EXPRS = {"count": "count(*)", "mean": "total(v)", "sum": "sum(v)", "min": "min(v)", "max": "max(v)"}


def _combined(scan: _Scan, func: str) -> Buckets:
    acc: dict[int, list[Any]] = {}
    for b, n, x, reals in scan.rows("count(*)", _EXPRS[func], scan.reals):
        _fold(acc, b, n, x, reals, func)
    return _folded(acc, func)


def _fold(acc: dict[int, list[Any]], b: int, n: int, x: Any, reals: int, func: str) -> None:
    """Add a part of bucket ``b`` — its count, its ``_EXPRS[func]`` and its REALs — to ``acc``
    (b → [n, value, reals])."""
    a = acc.get(b)
    if a is None:
        acc[b] = [n, x, reals]
        return
    a[0] += n
    a[2] += reals
    if func == "min":
        a[1] = min(a[1], x)
    elif func == "max":
        a[1] = max(a[1], x)
    else:  # count, mean (a total), sum
        a[1] += x


def _folded(acc: dict[int, list[Any]], func: str) -> Buckets:
    """The buckets of ``acc``: a mean divides its total; an int sum, min or max of a bucket that
    holds a REAL is a float."""
    if func == "mean":
        return {b: (x / n, n) for b, (n, x, _) in acc.items()}
    if func == "count":
        return {b: (n, n) for b, (n, _, _) in acc.items()}
    return {b: (float(x) if reals else x, n) for b, (n, x, reals) in acc.items()}


def _first_last(scan: _Scan, first: bool) -> Buckets:
    # SQLite takes the bare column ``v`` from the row that holds min(ts) / max(ts).
    pick = "min(ts)" if first else "max(ts)"
    acc: dict[int, list[Any]] = {}  # b → [n, value, reals]
    for b, n, _, v, reals in scan.rows("count(*)", pick, "v", scan.reals):  # oldest first
        a = acc.get(b)
        if a is None:
            acc[b] = [n, v, reals]
            continue
        a[0] += n
        a[2] += reals
        if not first:
            a[1] = v
    return {b: (float(v) if reals else v, n) for b, (n, v, reals) in acc.items()}


def _streamed(scan: _Scan, func: str) -> Buckets:
    values: dict[int, list[Any]] = {}
    for b, v in scan.values():
        group = values.get(b)
        if group is None:
            values[b] = [v]
        else:
            group.append(v)
    out: Buckets = {}
    for b, vals in values.items():
        n = len(vals)
        if func == "median":
            vals.sort()
            mid = n // 2
            out[b] = (float(vals[mid]) if n % 2 else (vals[mid - 1] + vals[mid]) / 2, n)
        elif func == "stddev":
            mean = math.fsum(vals) / n
            out[b] = (math.sqrt(math.fsum((x - mean) ** 2 for x in vals) / n), n)
        else:  # sum (exact, arbitrary precision) after an overflow in SQL
            total = sum(vals)
            out[b] = (float(total) if any(type(x) is float for x in vals) else total, n)
    return out
